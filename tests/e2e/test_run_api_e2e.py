"""The v1 Run API inside a real script on a real `sortie up`, read back from the submitted run
(SDK) and the CLI: metrics of every shape, tags, properties, files, images and child runs."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from sortie import Experiment, RunConfiguration, ScriptRunConfig, Workspace
from sortie.client.client import RequestRefused
from tests.e2e.conftest import Installation

SCRIPT = """
import io
from sortie.azureml.core import Run
from sortie.azureml.core.run import Run as SameRun

assert Run is SameRun
run = Run.get_context()
assert run.experiment.name == "runapi" and run.experiment.workspace is None

class Figure:  # what log_image needs of a matplotlib figure: savefig
    def savefig(self, fh, format="png"):
        fh.write(b"\\x89PNG fake " + format.encode())

run.log("accuracy", 0.5, "first")
run.log("accuracy", 0.75, description="second")
run.log("lr", 0.1, step=0)
run.log_list("losses", [3, 2, 1])
run.log_row("pr", precision=0.9, recall=0.4)
run.log_row("pr", precision=0.8, recall=0.6)
run.log_table("epochs", {"epoch": [1, 2], "loss": [0.4, 0.3]})
run.tag("stage", "train")
run.set_tags({"owner": "ann"})
run.add_properties({"dataset": "digits-v1"})
with open("notes.txt", "w") as fh:
    fh.write("hello")
run.upload_file("logs/notes.txt", "notes.txt")
run.upload_file("outputs/stream.bin", io.BytesIO(b"bytes"))
import os
os.makedirs("cfg/sub", exist_ok=True)
open("cfg/a.yml", "w").write("a: 1")
open("cfg/sub/b.yml", "w").write("b: 2")
run.upload_folder("config", "cfg")
run.log_image("loss_curve", plot=Figure())
try:
    run.upload_file("../escape.txt", "notes.txt")
except ValueError as exc:
    print("refused:", exc)
try:
    run.log_table("bad", [1, 2])
except TypeError as exc:
    print("refused:", exc)

