"""Pipeline files: the YAML read into steps (each as its job file would run), placeholders
as tokens, defaults filled in, refusals naming the file, line and field; the schema current."""

from __future__ import annotations

from pathlib import Path

import pytest

from sortie.cli.jobfile import JobFileError
from sortie.cli.pipeline_file import load, param_values, schema, step_configs
from sortie.proto import pipelines as p

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "pipeline" / "pipeline.yml"


def test_example_reads_as_three_steps() -> None:
    pf, where = load(EXAMPLE)
    configs = step_configs(pf, where, EXAMPLE.parent)
    assert [c.name for c in configs] == ["prep", "train", "evaluate"]
    prep, train, evaluate = configs
    assert prep.outputs == ["prepared"] and train.inputs == ["prepared"]
    assert evaluate.inputs == ["prepared", "model"]
    assert prep.config.arguments == [
        "--holdout",
        p.param_token("holdout"),
        "--out",
        p.data_token("prepared"),
    ]
    assert Path(train.config.source_directory) == EXAMPLE.parent / "steps" / "train"
    assert pf.parameters == {"holdout": 0.25}


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "a.py").write_text("print(1)\n")
    path = tmp_path / "pipeline.yml"
    path.write_text(text)
    return path


GOOD = """\
name: flow
parameters: {n: 3, fast: false, label: x}
defaults:
  target: cpu
  environment_variables: {A: "1"}
  resources: {cpus: 2}
steps:
  - name: one
    script: a.py
    source_directory: src
    arguments: ["--n=${{ params.n }}", "${{data.d}}"]
    outputs: [d]
    environment_variables: {B: "2"}
  - name: two
    script: a.py
    source_directory: src
    inputs: [d]
    target: gpu
    resources: {cpus: 1, gpus: 1}
    allow_reuse: false
    run_after: [one]
"""


def test_defaults_and_placeholders(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    pf, where = load(path)
    one, two = step_configs(pf, where, path.parent)
    assert one.config.arguments == [f"--n={p.param_token('n')}", p.data_token("d")]
    rc1, rc2 = one.config.run_config, two.config.run_config
    assert rc1.target == "cpu" and rc1.cpus == 2
    assert rc1.environment_variables == {"A": "1", "B": "2"}
    assert rc2.target == "gpu" and rc2.gpus == 1 and rc2.cpus == 1
    assert not two.allow_reuse and two.run_after == ["one"]


def test_param_values_typed(tmp_path: Path) -> None:
    pf, _ = load(_write(tmp_path, GOOD))
    assert param_values(pf, ["n=5", "fast=true", "label=7"]) == {
        "n": 5,
        "fast": True,
        "label": "7",
    }
    with pytest.raises(JobFileError, match=r"n is a int \(its default is 3\)"):
        param_values(pf, ["n=five"])
    with pytest.raises(JobFileError, match=r"declares \(n, fast, label\)"):
        param_values(pf, ["m=1"])


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        (
            "    allow_reuse: false",
            "    allow_resue: false",
            r":20: steps\[1\].allow_resue: unknown key; did you mean allow_reuse",
        ),
        (
            '"${{data.d}}"',
            '"${{data.e}}"',
            r":11: steps\[0\].arguments\[1\]: \$\{\{data.e\}\}: 'e' is not among the step's "
            r"inputs or outputs \(d\)",
        ),
        (
            '"--n=${{ params.n }}"',
            '"${{params.m}}"',
            r"no parameter 'm': declare it under parameters",
        ),
        (
            '"--n=${{ params.n }}"',
            '"${{ n }}"',
            r"write \$\{\{data.NAME\}\} or \$\{\{params.NAME\}\}",
        ),
        ("  - name: two", "  - name: two.b", r"steps\[1\].name"),
        (
            "    resources: {cpus: 1, gpus: 1}",
            "    resources: {cpus: 1, gpus: two}",
            r":19: steps\[1\].resources.gpus: expected an integer, got 'two'",
        ),
        (
            "    target: gpu",
            "    target: gpu\n    environment: {docker: {enabled: true}}",
            r"steps\[1\].environment.docker: enabled: true needs base_image",
        ),
        (
            "    source_directory: src\n    inputs",
            "    source_directory: nowhere\n    inputs",
            r"steps\[1\].source_directory: .*nowhere is not a directory",
        ),
    ],
)
def test_refusals_name_the_field(tmp_path: Path, old: str, new: str, says: str) -> None:
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(JobFileError, match=says):
        pf, where = load(path)
        step_configs(pf, where, path.parent)


def test_not_a_pipeline(tmp_path: Path) -> None:
    with pytest.raises(JobFileError, match=r":1: a pipeline file is a mapping.*pipeline.schema"):
        load(_write(tmp_path, "- just a list\n"))
    with pytest.raises(JobFileError, match=r"steps: .*length"):
        load(_write(tmp_path, "name: x\nsteps: []\n"))


def test_pipeline_schema_is_current() -> None:
    doc = ROOT / "docs" / "pipeline.schema.json"
    regenerate = "regenerate: python -m sortie.cli.pipeline_file > docs/pipeline.schema.json"
    assert doc.read_text() == schema(), regenerate
