"""``azureml.train.hyperdrive.policy``: early-termination policies (the native classes,
raising v1's ``HyperDriveConfigException``)."""

from __future__ import annotations

from sortie.azureml.train.hyperdrive.exceptions import v1_errors
from sortie.client import sweeps as native

__all__ = [
    "BanditPolicy",
    "EarlyTerminationPolicy",
    "MedianStoppingPolicy",
    "NoTerminationPolicy",
    "TruncationSelectionPolicy",
]


class EarlyTerminationPolicy:
    """The base of v1's policies (for ``isinstance``)."""

    __slots__ = ()


class BanditPolicy(native.BanditPolicy, EarlyTerminationPolicy):
    """``BanditPolicy(evaluation_interval=1, slack_factor=None, slack_amount=None,
    delay_evaluation=0)``."""

    def __post_init__(self) -> None:
        with v1_errors():
            super().__post_init__()


class MedianStoppingPolicy(native.MedianStoppingPolicy, EarlyTerminationPolicy):
    """``MedianStoppingPolicy(evaluation_interval=1, delay_evaluation=0)``."""

    def __post_init__(self) -> None:
        with v1_errors():
            super().__post_init__()


class TruncationSelectionPolicy(native.TruncationSelectionPolicy, EarlyTerminationPolicy):
    """v1's ``TruncationSelectionPolicy(truncation_percentage, evaluation_interval=1,
    delay_evaluation=0)``, plus Sortie's ``exclude_finished_jobs=False`` (not v1's: see the
    native class)."""

    def __post_init__(self) -> None:
        with v1_errors():
            super().__post_init__()


class NoTerminationPolicy(native.NoTerminationPolicy, EarlyTerminationPolicy):
    """``NoTerminationPolicy()``: every trial runs to its end."""
