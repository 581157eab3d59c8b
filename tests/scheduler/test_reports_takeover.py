"""Reports a scheduler fetched and never acknowledged (it was killed or deposed in between)
are applied by the next leader at once, not after the broker's ack wait: meanwhile the run's
agent may restart, and the run would be run again although its script had completed (the
chaos harness saw it with leader kills). Real broker, real scheduler, a simulated agent."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

from sortie.bus.broker import BrokerProcess
from sortie.bus.connection import Bus
from sortie.proto import subjects
from sortie.proto.states import RunState
from sortie.scheduler.daemon import SchedulerConfig
from tests.harness import FakeAgent, scheduler_running
from tests.scheduler.test_daemon_fencing import submit, until

ACK_WAIT_S = 30  # the reports consumer's (daemon._reports)


def scheduler(broker: BrokerProcess, data_dir: Path) -> AbstractAsyncContextManager[None]:
    return scheduler_running(SchedulerConfig(url=broker.url, data_dir=data_dir, tick_s=0.2))


async def test_reports_fetched_by_a_scheduler_that_died_are_applied_by_the_next_at_once(
    broker: BrokerProcess, bus: Bus, tmp_path: Path
) -> None:
    agent = FakeAgent(bus, "sim-1")
    await agent.start()
    src = tmp_path / "src"
    src.mkdir()
    async with scheduler(broker, tmp_path / "a"):
        run_id = await submit(broker.url, src)
        assert (await agent.next_command()).run_id == run_id
        for state in (RunState.STARTING, RunState.RUNNING):
            await agent.report(run_id, 1, state)
        await until(bus, run_id, lambda r: r.state is RunState.RUNNING)
    # the script completes; a scheduler fetches the reports and dies before acknowledging
    await agent.report(run_id, 1, RunState.FINALIZING)
    await agent.report(run_id, 1, RunState.COMPLETED, exit_code=0)
    dying = await bus.js.pull_subscribe(  # the first leader's consumer (epoch 1)
        subjects.REPORTS_ALL, durable=subjects.reports_consumer(1), stream=subjects.STREAM_REPORTS
    )
    fetched = await dying.fetch(batch=10, timeout=5)
    assert len(fetched) == 2  # and never acknowledged

    async with scheduler(broker, tmp_path / "b"):
        # well before the broker would deliver them again (ACK_WAIT_S after the fetch)
        done = await until(bus, run_id, lambda r: r.state is RunState.COMPLETED, ACK_WAIT_S / 2)
    assert done.attempt == 1
    await agent.stop()
