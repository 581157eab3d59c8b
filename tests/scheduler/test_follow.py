"""A standby's follower (scheduler.follow) on a real broker: what it holds once caught up is
what a whole read finds, so a new leader loads the same state from it without reading the
store again."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sortie.bus.broker import BrokerProcess, start_broker
from sortie.bus.connection import Bus, open_bus
from sortie.bus.kv import kv_items
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.scheduler.daemon import LOADED_BUCKETS, Daemon, SchedulerConfig
from sortie.scheduler.follow import Follower
from tests.builders import spec


def run(run_id: str, state: RunState = RunState.QUEUED) -> m.RunRecord:
    now = time.time()
    return m.RunRecord(
        run_id=run_id,
        spec=spec(submission_id=f"sub-{run_id}"),
        state=state,
        attempt=1,
        created_at=now,
        ended_at=now if state is RunState.COMPLETED else None,
        history=[m.StateChange(state=RunState.QUEUED, at=now, attempt=1)],
    )


async def put(bus: Bus, rec: m.RunRecord) -> None:
    await bus.runs.put(rec.run_id, codec.encode(rec))


async def test_what_it_follows_is_what_a_whole_read_finds(bus: Bus, tmp_path: Path) -> None:
    await put(bus, run("before"))
    await put(bus, run("ends", RunState.QUEUED))
    await bus.runs.put(subjects.FENCE_KEY, b"fence")  # not a record
    follower = Follower(bus.js, LOADED_BUCKETS)
    await follower.start()
    try:
        # written while it follows: new, changed, ended, deleted
        await put(bus, run("after"))
        await put(bus, run("ends", RunState.COMPLETED))
        await put(bus, run("gone"))
        await bus.runs.delete("gone")
        assert await follower.caught_up() == []
        followed = {e.key: e.revision for e in await follower.read(subjects.KV_RUNS, bus.runs)}
        whole = {e.key: e.revision for e in await kv_items(bus.runs)}
        assert followed == whole
        assert set(followed) == {"before", "ends", "after"}

        # a leader loads the same state from either
        from_follower = Daemon(bus, SchedulerConfig(url="-", data_dir=tmp_path / "a"))
        await from_follower.load(follower.read)
        from_store = Daemon(bus, SchedulerConfig(url="-", data_dir=tmp_path / "b"))
        await from_store.load()
        for d in (from_follower, from_store):
            assert set(d.state.runs) == {"before", "after"}  # the ended one is not active
            assert d.state.submissions == {
                "sub-before": "before",
                "sub-ends": "ends",
                "sub-after": "after",
            }
        assert from_follower.revisions == from_store.revisions
    finally:
        await follower.stop()


async def test_a_bucket_not_caught_up_in_time_is_read_whole(bus: Bus) -> None:
    follower = Follower(bus.js, LOADED_BUCKETS)
    await follower.start()
    await follower.stop()  # it follows nothing more
    await put(bus, run("unseen"))
    assert await follower.caught_up(timeout_s=0.5) == [subjects.KV_RUNS]
    keys = {e.key for e in await follower.read(subjects.KV_RUNS, bus.runs)}
    assert keys == {"unseen"}
    await asyncio.sleep(0)


async def test_a_standby_started_while_the_broker_is_away_follows_once_it_answers(
    broker: BrokerProcess,
) -> None:
    # a cluster electing its meta leader answers no JetStream call for seconds: a standby
    # starting then waits for it, it does not die
    bus = await open_bus(broker.url, "standby", create=True, reconnect_forever=True)
    port = int(broker.url.rsplit(":", 1)[1])
    back: BrokerProcess | None = None
    follower = Follower(bus.js, LOADED_BUCKETS)
    try:
        broker.kill()
        starting = asyncio.create_task(follower.start())
        await asyncio.sleep(2.5)
        assert not starting.done(), starting  # still asking, not failed
        back = start_broker(broker.data_dir, port=port, sync_always=False)
        await asyncio.wait_for(starting, 30)
        await put(bus, run("after-outage"))
        assert await follower.caught_up() == []
        keys = {e.key for e in await follower.read(subjects.KV_RUNS, bus.runs)}
        assert keys == {"after-outage"}
    finally:
        await follower.stop()
        await bus.close()
        if back is not None:
            back.stop()
