"""Sweeps in the scheduler's core: a sweep run and its trials as run records.

Pure: records in, records and commands out. A sweep run (``RunRecord.sweep``) has no attempt
of its own: it is created Running when accepted (as a child run is: the lifecycle has no
Queued -> Running edge, and a sweep is never placed) and ends, through Finalizing, once it is
done and none of its trials is active. Its trials are ordinary runs (placed, reconciled,
retried like any) whose ``parent_id`` names the sweep and whose ``trial`` holds the index and
parameters; their ids are ``proto.sweeps.trial_run_id``, so a trial issued again after a
restart is the same record, never a second run.

In each decide pass, before placement (so new trials are placed in the same pass),
:func:`step_sweeps` calls the controller (``sweeps.controller.sweep_step``) for every sweep
whose trials or metrics changed: ``start`` becomes new trial records, ``stop`` a cancel that
carries the reason (an early-terminated trial ends Canceled with kind ``early_terminated``),
``done`` the sweep's ``ended_because``. The metrics come from the stream
(``sweep_feed.py`` -> ``MetricsSeen`` -> :func:`on_metrics`), never from polling a trial.
"""

from __future__ import annotations

import dataclasses

import msgspec

from sortie.proto import messages as m
from sortie.proto.gang import agent_ids
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import TERMINAL, RunState
from sortie.proto.sweeps import argument_name, trial_arguments, trial_run_id
from sortie.scheduler.events import Command, Log, MetricsSeen, SetTrialObjective
from sortie.scheduler.model import SchedulerState, SweepTrack, trial_view
from sortie.scheduler.runs import cancel, end, move, store
from sortie.scheduler.sweeps.controller import (
    NewTrial,
    SweepView,
    best_trial,
    objective,
    sweep_step,
)
from sortie.scheduler.sweeps.validate import problem
from sortie.scheduler.targets import RUN_BASED

CANCELED_BECAUSE = "canceled"


# --- accepting a sweep -----------------------------------------------------------------------


def refusal(spec: m.RunSpec, sweep: m.SweepSpec) -> m.ErrorReply | None:
    """Why a sweep cannot be accepted (its template's own checks come first), or None."""
    why = problem(sweep)
    if why is None and spec.target == RUN_BASED:
        why = (
            f"a sweep's trials cannot use run-based creation (target {RUN_BASED}): create a "
            "cluster (sortie compute create) and name it as the target"
        )
    if why is None:
        given = {argument_name(p) for p in sweep.space} & set(spec.arguments)
        if given:
            why = (
                f"the configuration's arguments already give {', '.join(sorted(given))}: a "
                "sweep appends each trial's parameters as arguments; remove them there"
            )
    if why is None:
        return None
    return m.ErrorReply(code="bad_request", message=f"sweep refused: {why}")


def create(
    state: SchedulerState, run_id: str, spec: m.RunSpec, sweep: m.SweepSpec, now: float
) -> m.RunRecord:
    """The sweep's run record (it keeps the trials' template spec), stored, Running."""
    rec = m.RunRecord(
        run_id=run_id,
        spec=spec,
        state=RunState.RUNNING,
        attempt=1,
        created_at=now,
        started_at=now,
        history=[m.StateChange(state=RunState.RUNNING, at=now, attempt=1, reason="sweep")],
        tags=dict(spec.tags),
        sweep=m.Sweep(spec=sweep),
    )
    store(state, rec)
    state.sweeps[run_id] = SweepTrack()
    return rec


def cancel_sweep(state: SchedulerState, rec: m.RunRecord, now: float, cmds: list[Command]) -> None:
    """A user canceled the sweep: its active trials are canceled, none is started, and the
    sweep ends Canceled once they have stopped."""
    assert rec.sweep is not None
    sweep = msgspec.structs.replace(
        rec.sweep, ended_because=rec.sweep.ended_because or CANCELED_BECAUSE
    )
    store(state, msgspec.structs.replace(rec, cancel_requested=True, sweep=sweep))
    track = state.sweeps.setdefault(rec.run_id, SweepTrack())
    for trial_id in sorted(track.trials):
        trial = state.runs.get(trial_id)
        if trial is not None and trial.state not in TERMINAL and not trial.cancel_requested:
            cancel(state, trial, now, cmds)
    _refresh(state, track)
    _settle(state, rec.run_id, track, now, cmds)


