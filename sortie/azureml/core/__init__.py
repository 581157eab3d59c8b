"""``azureml.core``: the names a v1 script imports, loaded on first use."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Workspace": "sortie.azureml.core.workspace",
    "Experiment": "sortie.azureml.core.experiment",
    "Run": "sortie.azureml.core.run",
    "ScriptRunConfig": "sortie.azureml.core.script_run_config",
    "RunConfiguration": "sortie.azureml.core.runconfig",
    "Environment": "sortie.azureml.core.environment",
    "Model": "sortie.azureml.core.model",
    "ComputeTarget": "sortie.azureml.core.compute",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'sortie.azureml.core' has no attribute {name!r}")
