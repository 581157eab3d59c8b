"""Small builders for the pipeline controller's tests: steps, specs, views, and a simulated
pipeline that drives ``pipeline_step`` the way the scheduler does (submit what it submits,
record the statuses and cache entries it returns, end the step runs as told), with no broker.

A simulated run stores each output as a manifest id made from the step's key and the output's
name, so a step run again with the same key stores the same content (as a deterministic
script would), and its downstream's keys do not change."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from sortie.proto import messages as m
from sortie.proto.pipelines import (
    STEP_TERMINAL,
    CachedStep,
    ImageLookup,
    LastKey,
    ParamValue,
    Pipeline,
    PipelineSpec,
    StepKey,
    StepSpec,
    StepState,
    StepStatus,
    data_token,
)
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState
from sortie.scheduler.pipelines.controller import (
    PipelinePlan,
    PipelineView,
    StepRunView,
    SubmitStep,
    pipeline_step,
)

PIPE_RUN = "pr1"
EXPERIMENT = "exp"

Outcome = Literal["completed", "failed", "canceled", "no-output"]


def step(
    name: str,
    inputs: Iterable[str] = (),
    outputs: Iterable[str] = (),
    *,
    run_after: Iterable[str] = (),
    arguments: list[str] | None = None,
    snapshot: str | None = None,
    allow_reuse: bool = True,
    image: str | None = None,
) -> StepSpec:
    """A step whose arguments pass each input and output as ``--NAME TOKEN`` (unless given)."""
    ins, outs = list(inputs), list(outputs)
    if arguments is None:
        arguments = [a for d in [*ins, *outs] for a in (f"--{d}", data_token(d))]
    env = m.Environment()
    if image is not None:
        env = m.Environment(docker=m.DockerSection(enabled=True, base_image=image))
    return StepSpec(
        name=name,
        run=m.RunSpec(
            experiment=EXPERIMENT,
            script=f"{name}.py",
            arguments=arguments,
            snapshot_id=snapshot or f"snap-{name}",
            environment=env,
            submission_id=f"client-{name}",
        ),
        inputs=ins,
        outputs=outs,
        run_after=list(run_after),
        allow_reuse=allow_reuse,
    )


def pipeline(*steps: StepSpec, parameters: dict[str, ParamValue] | None = None) -> PipelineSpec:
    return PipelineSpec(name="pipe", steps=list(steps), parameters=parameters or {})


def view(
    spec: PipelineSpec,
    statuses: Mapping[str, StepStatus] | None = None,
    *,
    values: dict[str, ParamValue] | None = None,
    regenerate: bool = False,
    cancel: bool = False,
    run_id: str = PIPE_RUN,
    images: Mapping[str, ImageLookup] | None = None,
) -> PipelineView:
    steps = {s.name: StepStatus() for s in spec.steps}
    steps.update(statuses or {})
    params = {**spec.parameters, **(values or {})}
    pipe = Pipeline(
        spec=spec,
        parameters=params,
        regenerate_outputs=regenerate,
        steps=steps,
        images=dict(images or {}),
    )
    return PipelineView(
        run_id=run_id,
        experiment=EXPERIMENT,
        pipeline=pipe,
        cancel_requested=cancel,
        tags={"team": "ml"},
    )


def content(key: StepKey | None, output: str) -> str:
    """The manifest id a simulated run stores for ``output``: a function of the key."""
    return f"man-{key.digest()[:16] if key else 'none'}-{output}"


def ended_run(
    run_id: str,
    outcome: Outcome,
    outputs: Iterable[str],
    key: StepKey | None,
    at: float = 1.0,
    *,
    image_id: str | None = None,
) -> StepRunView:
    state = {
        "completed": RunState.COMPLETED,
        "no-output": RunState.COMPLETED,
        "failed": RunState.FAILED,
        "canceled": RunState.CANCELED,
    }[outcome]
    stored = {o: content(key, o) for o in outputs} if outcome == "completed" else {}
    error = None
    if outcome == "failed":
        error = m.RunError(kind=ErrorKind.EXIT_CODE, message="exit code 1")
    return StepRunView(
        run_id=run_id,
        state=state,
        data_outputs=stored,
        error=error,
        ended_at=at,
        image_id=image_id if outcome == "completed" else None,
    )


@dataclass
class SimPipeline:
    """A pipeline driven call by call: ``step`` calls ``pipeline_step`` and applies its plan
    (statuses onto the record, cache entries into the cache, submitted steps become Queued
    runs); ``finish`` ends runs with the outcome ``outcome(name)`` gives. ``cache`` outlives
    one pipeline run: pass it to the next ``SimPipeline`` to see reuse."""

    spec: PipelineSpec
    outcome: Callable[[str], Outcome] = lambda _name: "completed"
    cache: dict[str, CachedStep | LastKey] = field(default_factory=dict)
    values: dict[str, ParamValue] = field(default_factory=dict)
    regenerate: bool = False
    cancel: bool = False
    run_id: str = PIPE_RUN
    # container steps' image lookups, as the scheduler made them when it accepted the pipeline
    images: dict[str, ImageLookup] = field(default_factory=dict)
    # the image ID each step's run reports it ran (a container run's RunReport.image_id)
    ran_images: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, StepStatus] = field(default_factory=dict)
    runs: dict[str, StepRunView] = field(default_factory=dict)
    submitted: list[SubmitStep] = field(default_factory=list)
    plans: list[PipelinePlan] = field(default_factory=list)
    # each step's states in the order it went through them (WAITING first)
    history: dict[str, list[StepState]] = field(default_factory=dict)
    clock: float = 0.0

    def __post_init__(self) -> None:
        for s in self.spec.steps:
            self.statuses.setdefault(s.name, StepStatus())
            self.history.setdefault(s.name, [self.statuses[s.name].state])

    def current(self) -> PipelineView:
        return view(
            self.spec,
            self.statuses,
            values=self.values,
            regenerate=self.regenerate,
            cancel=self.cancel,
            run_id=self.run_id,
            images=self.images,
        )

    def step(self, *, record: bool = True) -> PipelinePlan:
        """One call, its plan applied: the submitted runs first, then (``record``) the
        statuses and cache entries; ``record=False`` is a scheduler that stopped between."""
        cached = {k: v for k, v in self.cache.items() if isinstance(v, CachedStep)}
        last = {k: v for k, v in self.cache.items() if isinstance(v, LastKey)}
        plan = self.decide(self.current(), dict(self.runs), cached, last)
        for sub in plan.submit:
            self.submitted.append(sub)
            self.runs[sub.name] = StepRunView(
                run_id=sub.run_id, state=RunState.QUEUED, data_outputs={}
            )
        if not record:
            return plan
        for name, status in plan.statuses.items():
            self.statuses[name] = status
            self.history[name].append(status.state)
        self.cache.update(plan.cache)
        self.plans.append(plan)
        return plan

    def decide(self, *args: Any) -> PipelinePlan:
        """``pipeline_step`` (a benchmark times it by overriding this)."""
        return pipeline_step(*args)

    def running(self) -> list[str]:
        """Steps whose runs have not ended, in the spec's order."""
        return [
            s.name
            for s in self.spec.steps
            if s.name in self.runs and self.runs[s.name].state is RunState.QUEUED
        ]

    def finish(self, names: Iterable[str]) -> None:
        """End these steps' runs (each as ``outcome(name)`` says)."""
        outputs = {s.name: s.outputs for s in self.spec.steps}
        for name in names:
            self.clock += 1.0
            run = self.runs[name]
            key = self.statuses[name].key
            self.runs[name] = ended_run(
                run.run_id,
                self.outcome(name),
                outputs[name],
                key,
                self.clock,
                image_id=self.ran_images.get(name),
            )

    def run(self, *, one_at_a_time: bool = False, calls: int = 10_000) -> PipelinePlan:
        """Step, and end the running runs (all, or the first only), until done (bounded)."""
        for _ in range(calls):
            plan = self.step()
            if plan.done is not None:
                return plan
            live = self.running()
            self.finish(live[:1] if one_at_a_time else live)
        raise AssertionError(f"not done after {calls} calls")

    def states(self) -> dict[str, StepState]:
        return {n: s.state for n, s in self.statuses.items()}

    def all_terminal(self) -> bool:
        return all(s.state in STEP_TERMINAL for s in self.statuses.values())
