"""``azureml.train.hyperdrive``: hyperparameter sweeps with v1's names, over the native SDK
(``sortie.client.sweeps``). v1 code runs with its imports changed:

    from sortie.azureml.train.hyperdrive import (
        BanditPolicy, HyperDriveConfig, PrimaryMetricGoal, RandomParameterSampling, choice,
        uniform,
    )
"""

from __future__ import annotations

from sortie.azureml.train.hyperdrive.exceptions import (
    HyperDriveConfigException,
    HyperDriveException,
    HyperDriveScenarioNotSupportedException,
)
from sortie.azureml.train.hyperdrive.parameter_expressions import (
    choice,
    lognormal,
    loguniform,
    normal,
    qlognormal,
    qloguniform,
    qnormal,
    quniform,
    randint,
    uniform,
)
from sortie.azureml.train.hyperdrive.policy import (
    BanditPolicy,
    EarlyTerminationPolicy,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    TruncationSelectionPolicy,
)
from sortie.azureml.train.hyperdrive.run import HyperDriveRun
from sortie.azureml.train.hyperdrive.runconfig import HyperDriveConfig, PrimaryMetricGoal
from sortie.azureml.train.hyperdrive.sampling import (
    BayesianParameterSampling,
    GridParameterSampling,
    HyperParameterSampling,
    RandomParameterSampling,
)

__all__ = [
    "BanditPolicy",
    "BayesianParameterSampling",
    "EarlyTerminationPolicy",
    "GridParameterSampling",
    "HyperDriveConfig",
    "HyperDriveConfigException",
    "HyperDriveException",
    "HyperDriveRun",
    "HyperDriveScenarioNotSupportedException",
    "HyperParameterSampling",
    "MedianStoppingPolicy",
    "NoTerminationPolicy",
    "PrimaryMetricGoal",
    "RandomParameterSampling",
    "TruncationSelectionPolicy",
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
