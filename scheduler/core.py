"""The scheduler's decisions: one closed set of events in, state changes and commands out.

``handle(state, event, now)`` and ``decide(state, now)`` are synchronous and do no I/O: no
clock reads, no id making, no NATS. The daemon (daemon.py) turns bus messages and timer ticks
into events, calls these, writes the runs marked dirty (compare-and-set), then carries out the
returned commands. State is changed in place (copying 100,000 runs per event would be the
bottleneck); only this module changes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from proto import messages as m
from proto.states import ON_AGENT, TERMINAL, RunState, can_transition, transition
from scheduler.model import AgentView, SchedulerState
from scheduler.placement import Plan, Slot, place
from scheduler.reconcile import Timing, reconcile
from scheduler.validate import check_spec

# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    request: m.SubmitRequest
    run_id: str  # made by the daemon (ids are not made here)
    reply_to: str


@dataclass(frozen=True)
class CancelAsked:
    run_id: str
    reply_to: str


@dataclass(frozen=True)
class TargetsAsked:
    reply_to: str


@dataclass(frozen=True)
class HeartbeatSeen:
    heartbeat: m.Heartbeat


@dataclass(frozen=True)
class ReportSeen:
    report: m.RunReport


@dataclass(frozen=True)
class Tick:
    pass


Event = Submitted | CancelAsked | TargetsAsked | HeartbeatSeen | ReportSeen | Tick

# --- commands --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendToAgent:
    agent_id: str
    command: m.Assign | m.Cancel
    run_id: str


@dataclass(frozen=True)
class Reply:
    reply_to: str
    message: msgspec.Struct
    run_id: str | None = None  # if set, only sent once that run's record is stored


@dataclass(frozen=True)
class PublishEof:
    run_id: str
    attempt: int


@dataclass(frozen=True)
class Log:
    """One line for the daemon's log, with ids bound."""

    event: str
    fields: dict[str, object] = field(default_factory=dict)


Command = SendToAgent | Reply | PublishEof | Log


@dataclass(frozen=True)
class Config:
    timing: Timing = field(default_factory=Timing)


# --- helpers ---------------------------------------------------------------------------------


def _move(rec: m.RunRecord, target: RunState, now: float, **changes: object) -> m.RunRecord:
    state = transition(rec.state, target)
    history = [*rec.history, m.StateChange(state=state, at=now, attempt=rec.attempt)]
    return msgspec.structs.replace(rec, state=state, history=history, **changes)


def _store(state: SchedulerState, rec: m.RunRecord) -> None:
    state.runs[rec.run_id] = rec
    state.dirty_runs.add(rec.run_id)


def _finish(state: SchedulerState, rec: m.RunRecord, cmds: list[Command]) -> None:
    """Bookkeeping common to every terminal transition."""
    state.assign_sent_at.pop(rec.run_id, None)
    state.why.pop(rec.run_id, None)
    cmds.append(PublishEof(run_id=rec.run_id, attempt=rec.attempt))
    cmds.append(
        Log("run ended", {"run_id": rec.run_id, "attempt": rec.attempt, "state": rec.state})
    )


def _requeue(state: SchedulerState, rec: m.RunRecord, why: str, now: float) -> m.RunRecord:
    moved = _move(
        rec,
        RunState.QUEUED,
        now,
        attempt=rec.attempt + 1,
        agent_id=None,
        agent_incarnation=None,
        assigned_at=None,
    )
    # the history entry of a requeue records the new attempt
    moved = msgspec.structs.replace(
        moved,
        history=[*rec.history, m.StateChange(state=RunState.QUEUED, at=now, attempt=moved.attempt)],
    )
    state.assign_sent_at.pop(rec.run_id, None)
    _store(state, moved)
    return moved


# --- handlers --------------------------------------------------------------------------------


def handle(state: SchedulerState, event: Event, now: float, config: Config) -> list[Command]:
    if isinstance(event, Submitted):
        return _on_submit(state, event, now)
    if isinstance(event, CancelAsked):
        return _on_cancel(state, event, now)
    if isinstance(event, TargetsAsked):
        return [Reply(event.reply_to, _targets(state))]
    if isinstance(event, HeartbeatSeen):
        return _on_heartbeat(state, event.heartbeat, now)
    if isinstance(event, ReportSeen):
        return _on_report(state, event.report, now)
    return []  # Tick: decide() does the periodic work


