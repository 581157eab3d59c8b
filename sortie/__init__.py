"""Sortie: run training scripts on your own machines.

``from sortie import Run`` works with the standard library alone (it is what a training
script imports). It and the client SDK names are loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sortie.client.run_context import Run

__all__ = [
    "AshaPolicy",
    "BanditPolicy",
    "BayesianParameterSampling",
    "ClusterConfiguration",
    "ComputeTarget",
    "Experiment",
    "GridParameterSampling",
    "HyperDriveConfig",
    "MedianStoppingPolicy",
    "NoTerminationPolicy",
    "Pipeline",
    "PipelineData",
    "PipelineParameter",
    "PipelineRun",
    "PrimaryMetricGoal",
    "PythonScriptStep",
    "RandomParameterSampling",
    "RemoteCompute",
    "Run",
    "RunConfiguration",
    "ScriptRunConfig",
    "SlurmCompute",
    "SparkCompute",
    "StepRun",
    "SweepRun",
    "TruncationSelectionPolicy",
    "Workspace",
    "choice",
    "lognormal",
    "loguniform",
    "normal",
    "qlognormal",
    "qloguniform",
    "qnormal",
    "quniform",
    "randint",
    "uniform",
]

_SDK = {
    "Workspace",
    "Experiment",
    "ScriptRunConfig",
    "RunConfiguration",
    "SubmittedRun",
    "ComputeTarget",
    "ClusterConfiguration",
    "RemoteCompute",
    "SlurmCompute",
    "SparkCompute",
}


_SDK |= {
    "HyperDriveConfig",
    "PrimaryMetricGoal",
    "GridParameterSampling",
    "RandomParameterSampling",
    "BayesianParameterSampling",
    "BanditPolicy",
    "MedianStoppingPolicy",
    "TruncationSelectionPolicy",
    "NoTerminationPolicy",
    "AshaPolicy",
    "choice",
    "randint",
    "uniform",
    "quniform",
    "loguniform",
    "qloguniform",
    "normal",
    "qnormal",
    "lognormal",
    "qlognormal",
    "Pipeline",
    "PipelineData",
    "PipelineParameter",
    "PythonScriptStep",
}


def __getattr__(name: str) -> Any:
    if name == "Run":  # loaded on first use too: `sortie run list` needs no run context
        from sortie.client.run_context import Run

        return Run
    if name in _SDK:
        from sortie.client import sdk

        return getattr(sdk, name)
    if name == "SweepRun":  # it builds on sdk
        from sortie.client import sweep_run

        return sweep_run.SweepRun
    if name in ("PipelineRun", "StepRun"):  # they build on sdk
        from sortie.client import pipeline_run

        return getattr(pipeline_run, name)
    raise AttributeError(f"module 'sortie' has no attribute {name!r}")
