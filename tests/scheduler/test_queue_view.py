"""The queue in placement order (``QueueRequest``) and what each agent holds (``AgentList``):
the scheduler's answers, driven with plain events and a hand-held clock."""

from __future__ import annotations

from typing import Literal

import pytest

from sortie.proto import messages as m
from sortie.proto.queue import QueueReply, QueueRequest
from sortie.scheduler import core
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.reconcile import Timing
from tests.builders import heartbeat, spec

CFG = core.Config(timing=Timing(lease_s=10, assign_ack_s=3))


def submit(s: SchedulerState, run_id: str, now: float, **kw: object) -> None:
    req = m.SubmitRequest(spec=spec(**kw))
    core.handle(s, core.Submitted(request=req, run_id=run_id, reply_to="r"), now, CFG)


def ask(s: SchedulerState, request: m.Message, now: float = 5.0) -> object:
    event: core.Event = (
        core.QueueAsked(request=request, reply_to="q")
        if isinstance(request, QueueRequest)
        else core.AgentAsked(request=request, reply_to="q")  # type: ignore[arg-type]  # an AgentRequest here
    )
    (reply,) = [c.message for c in core.handle(s, event, now, CFG) if isinstance(c, core.Reply)]
    return reply


def cluster() -> SchedulerState:
    """One 2-CPU agent running ``big`` (2 CPUs); queued behind it: ``low`` (priority 0, first
    submitted), ``high`` (priority 5) and ``late``."""
    s = SchedulerState(started_at=0.0)
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat(cpus=2)), 0.0, CFG)
    submit(s, "big", 1.0, resources=m.Resources(cpus=2))
    core.decide(s, 1.0, CFG)
    submit(s, "low", 2.0)
    submit(s, "high", 3.0, priority=5)
    submit(s, "late", 4.0)
    core.decide(s, 4.0, CFG)
    return s


# (request, the runs listed in order, total)
QUEUE_CASES = [
    (QueueRequest(), ["high", "low", "late"], 3),
    (QueueRequest(limit=2), ["high", "low"], 3),
    (QueueRequest(target="local"), ["high", "low", "late"], 3),
    (QueueRequest(target="elsewhere"), [], 0),
]


@pytest.mark.parametrize(("request_", "listed", "total"), QUEUE_CASES)
def test_queue_lists_runs_in_placement_order(
    request_: QueueRequest, listed: list[str], total: int
) -> None:
    reply = ask(cluster(), request_)
    assert isinstance(reply, QueueReply)
    assert [r.run_id for r in reply.runs] == listed
    assert [r.position for r in reply.runs] == list(range(1, len(listed) + 1))
    assert reply.total == total


def test_each_queued_run_carries_its_counted_reasons_and_why_sentence() -> None:
    reply = ask(cluster(), QueueRequest())
    assert isinstance(reply, QueueReply)
    by_id = {r.run_id: r for r in reply.runs}
    assert by_id["late"].resources == m.Resources()
    assert by_id["low"].reasons == {"CPUs busy": 1}
    assert by_id["low"].summary == (
        "queued: no agent of target 'local' can take it now (1 CPUs busy)"
    )
    assert (by_id["high"].priority, by_id["high"].created_at) == (5, 3.0)


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_a_limit_out_of_range_is_refused_with_the_range(limit: int) -> None:
    reply = ask(cluster(), QueueRequest(limit=limit))
    assert reply == m.ErrorReply(code="bad_request", message=f"queue limit {limit}: give 1 to 1000")


# (action asked before the list, then the agent's status)
STATUS_CASES = [(None, "ready"), ("cordon", "cordoned"), ("drain", "draining")]


@pytest.mark.parametrize(("action", "status"), STATUS_CASES)
def test_agent_list_says_what_each_agent_holds_and_its_status(
    action: Literal["cordon", "drain"] | None, status: m.AgentStatus
) -> None:
    s = cluster()
    if action is not None:
        ask(s, m.AgentAdmin(agent_id="a1", action=action))
    reply = ask(s, m.AgentList())
    assert isinstance(reply, m.AgentListReply)
    (usage,) = reply.usage
    assert usage == m.AgentUsage(
        agent_id="a1", status=status, used=m.Capacity(cpus=2, memory_mb=0), runs=["big"]
    )


def test_a_lost_agent_is_listed_lost() -> None:
    s = cluster()
    core.decide(s, 100.0, CFG)  # no heartbeat for longer than the lease
    reply = ask(s, m.AgentList(), now=100.0)
    assert isinstance(reply, m.AgentListReply)
    assert [u.status for u in reply.usage] == ["lost"]


def test_a_run_whose_target_has_no_agent_says_so_and_since_when() -> None:
    s = cluster()
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat("g1", target="gpu")), 4.0, CFG)
    s.agents["g1"].lost = True
    submit(s, "orphan", 5.0, target="gpu")
    core.decide(s, 5.0, CFG)
    reply = ask(s, QueueRequest(target="gpu"), now=65.0)
    assert isinstance(reply, QueueReply)
    (entry,) = reply.runs
    assert (entry.run_id, entry.position) == ("orphan", 1)
    assert entry.summary.startswith(
        "queued: target gpu has no agent: its agent g1 was lost (last heard from)"
    )
    assert entry.summary.endswith("(since 00:00:04 UTC, 61 s ago)")
