"""``azureml.pipeline.core.run``: ``PipelineRun`` and ``StepRun``, the native ones with v1's
``Run`` methods (a step's run is a v1 ``Run``)."""

from __future__ import annotations

from typing import Any

from sortie.azureml.core.experiment import Experiment
from sortie.azureml.core.run import Run
from sortie.azureml.exceptions import ActivityFailedException
from sortie.client import pipeline_run as native
from sortie.client import sdk
from sortie.client.pipeline_views import StepView
from sortie.proto.pipelines import StepState

__all__ = ["PipelineRun", "StepRun"]


class StepRun(native.StepRun, Run):
    """v1's ``StepRun(experiment, step_run_id, pipeline_run_id, node_id)``."""

    experiment: Experiment  # the v1 layer's (as Run's)

    def __init__(
        self,
        experiment: Experiment,
        step_run_id: str,
        pipeline_run_id: str,
        node_id: str,
        _service_endpoint: str | None = None,
        _is_reused: bool = False,
        **kwargs: Any,
    ) -> None:
        native.StepRun.__init__(
            self, experiment, step_run_id, pipeline_run_id, node_id, is_reused=_is_reused
        )


class PipelineRun(native.PipelineRun, Run):
    """v1's ``PipelineRun(experiment, run_id)``: ``get_steps()`` are v1 ``StepRun``s."""

    experiment: Experiment  # the v1 layer's (as Run's)

    def __init__(
        self,
        experiment: Experiment,
        run_id: str,
        _service_endpoint: str | None = None,
        pipeline: Any = None,
        **kwargs: Any,
    ) -> None:
        native.PipelineRun.__init__(self, experiment, run_id, pipeline)

    def _step_run(self, step: StepView) -> StepRun:
        assert step.run_id is not None
        reused = step.state == StepState.REUSED
        return StepRun(self.experiment, step.run_id, self.id, step.name, _is_reused=reused)

    def cancel(self) -> None:  # type: ignore[override]  # v1: returns nothing
        """Cancel the pipeline run: its running steps are canceled, the others never start."""
        super().cancel()

    def wait_for_completion(  # type: ignore[override]  # v1's signature
        self,
        show_output: bool = True,
        timeout_seconds: float = native.WAIT_FOREVER,
        raise_on_error: bool = True,
    ) -> str:
        """Block until the pipeline ends; ``ActivityFailedException`` if it did not
        complete (unless ``raise_on_error=False``)."""
        try:
            return native.PipelineRun.wait_for_completion(
                self,
                show_output=show_output,
                timeout_seconds=timeout_seconds,
                raise_on_error=raise_on_error,
            )
        except sdk.RunFailed as exc:
            raise ActivityFailedException(str(exc)) from None
