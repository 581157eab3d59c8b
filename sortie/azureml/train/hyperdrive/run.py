"""``azureml.train.hyperdrive.run``: ``HyperDriveRun``, a submitted sweep (the native
``SweepRun``: its trials are v1 ``Run``s)."""

from __future__ import annotations

from typing import Any

from sortie.azureml.core.experiment import Experiment
from sortie.azureml.core.run import Run
from sortie.azureml.exceptions import ActivityFailedException
from sortie.client import sdk
from sortie.client.sweep_run import SweepRun

__all__ = ["HyperDriveRun"]


class HyperDriveRun(SweepRun, Run):
    """v1's ``HyperDriveRun(experiment, run_id, hyperdrive_config=None)``."""

    RUN_TYPE = "hyperdrive"
    experiment: Experiment  # the v1 layer's (as Run's)

    def __init__(
        self, experiment: Experiment, run_id: str, hyperdrive_config: Any = None, **kwargs: Any
    ) -> None:
        SweepRun.__init__(self, experiment, run_id, hyperdrive_config)

    def cancel(self) -> bool:  # type: ignore[override]  # v1: True once the cancel is accepted
        """Cancel the sweep and its running trials; True once the scheduler accepted it."""
        super().cancel()
        return True

    def wait_for_completion(  # type: ignore[override]  # v1's signature
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
    ) -> dict[str, Any]:
        """Block until the sweep ends; ``ActivityFailedException`` if it did not complete."""
        try:
            return SweepRun.wait_for_completion(
                self, show_output=show_output, raise_on_error=raise_on_error
            )
        except sdk.RunFailed as exc:
            raise ActivityFailedException(str(exc)) from None
