"""The SDK's pipeline objects: their conversion to the client's StepConfigs and the wire's
PipelineSpec, tokens in arguments, v1's signatures and defaults, refusals."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import pytest

from sortie.client import pipeline_submit as ps
from sortie.client.pipelines import (
    Pipeline,
    PipelineConfigError,
    PipelineData,
    PipelineParameter,
    PythonScriptStep,
)
from sortie.client.runconfig import RunConfiguration
from sortie.proto import messages as m
from sortie.proto import pipelines as p


def _params(fn: Any) -> list[tuple[str, Any]]:
    return [
        (n, prm.default)
        for n, prm in inspect.signature(fn).parameters.items()
        if n not in ("self", "kwargs")
    ]


def test_v1_signatures_and_defaults() -> None:
    empty = inspect.Parameter.empty
    assert _params(PythonScriptStep.__init__) == [
        ("script_name", empty),
        ("name", None),
        ("arguments", None),
        ("compute_target", None),
        ("runconfig", None),
        ("runconfig_pipeline_params", None),
        ("inputs", None),
        ("outputs", None),
        ("params", None),
        ("source_directory", None),
        ("allow_reuse", True),
        ("version", None),
        ("hash_paths", None),
    ]
    assert _params(PipelineData.__init__)[:4] == [
        ("name", empty),
        ("datastore", None),
        ("output_name", None),
        ("output_mode", "mount"),
    ]
    assert _params(PipelineParameter.__init__) == [("name", empty), ("default_value", empty)]
    assert _params(Pipeline)[:6] == [
        ("workspace", empty),
        ("steps", empty),
        ("description", None),
        ("default_datastore", None),
        ("default_source_directory", None),
        ("resolve_closure", True),
    ]


def test_tokens_in_arguments() -> None:
    data, lr = PipelineData("prepared"), PipelineParameter("lr", 0.1)
    assert str(data) == p.data_token("prepared")
    assert str(lr) == p.param_token("lr")
    assert f"--out={data}" == "--out=" + p.data_token("prepared")
    assert PipelineData("x", output_name="y").name == "y"  # v1: output_name names the output


def _graph() -> tuple[PythonScriptStep, PythonScriptStep, PythonScriptStep]:
    prepared, model = PipelineData("prepared"), PipelineData("model")
    lr = PipelineParameter("lr", default_value=0.5)
    prep = PythonScriptStep(
        "prep.py", arguments=["--out", prepared], outputs=[prepared], compute_target="cpu"
    )
    train = PythonScriptStep(
        "train.py",
        name="train",
        arguments=["--data", prepared, "--lr", lr, "--model", model],
        inputs=[prepared],
        outputs=[model],
        runconfig=RunConfiguration(target="gpu", gpus=1),
        allow_reuse=False,
        params={"epochs": 3},
    )
    report = PythonScriptStep("report.py", name="report", compute_target=("cpu", "AmlCompute"))
    report.run_after(train)
    return prep, train, report


def test_steps_to_step_configs() -> None:
    prep, _train, report = _graph()
    configs = {c.name: c for c in Pipeline(None, [report]).to_configs()}  # type: ignore[arg-type]
    # resolve_closure brought in train (run_after) and prep (train's input's producer)
    assert list(configs) == ["report", "train", "prep"]
    assert prep.name == "prep"  # unnamed: the script's stem
    c = configs["train"]
    assert c.inputs == ["prepared"] and c.outputs == ["model"] and not c.allow_reuse
    assert c.config.arguments == [
        "--data",
        p.data_token("prepared"),
        "--lr",
        p.param_token("lr"),
        "--model",
        p.data_token("model"),
    ]
    assert c.config.run_config.target == "gpu" and c.config.compute_target is None
    assert c.config.run_config.environment_variables == {"AML_PARAMETER_epochs": "3"}
    assert configs["prep"].config.compute_target == "cpu"
    assert configs["report"].config.compute_target == "cpu"  # v1's (name, type) tuple
    assert configs["report"].run_after == ["train"]
    assert configs["report"].config.source_directory == "."


def test_without_closure_only_the_steps_given() -> None:
    _, _, report = _graph()
    pipe = Pipeline(None, [report], resolve_closure=False)  # type: ignore[arg-type]
    assert [c.name for c in pipe.to_configs()] == ["report"]


def test_options_gather_parameters() -> None:
    prep, train, _ = _graph()
    pipe = Pipeline(None, [prep, train], description="d")  # type: ignore[arg-type]
    opts = pipe.options("exp", pipeline_parameters={"lr": 0.01}, regenerate_outputs=True)
    assert opts.parameters == {"lr": 0.5} and opts.values == {"lr": 0.01}
    assert opts.regenerate_outputs and opts.experiment == "exp" and opts.description == "d"


class _Capture:
    """A small stand-in for the client's three pipeline calls: what would be sent."""

    def __init__(self) -> None:
        self.checked: list[m.SubmitRequest] = []
        self.submitted: list[m.SubmitRequest] = []
        self.uploaded = 0

    async def check_request(self, request: m.SubmitRequest) -> None:
        self.checked.append(request)

    async def upload_plan(self, plan: Any) -> Any:
        from sortie.client.snapshot import UploadResult

        self.uploaded += 1
        return UploadResult(
            snapshot_id="",
            files=plan.files,
            total_bytes=plan.total_bytes,
            uploaded_files=plan.files,
            uploaded_bytes=plan.total_bytes,
            manifest_bytes=0,
        )

    async def submit_request(self, request: m.SubmitRequest) -> m.SubmitAccepted:
        self.submitted.append(request)
        return m.SubmitAccepted(run_id="pipe1")