def stop_trial(
    state: SchedulerState,
    rec: m.RunRecord,
    *,
    kind: ErrorKind,
    reason: str,
    now: float,
    cmds: list[Command],
) -> None:
    """Stop a trial like a cancel (its agent: SIGTERM, grace, SIGKILL). Stopped by a policy,
    it ends Canceled with kind ``early_terminated`` and the reason (``runs.apply_report``
    keeps it over the agent's ``canceled``), and its script's ``Run.stop_reason()`` says
    ``early_terminated``."""
    if rec.state in TERMINAL or rec.cancel_requested:
        return
    if kind is ErrorKind.EARLY_TERMINATED:
        rec = msgspec.structs.replace(rec, error=m.RunError(kind=kind, message=reason))
        cancel(state, rec, now, cmds, reason="early_terminated")
    else:
        cancel(state, rec, now, cmds)
    cmds.append(Log("trial stopped", {"run_id": rec.run_id, "kind": kind, "reason": reason}))


# --- the metrics stream ----------------------------------------------------------------------


def sweep_of(run_id: str) -> str:
    """The sweep a trial's run id names (``trial_run_id``'s inverse)."""
    return run_id.rpartition("_")[0]


def on_metrics(state: SchedulerState, ev: MetricsSeen) -> list[Command]:
    """A trial's points of the primary metric: kept for its current attempt only (a requeued
    trial starts its intervals again), from the agent that holds it."""
    track = state.sweeps.get(sweep_of(ev.run_id))
    if track is None or ev.run_id not in track.trials:
        return []
    rec = state.runs.get(ev.run_id)
    attempt = rec.attempt if rec is not None else track.attempts.get(ev.run_id)
    if ev.attempt != attempt:
        return []
    if rec is not None and ev.writer is not None and ev.writer not in agent_ids(rec):
        return [Log("metrics of an agent not holding the trial ignored", {"run_id": ev.run_id})]
    if track.metric_attempt.get(ev.run_id) != ev.attempt:
        track.metrics[ev.run_id] = []
        track.metric_attempt[ev.run_id] = ev.attempt
    track.metrics[ev.run_id].extend(ev.values)
    track.fresh.add(ev.run_id)
    track.changed = True
    return []


# --- the decide pass -------------------------------------------------------------------------


def prune(state: SchedulerState) -> None:
    """Forget what was loaded for sweeps that have ended (their trials' records)."""
    for sweep_id in list(state.sweeps):
        rec = state.runs.get(sweep_id)
        if rec is None or rec.sweep is None or rec.state in TERMINAL:
            del state.sweeps[sweep_id]


def step_sweeps(state: SchedulerState, now: float, cmds: list[Command]) -> None:
    """Step every active sweep whose trials or metrics changed (or whose time is up), then
    end those that are done and have no active trial."""
    for sweep_id in sorted(state.sweeps):
        rec = state.runs.get(sweep_id)
        if rec is None or rec.sweep is None or rec.state in TERMINAL:
            del state.sweeps[sweep_id]
            continue
        track = state.sweeps[sweep_id]
        _refresh(state, track)
        if state.sweep_feed_ready and (track.changed or _past_deadline(rec, now)):
            _step(state, rec, track, now, cmds)
            track.changed = False
            track.fresh.clear()
        _settle(state, sweep_id, track, now, cmds)


def _past_deadline(rec: m.RunRecord, now: float) -> bool:
    assert rec.sweep is not None
    limit = rec.sweep.spec.max_duration_s
    return rec.sweep.ended_because is None and limit is not None and now >= rec.created_at + limit


def _refresh(state: SchedulerState, track: SweepTrack) -> None:
    """The trials' states and attempts from their records (those still in memory)."""
    for run_id, view in track.trials.items():
        if view.state in TERMINAL:
            continue
        rec = state.runs.get(run_id)
        if rec is None:
            continue
        if rec.state is not view.state:
            track.trials[run_id] = dataclasses.replace(view, state=rec.state)
            track.changed = True
        if track.attempts.get(run_id) != rec.attempt:
            track.attempts[run_id] = rec.attempt
            track.changed = True


def _issued(sweep: m.Sweep, track: SweepTrack) -> int:
    """Trials issued: the record's count, or more when trials stored before a crash were
    not counted yet (trials are written before the sweep's record)."""
    highest = max((v.index for v in track.trials.values()), default=-1)
    return max(sweep.issued, highest + 1)


