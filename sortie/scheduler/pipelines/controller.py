"""``pipeline_step``: from a pipeline, its steps' runs and the step cache, which steps to
submit, which to mark reused or skipped, and whether the pipeline is done. Pure: no I/O, no
clock, no randomness.

The scheduler's core calls it for each active pipeline whose steps' runs changed state (and
once when the pipeline is accepted); it writes ``submit`` as step runs (``step_run_id``:
``Queued``, ``parent_id`` the pipeline, ``RunRecord.step`` the name, the resolved spec) BEFORE
the pipeline's record says they run, records ``statuses`` on the pipeline's record, keeps the
cache entries a completed step makes (``CachedStep`` under ``cache_id(key)``, ``LastKey``
under ``last_key_id``), and ends the pipeline run when ``done`` is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sortie.proto import messages as m
from sortie.proto.pipelines import (
    STEP_SUCCEEDED,
    STEP_TERMINAL,
    CachedStep,
    ImageLookup,
    LastKey,
    Pipeline,
    StepKey,
    StepSpec,
    StepState,
    StepStatus,
    cache_id,
    last_key_id,
    pinned,
    resolve_params,
    step_run_id,
    step_transition,
)
from sortie.proto.states import TERMINAL, RunState
from sortie.scheduler.pipelines.dag import Dag, build, order
from sortie.scheduler.pipelines.keys import changed, step_key

_STOPPED = frozenset({StepState.FAILED, StepState.CANCELED, StepState.SKIPPED})


@dataclass(frozen=True)
class PipelineView:
    """The pipeline as the controller sees it."""

    run_id: str
    experiment: str
    pipeline: Pipeline  # spec, parameters, regenerate_outputs, each step's status so far
    cancel_requested: bool = False  # a user canceled the pipeline: start nothing more
    # the pipeline run's tags (its RunSpec.tags): each step's run gets them (added for M)
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StepRunView:
    """The run of a step that was submitted (by run id)."""

    run_id: str
    state: RunState
    data_outputs: Mapping[str, str]  # what it stored (when Completed)
    error: m.RunError | None = None
    # when it ended (RunRecord.ended_at): a completed step's CachedStep.completed_at, as the
    # controller reads no clock (added for M; None counts as 0.0)
    ended_at: float | None = None
    # a container run: the ID of the image it ran (RunRecord.image_id); a tagged step's cache
    # entry is keyed on it, whatever was looked up when the pipeline was accepted
    image_id: str | None = None


@dataclass(frozen=True)
class SubmitStep:
    """Submit this step now: ``spec`` is its run's spec with parameters put in and
    ``data_inputs`` / ``data_outputs`` set; ``key`` what its reuse is decided by."""

    name: str
    run_id: str
    spec: m.RunSpec
    key: StepKey


@dataclass(frozen=True)
class PipelinePlan:
    submit: list[SubmitStep] = field(default_factory=list)
    # every step whose status changes now (RUNNING for those in submit, REUSED, SKIPPED,
    # COMPLETED / FAILED / CANCELED from their runs), by name
    statuses: dict[str, StepStatus] = field(default_factory=dict)
    # new step-cache entries: cache_id(key) -> CachedStep for each step that completed now,
    # and last_key_id(...) -> LastKey for each step that ran now (see proto/pipelines.py)
    cache: dict[str, CachedStep | LastKey] = field(default_factory=dict)
    # the pipeline run's end state (Completed, Failed, Canceled) once every step has ended;
    # None: it goes on
    done: RunState | None = None
    reason: str | None = None  # why it ended so (Failed, Canceled): which step, what


def pipeline_step(
    view: PipelineView,
    runs: Mapping[str, StepRunView],
    cache: Mapping[str, CachedStep],
    last_keys: Mapping[str, LastKey],
) -> PipelinePlan:
    """``runs``: the runs of the steps submitted so far, by step name (a step whose status is
    RUNNING but has no entry here is taken as still running). ``cache``: the step cache's
    ``CachedStep`` entries by ``cache_id``; ``last_keys``: ``LastKey`` entries by
    ``last_key_id``. A step leaves WAITING only when every step it depends on (producers of
    its inputs, its run_after) succeeded; never twice; downstream of a failure it is SKIPPED.

    One pass over the steps in topological order, so what a step becomes now is seen by the
    steps after it in the same call: a reused step's downstream is decided at once (a fully
    reused pipeline is done in one call), and a failure's downstream is skipped at once. A
    WAITING step whose run is already in ``runs`` (the caller wrote it, then stopped before
    the pipeline's record said so) goes RUNNING without being submitted again.

    A cancel (``cancel_requested``) moves every WAITING step to CANCELED and starts nothing;
    the caller cancels the runs of the RUNNING steps, and those steps go CANCELED (or
    whatever their runs ended as) from their runs' ends, in later calls. The pipeline is done
    once every step is terminal: Completed when all completed or were reused, Canceled when
    canceled, else Failed (the reason names the failed, canceled and skipped steps).

    The spec must have passed ``validate.problem`` (a cycle raises ``ValueError``).
    """
    spec = view.pipeline.spec
    dag = build(spec)
    now = {n: view.pipeline.steps.get(n, StepStatus()) for n in dag.steps}
    p = _Pass(view, dag, {s.name: s for s in spec.steps}, runs, cache, last_keys, now)
    for name in order(dag):
        _advance(p, name)
    done, reason = _end(view, dag, now)
    return PipelinePlan(
        submit=p.submit, statuses=p.changed, cache=p.new_cache, done=done, reason=reason
    )


@dataclass
class _Pass:
    """One call's working data: the inputs, the statuses as they stand now (the view's with
    this call's changes), and the plan being made."""

    view: PipelineView
    dag: Dag
    specs: dict[str, StepSpec]
    runs: Mapping[str, StepRunView]
    cache: Mapping[str, CachedStep]
    last_keys: Mapping[str, LastKey]
    now: dict[str, StepStatus]
    submit: list[SubmitStep] = field(default_factory=list)
    changed: dict[str, StepStatus] = field(default_factory=dict)
    new_cache: dict[str, CachedStep | LastKey] = field(default_factory=dict)

    def move(self, name: str, new: StepState, **changes: Any) -> StepStatus:
        """The step moved to ``new`` (the lifecycle's table refuses a wrong move)."""
        old = self.now[name]
        status = msgspec.structs.replace(old, state=step_transition(old.state, new), **changes)
        self.now[name] = self.changed[name] = status
        return status


def _advance(p: _Pass, name: str) -> None:
    status = p.now[name]
    if status.state is StepState.WAITING:
        status = _leave_waiting(p, name)
    if status.state is StepState.RUNNING:
        _run_ended(p, name)


def _leave_waiting(p: _Pass, name: str) -> StepStatus:
    # on a cancel, a step whose run exists is adopted below (RUNNING): the caller cancels
    # that run as it does any RUNNING step's
    if p.view.cancel_requested and name not in p.runs:
        return p.move(name, StepState.CANCELED, reason="the pipeline was canceled")
    needs = p.dag.needs[name]
    if any(p.now[n].state in _STOPPED for n in needs):
        return p.move(name, StepState.SKIPPED, reason=_skip_reason(p, name))
    if all(p.now[n].state in STEP_SUCCEEDED for n in needs):
        return _start(p, name)
    return p.now[name]


def _skip_reason(p: _Pass, name: str) -> str:
    """Names the failed or canceled steps upstream that stop this one (through skipped ones)."""
    roots: set[str] = set()
    seen: set[str] = set()
    todo = [n for n in p.dag.needs[name] if p.now[n].state in _STOPPED]
    while todo:
        up = todo.pop()
        if up in seen:
            continue
        seen.add(up)
        if p.now[up].state is StepState.SKIPPED:
            todo.extend(n for n in p.dag.needs[up] if p.now[n].state in _STOPPED)
        else:
            roots.add(up)
    if not roots:  # skipped ones with no failure above them: a record from elsewhere
        roots = {n for n in p.dag.needs[name] if p.now[n].state in _STOPPED}
    index = {n: i for i, n in enumerate(p.dag.steps)}
    said = [f"{n!r} {_VERB[p.now[n].state]}" for n in sorted(roots, key=index.__getitem__)]
    return "not run: upstream step " + ", ".join(said)


_VERB = {
    StepState.FAILED: "failed",
    StepState.CANCELED: "was canceled",
    StepState.SKIPPED: "was skipped",
}


def _start(p: _Pass, name: str) -> StepStatus:
    """Every step it needs succeeded: reuse an earlier run with its key, or run it."""
    step, pipe = p.specs[name], p.view.pipeline
    arguments = resolve_params(step.run.arguments, {**pipe.spec.parameters, **pipe.parameters})
    inputs: dict[str, str] = {}
    for data in step.inputs:
        producer = p.dag.producer[data]
        content = p.now[producer].outputs.get(data)
        if content is None:  # a record from elsewhere: a succeeded step lacks its output
            why = f"not run: upstream step {producer!r} has no output {data!r}"
            return p.move(name, StepState.SKIPPED, reason=why)
        inputs[data] = content
    lookup = _image_lookup(step, pipe)
    key = step_key(step, arguments, inputs, None if lookup is None else lookup.image_id)
    last_id = last_key_id(p.view.experiment, pipe.spec.name, name)
    last = p.last_keys.get(last_id)
    because = _ran_because(step, pipe, key, p.cache.get(cache_id(key)), last, lookup=lookup)
    adopted = name in p.runs  # its run was written before a restart: it is that run
    if because is None and adopted:
        because = "it was submitted before the scheduler restarted"
    if because is None:
        cached = p.cache[cache_id(key)]
        return p.move(
            name,
            StepState.REUSED,
            run_id=cached.run_id,
            key=key,
            changed=[],
            outputs={o: cached.outputs[o] for o in step.outputs},
        )
    run_id = step_run_id(p.view.run_id, name)
    if not adopted:  # never a second run of one step
        spec = _run_spec(p.view, step, arguments, inputs)
        p.submit.append(SubmitStep(name=name, run_id=run_id, spec=spec, key=key))
    p.new_cache[last_id] = LastKey(run_id=run_id, key=key)
    diff = None if last is None else changed(last.key, key)
    return p.move(
        name, StepState.RUNNING, run_id=run_id, key=key, changed=diff, ran_because=because
    )


def _image_lookup(step: StepSpec, pipe: Pipeline) -> ImageLookup | None:
    """What was looked up for the step's image (a tag): None when the step has no container,
    names no image (its run fails at the agent) or names it by digest (the reference is the
    content); a tag never looked up has no ID."""
    docker = step.run.environment.docker
    if not docker.enabled or not docker.base_image or pinned(docker.base_image):
        return None
    return pipe.images.get(step.name, ImageLookup(problem="it was not looked up"))


def _ran_because(
    step: StepSpec,
    pipe: Pipeline,
    key: StepKey,
    cached: CachedStep | None,
    last: LastKey | None,
    *,
    lookup: ImageLookup | None,
) -> str | None:
    """Why the step runs rather than reuses an earlier run; None: it is reused. A tag whose
    image ID is unknown could name any image: the step runs."""
    if not step.allow_reuse:
        return "allow_reuse is off"
    if pipe.regenerate_outputs:
        return "regenerate_outputs"
    if lookup is not None and lookup.image_id is None:
        ref = step.run.environment.docker.base_image
        return f"the image ID of {ref!r} could not be resolved: {lookup.problem}"
    if cached is not None:
        missing = [o for o in step.outputs if o not in cached.outputs]
        if not missing:
            return None
        return f"the earlier run with this key has no output {missing[0]!r}"
    if last is None:
        return "no earlier run"
    diff = changed(last.key, key)
    if diff:
        return "key changed: " + ", ".join(diff)
    return "no earlier run with this key completed"


def _run_spec(
    view: PipelineView, step: StepSpec, arguments: list[str], inputs: dict[str, str]
) -> m.RunSpec:
    """The step's run: its own spec with the parameters put in (data tokens stay: its agent
    puts the paths in), its data, and the pipeline's experiment and tags. No submission id:
    the run id (``step_run_id``) is what makes a resubmit the same run."""
    return msgspec.structs.replace(
        step.run,
        experiment=view.experiment,
        tags=dict(view.tags),
        arguments=arguments,
        data_inputs=inputs,
        data_outputs=list(step.outputs),
        submission_id=None,
    )


def _run_ended(p: _Pass, name: str) -> None:
    run = p.runs.get(name)
    if run is None or run.state not in TERMINAL:
        return
    if run.state is RunState.FAILED:
        why = "its run failed" + (f": {run.error.message}" if run.error else "")
        p.move(name, StepState.FAILED, reason=why)
        return
    if run.state is RunState.CANCELED:
        why = "its run was canceled" + (f": {run.error.message}" if run.error else "")
        p.move(name, StepState.CANCELED, reason=why)
        return
    outputs = p.specs[name].outputs
    missing = [o for o in outputs if o not in run.data_outputs]
    if missing:
        said = ", ".join(repr(o) for o in missing)
        p.move(name, StepState.FAILED, reason=f"its run completed but did not store output {said}")
        return
    stored = {o: run.data_outputs[o] for o in outputs}
    key = p.now[name].key
    ran = key
    tagged = _image_lookup(p.specs[name], p.view.pipeline) is not None
    if key is not None and tagged and run.image_id is not None:
        ran = msgspec.structs.replace(key, image_id=run.image_id)  # the image that ran
    status = p.move(name, StepState.COMPLETED, outputs=stored, key=ran)
    if status.key is not None:
        p.new_cache[cache_id(status.key)] = CachedStep(
            run_id=run.run_id, outputs=stored, completed_at=run.ended_at or 0.0
        )
    if ran != key and ran is not None:  # the next run's changes are said against what ran
        last_id = last_key_id(p.view.experiment, p.view.pipeline.spec.name, name)
        p.new_cache[last_id] = LastKey(run_id=run.run_id, key=ran)


def _end(
    view: PipelineView, dag: Dag, now: Mapping[str, StepStatus]
) -> tuple[RunState | None, str | None]:
    """The pipeline run's end state and why, once every step is terminal; else (None, None)."""
    if any(now[n].state not in STEP_TERMINAL for n in dag.steps):
        return None, None
    if all(now[n].state in STEP_SUCCEEDED for n in dag.steps):
        return RunState.COMPLETED, None
    if view.cancel_requested:
        return RunState.CANCELED, "the pipeline was canceled"
    parts = []
    for state, said in ((StepState.FAILED, "failed"), (StepState.CANCELED, "canceled")):
        names = [repr(n) for n in dag.steps if now[n].state is state]
        if names:
            parts.append(f"{said}: step {', '.join(names)}")
    skipped = sum(1 for n in dag.steps if now[n].state is StepState.SKIPPED)
    if skipped:
        parts.append(f"{skipped} skipped")
    return RunState.FAILED, "; ".join(parts)
