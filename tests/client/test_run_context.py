"""The script-side Run API: what it writes on the agent's pipe, what it stages as files, how
the agent reads both, and that outside Sortie every call prints and works."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sortie.agents.attempt import write_runtime
from sortie.agents.metrics_fifo import parse_line
from sortie.agents.outputs import artifact_name, scan_outputs
from sortie.client import run_context
from sortie.client.metric_shape import shaped
from sortie.client.run_context import Run
from sortie.client.views import children_under_parents
from sortie.proto import messages as m
from sortie.proto import notes, runenv
from tests.builders import record


def online(tmp_path: Path, attempt: int = 1) -> tuple[Run, Path, Path]:
    pipe = tmp_path / "metrics"  # a plain file stands in for the agent's pipe
    outputs = tmp_path / "work" / "outputs"
    outputs.mkdir(parents=True)
    env = {
        run_context.ENV_RUN_ID: "exp_1_ab",
        run_context.ENV_ATTEMPT: str(attempt),
        run_context.ENV_EXPERIMENT: "exp",
        run_context.ENV_METRICS_FILE: str(pipe),
        run_context.ENV_OUTPUTS_DIR: str(outputs),
    }
    return Run(env), pipe, outputs


def lines(pipe: Path) -> list[m.MetricPoint | notes.ScriptNote | str]:
    return [parse_line(raw) for raw in pipe.read_bytes().splitlines()]


def test_every_call_goes_on_the_pipe_as_the_agent_reads_it(tmp_path: Path) -> None:
    run, pipe, _ = online(tmp_path)
    run.log("loss", 0.5, "training loss")
    run.log("loss", 0.25, step=7)
    run.log_list("curve", [1, 2])
    run.log_row("pr", precision=0.9, recall=0.1)
    run.log_table("t", {"epoch": [1, 2], "acc": [0.5, 0.6]})
    run.tag("team", "vision")
    run.set_tags({"lr": 0.1})
    run.set_tags(["quick"])
    run.add_properties({"seed": 7})
    child = run.child_run("fold")
    child.log("acc", 1)
    child.tag("fold", "1")
    child.complete()
    got = lines(pipe)
    assert not [g for g in got if isinstance(g, str)]
    points = [g for g in got if isinstance(g, m.MetricPoint)]
    assert [(p.name, p.value, p.step, p.column, p.run) for p in points] == [
        ("loss", 0.5, None, None, None),
        ("loss", 0.25, 7, None, None),
        ("curve", 1, 0, None, None),
        ("curve", 2, 1, None, None),
        ("pr", 0.9, None, "precision", None),
        ("pr", 0.1, None, "recall", None),
        ("t", 1, 0, "epoch", None),
        ("t", 2, 1, "epoch", None),
        ("t", 0.5, 0, "acc", None),
        ("t", 0.6, 1, "acc", None),
        ("acc", 1, None, None, "exp_1_ab_1"),
    ]
    assert [g for g in got if not isinstance(g, m.MetricPoint | str)] == [
        notes.TagsSet(tags={"team": "vision"}),
        notes.TagsSet(tags={"lr": "0.1"}),
        notes.TagsSet(tags={"quick": ""}),
        notes.PropertiesAdded(properties={"seed": "7"}),
        notes.ChildStarted(id="exp_1_ab_1", name="fold"),
        notes.TagsSet(run="exp_1_ab_1", tags={"fold": "1"}),
        notes.ChildEnded(run="exp_1_ab_1", state="Completed"),
    ]
    assert run.get_tags() == {"team": "vision", "lr": "0.1", "quick": ""}
    assert run.get_properties() == {"seed": "7"}
    assert run.get_metrics() == {
        "loss": [0.5, 0.25],
        "curve": [1, 2],
        "pr": {"precision": [0.9], "recall": [0.1]},
        "t": {"epoch": [1, 2], "acc": [0.5, 0.6]},
    }
    assert run.get_metrics("loss") == {"loss": [0.5, 0.25]}
    assert run.get_metrics(recursive=True)["exp_1_ab_1"] == {"acc": 1}
    assert child.parent is run and run.parent is None
    assert child.get_status() == "Completed" and run.get_status() == "Running"
    assert run.experiment.name == "exp" and run.experiment.workspace is None
    # the client shapes the same points the same way
    assert shaped([p for p in points if p.run is None]) == run.get_metrics()


def test_create_children_with_tags_and_a_failed_child(tmp_path: Path) -> None:
    run, pipe, _ = online(tmp_path, attempt=2)
    kids = run.create_children(tag_key="fold", tag_values=["a", "b"])
    assert [k.id for k in kids] == ["exp_1_ab_a2_1", "exp_1_ab_a2_2"]
    kids[1].fail(error_details="diverged")
    assert kids[0].get_tags() == {"fold": "a"}
    assert notes.ChildEnded(run="exp_1_ab_a2_2", state="Failed", error="diverged") in lines(pipe)
    assert len(run.create_children(2)) == 2


def test_files_are_staged_where_the_agent_uploads_them_under_their_names(
    tmp_path: Path,
) -> None:
    run, _, outputs = online(tmp_path)
    src = tmp_path / "notes.txt"
    src.write_text("hello")
    folder = tmp_path / "cfg"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.yml").write_text("a: 1")
    (folder / "sub" / "b.yml").write_text("b: 2")
    run.upload_file("logs/notes.txt", str(src))
    run.upload_file("outputs/direct.bin", io.BytesIO(b"\x00\x01"))
    run.upload_folder("config", str(folder))

    class Figure:  # what log_image needs of a matplotlib figure
        def savefig(self, fh: io.BytesIO, format: str) -> None:
            fh.write(b"\x89PNG " + format.encode())

    run.log_image("plots/loss", plot=Figure())
    run.log_image("photo", path=str(src))
    found, skipped = scan_outputs(outputs.parent)
    assert skipped == []
    assert sorted(f[0] for f in found) == [
        "config/a.yml",
        "config/sub/b.yml",
        "logs/notes.txt",
        "outputs/direct.bin",
        "photo.txt",
        "plots/loss.png",
    ]
    assert run.get_metrics()["plots/loss"] == "plots/loss.png"
    assert artifact_name(".sortie-uploads/x/y") == "x/y"
    assert artifact_name("x/y") == "outputs/x/y"
    assert run_context.UPLOADS_DIR == runenv.UPLOADS_DIR


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda r: r.upload_file("../escape.txt", "x"), ValueError, "contains '..'"),
        (lambda r: r.upload_file("/etc/passwd", "x"), ValueError, "must be a relative path"),
        (lambda r: r.log_table("t", [1, 2]), TypeError, "log_table takes a dict of column"),
        (lambda r: r.log_table("t", {"a": 1}), TypeError, "got dict"),
        (lambda r: r.log_image("i"), ValueError, "give exactly one of path= or plot="),
        (lambda r: r.log("x", [1]), TypeError, "value must be a number, string or bool"),
        (lambda r: r.log_list("x", "abc"), TypeError, "log_list takes a list"),
        (lambda r: r.set_tags(3), TypeError, "tags must be a dict"),
        (lambda r: r.tag("k", "v" * 2000), ValueError, "the value must be at most 1024"),
        (lambda r: r.add_properties({"": 1}), ValueError, "a key must be a string of 1 to"),
        (lambda r: r.create_children(), ValueError, "give count"),
        (lambda r: r.log("big", "x" * 5000), ValueError, "too large"),
    ],
)
def test_bad_input_is_refused_with_what_to_do(
    tmp_path: Path, call: object, error: type[Exception], message: str
) -> None:
    run, pipe, _ = online(tmp_path)
    with pytest.raises(error, match=message):
        call(run)  # type: ignore[operator]  # the parametrized lambdas
    assert not pipe.exists() or pipe.read_bytes() == b""


def test_a_metric_named_kind_is_still_a_metric_and_junk_is_refused() -> None:
    line = json.dumps({"name": "kind", "value": 1, "t": 0}).encode()
    assert parse_line(line) == m.MetricPoint(name="kind", value=1, t=0)
    assert isinstance(parse_line(b'{"kind": "tags", "tags": 3}'), str)
    assert isinstance(parse_line(b'{"kind": "child"}'), str)


OFFLINE_SCRIPT = """
from sortie.azureml.core import Run
from sortie.azureml.core.run import Run as Same
assert Run is Same
run = Run.get_context()
run.log("acc", 0.9)
run.log_row("pr", p=1)
run.tag("k", "v")
assert run.get_tags() == {"k": "v"}
kid = run.child_run("c")
kid.log("x", 1)
kid.complete()
run.upload_file("logs/a.txt", __file__)
print("id", run.id.startswith("OfflineRun_"), kid.parent is run)
"""


def test_the_shipped_runtime_works_offline_with_plain_python(tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    write_runtime(runtime)
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(OFFLINE_SCRIPT))
    out = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(runtime)!r}); "
            f"exec(open({str(script)!r}).read(), {{'__file__': {str(script)!r}}})",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "[metric] acc = 0.9",
        "[metric] pr[p] = 1",
        "[tags] {'k': 'v'}",
        "[child] " + out.stdout.splitlines()[3].split(" ", 1)[1],
        "[metric] x = 1",
        "[state] Completed",
        f"[upload] logs/a.txt <- {script}",
        "id True True",
    ]


def test_run_list_puts_children_under_their_parent() -> None:
    runs = [
        record("p2", created_at=5.0),
        record("p1_2", parent_id="p1", created_at=4.0),
        record("p1_1", parent_id="p1", created_at=3.0),
        record("lonely_1", parent_id="gone", created_at=2.0),
        record("p1", created_at=1.0),
    ]
    assert [r.run_id for r in children_under_parents(runs)] == [
        "p2",
        "lonely_1",
        "p1",
        "p1_1",
        "p1_2",
    ]


def test_many_long_tags_go_one_a_line_within_the_atomic_line(tmp_path: Path) -> None:
    run, pipe, _ = online(tmp_path)
    many = {f"key{i}": "v" * 1000 for i in range(6)}
    run.set_tags(many)
    raw = pipe.read_bytes().splitlines()
    assert len(raw) == 6 and all(len(line) < run_context.MAX_LINE for line in raw)
    assert [parse_line(line) for line in raw] == [
        notes.TagsSet(tags={k: v}) for k, v in many.items()
    ]
    assert run.get_tags() == many
