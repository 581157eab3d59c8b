"""Pipelines from the user's side, end to end: the `sortie pipeline` CLI (as a child process)
and the SDK with v1's imports, against a real nats-server, scheduler and agent (processes),
running the example's real scripts (examples/pipeline: prep -> train -> evaluate).

- `pipeline submit -f` the example: `show --output json` says Completed, each step its run;
  submitted again, every step is reused (pointing at the first runs); with another parameter
  value, prep runs again because its arguments changed, and train and evaluate because their
  inputs did; with `--regenerate-outputs`, every step runs again, saying so;
- a failing step fails the pipeline and skips its downstream, while an independent branch
  still runs to completion after the failure; once the cause is gone, `pipeline rerun`
  resumes: the completed steps are reused, the others run;
- `pipeline cancel` stops a running step and cancels the step waiting on it;
- a cycle is refused (exit 2, the cycle named), as are a bad file and a run that is not a
  pipeline run;
- v1's imports: Pipeline([...]) -> Experiment.submit -> wait_for_completion -> get_steps();
  a step's changed params (AML_PARAMETER_* variables) make it run again, naming "env".
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults import Cluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline"
STEPS = ("prep", "train", "evaluate")


def until(check: Any, timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something true (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("pipeline-cli") / "c")
    c.start_broker()
    c.start_scheduler()
    c.start_agent("a1", "--target", "local", "--cpus", "3")
    try:
        until(lambda: _has_local(c), 60, "the agent of target local")
        yield c
    finally:
        c.close()


def _has_local(c: Cluster) -> bool:
    proc = c.cli("status", "--output", "json")
    return proc.returncode == 0 and '"local"' in proc.stdout


def cli_json(c: Cluster, *args: str, timeout: float = 120, code: int = 0) -> Any:
    proc = c.cli(*args, "--output", "json", timeout=timeout)
    assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def steps_of(show: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in show["steps"]}


@pytest.mark.timeout(300)
def test_submit_show_reuse_and_changed_parts(cluster: Cluster, tmp_path: Path) -> None:
    shutil.copytree(EXAMPLE, tmp_path / "example")
    pfile = str(tmp_path / "example" / "pipeline.yml")
    first = cli_json(cluster, "pipeline", "submit", "-f", pfile, "--wait", timeout=240)["run_id"]
    show = cli_json(cluster, "pipeline", "show", first)
    assert show["state"] == "Completed" and show["name"] == "digits"
    assert show["parameters"] == {"holdout": 0.25}
    steps = steps_of(show)
    assert list(steps) == list(STEPS)
    for name in STEPS:
        assert steps[name]["state"] == "completed", steps[name]
        assert steps[name]["run_state"] == "Completed"
        assert steps[name]["run_id"]
    assert set(steps["prep"]["data"]) == {"prepared"} and set(steps["train"]["data"]) == {"model"}

    again = cli_json(cluster, "pipeline", "submit", "-f", pfile, "--wait", timeout=240)["run_id"]
    reused = steps_of(cli_json(cluster, "pipeline", "show", again))
    for name in STEPS:
        assert reused[name]["state"] == "reused", reused[name]
        assert reused[name]["reused_from"] == steps[name]["run_id"]
    text = cluster.cli("pipeline", "show", again)
    assert text.returncode == 0 and f"reused {steps['train']['run_id']}" in text.stdout

    other = cli_json(
        cluster, "pipeline", "submit", "-f", pfile, "--param", "holdout=0.5", "--wait", timeout=240
    )["run_id"]
    changed = steps_of(cli_json(cluster, "pipeline", "show", other))
    assert all(changed[n]["state"] == "completed" for n in STEPS), changed
    assert changed["prep"]["changed"] == ["arguments"]
    assert any(part.startswith("inputs") for part in changed["train"]["changed"])

    fresh = cli_json(
        cluster, "pipeline", "submit", "-f", pfile, "--regenerate-outputs", "--wait", timeout=240
    )["run_id"]
    shown = cli_json(cluster, "pipeline", "show", fresh)
    assert shown["regenerate_outputs"] is True
    regenerated = steps_of(shown)
    for name in STEPS:
        assert regenerated[name]["state"] == "completed", regenerated[name]
        assert regenerated[name]["ran_because"] == "regenerate_outputs", regenerated[name]
        assert regenerated[name]["run_id"] not in (steps[name]["run_id"], None)
    listed = cli_json(cluster, "pipeline", "list", "--experiment", "pipeline-example")
    assert {first, again, other, fresh} <= {row["run_id"] for row in listed}


FLAKY = """\
import argparse, pathlib, sys
a = argparse.ArgumentParser(); a.add_argument("--needs"); a.add_argument("--out")
args = a.parse_args()
if not pathlib.Path(args.needs).exists():
    sys.exit(f"{args.needs} is missing")
