"""Reconciliation: compare what should be (run records) with what was observed (heartbeats).

Pure: takes plain data and the time, returns buckets of decisions, one per run or agent. It
never mutates its inputs; core.py applies the result.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sortie.proto import messages as m
from sortie.proto.gang import members
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import ON_AGENT, RunState
from sortie.scheduler.model import AgentView, ends_with_parent


@dataclass(frozen=True)
class Timing:
    lease_s: float = 10.0  # an agent unheard of for this long is lost (takes no new runs)
    assign_ack_s: float = 3.0  # an Assign not seen in a heartbeat after this is re-sent
    # A lost agent's runs are requeued only after lease + kill grace: by then an agent that
    # is alive but cut off has stopped them itself (agents fence themselves at their lease),
    # so the new attempt never runs beside the old one.
    kill_grace_s: float = 10.0
    # A live agent that no longer holds an attempt its run's record is on (the attempt ended
    # and no report came, or the Assign never took) is believed after this: the run is
    # requeued (canceled if that was asked, failed if finalizing), never left active.
    report_grace_s: float = 60.0  # since the agent first listed the attempt as finished
    unheld_s: float = 60.0  # since the Assign, while the agent lists it nowhere


Held = tuple[str, tuple[str, int]]  # an agent, and an attempt (run id, attempt) it lists


@dataclass(frozen=True)
class Scope:
    """What changed, where the caller keeps track (``core.decide``): a reconciliation then
    judges only these, not every run and every attempt every agent lists. A run settled (its
    one agent live and listing it) stays settled until its record changes, its agent's listing
    of it changes or its agent is lost; every other run is judged again each time."""

    runs: Collection[str]  # run ids: record changed, listing changed, or unsettled last time
    held: Collection[Held]  # attempts newly listed, moved off an agent, or stale last time
    on: Callable[[str], Iterable[str]]  # the runs on an agent (judged while it is lost)


@dataclass
class Reconciliation:
    lost_agents: list[str] = field(default_factory=list)
    requeue: list[tuple[str, str]] = field(default_factory=list)  # run id, why
    fail: list[tuple[str, m.RunError]] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)  # cancel asked and its agent is gone
    resend: list[tuple[str, int]] = field(default_factory=list)  # run id, rank: Assign again
    stop_stale: list[tuple[str, m.RunRef]] = field(default_factory=list)  # agent, attempt
    unsettled: list[str] = field(default_factory=list)  # runs to judge again next time


@dataclass(frozen=True)
class _Clock:
    """The time, and what it says about agents: lost after the lease, fenced after the kill
    grace. A scheduler that was away gives every agent a full lease after it comes back."""

    now: float
    started_at: float
    timing: Timing

    def lost(self, agent: AgentView) -> bool:
        heard = max(agent.last_seen, self.started_at)
        return self.now - heard > self.timing.lease_s

    def fenced(self, agent: AgentView) -> bool:
        """Has a lost agent had time to stop its runs itself (lease, then the kill grace)?"""
        heard = max(agent.last_seen, self.started_at)
        return self.now - heard > self.timing.lease_s + self.timing.kill_grace_s

    def unheard_may_live(self) -> bool:
        """May an agent this scheduler has not heard of still be alive and running its runs?"""
        return self.now - self.started_at <= self.timing.lease_s + self.timing.kill_grace_s


def reconcile(
    runs: Mapping[str, m.RunRecord],
    agents: Mapping[str, AgentView],
    assign_sent_at: Mapping[str, float],
    *,
    now: float,
    started_at: float,
    timing: Timing,
    scope: Scope | None = None,
) -> Reconciliation:
    """``scope``: what changed since the last reconciliation (None: judge everything)."""
    clock = _Clock(now, started_at, timing)
    out = Reconciliation()
    gone: set[str] = set()
    for agent in agents.values():
        if agent.lost:
            gone.add(agent.agent_id)
        elif clock.lost(agent):
            out.lost_agents.append(agent.agent_id)
            gone.add(agent.agent_id)

    for run in _judged(runs, scope, gone):
        if run.state not in ON_AGENT or run.sweep is not None or run.pipeline is not None:
            continue  # (a sweep or pipeline has no attempt of its own: its trials, steps do)
        if ends_with_parent(run):
            continue  # (a child run has no attempt of its own: it ends with its parent)
        gang = run.gang or members(run)  # (a record from before gangs has none stored)
        if len(gang) == 1 and _confirmed_alone(run, gang[0], agents, gone):
            continue
        out.unsettled.append(run.run_id)
        waiting, why = _gang_verdict(run, gang, agents, gone, clock)
        if waiting:
            continue
        if why is not None:
            _broken(run, why, out)
            continue
        sent = assign_sent_at.get(run.run_id, run.assigned_at or 0.0)
        out.resend += _unacked(run, gang, agents, sent, timing.assign_ack_s)

    out.stop_stale = _stale(runs, agents, gone, None if scope is None else scope.held)
    return out


def _judged(
    runs: Mapping[str, m.RunRecord], scope: Scope | None, gone: set[str]
) -> Iterable[m.RunRecord]:
    """Every run, or the scope's and those on agents judged lost."""
    if scope is None:
        return runs.values()
    ids = dict.fromkeys(scope.runs)
    for agent_id in sorted(gone):
        ids.update(dict.fromkeys(scope.on(agent_id)))
    return [runs[k] for k in ids if k in runs]


