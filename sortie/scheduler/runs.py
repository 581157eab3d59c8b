"""Changing run records: every transition goes through here (and proto.states.transition)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from sortie.proto import messages as m
from sortie.proto.gang import members
from sortie.proto.run_errors import RETRY, ErrorKind, Retry
from sortie.proto.run_index import LATEST_METRICS
from sortie.proto.states import RunState, transition
from sortie.scheduler.compact import Shared
from sortie.scheduler.events import Command, Log, PublishEof, SendToAgent
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.run_notes import end_children

EARLY_TERMINATED = ErrorKind.EARLY_TERMINATED


def move(
    rec: m.RunRecord,
    target: RunState,
    now: float,
    *,
    reason: str | None = None,
    shared: Shared | None = None,
    **changes: Any,
) -> m.RunRecord:
    """``rec`` moved to ``target`` at ``now`` (its history says so), with ``changes``; its
    state change is one ``shared`` holds for every run moved alike."""
    state = transition(rec.state, target)
    attempt = int(changes.get("attempt", rec.attempt))
    change = m.StateChange(state=state, at=now, attempt=attempt, reason=reason)
    history = [*rec.history, change if shared is None else shared.one(change)]
    return msgspec.structs.replace(rec, state=state, history=history, **changes)


def store(state: SchedulerState, rec: m.RunRecord) -> None:
    state.runs.put(rec.run_id, rec)


def finish(state: SchedulerState, rec: m.RunRecord, cmds: list[Command]) -> None:
    """Bookkeeping common to every terminal transition."""
    state.assign_sent_at.pop(rec.run_id, None)
    state.why.forget(rec.run_id)
    if rec.run_id in state.children:
        end_children(state, rec, rec.history[-1].at if rec.history else rec.created_at)
    cmds.append(PublishEof(run_id=rec.run_id, attempt=rec.attempt))
    cmds.append(
        Log("run ended", {"run_id": rec.run_id, "attempt": rec.attempt, "state": rec.state})
    )


def requeue(
    state: SchedulerState, rec: m.RunRecord, why: str, now: float, **changes: Any
) -> m.RunRecord:
    """Back to Queued as a new attempt (lost agent, preemption, or a retry)."""
    moved = move(
        rec,
        RunState.QUEUED,
        now,
        reason=why,
        attempt=rec.attempt + 1,
        agent_id=None,
        agent_incarnation=None,
        assigned_at=None,
        gang=[],
        master_port=None,
        engine_job=None,  # the new attempt gets a job of its own
        **changes,
    )
    state.assign_sent_at.pop(rec.run_id, None)
    if rec.run_id in state.children:  # that attempt's children end with it
        end_children(state, moved, now)
    store(state, moved)
    return moved


def end(
    state: SchedulerState,
    rec: m.RunRecord,
    target: RunState,
    now: float,
    cmds: list[Command],
    **changes: Any,
) -> m.RunRecord:
    done = move(rec, target, now, ended_at=changes.pop("ended_at", now), **changes)
    store(state, done)
    finish(state, done, cmds)
    return done


def cancel(
    state: SchedulerState,
    rec: m.RunRecord,
    now: float,
    cmds: list[Command],
    reason: Literal["canceled", "early_terminated"] = "canceled",
) -> None:
    """Cancel a run wherever it is: at once if queued, through its agent otherwise (``reason``
    is what its script's ``Run.stop_reason()`` says)."""
    if rec.state is RunState.QUEUED:
        end(state, rec, RunState.CANCELED, now, cmds, cancel_requested=True)
        return
    store(state, msgspec.structs.replace(rec, cancel_requested=True))
    cmds.extend(
        SendToAgent(
            member.agent_id,
            m.Cancel(run_id=rec.run_id, attempt=rec.attempt, reason=reason),
            rec.run_id,
        )
        for member in members(rec)
    )


def with_engine_job(rec: m.RunRecord, rep: m.RunReport) -> m.RunRecord:
    """The run with its attempt's engine job as the report gives it (an engine agent sends its
    report again, in the same state, whenever the job's state or reason changes): the same
    record when the report carries none or nothing new."""
    if rep.engine_job is None or rep.engine_job == rec.engine_job:
        return rec
    return msgspec.structs.replace(rec, engine_job=rep.engine_job)


def apply_report(
    state: SchedulerState, rec: m.RunRecord, rep: m.RunReport, cmds: list[Command]
) -> None:
    """A report for the current attempt: move the run, retrying or requeueing where due."""
    if rep.metrics and rep.metrics != rec.metrics:  # the latest values its script logged
        latest = dict(list(rep.metrics.items())[:LATEST_METRICS])  # bounded whatever was sent
        rec = msgspec.structs.replace(rec, metrics=latest)
    kind = rep.error.kind if rep.error is not None else None
    if rep.state is RunState.QUEUED:
        # the agent gave the attempt back: preempted (free of max_retries), or another reason
        extra: dict[str, Any] = {}
        if kind == ErrorKind.PREEMPTED:
            # the attempt ends Preempted; the run goes on as a new attempt
            rec = move(rec, RunState.PREEMPTED, rep.at, reason="node preempted", error=rep.error)
            extra = {"preemptions": rec.preemptions + 1, "error": None}
        why = str(kind) if kind is not None else "returned by its agent"
        moved = requeue(state, rec, why, rep.at, **extra)
        cmds.append(
            Log("run requeued", {"run_id": rec.run_id, "attempt": moved.attempt, "why": kind})
        )
        return
    if (
        rep.state is RunState.FAILED
        and kind is not None
        and RETRY[kind] is Retry.MAX_RETRIES
        and rec.retries_used < rec.spec.max_retries
        and not rec.cancel_requested
    ):
        n = rec.retries_used + 1
        detail = rep.error.message if rep.error else ""
        why = f"retry {n} of {rec.spec.max_retries} after {kind}: {detail}"
        moved = requeue(state, rec, why[:300], rep.at, retries_used=n, exit_code=rep.exit_code)
        cmds.append(Log("run retried", {"run_id": rec.run_id, "attempt": moved.attempt}))
        return
    changes: dict[str, Any] = {}
    if rep.state is RunState.RUNNING:
        changes["started_at"] = rep.at
    error = rep.error
    if rep.state is RunState.CANCELED and rec.error and rec.error.kind is EARLY_TERMINATED:
        error = rec.error  # stopped by its sweep's policy (sweep_runs.stop_trial): say why
    if rep.state in (RunState.COMPLETED, RunState.FAILED, RunState.CANCELED):
        end(
            state,
            rec,
            rep.state,
            rep.at,
            cmds,
            ended_at=rep.at,
            exit_code=rep.exit_code,
            error=error,
            artifacts=rep.artifacts,
            # a pipeline step's stored output directories (only a completed step's count)
            data_outputs=rep.data_outputs if rep.state is RunState.COMPLETED else {},
            # a completed container run: the image it ran (a step's cache is keyed on it)
            image_id=rep.image_id if rep.state is RunState.COMPLETED else None,
        )
        return
    store(state, move(rec, rep.state, rep.at, **changes))
