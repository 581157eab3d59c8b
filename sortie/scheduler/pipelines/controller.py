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

from sortie.proto import messages as m
from sortie.proto.pipelines import CachedStep, LastKey, Pipeline, StepKey, StepStatus
from sortie.proto.states import RunState


@dataclass(frozen=True)
class PipelineView:
    """The pipeline as the controller sees it."""

    run_id: str
    experiment: str
    pipeline: Pipeline  # spec, parameters, regenerate_outputs, each step's status so far
    cancel_requested: bool = False  # a user canceled the pipeline: start nothing more


@dataclass(frozen=True)
class StepRunView:
    """The run of a step that was submitted (by run id)."""

    run_id: str
    state: RunState
    data_outputs: Mapping[str, str]  # what it stored (when Completed)
    error: m.RunError | None = None


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
    """
    raise NotImplementedError
