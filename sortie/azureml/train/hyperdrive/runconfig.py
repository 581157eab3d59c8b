"""``azureml.train.hyperdrive.runconfig``: ``HyperDriveConfig`` and ``PrimaryMetricGoal``."""

from __future__ import annotations

from sortie.azureml.train.hyperdrive.exceptions import (
    HyperDriveScenarioNotSupportedException,
    v1_errors,
)
from sortie.client import sweeps as native
from sortie.client.sweeps import MAX_DURATION_MINUTES, PrimaryMetricGoal
from sortie.proto import sweeps as s

__all__ = ["MAX_DURATION_MINUTES", "HyperDriveConfig", "PrimaryMetricGoal"]


class HyperDriveConfig(native.HyperDriveConfig):
    """v1's ``HyperDriveConfig(hyperparameter_sampling, primary_metric_name,
    primary_metric_goal, max_total_runs, max_concurrent_runs=None, max_duration_minutes=10080,
    policy=None, estimator=None, run_config=None, ...)``: give ``run_config`` (a
    ``ScriptRunConfig``). A policy with Bayesian sampling raises
    ``HyperDriveScenarioNotSupportedException``, as in v1."""

    def __post_init__(self) -> None:
        sampling = self.hyperparameter_sampling
        if isinstance(sampling, native.BayesianParameterSampling) and not isinstance(
            self.policy, native.NoTerminationPolicy | None
        ):
            raise HyperDriveScenarioNotSupportedException(
                "Bayesian sampling takes no early-termination policy: give policy=None or "
                "NoTerminationPolicy(), or use RandomParameterSampling"
            )
        with v1_errors():
            super().__post_init__()

    def to_spec(self) -> s.SweepSpec:
        with v1_errors():
            return super().to_spec()