def _targets(state: SchedulerState) -> m.TargetsReply:
    names = state.known_targets()
    live: dict[str, int] = {}
    for a in state.agents.values():
        if not a.lost:
            live[a.target] = live.get(a.target, 0) + 1
    return m.TargetsReply(
        targets=[
            m.TargetInfo(name=n, kind="local" if n == "local" else "agents", agents=live.get(n, 0))
            for n in sorted(names)
        ]
    )


def _on_submit(state: SchedulerState, ev: Submitted, now: float) -> list[Command]:
    spec = ev.request.spec
    problem = check_spec(spec, state.known_targets())
    if problem is not None:
        return [Reply(ev.reply_to, problem)]
    if ev.request.validate_only:
        return [Reply(ev.reply_to, m.SubmitValid(target=spec.target))]
    if spec.submission_id is not None and spec.submission_id in state.submissions:
        existing = state.submissions[spec.submission_id]
        return [Reply(ev.reply_to, m.SubmitAccepted(run_id=existing, created=False))]
    rec = m.RunRecord(
        run_id=ev.run_id,
        spec=spec,
        state=RunState.QUEUED,
        attempt=1,
        created_at=now,
        history=[m.StateChange(state=RunState.QUEUED, at=now, attempt=1)],
    )
    _store(state, rec)
    if spec.submission_id is not None:
        state.submissions[spec.submission_id] = ev.run_id
    return [
        Reply(ev.reply_to, m.SubmitAccepted(run_id=ev.run_id), run_id=ev.run_id),
        Log("run queued", {"run_id": ev.run_id, "target": spec.target}),
    ]


def _on_cancel(state: SchedulerState, ev: CancelAsked, now: float) -> list[Command]:
    rec = state.runs.get(ev.run_id)
    if rec is None:
        return [Reply(ev.reply_to, m.ErrorReply(code="not_found", message=f"no run {ev.run_id!r}"))]
    if rec.state in TERMINAL:
        return [
            Reply(
                ev.reply_to,
                m.ErrorReply(
                    code="invalid_state", message=f"run {ev.run_id} already ended: {rec.state}"
                ),
            )
        ]
    cmds: list[Command] = []
    if rec.state is RunState.QUEUED:
        done = _move(rec, RunState.CANCELED, now, ended_at=now, cancel_requested=True)
        _store(state, done)
        _finish(state, done, cmds)
    else:
        asked = msgspec.structs.replace(rec, cancel_requested=True)
        _store(state, asked)
        assert rec.agent_id is not None
        cmds.append(
            SendToAgent(
                rec.agent_id,
                m.Cancel(run_id=rec.run_id, attempt=rec.attempt, reason="canceled"),
                rec.run_id,
            )
        )
    current = state.runs[ev.run_id].state
    cmds.append(
        Reply(ev.reply_to, m.CancelAccepted(run_id=ev.run_id, state=current), run_id=ev.run_id)
    )
    return cmds


def _on_heartbeat(state: SchedulerState, hb: m.Heartbeat, now: float) -> list[Command]:
    known = state.agents.get(hb.agent_id)
    running = frozenset((r.run_id, r.attempt) for r in hb.running)
    finished = frozenset((r.run_id, r.attempt) for r in hb.finished)
    if known is not None and known.incarnation == hb.incarnation and not known.lost:
        known.last_seen = now
        known.running = running
        known.finished = finished
        known.capacity = hb.capacity
        if not known.confirmed:
            known.confirmed = True
            state.dirty_agents.add(hb.agent_id)
        return []
    state.agents[hb.agent_id] = AgentView(
        agent_id=hb.agent_id,
        incarnation=hb.incarnation,
        target=hb.target,
        hostname=hb.hostname,
        capacity=hb.capacity,
        first_seen=now if known is None else known.first_seen,
        last_seen=now,
        running=running,
        finished=finished,
    )
    state.dirty_agents.add(hb.agent_id)
    return [
        Log(
            "agent joined" if known is None else "agent restarted",
            {"agent_id": hb.agent_id, "target": hb.target, "incarnation": hb.incarnation},
        )
    ]


def _stale(report: m.RunReport) -> list[Command]:
    if report.state in TERMINAL:
        return []
    return [
        SendToAgent(
            report.agent_id,
            m.Cancel(run_id=report.run_id, attempt=report.attempt, reason="stale"),
            report.run_id,
        ),
        Log(
            "stale report refused",
            {"run_id": report.run_id, "attempt": report.attempt, "agent_id": report.agent_id},
        ),
    ]


