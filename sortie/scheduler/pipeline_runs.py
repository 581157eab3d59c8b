"""Pipelines in the scheduler's core: a pipeline run and its steps as run records.

Pure: records in, records and commands out. A pipeline run (``RunRecord.pipeline``) has no
attempt of its own: it is created Running when accepted (as a sweep is) and never placed or
reconciled. Each step, once its inputs exist, is an ordinary run (placed, reconciled, retried
like any) whose ``parent_id`` names the pipeline and whose ``step`` is the step's name; its id
is ``proto.pipelines.step_run_id``, so a step submitted again after a restart is the same
record, never a second run.

In each decide pass, before placement (so new steps are placed in the same pass),
:func:`step_pipelines` calls the controller (``pipelines.controller.pipeline_step``) for every
pipeline whose steps' runs changed (or that is new): ``submit`` becomes new step records,
``statuses`` go onto the pipeline's record, ``cache`` into the step cache (the daemon writes it
after the runs), ``done`` ends the pipeline run.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from sortie.proto import messages as m
from sortie.proto import pipelines as p
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import TERMINAL, RunState
from sortie.scheduler.events import Command, Log
from sortie.scheduler.model import PipelineTrack, SchedulerState, step_view
from sortie.scheduler.pipelines.controller import (
    PipelinePlan,
    PipelineView,
    SubmitStep,
    pipeline_step,
)
from sortie.scheduler.pipelines.validate import problem
from sortie.scheduler.runs import cancel, end, move, store
from sortie.scheduler.targets import RUN_BASED

# --- accepting a pipeline --------------------------------------------------------------------


def refusal(request: p.PipelineRequest) -> m.ErrorReply | None:
    """Why a pipeline cannot be accepted as a whole (each step's run spec is checked as any
    run's, by the core), or None."""
    why = problem(request)
    if why is None:
        based = [s.name for s in request.spec.steps if s.run.target == RUN_BASED]
        if based:
            why = (
                f"step {based[0]} cannot use run-based creation (target {RUN_BASED}): create a "
                "cluster (sortie compute create) and name it as the step's target"
            )
    if why is None:
        return None
    return m.ErrorReply(code="bad_request", message=f"pipeline refused: {why}")


def create(
    state: SchedulerState,
    run_id: str,
    spec: m.RunSpec,
    request: p.PipelineRequest,
    now: float,
    *,
    images: Mapping[str, p.ImageLookup] | None = None,
) -> m.RunRecord:
    """The pipeline's run record, stored, Running, every step WAITING; ``images``: what the
    daemon looked up of its tagged container steps' images (``Pipeline.images``)."""
    pipe = request.spec
    names = {s.name for s in pipe.steps}
    pipeline = p.Pipeline(
        spec=pipe,
        parameters={**pipe.parameters, **request.parameters},
        regenerate_outputs=request.regenerate_outputs,
        rerun_of=request.rerun_of,
        steps={s.name: p.StepStatus() for s in pipe.steps},
        images={n: found for n, found in (images or {}).items() if n in names},
    )
    rec = m.RunRecord(
        run_id=run_id,
        spec=spec,
        state=RunState.RUNNING,
        attempt=1,
        created_at=now,
        started_at=now,
        history=[m.StateChange(state=RunState.RUNNING, at=now, attempt=1, reason="pipeline")],
        tags=dict(spec.tags),
        pipeline=pipeline,
    )
    store(state, rec)
    state.pipelines[run_id] = PipelineTrack()
    return rec


def cancel_pipeline(
    state: SchedulerState, rec: m.RunRecord, now: float, cmds: list[Command]
) -> None:
    """A user canceled the pipeline: its active steps are canceled, none is started, and the
    pipeline ends Canceled once they have stopped (the next decide pass)."""
    store(state, msgspec.structs.replace(rec, cancel_requested=True))
    track = state.pipelines.setdefault(rec.run_id, PipelineTrack())
    for view in track.steps.values():
        step = state.runs.get(view.run_id)
        if step is not None and step.state not in TERMINAL and not step.cancel_requested:
            cancel(state, step, now, cmds)
    track.changed = True


# --- the decide pass -------------------------------------------------------------------------


def prune(state: SchedulerState) -> None:
    """Forget what was loaded for pipelines that have ended (their steps' runs)."""
    for run_id in list(state.pipelines):
        rec = state.runs.get(run_id)
        if rec is None or rec.pipeline is None or rec.state in TERMINAL:
            del state.pipelines[run_id]


def step_pipelines(state: SchedulerState, now: float, cmds: list[Command]) -> None:
    """Step every active pipeline whose steps' runs changed (or that is new)."""
    for run_id in sorted(state.pipelines):
        rec = state.runs.get(run_id)
        if rec is None or rec.pipeline is None or rec.state in TERMINAL:
            del state.pipelines[run_id]
            continue
        track = state.pipelines[run_id]
        _refresh(state, track)
        if track.changed:
            track.changed = False
            _step(state, rec, track, now, cmds)


def _refresh(state: SchedulerState, track: PipelineTrack) -> None:
    """The steps' runs from their records (those still in memory)."""
    for name, view in track.steps.items():
        if view.state in TERMINAL:
            continue
        rec = state.runs.get(view.run_id)
        if rec is not None and rec.state is not view.state:
            track.steps[name] = step_view(rec)
            track.changed = True


def _step(
    state: SchedulerState, rec: m.RunRecord, track: PipelineTrack, now: float, cmds: list[Command]
) -> None:
    pipeline = rec.pipeline
    assert pipeline is not None
    view = PipelineView(
        run_id=rec.run_id,
        experiment=rec.spec.experiment,
        pipeline=pipeline,
        cancel_requested=rec.cancel_requested,
        tags=rec.tags,
    )
    plan = pipeline_step(view, dict(track.steps), state.step_cache, state.last_keys)
    if not rec.cancel_requested:
        for new in plan.submit:
            if new.name not in track.steps:  # (the controller never submits a step twice)
                _submit_step(state, rec, track, new, now=now, cmds=cmds)
    _keep_cache(state, plan)
    if plan.statuses:
        steps = {**pipeline.steps, **plan.statuses}
        rec = msgspec.structs.replace(rec, pipeline=msgspec.structs.replace(pipeline, steps=steps))
        store(state, rec)
        reused = sorted(n for n, s in plan.statuses.items() if s.state is p.StepState.REUSED)
        if reused:
            cmds.append(Log("steps reused", {"run_id": rec.run_id, "steps": reused}))
    if plan.done is not None and not any(v.state not in TERMINAL for v in track.steps.values()):
        _end(state, rec, plan, now, cmds)


def _submit_step(
    state: SchedulerState,
    pipeline_rec: m.RunRecord,
    track: PipelineTrack,
    new: SubmitStep,
    *,
    now: float,
    cmds: list[Command],
) -> None:
    """A step's run: its spec as the controller gave it (the pipeline's experiment and
    tags, no submission id), Queued: placed in this same pass."""
    rec = m.RunRecord(
        run_id=new.run_id,
        spec=new.spec,
        state=RunState.QUEUED,
        attempt=1,
        created_at=now,
        history=[m.StateChange(state=RunState.QUEUED, at=now, attempt=1)],
        tags=dict(new.spec.tags),
        parent_id=pipeline_rec.run_id,
        step=new.name,
    )
    store(state, rec)
    track.steps[new.name] = step_view(rec)
    cmds.append(Log("step queued", {"run_id": new.run_id, "step": new.name}))


def _keep_cache(state: SchedulerState, plan: PipelinePlan) -> None:
    for key, entry in plan.cache.items():
        if isinstance(entry, p.CachedStep):
            state.step_cache.put(key, entry)
        else:
            state.last_keys.put(key, entry)


def _end(
    state: SchedulerState, rec: m.RunRecord, plan: PipelinePlan, now: float, cmds: list[Command]
) -> None:
    """End the pipeline run as the controller says: Completed, Failed (naming the step and
    why), or Canceled."""
    state.pipelines.pop(rec.run_id, None)
    if plan.done is RunState.COMPLETED:
        end(state, move(rec, RunState.FINALIZING, now), RunState.COMPLETED, now, cmds)
        return
    if plan.done is RunState.CANCELED:
        end(state, rec, RunState.CANCELED, now, cmds)
        return
    message = plan.reason or "a step failed; see the steps' errors"
    error = m.RunError(kind=ErrorKind.EXIT_CODE, message=message)
    end(state, rec, RunState.FAILED, now, cmds, error=error)
