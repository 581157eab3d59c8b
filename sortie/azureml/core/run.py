"""``azureml.core.run``: ``Run``, both sides of a run.

Outside a run (a notebook, a pipeline script) a ``Run`` is what ``Experiment.submit``
returns: every method of the native ``SubmittedRun``. Inside a training script,
``Run.get_context()`` is the run it belongs to (``sortie.client.run_context.Run``; the agent
ships that to the run, so the script holds no broker credentials).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sortie.azureml.exceptions import ActivityFailedException, UserErrorException
from sortie.client import run_context, sdk

if TYPE_CHECKING:
    from sortie.azureml.core.experiment import Experiment

__all__ = ["Run"]


class Run(sdk.SubmittedRun):
    """v1's ``Run(experiment, run_id)``."""

    def __init__(self, experiment: Experiment, run_id: str, outputs: Any = None, **kwargs: Any):
        super().__init__(experiment.workspace, run_id)
        self.experiment = experiment

    def __repr__(self) -> str:
        return f"Run(experiment={self.experiment.name!r}, id={self.id!r})"

    @staticmethod
    def get_context(
        allow_offline: bool = True, used_for_context_manager: bool = False, **kwargs: Any
    ) -> run_context.Run:
        """The run this process belongs to; outside Sortie an offline run that prints what
        it logs (refused with ``allow_offline=False``)."""
        ctx = run_context.Run.get_context()
        if ctx.offline and not allow_offline:
            raise UserErrorException(
                "Run.get_context(allow_offline=False) outside a Sortie run: submit the "
                "script (Experiment.submit or `sortie run submit`)"
            )
        return ctx

    @staticmethod
    def get(workspace: sdk.Workspace, run_id: str) -> Run:
        """The run ``run_id`` of any experiment."""
        from sortie.azureml.core.experiment import Experiment  # experiment imports this module

        rec = workspace._run(workspace._client.get_run(run_id))
        return Run(Experiment(workspace, rec.spec.experiment), rec.run_id)

    @property
    def number(self) -> str:
        return self.id

    @property
    def status(self) -> str:
        return self.get_status()

    def wait_for_completion(  # type: ignore[override]  # v1's signature
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
    ) -> dict[str, Any]:
        """Block until the run ends (its output streamed with ``show_output``); raises
        ``ActivityFailedException`` if it did not complete, unless ``raise_on_error=False``."""
        try:
            return super().wait_for_completion(
                show_output=show_output, raise_on_error=raise_on_error
            )
        except sdk.RunFailed as exc:
            raise ActivityFailedException(str(exc)) from None