def _on_report(state: SchedulerState, rep: m.RunReport, now: float) -> list[Command]:
    rec = state.runs.get(rep.run_id)
    if (
        rec is None
        or rec.attempt != rep.attempt
        or rec.agent_id != rep.agent_id
        or rec.state not in ON_AGENT
    ):
        return _stale(rep)
    if rep.state == rec.state or not can_transition(rec.state, rep.state):
        return []  # a duplicate, or a report this attempt has already moved past
    changes: dict[str, object] = {}
    if rep.state is RunState.RUNNING:
        changes["started_at"] = rep.at
    if rep.state in TERMINAL:
        changes.update(
            ended_at=rep.at, exit_code=rep.exit_code, error=rep.error, artifacts=rep.artifacts
        )
    moved = _move(rec, rep.state, rep.at, **changes)
    _store(state, moved)
    cmds: list[Command] = []
    if moved.state in TERMINAL:
        _finish(state, moved, cmds)
    return cmds


# --- the periodic decision -------------------------------------------------------------------


def slots(state: SchedulerState) -> list[Slot]:
    free: dict[str, Slot] = {
        a.agent_id: Slot(
            agent_id=a.agent_id,
            target=a.target,
            free_cpus=a.capacity.cpus,
            free_memory_mb=a.capacity.memory_mb,
            free_gpus=a.capacity.gpus,
            total=a.capacity,
            available=not a.lost and a.confirmed,
        )
        for a in state.agents.values()
    }
    for rec in state.runs.values():
        if rec.state in ON_AGENT and rec.agent_id in free:
            s = free[rec.agent_id]
            res = rec.spec.resources
            s.free_cpus -= res.cpus
            s.free_memory_mb -= res.memory_mb
            s.free_gpus -= res.gpus
    return list(free.values())


def decide(state: SchedulerState, now: float, config: Config) -> list[Command]:
    """Reconcile observations with records, then place what is queued."""
    cmds: list[Command] = []
    rec_out = reconcile(
        state.runs, state.agents, state.assign_sent_at, now, state.started_at, config.timing
    )
    for agent_id in rec_out.lost_agents:
        state.agents[agent_id].lost = True
        state.dirty_agents.add(agent_id)
        cmds.append(Log("agent lost", {"agent_id": agent_id}))
    for run_id, why in rec_out.requeue:
        moved = _requeue(state, state.runs[run_id], why, now)
        cmds.append(Log("run requeued", {"run_id": run_id, "attempt": moved.attempt, "why": why}))
    for run_id, err in rec_out.fail:
        done = _move(state.runs[run_id], RunState.FAILED, now, ended_at=now, error=err)
        _store(state, done)
        _finish(state, done, cmds)
    for run_id in rec_out.cancel:
        done = _move(state.runs[run_id], RunState.CANCELED, now, ended_at=now)
        _store(state, done)
        _finish(state, done, cmds)
    for run_id in rec_out.resend:
        rec = state.runs[run_id]
        assert rec.agent_id is not None and rec.agent_incarnation is not None
        state.assign_sent_at[run_id] = now
        cmds.append(SendToAgent(rec.agent_id, _assign(rec), run_id))
    for agent_id, ref in rec_out.stop_stale:
        cmds.append(
            SendToAgent(
                agent_id,
                m.Cancel(run_id=ref.run_id, attempt=ref.attempt, reason="stale"),
                ref.run_id,
            )
        )

    pending = [r for r in state.runs.values() if r.state is RunState.QUEUED]
    if not pending:
        state.why.clear()
        return cmds
    plan: Plan = place(pending, slots(state))
    for p in plan.placements:
        rec = state.runs[p.run_id]
        agent = state.agents[p.agent_id]
        moved = _move(
            rec,
            RunState.PREPARING,
            now,
            agent_id=p.agent_id,
            agent_incarnation=agent.incarnation,
            assigned_at=now,
        )
        _store(state, moved)
        state.assign_sent_at[p.run_id] = now
        cmds.append(SendToAgent(p.agent_id, _assign(moved), p.run_id))
    state.why = plan.unplaced
    if plan.placements:
        cmds.append(Log("placed", {"runs": len(plan.placements), "waiting": len(plan.unplaced)}))
    return cmds


def _assign(rec: m.RunRecord) -> m.Assign:
    assert rec.agent_incarnation is not None
    return m.Assign(
        run_id=rec.run_id, attempt=rec.attempt, incarnation=rec.agent_incarnation, spec=rec.spec
    )


def forget_finished(state: SchedulerState, run_id: str) -> None:
    """Drop a run whose terminal record has been stored (called by the daemon)."""
    rec = state.runs.get(run_id)
    if rec is not None and rec.state in TERMINAL:
        del state.runs[run_id]