pathlib.Path(args.out, "x.txt").write_text("x")
"""

WRITE = """\
import argparse, pathlib
a = argparse.ArgumentParser(); a.add_argument("--out"); args = a.parse_args()
pathlib.Path(args.out, "x.txt").write_text("{tag}")
"""

READ = """\
import argparse, pathlib
a = argparse.ArgumentParser(); a.add_argument("--data"); args = a.parse_args()
print(pathlib.Path(args.data, "x.txt").read_text())
"""

# waits for a file to exist (bounded), then reads its data
SLOW = """\
import argparse, pathlib, time
a = argparse.ArgumentParser(); a.add_argument("--after"); a.add_argument("--data")
args = a.parse_args()
deadline = time.monotonic() + 120
while not pathlib.Path(args.after).exists() and time.monotonic() < deadline:
    time.sleep(0.2)
print(pathlib.Path(args.data, "x.txt").read_text())
"""

FAILING = """\
name: resume
experiment: pipeline-resume
steps:
  - name: first
    script: write.py
    source_directory: write
    arguments: [--out, "${{{{data.a}}}}"]
    outputs: [a]
  - name: second
    script: flaky.py
    source_directory: flaky
    arguments: [--needs, "{marker}", --out, "${{{{data.b}}}}"]
    inputs: [a]
    outputs: [b]
  - name: third
    script: read.py
    source_directory: read
    arguments: [--data, "${{{{data.b}}}}"]
    inputs: [b]
  - name: side
    script: slow.py
    source_directory: slow
    arguments: [--after, "{release}", --data, "${{{{data.a}}}}"]
    inputs: [a]
"""

HELD = """\
name: held
experiment: pipeline-cancel
steps:
  - name: hold
    script: slow.py
    source_directory: slow
    arguments: [--after, "{release}", --data, "${{{{data.a}}}}"]
    inputs: [a]
    outputs: [b]
  - name: first
    script: write.py
    source_directory: write
    arguments: [--out, "${{{{data.a}}}}"]
    outputs: [a]
  - name: after
    script: read.py
    source_directory: read
    arguments: [--data, "${{{{data.b}}}}"]
    inputs: [b]
