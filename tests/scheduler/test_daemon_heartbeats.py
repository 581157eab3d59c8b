"""Heartbeats reach the scheduler's loop as the latest one of each agent, handled at the next
cycle whatever else is queued: thousands of agents beating every second, or a long cycle,
must not leave a live agent's heartbeat waiting behind other events (it was judged lost)."""

from __future__ import annotations

from pathlib import Path

from nats.aio.msg import Msg

from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.scheduler import core
from sortie.scheduler.daemon import Daemon, SchedulerConfig
from tests.builders import heartbeat


def beat(agent_id: str, cpus: float) -> Msg:
    hb = heartbeat(agent_id, target="box", cpus=cpus)
    return Msg(_client=None, subject=subjects.heartbeat(agent_id), data=codec.encode(hb))  # type: ignore[arg-type]  # no client needed to read it


async def test_each_agent_counts_once_per_cycle_and_its_latest_wins(
    bus: Bus, tmp_path: Path
) -> None:
    daemon = Daemon(bus, SchedulerConfig(url="-", data_dir=tmp_path))
    await daemon.load()
    try:
        started = [daemon.queue.get_nowait()]  # the load's Started
        for i in range(1, 301):  # three hundred beats of two agents, one cycle's worth
            await daemon._on_heartbeat(beat("a1", cpus=i))
            await daemon._on_heartbeat(beat("a2", cpus=1000 + i))
        assert daemon.queue.qsize() == 1  # one wake-up, not 600 events
        await daemon.cycle([*started, daemon.queue.get_nowait()])
        agents = daemon.state.agents
        assert agents["a1"].capacity.cpus == 300 and agents["a2"].capacity.cpus == 1300
        assert not daemon.heartbeats  # all handled
        assert isinstance(started[0][0], core.Started)
    finally:
        await daemon.feed.close()


async def test_a_heartbeat_that_does_not_decode_or_names_another_agent_is_left(
    bus: Bus, tmp_path: Path
) -> None:
    daemon = Daemon(bus, SchedulerConfig(url="-", data_dir=tmp_path))
    await daemon.load()
    try:
        started = [daemon.queue.get_nowait()]
        await daemon._on_heartbeat(beat("a1", cpus=2))
        garbled = Msg(_client=None, subject=subjects.heartbeat("a2"), data=b"{not json")  # type: ignore[arg-type]
        await daemon._on_heartbeat(garbled)
        spoofed = beat("a3", cpus=8)
        spoofed.subject = subjects.heartbeat("a4")  # a3's heartbeat on a4's subject
        await daemon._on_heartbeat(spoofed)
        await daemon.cycle([*started, daemon.queue.get_nowait()])
        assert set(daemon.state.agents) == {"a1"}
        assert daemon._bad_subjects == {subjects.heartbeat("a2"), subjects.heartbeat("a4")}
    finally:
        await daemon.feed.close()


async def test_a_full_listing_followed_by_short_heartbeats_in_one_cycle_is_handled_first(
    bus: Bus, tmp_path: Path
) -> None:
    """A short heartbeat names the listing of the last full one: a cycle that gets both (a
    full one, then short ones before it runs) handles the full one first, not the latest
    alone (the scheduler would never learn the listing)."""
    import msgspec

    from sortie.agents.core import listing_digest

    daemon = Daemon(bus, SchedulerConfig(url="-", data_dir=tmp_path))
    await daemon.load()
    try:
        started = [daemon.queue.get_nowait()]
        hb = heartbeat("a1", target="box", running=[("x", 1)])
        digest = listing_digest(hb.running, hb.finished)
        listed = msgspec.structs.replace(hb, listing=digest)
        shorts = [
            msgspec.structs.replace(hb, listing=digest, listed=False, running=[], sent_at=t)
            for t in (1.0, 2.0)
        ]
        for one in (listed, *shorts):
            data = codec.encode(one)
            await daemon._on_heartbeat(
                Msg(_client=None, subject=subjects.heartbeat("a1"), data=data)
            )  # type: ignore[arg-type]
        await daemon.cycle([*started, daemon.queue.get_nowait()])
        agent = daemon.state.agents["a1"]
        assert agent.running == frozenset({("x", 1)}) and agent.listing == digest
        assert not daemon.heartbeats and not daemon.listings
    finally:
        await daemon.feed.close()
