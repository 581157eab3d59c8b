"""``azureml.train.hyperdrive.sampling``: how trials' parameters are chosen (the native
classes, raising v1's ``HyperDriveConfigException``)."""

from __future__ import annotations

from sortie.azureml.train.hyperdrive.exceptions import v1_errors
from sortie.client import sweeps as native

__all__ = [
    "BayesianParameterSampling",
    "GridParameterSampling",
    "HyperParameterSampling",
    "RandomParameterSampling",
]


class HyperParameterSampling:
    """The base of v1's samplings (for ``isinstance``)."""

    __slots__ = ()


class GridParameterSampling(native.GridParameterSampling, HyperParameterSampling):
    """``GridParameterSampling(parameter_space)``: every combination of ``choice`` values."""

    def __post_init__(self) -> None:
        with v1_errors():
            super().__post_init__()


class RandomParameterSampling(native.RandomParameterSampling, HyperParameterSampling):
    """``RandomParameterSampling(parameter_space, properties=None)``; ``properties={"rngseed":
    N}`` makes the draws repeatable."""

    def __post_init__(self) -> None:
        with v1_errors():
            super().__post_init__()


class BayesianParameterSampling(native.BayesianParameterSampling, HyperParameterSampling):
    """``BayesianParameterSampling(parameter_space)``: choice, uniform and quniform only."""

    def __post_init__(self) -> None:
        with v1_errors():
            super().__post_init__()
