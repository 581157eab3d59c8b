"""``azureml.pipeline``: pipelines with v1's names (``core``: Pipeline, PipelineData,
PipelineParameter, PipelineRun, StepRun; ``steps``: PythonScriptStep)."""
