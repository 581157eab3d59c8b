"""Short heartbeats (``Heartbeat.listed`` False): an agent holding many runs names its
listing by digest instead of sending it every beat. The scheduler's core takes a short
heartbeat as the listing it last heard in full with that digest, and, where it did not hear
that one, as a sign of life only: nothing it knows of the agent's runs changes until the next
full listing."""

from __future__ import annotations

import msgspec

from sortie.agents.core import listing_digest
from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.scheduler import core
from sortie.scheduler.model import AgentView, SchedulerState
from sortie.scheduler.reconcile import Timing
from tests.builders import heartbeat, spec

CFG = core.Config(timing=Timing(lease_s=10, assign_ack_s=3, unheld_s=20))


def full(running: list[tuple[str, int]], at: float, incarnation: str = "i1") -> m.Heartbeat:
    hb = heartbeat(incarnation=incarnation, running=running, cpus=4, at=at)
    return msgspec.structs.replace(hb, listing=listing_digest(hb.running, hb.finished))


def short(running: list[tuple[str, int]], at: float, incarnation: str = "i1") -> m.Heartbeat:
    listing = full(running, at, incarnation).listing
    hb = heartbeat(incarnation=incarnation, cpus=4, at=at)
    return msgspec.structs.replace(hb, listing=listing, listed=False)


def beat(s: SchedulerState, hb: m.Heartbeat, now: float) -> list[core.Command]:
    return core.handle(s, core.HeartbeatSeen(heartbeat=hb), now, CFG)


def placed(now: float = 1.0) -> SchedulerState:
    """An agent holding r1 (its Assign confirmed by a full heartbeat)."""
    s = SchedulerState(started_at=0.0)
    beat(s, full([], 0.0), 0.0)
    req = m.SubmitRequest(spec=spec())
    core.handle(s, core.Submitted(request=req, run_id="r1", reply_to="r"), now, CFG)
    cmds = core.decide(s, now, CFG)
    assign = next(c.command for c in cmds if isinstance(c, core.SendToAgent))
    assert isinstance(assign, m.Assign) and assign.short_heartbeats
    beat(s, full([("r1", 1)], now), now)
    core.decide(s, now, CFG)
    return s


def test_a_short_heartbeat_stands_for_the_listing_last_heard_in_full() -> None:
    s = placed()
    for t in range(2, 60):  # well past the Assign's confirmation and the unheld bound
        beat(s, short([("r1", 1)], float(t)), float(t))
        cmds = core.decide(s, float(t), CFG)
        assert not [c for c in cmds if isinstance(c, core.SendToAgent)], t
    agent = s.agents["a1"]
    assert agent.running == frozenset({("r1", 1)}) and agent.last_seen == 59.0
    assert not agent.lost
    assert s.runs["r1"].state is RunState.PREPARING and s.runs["r1"].attempt == 1


def test_a_short_heartbeat_naming_an_unheard_listing_keeps_the_agent_alive_only() -> None:
    s = placed()
    # the agent finished r1 and its full listing was lost: its digest is new here
    beat(s, short([], 2.0), 2.0)
    agent = s.agents["a1"]
    assert agent.running == frozenset({("r1", 1)}) and agent.last_seen == 2.0
    # still known as the listing heard: another short one for it is not taken as r1 held
    assert agent.listing == full([("r1", 1)], 0.0).listing
    core.decide(s, 2.0, CFG)
    assert s.runs["r1"].state is RunState.PREPARING
    # judged from the next full listing: r1 is no longer held
    beat(s, full([], 3.0), 3.0)
    assert s.agents["a1"].running == frozenset()
    assert "r1" in s.relisted


def test_a_short_heartbeat_from_an_agent_not_heard_in_full_registers_nothing() -> None:
    s = SchedulerState(started_at=0.0)
    assert beat(s, short([("r1", 1)], 0.0), 0.0) == []
    assert "a1" not in s.agents
    # nor does one from a new incarnation of a known agent replace it
    s = placed()
    beat(s, short([], 2.0, incarnation="i2"), 2.0)
    agent = s.agents["a1"]
    assert (agent.incarnation, agent.last_seen) == ("i1", 1.0)


def test_an_agent_restored_after_a_scheduler_start_waits_for_its_full_listing() -> None:
    s = SchedulerState(started_at=0.0)
    rec = AgentView(
        agent_id="a1",
        incarnation="i1",
        target="local",
        hostname="h",
        capacity=m.Capacity(cpus=4, memory_mb=8192),
        first_seen=0.0,
        last_seen=0.0,
    ).record()
    s.agents.put("a1", AgentView.restored(rec, 0.0))
    beat(s, short([("r1", 1)], 1.0), 1.0)
    assert not s.agents["a1"].confirmed and s.agents["a1"].last_seen == 0.0
    beat(s, full([("r1", 1)], 2.0), 2.0)
    agent = s.agents["a1"]
    assert agent.confirmed and agent.running == frozenset({("r1", 1)})
