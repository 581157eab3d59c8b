"""What a person or a program sees of a pipeline run: each step's state, its run (or the
earlier run it reused), which parts of its key changed or why it ran, why it was skipped or
failed. The JSON of `sortie pipeline show|list --output json`, and what the SDK's
``PipelineRun`` reads. Pure, but for the readers at the end.
"""

from __future__ import annotations

from collections.abc import Sequence

from sortie.client.client import Client, ClientError
from sortie.client.views import ErrorView, View, iso
from sortie.proto import messages as m
from sortie.proto import run_index
from sortie.proto.pipelines import ParamValue, Pipeline, StepState, StepStatus
from sortie.proto.states import TERMINAL, RunState


class NotAPipeline(ClientError):
    """A run that is not a pipeline run was named where one is needed."""


class StepView(View, frozen=True, kw_only=True):
    """One step of `sortie pipeline show --output json`."""

    name: str
    state: StepState
    run_id: str | None  # its own run (or, when reused, the run whose outputs it took)
    run_state: RunState | None = None  # its own run's state (None: no run of its own)
    reused_from: str | None = None  # the earlier run it reused (state reused)
    target: str
    inputs: list[str] = []
    outputs: list[str] = []
    run_after: list[str] = []
    # which parts of its key differ from its last run ([] reused; None: no earlier run)
    changed: list[str] | None = None
    ran_because: str | None = None  # why it ran instead of being reused
    reason: str | None = None  # why it was skipped, failed or canceled
    data: dict[str, str] = {}  # PipelineData name -> manifest id of what it produced


class PipelineView(View, frozen=True, kw_only=True):
    """`sortie pipeline show --output json`."""

    run_id: str
    name: str
    experiment: str
    state: RunState
    description: str
    created_at: str | None
    ended_at: str | None
    parameters: dict[str, ParamValue]
    regenerate_outputs: bool
    rerun_of: str | None
    steps_by_state: dict[str, int]
    steps: list[StepView]
    error: ErrorView | None = None


class PipelineSummaryView(View, frozen=True, kw_only=True):
    """One line of `sortie pipeline list --output json`."""

    run_id: str
    name: str
    experiment: str
    state: RunState
    steps: int
    steps_by_state: dict[str, int]
    created_at: str | None


# --- pure ----------------------------------------------------------------------------------


def pipeline_of(rec: m.RunRecord) -> Pipeline:
    """The record's pipeline, or ``NotAPipeline`` saying what to do instead."""
    if rec.pipeline is None:
        raise NotAPipeline(
            f"run {rec.run_id} is not a pipeline run: `sortie pipeline list` shows them "
            "(`sortie run ...` handles other runs)"
        )
    return rec.pipeline


def _counts(pipe: Pipeline) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in pipe.steps.values():
        counts[str(status.state)] = counts.get(str(status.state), 0) + 1
    return dict(sorted(counts.items()))


def step_views(pipe: Pipeline, runs: Sequence[m.RunRecord]) -> list[StepView]:
    """Each step in the spec's order, with its own run's state from ``runs`` (the step runs)."""
    by_id = {r.run_id: r for r in runs}
    out: list[StepView] = []
    for spec in pipe.spec.steps:
        status = pipe.steps.get(spec.name, StepStatus())
        reused = status.state == StepState.REUSED
        own = None if reused or status.run_id is None else by_id.get(status.run_id)
        out.append(
            StepView(
                name=spec.name,
                state=status.state,
                run_id=status.run_id,
                run_state=None if own is None else own.state,
                reused_from=status.run_id if reused else None,
                target=spec.run.target,
                inputs=list(spec.inputs),
                outputs=list(spec.outputs),
                run_after=list(spec.run_after),
                changed=status.changed,
                ran_because=status.ran_because,
                reason=status.reason,
                data=dict(status.outputs),
            )
        )
    return out


def pipeline_view(rec: m.RunRecord, runs: Sequence[m.RunRecord]) -> PipelineView:
    pipe = pipeline_of(rec)
    err = rec.error
    return PipelineView(
        run_id=rec.run_id,
        name=pipe.spec.name,
        experiment=rec.spec.experiment,
        state=rec.state,
        description=pipe.spec.description,
        created_at=iso(rec.created_at),
        ended_at=iso(rec.ended_at) if rec.state in TERMINAL else None,
        parameters=dict(pipe.parameters),
        regenerate_outputs=pipe.regenerate_outputs,
        rerun_of=pipe.rerun_of,
        steps_by_state=_counts(pipe),
        steps=step_views(pipe, runs),
        error=None if err is None else ErrorView(kind=str(err.kind), message=err.message),
    )


def pipeline_summary_view(rec: m.RunRecord) -> PipelineSummaryView:
    pipe = pipeline_of(rec)
    return PipelineSummaryView(
        run_id=rec.run_id,
        name=pipe.spec.name,
        experiment=rec.spec.experiment,
        state=rec.state,
        steps=len(pipe.spec.steps),
        steps_by_state=_counts(pipe),
        created_at=iso(rec.created_at),
    )


def step_why(step: StepView) -> str:
    """Why the step is where it is: the run it reused, why it was skipped or failed, or why
    it ran (and which parts of its key changed)."""
    if step.state == StepState.REUSED:
        return f"reused {step.reused_from}"
    if step.reason:
        return step.reason
    if step.ran_because:
        changed = f" ({', '.join(step.changed)})" if step.changed else ""
        return f"ran: {step.ran_because}{changed}"
    return ""


def step_line(step: StepView) -> str:
    """A step as one line of text: its state, its run, why."""
    why = step_why(step)
    run = f" {step.run_id}" if step.run_id and step.state != StepState.REUSED else ""
    return f"{step.name}: {step.state}{run}" + (f": {why}" if why else "")


class StepProgress:
    """What to print while following a pipeline run: a line for each step each time its
    line changes (not while it waits), then the pipeline's end."""

    def __init__(self) -> None:
        self.shown: dict[str, str] = {}

    def lines(self, rec: m.RunRecord) -> list[str]:
        if rec.pipeline is None:
            return []
        out: list[str] = []
        for step in step_views(rec.pipeline, []):
            line = step_line(step)
            if step.state != StepState.WAITING and self.shown.get(step.name) != line:
                self.shown[step.name] = line
                out.append(f"pipeline {rec.run_id}: {line}")
        if rec.state in TERMINAL:
            out.append(f"pipeline {rec.run_id}: {rec.state}")
        return out


# --- reading -------------------------------------------------------------------------------


async def get_pipeline(client: Client, run_id: str) -> m.RunRecord:
    """The pipeline run's record (``NotAPipeline`` for another run)."""
    rec = await client.get_run(run_id)
    pipeline_of(rec)
    return rec


async def read_view(client: Client, run_id: str) -> PipelineView:
    rec = await get_pipeline(client, run_id)
    return pipeline_view(rec, await client.children(run_id))


async def list_pipelines(client: Client, experiment: str | None = None) -> list[m.RunRecord]:
    """Every pipeline run (of one experiment), newest first."""
    try:
        query = run_index.RunQuery(
            experiment=experiment,
            pipelines=True,
            include_children=False,
            limit=run_index.MAX_LIMIT,
        )
        runs = await client.query_all_runs(query)
    except ClientError:  # no scheduler answers: one read of every record
        runs = await client.list_runs(experiment)
    return [r for r in runs if r.pipeline is not None]