"""


def _ended(c: Cluster, run_id: str) -> dict[str, Any] | None:
    """`pipeline show`, once the pipeline run has ended."""
    shown = cli_json(c, "pipeline", "show", run_id)
    return shown if shown["ended_at"] else None


def _project(root: Path, text: str, tag: str) -> Path:
    for name, body in (
        ("write", WRITE.format(tag=tag)),
        ("flaky", FLAKY),
        ("read", READ),
        ("slow", SLOW),
    ):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / f"{name}.py").write_text(body)
    (root / "pipeline.yml").write_text(text)
    return root / "pipeline.yml"


@pytest.mark.timeout(300)
def test_failure_skips_downstream_and_rerun_resumes(cluster: Cluster, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    release = tmp_path / "release"  # side, independent of second, waits for this file
    pfile = _project(tmp_path, FAILING.format(marker=marker, release=release), tag=str(tmp_path))
    proc = cluster.cli("pipeline", "submit", "-f", str(pfile), "--output", "json")
    assert proc.returncode == 0, proc.stderr
    sub = json.loads(proc.stdout)

    def second_failed() -> dict[str, Any] | None:
        shown = cli_json(cluster, "pipeline", "show", sub["run_id"])
        return shown if steps_of(shown)["second"]["state"] == "failed" else None

    # second has failed while side still runs: the pipeline waits for it
    during = steps_of(until(second_failed, 120, "second to fail"))
    assert during["side"]["state"] == "running", during["side"]
    assert during["third"]["state"] == "skipped"
    release.write_text("go")
    failed = until(lambda: _ended(cluster, sub["run_id"]), 120, "the pipeline to end")
    assert failed["state"] == "Failed", failed
    steps = steps_of(failed)
    assert [steps[n]["state"] for n in ("first", "second", "third", "side")] == [
        "completed",
        "failed",
        "skipped",
        "completed",
    ]
    assert steps["side"]["run_state"] == "Completed"
    assert steps["third"]["reason"] and steps["third"]["run_id"] is None
    # a run that is not a pipeline run (a step's) is refused, saying what to use
    proc = cluster.cli("pipeline", "show", steps["first"]["run_id"])
    assert proc.returncode == 2 and "is not a pipeline run" in proc.stderr

    marker.write_text("here")
    rerun = cli_json(cluster, "pipeline", "rerun", sub["run_id"], "--wait", timeout=240)
    assert rerun["rerun_of"] == sub["run_id"]
    resumed = cli_json(cluster, "pipeline", "show", rerun["run_id"])
    assert resumed["state"] == "Completed" and resumed["rerun_of"] == sub["run_id"]
    steps2 = steps_of(resumed)
    assert steps2["first"]["state"] == "reused"
    assert steps2["first"]["reused_from"] == steps["first"]["run_id"]
    assert steps2["side"]["state"] == "reused"
    assert steps2["side"]["reused_from"] == steps["side"]["run_id"]
    assert steps2["second"]["state"] == "completed" and steps2["third"]["state"] == "completed"


@pytest.mark.timeout(300)
def test_cancel_stops_the_running_step_and_cancels_what_waits(
    cluster: Cluster, tmp_path: Path
) -> None:
    release = tmp_path / "release"  # never written: hold runs until it is canceled
    pfile = _project(tmp_path, HELD.format(release=release), tag=str(tmp_path))
    proc = cluster.cli("pipeline", "submit", "-f", str(pfile), "--output", "json")
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]

    def hold_running() -> bool:
        hold = steps_of(cli_json(cluster, "pipeline", "show", run_id))["hold"]
        return hold["run_state"] == "Running"

    until(hold_running, 120, "hold's run to be Running")
    cli_json(cluster, "pipeline", "cancel", run_id)

    shown = until(lambda: _ended(cluster, run_id), 120, "the pipeline to end")
    assert shown["state"] == "Canceled", shown
    steps = steps_of(shown)
    assert steps["first"]["state"] == "completed"
    assert steps["hold"]["state"] == "canceled" and steps["hold"]["run_state"] == "Canceled"
    assert steps["after"]["state"] == "canceled", steps["after"]
    assert steps["after"]["run_id"] is None
    text = cluster.cli("pipeline", "cancel", run_id)  # again: it says it has ended
    assert text.returncode == 2 and "already ended: Canceled" in text.stderr, text


CYCLE = """\
name: loop
steps:
  - {name: a, script: write.py, source_directory: write, inputs: [y], outputs: [x]}
  - {name: b, script: write.py, source_directory: write, inputs: [x], outputs: [y]}
