"""``azureml.core.experiment``: ``Experiment``, a named group of runs."""

from __future__ import annotations

import builtins
from typing import Any

from sortie.azureml.core.run import Run
from sortie.client import sdk
from sortie.client.pipelines import Pipeline
from sortie.client.runconfig import ScriptRunConfig
from sortie.client.sweeps import HyperDriveConfig

__all__ = ["Experiment"]


class Experiment(sdk.Experiment):
    """v1's ``Experiment(workspace, name)``; ``submit`` returns a ``Run``."""

    def __init__(  # the hosted SDK v1's signature, kept for its users' scripts
        self,
        workspace: sdk.Workspace,
        name: str,
        _skip_name_validation: bool = False,
        _id: str | None = None,
        _archived_time: str | None = None,
        _create_in_cloud: bool = True,
        _experiment_dto: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(workspace, name)

    def submit(  # v1's signature: tags, then the native options
        self,
        config: ScriptRunConfig | HyperDriveConfig | Pipeline,
        tags: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Run:
        """Queue a run of ``config`` (``submission_id=`` as in the native SDK); for a
        ``HyperDriveConfig``, a sweep: a ``HyperDriveRun``; for a ``Pipeline``, a
        ``PipelineRun`` (``regenerate_outputs=``, ``pipeline_parameters=`` as in v1)."""
        run = super().submit(config, tags, **kwargs)
        assert isinstance(run, Run)
        return run

    def _run_of(self, run_id: str) -> Run:
        return Run(self, run_id)

    def _sweep_run_of(self, run_id: str, config: HyperDriveConfig | None = None) -> Run:
        from sortie.azureml.train.hyperdrive.run import HyperDriveRun  # it imports this module

        return HyperDriveRun(self, run_id, config)

    def _pipeline_run_of(self, run_id: str, pipeline: Any = None) -> Run:
        from sortie.azureml.pipeline.core.run import PipelineRun  # it imports this module

        return PipelineRun(self, run_id, pipeline=pipeline)

    @staticmethod
    def list(
        workspace: sdk.Workspace,
        experiment_name: str | None = None,
        view_type: str = "ActiveOnly",
        tags: Any = None,
    ) -> builtins.list[Experiment]:
        """The experiments that have runs, by name (or the one called ``experiment_name``)."""
        names = {r.spec.experiment for r in workspace._run(workspace._client.list_runs())}
        return [
            Experiment(workspace, n)
            for n in sorted(names)
            if experiment_name is None or n == experiment_name
        ]

    def __repr__(self) -> str:
        return f"Experiment(name={self.name!r})"