def _confirmed_alone(
    run: m.RunRecord, only: m.GangMember, agents: Mapping[str, AgentView], gone: set[str]
) -> bool:
    """The common case, cheaply: one member, on an agent known, live, same incarnation and
    running the attempt (one it lists as finished is judged by :func:`_unheld`)."""
    view = agents.get(only.agent_id)
    return (
        view is not None
        and view.confirmed
        and view.incarnation == only.incarnation
        and only.agent_id not in gone
        and (run.run_id, run.attempt) in view.running
    )


def _gang_verdict(
    run: m.RunRecord,
    gang: Sequence[m.GangMember],
    agents: Mapping[str, AgentView],
    gone: set[str],
    clock: _Clock,
) -> tuple[bool, str | None]:
    """(wait, why): wait while a member's agent may still be stopping the run itself; else
    why the run lost a member (its agent lost or restarted), or None if none was lost."""
    for member in gang:
        view = agents.get(member.agent_id)
        if member.state is RunState.COMPLETED:
            continue  # this node's part is done; losing it now changes nothing
        if view is not None and member.agent_id in gone and not clock.fenced(view):
            return True, None  # lost, but it may still be stopping the run itself
        if view is None and clock.unheard_may_live():
            # an agent this scheduler has not heard of (its record was not stored, or a
            # restarted scheduler has yet to hear it): it may be alive and running this,
            # so it gets a lease and the kill grace, like any agent, before a requeue
            return True, None
        if view is None or member.agent_id in gone:
            return False, f"agent {member.agent_id} was lost"
        if view.confirmed and view.incarnation != member.incarnation:
            return False, f"agent {member.agent_id} restarted"
        why = _unheld(run, view, clock) if view.confirmed else None
        if why is not None:
            return False, why
    return False, None


def _unheld(run: m.RunRecord, view: AgentView, clock: _Clock) -> str | None:
    """Why a live agent is believed no longer to hold ``run``'s attempt, or None: it listed
    the attempt as finished for ``report_grace_s`` and no report came, or it has listed it
    nowhere for ``unheld_s`` since the Assign (resent meanwhile)."""
    ref = (run.run_id, run.attempt)
    if ref in view.running:
        return None
    since = view.finished_since.get(ref, clock.now) if ref in view.finished else None
    if since is not None:
        if clock.now - since <= clock.timing.report_grace_s:
            return None
        return f"attempt {run.attempt} ended on agent {view.agent_id} without a report"
    assigned = run.assigned_at if run.assigned_at is not None else view.last_seen
    if view.last_seen - assigned <= clock.timing.unheld_s:
        return None
    return f"agent {view.agent_id} does not hold attempt {run.attempt}"


def _broken(run: m.RunRecord, why: str, out: Reconciliation) -> None:
    """A run that lost a member: canceled if that was asked, failed if it was finalizing,
    else requeued."""
    if run.cancel_requested:
        out.cancel.append(run.run_id)
    elif run.state is RunState.FINALIZING:
        out.fail.append(
            (run.run_id, m.RunError(kind=ErrorKind.LOST, message=f"{why} while finalizing"))
        )
    else:
        out.requeue.append((run.run_id, why))


def _unacked(
    run: m.RunRecord,
    gang: Sequence[m.GangMember],
    agents: Mapping[str, AgentView],
    sent: float,
    ack_s: float,
) -> list[tuple[str, int]]:
    """The ranks whose agent has heartbeated for ``ack_s`` since the Assign was sent without
    showing the run: the Assign is sent again."""
    ref = (run.run_id, run.attempt)
    out: list[tuple[str, int]] = []
    for member in gang:
        view = agents[member.agent_id]
        if not view.confirmed or ref in view.running or ref in view.finished:
            continue
        if view.last_seen - sent > ack_s:
            out.append((run.run_id, member.rank))
    return out


def _stale(
    runs: Mapping[str, m.RunRecord],
    agents: Mapping[str, AgentView],
    gone: set[str],
    held: Collection[Held] | None,
) -> list[tuple[str, m.RunRef]]:
    """The attempts live agents list that are not (or no longer) theirs, to be stopped: of
    every attempt listed, or of ``held`` (those still listed)."""
    if held is None:
        held = [(a.agent_id, ref) for a in agents.values() for ref in a.running]
    stale = set()
    for agent_id, ref in held:
        agent = agents.get(agent_id)
        if agent is None or agent_id in gone or not agent.confirmed or ref not in agent.running:
            continue
        if _not_its_own(agent_id, ref, runs):
            stale.add((agent_id, ref))
    return [
        (agent_id, m.RunRef(run_id=run_id, attempt=attempt))
        for agent_id, (run_id, attempt) in sorted(stale)
    ]


def _not_its_own(me: str, ref: tuple[str, int], runs: Mapping[str, m.RunRecord]) -> bool:
    """Is an attempt an agent lists not (or no longer) its to run?"""
    run_id, attempt = ref
    held = runs.get(run_id)
    if (
        held is not None
        and held.attempt == attempt
        and len(held.gang) == 1
        and held.gang[0].agent_id == me
        and held.state in ON_AGENT
    ):
        return False  # the common case: its own single-node run
    return (
        held is None
        or held.attempt != attempt
        or held.state not in ON_AGENT
        or not any(x.agent_id == me for x in held.gang or members(held))
    )