def test_conversion_to_pipeline_spec(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "s.py").write_text(f"print({name!r})\n")
    data = PipelineData("d")
    one = PythonScriptStep(
        "s.py", name="one", arguments=[data], outputs=[data], source_directory=tmp_path / "a"
    )
    two = PythonScriptStep(
        "s.py", name="two", arguments=[data], inputs=[data], source_directory=tmp_path / "b"
    )
    three = PythonScriptStep("s.py", name="three", inputs=[data], source_directory=tmp_path / "b")
    pipe = Pipeline(None, [one, two, three], name="flow")  # type: ignore[arg-type]
    client = _Capture()
    opts = pipe.options("e", pipeline_parameters={})
    sub = asyncio.run(ps.submit_pipeline(client, "flow", pipe.to_configs(), opts))  # type: ignore[arg-type]
    assert sub.run_id == "pipe1" and client.uploaded == 2  # one upload per source directory
    assert client.checked == client.submitted  # checked (before any upload) as submitted
    req = client.submitted[0].pipeline
    assert req is not None and req.spec.name == "flow"
    steps = {s.name: s for s in req.spec.steps}
    assert steps["one"].outputs == ["d"] and steps["two"].inputs == ["d"]
    assert steps["one"].run.arguments == [p.data_token("d")]
    assert steps["two"].run.snapshot_id == steps["three"].run.snapshot_id
    assert steps["one"].run.snapshot_id != steps["two"].run.snapshot_id
    assert all(s.run.experiment == "e" for s in steps.values())


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: PipelineData("bad name"), "PipelineData name 'bad name'"),
        (lambda: PipelineParameter("lr", [1]), "default_value must be"),
        (lambda: PythonScriptStep("s.py", name="a.b"), "PythonScriptStep name 'a.b'"),
        (lambda: PythonScriptStep("s.py", inputs=["x"]), "inputs: give PipelineData"),
        (
            lambda: PythonScriptStep("s.py", runconfig_pipeline_params={"NodeCount": 1}),
            "runconfig_pipeline_params",
        ),
        (lambda: Pipeline(None, []), "takes a list of PythonScriptStep"),
        (
            lambda: Pipeline(
                None,  # type: ignore[arg-type]
                [
                    PythonScriptStep("a.py", arguments=[PipelineParameter("x", 1)]),
                    PythonScriptStep("b.py", arguments=[PipelineParameter("x", 2)]),
                ],
            ).options("e"),
            "two PipelineParameters named 'x'",
        ),
        (
            lambda: PythonScriptStep("a.py", params={"x": PipelineParameter("x", 1)}).to_config(),
            "put it in the step's arguments",
        ),
    ],
)
def test_bad_input_refused(make: Any, says: str) -> None:
    with pytest.raises(PipelineConfigError, match=says.replace("(", r"\(")):
        make()


def test_unknown_attributes_refused() -> None:
    step = PythonScriptStep("train.py")
    with pytest.raises(AttributeError, match="did you mean 'allow_reuse'"):
        step.allow_resue = False  # type: ignore[attr-defined]
    step.allow_reuse = False  # a known one may be set
    with pytest.raises(AttributeError, match="PipelineData has no attribute 'nmae'"):
        PipelineData("d").nmae  # type: ignore[attr-defined]  # noqa: B018
    pipe = Pipeline(None, [step])  # type: ignore[arg-type]
    with pytest.raises(AttributeError, match="did you mean 'description'"):
        pipe.descripton = "x"  # type: ignore[attr-defined]


def test_exported_from_sortie() -> None:
    import sortie
    from sortie.client import sdk

    for name in ("Pipeline", "PipelineData", "PipelineParameter", "PythonScriptStep"):
        assert getattr(sortie, name) is getattr(sdk, name)
    assert sortie.PipelineRun.__name__ == "PipelineRun"
    assert sortie.StepRun.__name__ == "StepRun"
