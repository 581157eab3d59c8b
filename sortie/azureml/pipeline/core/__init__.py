"""``azureml.pipeline.core``: v1's names over the native SDK (``sortie.client.pipelines``).
v1 code runs with its imports changed:

    from sortie.azureml.pipeline.core import Pipeline, PipelineData, PipelineParameter
    from sortie.azureml.pipeline.steps import PythonScriptStep
"""

from __future__ import annotations

from sortie.azureml.pipeline.core.run import PipelineRun, StepRun
from sortie.client.pipelines import Pipeline, PipelineData, PipelineParameter

__all__ = ["Pipeline", "PipelineData", "PipelineParameter", "PipelineRun", "StepRun"]
