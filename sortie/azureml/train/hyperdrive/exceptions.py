"""``azureml.train.hyperdrive.exceptions``: the errors a sweep's configuration raises."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import ParamSpec, TypeVar

from sortie.azureml.exceptions import AzureMLException
from sortie.client.sweep_space import SweepConfigError

__all__ = [
    "HyperDriveConfigException",
    "HyperDriveException",
    "HyperDriveScenarioNotSupportedException",
]

P = ParamSpec("P")
R = TypeVar("R")


class HyperDriveException(AzureMLException):
    """The base of the sweep errors."""


class HyperDriveConfigException(HyperDriveException, SweepConfigError):
    """A sweep's configuration that cannot be used (also a native ``SweepConfigError``, a
    ``ValueError``); the message says what to change."""


class HyperDriveScenarioNotSupportedException(HyperDriveConfigException):
    """A combination v1 does not support either (a policy with Bayesian sampling)."""


@contextmanager
def v1_errors() -> Iterator[None]:
    """The native SDK's ``SweepConfigError`` raised as v1's ``HyperDriveConfigException``."""
    try:
        yield
    except HyperDriveConfigException:
        raise
    except SweepConfigError as exc:
        raise HyperDriveConfigException(str(exc)) from None


def raising_v1(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` with :func:`v1_errors` around it."""

    @wraps(fn)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        with v1_errors():
            return fn(*args, **kwargs)

    return wrapped
