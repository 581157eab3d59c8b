"""v1's pipeline names under sortie.azureml.pipeline: the imports a v1 script uses, the
signatures it calls, and the run objects Experiment.submit gives back."""

from __future__ import annotations

import inspect
from typing import Any

from sortie.azureml.core import Experiment, Run
from sortie.azureml.pipeline.core import (
    Pipeline,
    PipelineData,
    PipelineParameter,
    PipelineRun,
    StepRun,
)
from sortie.azureml.pipeline.steps import PythonScriptStep
from sortie.client import pipeline_run, pipelines, sdk


class _Ws(sdk.Workspace):
    """A workspace object that is never connected (nothing here talks to a scheduler)."""

    def __init__(self) -> None:
        pass


def _defaults(fn: Any) -> dict[str, Any]:
    return {n: prm.default for n, prm in inspect.signature(fn).parameters.items()}


def test_v1_imports_are_the_native_objects() -> None:
    assert Pipeline is pipelines.Pipeline
    assert PipelineData is pipelines.PipelineData
    assert PipelineParameter is pipelines.PipelineParameter
    assert PythonScriptStep is pipelines.PythonScriptStep


def test_v1_run_objects() -> None:
    ws = _Ws()
    exp = Experiment(ws, "e")
    run = exp._pipeline_run_of("p1")
    assert isinstance(run, PipelineRun) and isinstance(run, Run)
    assert isinstance(run, pipeline_run.PipelineRun)
    assert run.experiment is exp and run.id == "p1"
    step = StepRun(exp, "p1_train", "p1", "train", _is_reused=True)
    assert isinstance(step, Run) and step.name == "train" and step.is_reused
    assert step.pipeline_run_id == "p1"
    assert repr(step) == "StepRun(name='train', id='p1_train', reused)"


def test_v1_signatures() -> None:
    wait = _defaults(PipelineRun.wait_for_completion)
    assert wait["show_output"] is True and wait["raise_on_error"] is True
    assert wait["timeout_seconds"] == 9223372036854775807  # v1's sys.maxsize
    assert list(_defaults(PipelineRun.__init__))[:3] == ["self", "experiment", "run_id"]
    assert list(_defaults(StepRun.__init__))[:5] == [
        "self",
        "experiment",
        "step_run_id",
        "pipeline_run_id",
        "node_id",
    ]
    submit = _defaults(Pipeline.submit)
    assert submit["regenerate_outputs"] is False and submit["pipeline_parameters"] is None
    assert "find_step_run" in dir(PipelineRun) and "get_steps" in dir(PipelineRun)


def test_v1_script_builds_a_pipeline() -> None:
    """The shape of v1's getting-started pipeline, imports changed."""
    ws = _Ws()
    processed = PipelineData("processed_data", datastore=None)
    param = PipelineParameter(name="pipeline_arg", default_value=10)
    step1 = PythonScriptStep(
        script_name="prepare.py",
        arguments=["--output", processed, "--arg", param],
        outputs=[processed],
        compute_target="cpu-cluster",
        source_directory=".",
        allow_reuse=True,
    )
    step2 = PythonScriptStep(
        script_name="train.py",
        arguments=["--input", processed],
        inputs=[processed],
        compute_target="gpu-cluster",
        source_directory=".",
    )
    pipe = Pipeline(workspace=ws, steps=[step1, step2])
    configs = pipe.to_configs()
    assert [c.name for c in configs] == ["prepare", "train"]
    assert [c.config.compute_target for c in configs] == ["cpu-cluster", "gpu-cluster"]
    assert pipe.options("e").parameters == {"pipeline_arg": 10}