"""


def test_refusals(cluster: Cluster, tmp_path: Path) -> None:
    pfile = _project(tmp_path, CYCLE, tag="c")
    proc = cluster.cli("pipeline", "submit", "-f", str(pfile))
    assert proc.returncode == 2 and "cycle" in proc.stderr, proc.stderr
    assert "a -> b -> a" in proc.stderr or "b -> a -> b" in proc.stderr
    bad = _project(tmp_path / "bad", CYCLE.replace("inputs: [y], ", "inptus: [y], "), tag="c")
    proc = cluster.cli("pipeline", "submit", "-f", str(bad))
    assert proc.returncode == 2 and "pipeline.yml:3: steps[0].inptus: unknown key" in proc.stderr
    proc = cluster.cli("pipeline", "submit", "-f", str(pfile), "--param", "nope=1")
    assert proc.returncode == 2 and "--param 'nope=1'" in proc.stderr


@pytest.mark.timeout(300)
def test_sdk_v1_pipeline(cluster: Cluster, tmp_path: Path) -> None:
    from sortie.azureml.core import Experiment, Run, Workspace
    from sortie.azureml.pipeline.core import (
        Pipeline,
        PipelineData,
        PipelineParameter,
        PipelineRun,
        StepRun,
    )
    from sortie.azureml.pipeline.steps import PythonScriptStep

    shutil.copytree(EXAMPLE / "steps", tmp_path / "steps")
    (tmp_path / "steps" / "prep" / "prep.py").write_text(
        (EXAMPLE / "steps" / "prep" / "prep.py").read_text() + "\n# the SDK test's copy\n"
    )
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"url": cluster.url}))
    ws = Workspace.from_config(path=config)
    try:
        prepared, model = PipelineData("prepared"), PipelineData("model")
        holdout = PipelineParameter(name="holdout", default_value=0.25)
        src = tmp_path / "steps"
        prep = PythonScriptStep(
            script_name="prep.py",
            arguments=["--holdout", holdout, "--out", prepared],
            outputs=[prepared],
            compute_target="local",
            source_directory=str(src / "prep"),
        )
        train = PythonScriptStep(
            script_name="train.py",
            arguments=["--data", prepared, "--model", model],
            inputs=[prepared],
            outputs=[model],
            compute_target="local",
            source_directory=str(src / "train"),
        )
        evaluate = PythonScriptStep(
            script_name="evaluate.py",
            arguments=["--data", prepared, "--model", model],
            inputs=[prepared, model],
            compute_target="local",
            source_directory=str(src / "evaluate"),
        )
        pipeline = Pipeline(workspace=ws, steps=[prep, train, evaluate])
        assert pipeline.validate() == []
        run = Experiment(ws, "v1-pipeline").submit(pipeline, pipeline_parameters={"holdout": 0.3})
        assert isinstance(run, PipelineRun) and isinstance(run, Run)
        assert run.wait_for_completion(show_output=True) == "Completed"
        got = run.get_steps()
        assert [s.name for s in got] == ["prep", "train", "evaluate"]
        assert all(isinstance(s, StepRun) and not s.is_reused for s in got)
        assert all(s.get_status() == "Completed" for s in got)
        assert all(s.parent is not None and s.parent.id == run.id for s in got)
        evaluated = run.find_step_run("evaluate")[0]
        metrics = until(evaluated.get_metrics, 30, "the accuracy evaluate logged")
        assert 0.5 <= metrics["accuracy"] <= 1.0, metrics

        again = pipeline.submit("v1-pipeline", pipeline_parameters={"holdout": 0.3})
        assert again.wait_for_completion(show_output=False) == "Completed"
        assert [(s.is_reused, s.id) for s in again.get_steps()] == [(True, s.id) for s in got]

        # a step's params reach it as AML_PARAMETER_* variables: changing one runs it again
        prep2 = PythonScriptStep(
            script_name="prep.py",
            arguments=["--holdout", holdout, "--out", prepared],
            outputs=[prepared],
            compute_target="local",
            source_directory=str(src / "prep"),
            params={"note": "second"},
        )
        changed = Pipeline(workspace=ws, steps=[prep2, train, evaluate]).submit(
            "v1-pipeline", pipeline_parameters={"holdout": 0.3}
        )
        assert changed.wait_for_completion(show_output=False) == "Completed"
        prep_run = changed.find_step_run("prep")[0]
        assert not prep_run.is_reused and prep_run.id != got[0].id
        shown = steps_of(cli_json(cluster, "pipeline", "show", changed.id))
        assert shown["prep"]["changed"] == ["env"], shown["prep"]

        a, b = PipelineData("a"), PipelineData("b")
        loop = Pipeline(
            ws,
            [
                PythonScriptStep(
                    "prep.py", name="x", inputs=[b], outputs=[a], source_directory=str(src / "prep")
                ),
                PythonScriptStep(
                    "prep.py", name="y", inputs=[a], outputs=[b], source_directory=str(src / "prep")
                ),
            ],
        )
        (problem,) = loop.validate()
        assert "cycle" in problem
    finally:
        ws.close()
