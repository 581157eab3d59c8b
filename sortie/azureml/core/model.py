"""``azureml.core.model``: the model registry's ``Model``.

The class itself is the native SDK's (``NATIVE_MODEL``, built with the model registry);
it is looked up on first use so this layer does not fix where it lives.
"""

from __future__ import annotations

import importlib
from typing import Any

NATIVE_MODEL = "sortie.client.models"  # the module that defines the native ``Model``

__all__ = ["Model"]  # noqa: F822  # defined on first use by __getattr__


def __getattr__(name: str) -> Any:
    if name != "Model":
        raise AttributeError(f"module 'sortie.azureml.core.model' has no attribute {name!r}")
    try:
        return importlib.import_module(NATIVE_MODEL).Model
    except (ImportError, AttributeError):
        raise ImportError(
            "sortie.azureml.core.model.Model: this Sortie has no model registry "
            f"({NATIVE_MODEL}.Model is missing)"
        ) from None
