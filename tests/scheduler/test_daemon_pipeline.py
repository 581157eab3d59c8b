"""The scheduler's loop decides a cycle while the previous one's records are being stored
(``Daemon.run``): on a real broker, what the stored cycle finds changed behind the next one's
decisions is neither written nor sent by it, and is decided again from the stored record."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.scheduler import core
from sortie.scheduler.daemon import Daemon, SchedulerConfig
from tests.builders import heartbeat, record, spec


async def stored(bus: Bus, run_id: str) -> m.RunRecord:
    entry = await bus.runs.get(run_id)
    return codec.decode(m.RunRecord, entry.value or b"")


async def test_a_run_changed_behind_the_next_cycle_is_not_written_or_sent_by_it(
    bus: Bus, tmp_path: Path
) -> None:
    daemon = Daemon(bus, SchedulerConfig(url="-", data_dir=tmp_path))
    await daemon.load()
    commands = await bus.nc.subscribe(subjects.agent_commands("a1"))
    try:
        await daemon.cycle([daemon.queue.get_nowait()])  # the load's Started
        request = m.SubmitRequest(spec=spec())
        first = daemon._decide([(core.Submitted(request=request, run_id="r1", reply_to=""), None)])
        # another writer stores the run first (the first cycle's create will conflict)
        theirs = record("r1", tags={"by": "another writer"}, created_at=1.0)
        await bus.runs.create("r1", codec.encode(theirs))
        # as the loop runs: the next cycle decides (an agent came: r1 is placed on it) while
        # the first one's records are being stored
        daemon.replaced = set()
        second = daemon._decide([(core.HeartbeatSeen(heartbeat=heartbeat("a1", cpus=4)), None)])
        assert [type(c.command) for c in second.cmds if isinstance(c, core.SendToAgent)] == [
            m.Assign
        ]
        await daemon._finish(first)
        second.behind = daemon.replaced
        assert second.behind == {"r1"}
        await daemon._finish(second)
        await bus.nc.flush()
        with pytest.raises(TimeoutError):
            await commands.next_msg(timeout=0.3)  # its Assign was not sent
        assert await stored(bus, "r1") == theirs  # nor its record written over theirs
        assert daemon.state.runs["r1"] == theirs

        await daemon.cycle([])  # decided again, from the stored record
        assign = codec.decode(m.Assign, (await commands.next_msg(timeout=5)).data)
        assert assign.run_id == "r1"
        now = await stored(bus, "r1")
        assert now.state is RunState.PREPARING and now.tags == {"by": "another writer"}
    finally:
        await commands.unsubscribe()
        await daemon.feed.close()


async def test_the_loop_places_and_stores_every_cycle_in_order(bus: Bus, tmp_path: Path) -> None:
    """Many cycles through ``run``, each deciding while the one before it stores: every
    run is stored placed once, and its Assign sent once, after its record."""
    daemon = Daemon(bus, SchedulerConfig(url="-", data_dir=tmp_path))
    await daemon.load()
    commands = await bus.nc.subscribe(subjects.agent_commands("a1"))
    stop = asyncio.Event()
    loop = asyncio.create_task(daemon.run(stop))
    try:
        daemon._enqueue(core.HeartbeatSeen(heartbeat=heartbeat("a1", cpus=64)))
        ids = [f"r{i:02d}" for i in range(40)]
        for run_id in ids:  # a cycle each, as they come
            request = m.SubmitRequest(spec=spec())
            daemon._enqueue(core.Submitted(request=request, run_id=run_id, reply_to=""))
            await asyncio.sleep(0.01)
        assigned = []
        for _ in ids:
            msg = await commands.next_msg(timeout=10)
            assign = codec.decode(m.Assign, msg.data)
            rec = await stored(bus, assign.run_id)
            assert rec.state is RunState.PREPARING and rec.agent_id == "a1"
            assigned.append(assign.run_id)
        assert sorted(assigned) == ids
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)
        await commands.unsubscribe()
        await daemon.feed.close()


async def test_a_run_that_ends_through_the_loop_gets_its_end_of_log_marker(
    bus: Bus, tmp_path: Path
) -> None:
    """The cycle that stores a run's end sends that run's commands (its end-of-log marker,
    which followers of its output wait for): a run it ends is not taken for one changed
    behind it."""
    daemon = Daemon(bus, SchedulerConfig(url="-", data_dir=tmp_path))
    await daemon.load()
    commands = await bus.nc.subscribe(subjects.agent_commands("a1"))
    eof = await bus.nc.subscribe(subjects.logs("r1", subjects.SCHEDULER_WRITER))
    stop = asyncio.Event()
    loop = asyncio.create_task(daemon.run(stop))
    try:
        daemon._enqueue(core.HeartbeatSeen(heartbeat=heartbeat("a1", cpus=4)))
        daemon._enqueue(
            core.Submitted(request=m.SubmitRequest(spec=spec()), run_id="r1", reply_to="")
        )
        assign = codec.decode(m.Assign, (await commands.next_msg(timeout=10)).data)
        for state in (RunState.STARTING, RunState.RUNNING, RunState.FINALIZING, RunState.COMPLETED):
            report = m.RunReport(
                agent_id="a1",
                incarnation="i1",
                run_id="r1",
                attempt=assign.attempt,
                state=state,
                at=0.0,
                exit_code=0 if state is RunState.COMPLETED else None,
            )
            daemon._enqueue(core.ReportSeen(report=report))
            for _ in range(8):  # a cycle of its own, decided while the one before stores
                await asyncio.sleep(0)
        marker = codec.decode(m.LogBatch, (await eof.next_msg(timeout=10)).data)
        assert marker.eof and marker.run_id == "r1"
        assert (await stored(bus, "r1")).state is RunState.COMPLETED
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)
        await commands.unsubscribe()
        await eof.unsubscribe()
        await daemon.feed.close()