def _step(
    state: SchedulerState,
    rec: m.RunRecord,
    track: SweepTrack,
    now: float,
    cmds: list[Command],
) -> None:
    sweep = rec.sweep
    assert sweep is not None
    issued = _issued(sweep, track)
    view = SweepView(
        run_id=rec.run_id,
        spec=sweep.spec,
        started_at=rec.created_at,
        issued=issued,
        cancel_requested=rec.cancel_requested,
    )
    trials = sorted(track.trials.values(), key=lambda t: t.index)
    step = sweep_step(view, trials, track.metrics, now, track.memo)
    if sweep.ended_because is None and not rec.cancel_requested:
        for new in step.start:
            if trial_run_id(rec.run_id, new.index) not in track.trials:
                _submit_trial(state, rec, track, new, now=now, cmds=cmds)
                issued = max(issued, new.index + 1)
    for stop in step.stop:
        trial = state.runs.get(stop.run_id)
        if trial is not None and trial.parent_id == rec.run_id:
            stop_trial(state, trial, kind=stop.kind, reason=stop.reason, now=now, cmds=cmds)
    _refresh(state, track)
    best = best_trial(
        sweep.spec, sorted(track.trials.values(), key=lambda t: t.index), track.metrics
    )
    updated = msgspec.structs.replace(
        sweep,
        issued=issued,
        best_run_id=best[0] if best else sweep.best_run_id,
        best_objective=best[1] if best else sweep.best_objective,
        ended_because=sweep.ended_because or step.done,
    )
    if updated != sweep:
        store(state, msgspec.structs.replace(state.runs[rec.run_id], sweep=updated))
    if step.done and not sweep.ended_because:
        cmds.append(Log("sweep done", {"run_id": rec.run_id, "because": step.done}))
    _record_objectives(state, sweep.spec, track, cmds)


def _submit_trial(
    state: SchedulerState,
    sweep_rec: m.RunRecord,
    track: SweepTrack,
    new: NewTrial,
    *,
    now: float,
    cmds: list[Command],
) -> None:
    """A new trial: the sweep's template with its parameters appended as arguments, Queued
    (placed in this same pass), its tags inherited."""
    tpl = sweep_rec.spec
    run_id = trial_run_id(sweep_rec.run_id, new.index)
    trial = m.Trial(index=new.index, params=dict(new.params))
    spec = msgspec.structs.replace(
        tpl, arguments=[*tpl.arguments, *trial_arguments(trial.params)], submission_id=None
    )
    rec = m.RunRecord(
        run_id=run_id,
        spec=spec,
        state=RunState.QUEUED,
        attempt=1,
        created_at=now,
        history=[m.StateChange(state=RunState.QUEUED, at=now, attempt=1)],
        tags=dict(sweep_rec.tags),
        parent_id=sweep_rec.run_id,
        trial=trial,
    )
    store(state, rec)
    track.trials[run_id] = trial_view(rec, trial)
    track.attempts[run_id] = 1
    cmds.append(Log("trial queued", {"run_id": run_id, "index": new.index}))


def _record_objectives(
    state: SchedulerState, spec: m.SweepSpec, track: SweepTrack, cmds: list[Command]
) -> None:
    """Each trial's objective and intervals so far, on its record: in memory, or the stored
    one of a trial that ended before its last metrics were read (the two streams are read
    apart)."""
    for run_id in sorted(track.fresh):
        rec = state.runs.get(run_id)
        values = track.metrics.get(run_id, [])
        best = objective(spec, values)
        if rec is None and run_id in track.trials:
            cmds.append(SetTrialObjective(run_id=run_id, objective=best, intervals=len(values)))
            continue
        if rec is None or rec.trial is None:
            continue
        trial = msgspec.structs.replace(rec.trial, objective=best, intervals=len(values))
        if trial != rec.trial:
            store(state, msgspec.structs.replace(rec, trial=trial))


def _settle(
    state: SchedulerState, sweep_id: str, track: SweepTrack, now: float, cmds: list[Command]
) -> None:
    """End the sweep once it is done (or canceled) and none of its trials is active:
    Canceled when a user canceled it; Completed when a trial completed or reported the
    primary metric; Failed otherwise."""
    rec = state.runs[sweep_id]
    sweep = rec.sweep
    assert sweep is not None
    if rec.state in TERMINAL or sweep.ended_because is None:
        return
    if any(v.state not in TERMINAL for v in track.trials.values()):
        return
    del state.sweeps[sweep_id]
    if rec.cancel_requested:
        end(state, rec, RunState.CANCELED, now, cmds)
        return
    done = [v for v in track.trials.values() if v.state is RunState.COMPLETED]
    if done or sweep.best_run_id is not None:
        end(state, move(rec, RunState.FINALIZING, now), RunState.COMPLETED, now, cmds)
        return
    failed = sum(1 for v in track.trials.values() if v.state is RunState.FAILED)
    message = (
        f"no trial completed or reported {sweep.spec.primary_metric} "
        f"({failed} of {len(track.trials)} failed); see the trials' errors"
    )
    error = m.RunError(kind=ErrorKind.EXIT_CODE, message=message)
    end(state, rec, RunState.FAILED, now, cmds, error=error)
