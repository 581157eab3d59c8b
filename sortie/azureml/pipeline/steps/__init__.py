"""``azureml.pipeline.steps``: ``PythonScriptStep`` with v1's signature (the native SDK's)."""

from __future__ import annotations

from sortie.client.pipelines import PythonScriptStep

__all__ = ["PythonScriptStep"]