fold = run.child_run("fold-1")
fold.log("acc", 0.9)
fold.log("acc", 0.95)
fold.tag("fold", "1")
fold.complete()
a, b = run.create_children(tag_key="variant", tag_values=["a", "b"])
a.log_row("cm", tp=1, fp=2)
a.fail(error_details="diverged")
b.log("acc", 0.1)  # b is still running when the script ends: it ends with its parent
print("metrics:", sorted(run.get_metrics()))
print("tags:", run.get_tags())
print("status:", fold.get_status(), a.get_status(), run.get_status())
"""


@pytest.fixture
def ws(installation: Installation, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SORTIE_PROFILE", installation.env["SORTIE_PROFILE"])
    monkeypatch.delenv("SORTIE_URL", raising=False)
    w = Workspace.connect()
    yield w
    w.close()


def test_the_whole_run_api_from_a_script_read_back(
    ws: Workspace, installation: Installation, tmp_path: Path
) -> None:
    (tmp_path / "train.py").write_text(textwrap.dedent(SCRIPT))
    rc = RunConfiguration()
    rc.environment.python.interpreter_path = sys.executable
    exp = Experiment(ws, "runapi")
    run = exp.submit(
        ScriptRunConfig(source_directory=tmp_path, script="train.py", run_config=rc),
        tags={"team": "vision"},
    )
    details = run.wait_for_completion(raise_on_error=False)
    assert details["state"] == "Completed", installation.cli("run", "logs", run.id).stdout

    logs = installation.cli("run", "logs", run.id).stdout
    assert "refused: artifact name '../escape.txt' contains '..', '.' or an empty part" in logs
    assert "refused: metric 'bad': log_table takes a dict of column name -> list" in logs
    assert "status: Completed Failed Running" in logs
    assert "tags: {'team': 'vision', 'stage': 'train', 'owner': 'ann'}" in logs

    assert run.get_metrics() == {
        "accuracy": [0.5, 0.75],
        "lr": 0.1,
        "losses": [3, 2, 1],
        "pr": {"precision": [0.9, 0.8], "recall": [0.4, 0.6]},
        "epochs": {"epoch": [1, 2], "loss": [0.4, 0.3]},
        "loss_curve": "loss_curve.png",
    }
    assert run.get_metrics(name="pr") == {"pr": {"precision": [0.9, 0.8], "recall": [0.4, 0.6]}}
    assert run.get_tags() == {"team": "vision", "stage": "train", "owner": "ann"}
    assert run.get_properties() == {"dataset": "digits-v1"}
    names = run.get_file_names()
    for name in (
        "logs/notes.txt",
        "outputs/stream.bin",
        "config/a.yml",
        "config/sub/b.yml",
        "loss_curve.png",
    ):
        assert name in names
    assert not [n for n in names if "escape" in n or ".sortie-uploads" in n]

    kids = run.get_children()
    assert [k.id for k in kids] == [f"{run.id}_1", f"{run.id}_2", f"{run.id}_3"]
    fold, a, b = kids
    assert [k.get_status() for k in kids] == ["Completed", "Failed", "Completed"]
    assert fold.get_metrics() == {"acc": [0.9, 0.95]}
    assert a.get_metrics() == {"cm": {"tp": [1], "fp": [2]}}
    assert b.get_metrics() == {"acc": 0.1}
    assert fold.get_tags() == {"fold": "1"} and a.get_tags() == {"variant": "a"}
    assert fold.get_properties() == {"name": "fold-1"}
    assert a.get_details()["error"] == {"kind": "exit_code", "message": "diverged"}
    assert fold.parent is not None and fold.parent.id == run.id and run.parent is None
    recursive = run.get_metrics(name="acc", recursive=True)
    assert recursive == {run.id: {}, fold.id: {"acc": [0.9, 0.95]}, a.id: {}, b.id: {"acc": 0.1}}
    assert run.get_children(tags={"variant": "b"})[0].id == b.id

    # a tag from outside, on the ended run; a property cannot change
    run.tag("best")
    run.set_tags({"stage": "done"})
    assert run.get_tags() == {"team": "vision", "stage": "done", "owner": "ann", "best": ""}
    with pytest.raises(RequestRefused, match="already has properties dataset"):
        run.add_properties({"dataset": "other"})
    run.add_properties({"reviewed": "yes"})
    assert run.get_properties() == {"dataset": "digits-v1", "reviewed": "yes"}

    # the experiment's runs by tag; children only when asked for
    assert [r.id for r in exp.get_runs(tags={"stage": "done"})] == [run.id]
    assert [r.id for r in exp.get_runs(tags="nope")] == []
    assert {r.id for r in exp.get_runs()} == {run.id}
    assert {r.id for r in exp.get_runs(include_children=True)} == {run.id, *(k.id for k in kids)}

    # the CLI shows the same
    show = installation.cli("run", "show", run.id, check=True).stdout
    for line in ("tag       team = vision", "property  dataset = digits-v1", f"child     {a.id}"):
        assert " ".join(line.split()) in {" ".join(x.split()) for x in show.splitlines()}
    shown = json.loads(installation.cli("run", "show", fold.id, "--output", "json").stdout)
    assert (shown["parent_id"], shown["state"], shown["metrics"]) == (
        run.id,
        "Completed",
        {"acc": [0.9, 0.95]},
    )
    listed = installation.cli("run", "list", "--experiment", "runapi", check=True).stdout
    ids = [line.split()[0] for line in listed.splitlines()[1:]]
    assert ids == [run.id, fold.id, a.id, b.id]
    assert f"  {fold.id}" in listed


def test_tagging_an_unknown_run_says_so(ws: Workspace) -> None:
    from sortie.client.sdk import SubmittedRun

    with pytest.raises(RequestRefused, match="no run 'nope_1'"):
        SubmittedRun(ws, "nope_1").tag("x", "y")


def test_run_fail_in_the_script_fails_the_run_even_when_it_exits_0(
    ws: Workspace, tmp_path: Path
) -> None:
    (tmp_path / "f.py").write_text(
        "from sortie import Run\nrun = Run.get_context()\nrun.log('x', 1)\n"
        "run.fail(error_details='bad data', error_code='E42')\nprint(run.get_status())\n"
    )
    rc = RunConfiguration()
    rc.environment.python.interpreter_path = sys.executable
    run = Experiment(ws, "runapi-fail").submit(
        ScriptRunConfig(source_directory=tmp_path, script="f.py", run_config=rc)
    )
    details = run.wait_for_completion(raise_on_error=False)
    assert (details["state"], details["exit_code"]) == ("Failed", 0)
    assert details["error"] == {"kind": "exit_code", "message": "E42: bad data"}
    assert run.get_metrics() == {"x": 1}
