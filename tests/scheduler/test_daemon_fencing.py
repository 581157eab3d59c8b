"""The real scheduler daemon on a real broker, with simulated agents: fencing by attempt."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sortie.bus.broker import BrokerProcess
from sortie.bus.connection import Bus
from sortie.client.client import Client
from sortie.client.runconfig import ScriptRunConfig
from sortie.proto import codec
from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.scheduler.daemon import SchedulerConfig, run_scheduler
from sortie.scheduler.reconcile import Timing
from tests.harness import FakeAgent


@pytest.fixture
async def scheduler(broker: BrokerProcess) -> AsyncIterator[None]:
    stop = asyncio.Event()
    ready = asyncio.Event()
    cfg = SchedulerConfig(
        url=broker.url, timing=Timing(lease_s=1.5, assign_ack_s=1.0, kill_grace_s=1.0), tick_s=0.2
    )
    task = asyncio.create_task(run_scheduler(cfg, stop, ready))
    await asyncio.wait_for(ready.wait(), 10)
    yield
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


async def record(bus: Bus, run_id: str) -> m.RunRecord:
    return codec.decode(m.RunRecord, (await bus.runs.get(run_id)).value or b"")


async def until(bus: Bus, run_id: str, pred, timeout: float = 10.0) -> m.RunRecord:
    async def poll() -> m.RunRecord:
        while True:
            rec = await record(bus, run_id)
            if pred(rec):
                return rec
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout)


async def submit(url: str, tmp_path: Path) -> str:
    (tmp_path / "t.py").write_text("print(1)\n")
    async with await Client.connect(url) as c:
        sub = await c.submit(ScriptRunConfig(source_directory=tmp_path, script="t.py"))
    return sub.run_id


async def test_stale_attempts_are_refused_and_a_restarted_agent_gets_a_new_attempt(
    scheduler: None, bus: Bus, broker: BrokerProcess, tmp_path: Path
) -> None:
    agent = FakeAgent(bus, "sim-1")
    await agent.start()
    run_id = await submit(broker.url, tmp_path)
    cmd = await agent.next_command()
    assert isinstance(cmd, m.Assign) and (cmd.run_id, cmd.attempt) == (run_id, 1)

    # a report for an attempt that is not the current one is refused, and told to stop
    await agent.report(run_id, 0, RunState.RUNNING)
    stop = await agent.next_command()
    # the leader's first epoch on a fresh store: every Assign and Cancel carries it
    assert stop == m.Cancel(run_id=run_id, attempt=0, reason="stale", epoch=1)
    assert (await record(bus, run_id)).state is RunState.PREPARING

    # the agent restarts (new incarnation): attempt 1 is gone, the run comes back as attempt 2
    await agent.stop()
    reborn = FakeAgent(bus, "sim-1", incarnation="inc-2")
    await reborn.start()
    cmd = await reborn.next_command()
    assert isinstance(cmd, m.Assign) and (cmd.run_id, cmd.attempt, cmd.incarnation) == (
        run_id,
        2,
        "inc-2",
    )
    rec = await record(bus, run_id)
    assert rec.attempt == 2 and [h.state for h in rec.history][-2:] == ["Queued", "Preparing"]

    # the old attempt finishing late must not complete the run
    await reborn.report(run_id, 1, RunState.COMPLETED, exit_code=0)
    await asyncio.sleep(0.5)
    assert (await record(bus, run_id)).state is RunState.PREPARING
    for st in (RunState.STARTING, RunState.RUNNING, RunState.FINALIZING):
        await reborn.report(run_id, 2, st)
    await reborn.report(run_id, 2, RunState.COMPLETED, exit_code=0)
    done = await until(bus, run_id, lambda r: r.state is RunState.COMPLETED)
    assert done.attempt == 2
    assert [h.state for h in done.history].count(RunState.COMPLETED) == 1
    await reborn.stop()


async def test_a_silent_agent_is_lost_and_its_run_requeued(
    scheduler: None, bus: Bus, broker: BrokerProcess, tmp_path: Path
) -> None:
    a = FakeAgent(bus, "sim-a")
    await a.start()
    run_id = await submit(broker.url, tmp_path)
    cmd = await a.next_command()
    assert isinstance(cmd, m.Assign)
    await a.report(run_id, 1, RunState.STARTING)
    await a.report(run_id, 1, RunState.RUNNING)
    await until(bus, run_id, lambda r: r.state is RunState.RUNNING)
    a.beating = False  # the host disappears
    b = FakeAgent(bus, "sim-b")
    await b.start()
    rec = await until(bus, run_id, lambda r: r.attempt == 2 and r.agent_id == "sim-b")
    assert rec.state is RunState.PREPARING
    agent_rec = codec.decode(m.AgentRecord, (await bus.agents.get("sim-a")).value or b"")
    assert agent_rec.state == "lost"
    await a.stop()
    await b.stop()


async def test_an_assign_that_went_missing_is_resent(
    scheduler: None, bus: Bus, broker: BrokerProcess, tmp_path: Path
) -> None:
    a = FakeAgent(bus, "sim-r")
    await a.start()
    run_id = await submit(broker.url, tmp_path)
    first = await a.next_command()
    assert isinstance(first, m.Assign)
    a.running.clear()  # pretend it never arrived: heartbeats do not mention it
    again = await a.next_command(timeout=10)
    assert isinstance(again, m.Assign) and (again.run_id, again.attempt) == (run_id, 1)
    await a.stop()


@pytest.fixture
async def brief_grace(broker: BrokerProcess) -> AsyncIterator[None]:
    """The scheduler believes within a second that a live agent no longer holds an attempt."""
    stop = asyncio.Event()
    ready = asyncio.Event()
    timing = Timing(
        lease_s=5.0, assign_ack_s=0.5, kill_grace_s=1.0, report_grace_s=1.0, unheld_s=1.0
    )
    cfg = SchedulerConfig(url=broker.url, timing=timing, tick_s=0.2)
    task = asyncio.create_task(run_scheduler(cfg, stop, ready))
    await asyncio.wait_for(ready.wait(), 10)
    yield
    stop.set()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


async def running_on(agent: FakeAgent, bus: Bus, url: str, tmp_path: Path) -> str:
    run_id = await submit(url, tmp_path)
    cmd = await agent.next_command()
    assert isinstance(cmd, m.Assign) and (cmd.run_id, cmd.attempt) == (run_id, 1)
    await agent.report(run_id, 1, RunState.STARTING)
    await agent.report(run_id, 1, RunState.RUNNING)
    await until(bus, run_id, lambda r: r.state is RunState.RUNNING)
    return run_id


async def test_an_attempt_that_ended_without_a_report_is_requeued_not_left_running(
    brief_grace: None, bus: Bus, broker: BrokerProcess, tmp_path: Path
) -> None:
    agent = FakeAgent(bus, "sim-1")
    await agent.start()
    run_id = await running_on(agent, bus, broker.url, tmp_path)
    # the agent's process ended and no report came (the agent lists it as finished only)
    agent.finished[run_id] = agent.running.pop(run_id)
    cmd = await agent.next_command()
    assert isinstance(cmd, m.Assign) and (cmd.run_id, cmd.attempt) == (run_id, 2)
    rec = await record(bus, run_id)
    (requeued,) = [h for h in rec.history if h.state is RunState.QUEUED and h.reason]
    assert requeued.reason == "attempt 1 ended on agent sim-1 without a report"
    await agent.stop()


async def test_cancel_of_a_run_whose_attempt_is_gone_ends_it_canceled(
    brief_grace: None, bus: Bus, broker: BrokerProcess, tmp_path: Path
) -> None:
    agent = FakeAgent(bus, "sim-1")
    await agent.start()
    run_id = await running_on(agent, bus, broker.url, tmp_path)
    async with await Client.connect(broker.url) as c:
        accepted = await c.cancel(run_id)
    assert accepted.state is RunState.RUNNING  # asked of the agent first
    stop = await agent.next_command()
    assert stop == m.Cancel(run_id=run_id, attempt=1, reason="canceled", epoch=1)
    # but the attempt is already gone (it ended with no report: the agent lists it as
    # finished only), so the Cancel stops nothing and no report will come
    agent.finished[run_id] = agent.running.pop(run_id)
    done = await until(bus, run_id, lambda r: r.state is RunState.CANCELED)
    assert done.attempt == 1
    await agent.stop()
