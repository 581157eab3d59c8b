"""The scheduler's compare-and-set writes of run records, on a real broker: a write of its
own that landed without an answer (an atomic batch timed out under load) is not taken for
another writer's change, while a real change by another writer still is."""

from __future__ import annotations

from pathlib import Path

import msgspec

from sortie.bus.connection import Bus
from sortie.proto import codec
from sortie.proto.states import RunState
from sortie.scheduler.daemon import Daemon, SchedulerConfig
from tests.builders import record


async def test_a_write_that_landed_unanswered_is_ours_and_a_change_by_another_is_not(
    bus: Bus, tmp_path: Path
) -> None:
    daemon = Daemon(bus, SchedulerConfig(url="-", data_dir=tmp_path))
    await daemon.load()
    try:
        first = record("r1")
        daemon.revisions["r1"] = await bus.runs.put("r1", codec.encode(first))
        daemon.state.runs.load("r1", first)
        placed = msgspec.structs.replace(first, state=RunState.PREPARING, agent_id="a1")
        daemon.state.runs.put("r1", placed)  # as the cycle's decision left it
        landed = await bus.runs.put("r1", codec.encode(placed))  # ours, its answer lost
        assert await daemon._write_runs([("r1", placed)]) == set()  # not failed: sent on
        assert daemon.revisions["r1"] == landed

        theirs = msgspec.structs.replace(placed, tags={"by": "someone else"})
        await bus.runs.put("r1", codec.encode(theirs))
        mine = msgspec.structs.replace(placed, tags={"by": "me"})
        daemon.state.runs.put("r1", mine)
        assert await daemon._write_runs([("r1", mine)]) == {"r1"}
        assert daemon.state.runs["r1"] == theirs  # the stored record is the truth
    finally:
        await daemon.feed.close()
