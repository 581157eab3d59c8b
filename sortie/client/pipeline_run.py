"""``PipelineRun`` and ``StepRun``: a submitted pipeline seen from outside it (what
``Experiment.submit`` returns for a ``Pipeline``), with the methods of v1's
``azureml.pipeline.core.PipelineRun`` and ``StepRun``. Its steps' runs are child runs,
ordinary runs of the experiment; a reused step's run is the earlier run it reused."""

from __future__ import annotations

import asyncio
import builtins
from typing import TYPE_CHECKING, Any

from sortie.client import sdk
from sortie.client.pipeline_views import (
    StepProgress,
    StepView,
    pipeline_of,
    read_view,
    step_views,
)
from sortie.client.views import as_dict
from sortie.proto import messages as m
from sortie.proto.pipelines import StepState
from sortie.proto.states import TERMINAL, RunState

if TYPE_CHECKING:
    from collections.abc import Callable

    from sortie.client.pipelines import Pipeline

__all__ = ["PipelineRun", "StepRun"]

WAIT_FOREVER = 9223372036854775807  # v1's default timeout_seconds (sys.maxsize)


class StepRun(sdk.SubmittedRun):
    """A step's run (v1's ``StepRun``): ``name`` is the step's, ``pipeline_run_id`` the
    pipeline run's; for a reused step ``is_reused`` is True and the run is the earlier one."""

    def __init__(
        self,
        experiment: sdk.Experiment,
        step_run_id: str,
        pipeline_run_id: str,
        node_id: str,
        *,
        is_reused: bool = False,
    ) -> None:
        # not super(): in the v1 layer the next class is its Run, whose constructor differs
        sdk.SubmittedRun.__init__(self, experiment.workspace, step_run_id)
        self.experiment = experiment
        self.pipeline_run_id = pipeline_run_id
        self.name = node_id
        self.is_reused = is_reused

    def __repr__(self) -> str:
        reused = ", reused" if self.is_reused else ""
        return f"{type(self).__name__}(name={self.name!r}, id={self.id!r}{reused})"


class PipelineRun(sdk.SubmittedRun):
    """A pipeline run: ``get_steps()`` are its steps' runs."""

    def __init__(self, experiment: sdk.Experiment, run_id: str, pipeline: Any = None) -> None:
        sdk.SubmittedRun.__init__(self, experiment.workspace, run_id)
        self.experiment = experiment
        self._pipeline = pipeline

    def __repr__(self) -> str:
        return f"{type(self).__name__}(experiment={self.experiment.name!r}, id={self.id!r})"

    @property
    def pipeline(self) -> Pipeline | None:
        """The pipeline this object submitted (None for one looked up by id)."""
        return self._pipeline  # type: ignore[no-any-return]  # set by submit

    def _step_run(self, step: StepView) -> StepRun:
        """A step's run object (the v1 layer's is its ``StepRun``)."""
        assert step.run_id is not None
        reused = step.state == StepState.REUSED
        return StepRun(self.experiment, step.run_id, self.id, step.name, is_reused=reused)

    def _steps(self) -> list[StepView]:
        ws = self.workspace
        return ws._run(read_view(ws._client, self.id)).steps

    def get_steps(self) -> builtins.list[StepRun]:
        """The steps' runs, in the pipeline's order (a reused step: the run it reused);
        steps that have not started, or never will (skipped), have none."""
        return [self._step_run(s) for s in self._steps() if s.run_id is not None]

    def find_step_run(self, name: str) -> builtins.list[StepRun]:
        """The run of the step called ``name`` ([] when it has none, or no step has that
        name), as a list as in v1."""
        return [self._step_run(s) for s in self._steps() if s.name == name and s.run_id]

    def get_details(self) -> dict[str, Any]:
        """The pipeline run as `sortie pipeline show --output json` prints it."""
        ws = self.workspace
        return as_dict(ws._run(read_view(ws._client, self.id)))

    def rerun(self) -> PipelineRun:
        """Submit the pipeline again with the same parameters, reusing every step whose key
        is unchanged (after a failure: it resumes from there); the new pipeline run."""
        from sortie.client.pipeline_submit import rerun_pipeline

        ws = self.workspace
        return type(self)(self.experiment, ws._run(rerun_pipeline(ws._client, self.id)))

    def wait_for_completion(  # type: ignore[override]  # v1's PipelineRun signature
        self,
        show_output: bool = True,
        timeout_seconds: float = WAIT_FOREVER,
        raise_on_error: bool = True,
    ) -> str:
        """Block until the pipeline ends (with ``show_output``: a line as each step changes
        state); the final status. Raises ``RunFailed`` if it did not complete, unless
        ``raise_on_error=False``; after ``timeout_seconds`` returns the status it has then."""
        ws = self.workspace
        watch = ws._client.wait(self.id, _step_printer() if show_output else None)
        limit = None if timeout_seconds >= WAIT_FOREVER else timeout_seconds

        async def go() -> m.RunRecord | None:
            try:
                return await asyncio.wait_for(watch, limit)
            except TimeoutError:
                return None

        rec = ws._run(go())
        if rec is None:
            return self.get_status()
        assert rec.state in TERMINAL
        if raise_on_error and rec.state != RunState.COMPLETED:
            failed = [
                s.name
                for s in step_views(pipeline_of(rec), [])
                if s.state in (StepState.FAILED, StepState.CANCELED)
            ]
            why = f": step {', '.join(failed)} did not complete" if failed else ""
            raise sdk.RunFailed(f"pipeline {self.id} ended {rec.state}{why}")
        return str(rec.state)


def _step_printer() -> Callable[[m.RunRecord], None]:
    progress = StepProgress()

    def seen(rec: m.RunRecord) -> None:
        for line in progress.lines(rec):
            print(line, flush=True)

    return seen
