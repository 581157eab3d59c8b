"""v1's exception types (``azureml.exceptions``)."""

from __future__ import annotations

from typing import Any

from sortie.client.sdk import RunFailed


class AzureMLException(Exception):
    """The base of the v1 layer's errors; ``message`` is what a person reads."""

    def __init__(self, exception_message: str, **kwargs: Any) -> None:
        super().__init__(exception_message)
        self.message = exception_message


class UserErrorException(AzureMLException):
    """Something the caller gave cannot be used; the message says what to change."""


class ComputeTargetException(AzureMLException):
    """A compute target is missing, or cannot be created, attached, found or used."""


class ActivityFailedException(AzureMLException, RunFailed):
    """``wait_for_completion(raise_on_error=True)`` on a run that did not complete (also a
    ``sortie.client.sdk.RunFailed``)."""
