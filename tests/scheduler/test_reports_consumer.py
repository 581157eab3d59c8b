"""The leader's reports consumer (one per leader epoch, on a work-queue stream): a scheduler
resets its own and older epochs' consumers, never a newer leader's, and makes its own again
when it goes. Found by the chaos harness: a leader resumed from a pause, not yet knowing it
was deposed, deleted the new leader's consumer; the new leader's fetches failed for 17 s,
and runs whose agent restarted meanwhile were run again although they had completed."""

from __future__ import annotations

from pathlib import Path

from nats.js.api import AckPolicy, ConsumerConfig

from sortie.bus.broker import BrokerProcess
from sortie.bus.connection import Bus
from sortie.proto import subjects
from sortie.proto.leadership import Leadership
from sortie.proto.states import RunState
from sortie.scheduler.daemon import Daemon, SchedulerConfig
from tests.harness import FakeAgent, scheduler_running
from tests.scheduler.test_daemon_fencing import submit, until


async def consumers(bus: Bus) -> set[str]:
    return {i.name or "" for i in await bus.js.consumers_info(subjects.STREAM_REPORTS)}


def leading(epoch: int) -> Leadership:
    return Leadership(
        holder="h", epoch=epoch, host="x", pid=1, acquired_at=0.0, renewed_at=0.0, lease_s=10.0
    )


async def test_a_scheduler_resets_its_own_and_older_epochs_consumers_only(
    bus: Bus, tmp_path: Path
) -> None:
    daemon = Daemon(bus, SchedulerConfig(url="-", data_dir=tmp_path))
    await daemon.load()
    try:
        newer = subjects.reports_consumer(3)
        config = ConsumerConfig(durable_name=newer, ack_policy=AckPolicy.EXPLICIT)
        await bus.js.add_consumer(subjects.STREAM_REPORTS, config)
        daemon.fence.leader = leading(2)  # deposed by epoch 3, and does not know it yet
        await daemon._reset_report_consumers()
        assert await consumers(bus) == {newer}
        daemon.fence.leader = leading(3)  # its own epoch's is reset (unacked reports come again)
        await daemon._reset_report_consumers()
        assert await consumers(bus) == set()
    finally:
        await daemon.feed.close()


async def test_the_leader_makes_its_reports_consumer_again_when_it_goes(
    broker: BrokerProcess, bus: Bus, tmp_path: Path
) -> None:
    agent = FakeAgent(bus, "sim-1")
    await agent.start()
    src = tmp_path / "src"
    src.mkdir()
    config = SchedulerConfig(url=broker.url, data_dir=tmp_path / "sched", tick_s=0.2)
    async with scheduler_running(config):
        run_id = await submit(broker.url, src)
        assert (await agent.next_command()).run_id == run_id
        await agent.report(run_id, 1, RunState.STARTING)
        await until(bus, run_id, lambda r: r.state is RunState.STARTING)
        (own,) = await consumers(bus)
        await bus.js.delete_consumer(subjects.STREAM_REPORTS, own)
        await agent.report(run_id, 1, RunState.RUNNING)
        await until(bus, run_id, lambda r: r.state is RunState.RUNNING, 15)
        assert await consumers(bus) == {own}
    await agent.stop()
