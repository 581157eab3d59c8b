"""The CLI as programs and people read it, against a real `sortie up`: job files, options that
never swallow positionals, `--output text|json|yaml` on every command with errors as
``{code, message}``, `run list` filters, the download layout, rounded floats and ISO times."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.conftest import SORTIE, Installation, wait_until

SCRIPT = """\
import os, sys
from pathlib import Path
from sortie import Run
print("args", sys.argv[1:], "greeting", os.environ.get("GREETING"), flush=True)
Run.get_context().log("loss", 0.1 + 0.05)
Path("outputs").mkdir(exist_ok=True)
Path("outputs/result.txt").write_text("done")
"""


def source(tmp_path: Path, name: str = "src", script: str = SCRIPT) -> Path:
    src = tmp_path / name
    src.mkdir(parents=True)
    (src / "train.py").write_text(script)
    return src


def submitted(proc: Any) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(json.loads(proc.stdout.splitlines()[0])["run_id"])


def run_ids(installation: Installation, *filters: str) -> list[str]:
    listed = installation.json("run", "list", *filters)
    assert isinstance(listed, list)
    return [r["run_id"] for r in listed]


def is_iso(value: object) -> bool:
    return isinstance(value, str) and value.endswith("Z") and value[10] == "T"


def test_a_job_file_with_an_override_flag_runs_as_written(
    installation: Installation, tmp_path: Path
) -> None:
    source(tmp_path / "project")
    job = tmp_path / "project" / "jobs" / "job.yml"
    job.parent.mkdir()
    job.write_text(
        "# paths are relative to this file\n"
        "source_directory: ../src\n"
        "script: train.py\n"
        "arguments: [--lr, 0.5]\n"
        "experiment: from-file\n"
        "environment_variables:\n"
        "  GREETING: hello\n"
        "resources:\n"
        "  cpus: 0.5\n"
        "tags: {team: vision, stage: try}\n"
    )
    # run from elsewhere: the file's paths do not depend on the working directory
    proc = installation.cli(
        "run", "submit", "-f", str(job), "--experiment", "overridden", "--tag", "stage=final",
        "--wait", "-o", "json", cwd=tmp_path,
    )  # fmt: skip
    run_id = submitted(proc)
    outcome = json.loads(proc.stdout.splitlines()[-1])
    assert (outcome["run_id"], outcome["state"], outcome["exit_code"]) == (run_id, "Completed", 0)
    shown = installation.json("run", "show", run_id)
    assert isinstance(shown, dict)
    assert (shown["experiment"], shown["arguments"]) == ("overridden", ["--lr", "0.5"])
    assert shown["tags"] == {"team": "vision", "stage": "final"}  # the flag overrides the file
    assert run_ids(installation, "--tag", "team=vision", "--tag", "stage") == [run_id]
    assert run_ids(installation, "--tag", "team=audio") == []
    logs = installation.cli("run", "logs", run_id, check=True).stdout
    assert "args ['--lr', '0.5'] greeting hello" in logs

    # text rounds floats for people; JSON keeps the value; JSON times are ISO 8601 UTC
    text = installation.cli("run", "show", run_id, check=True).stdout
    assert "loss = 0.15" in text and "0.15000000000000002" not in text
    assert shown["metrics"]["loss"] == [0.15000000000000002]
    times = [shown["created_at"], shown["started_at"], shown["ended_at"]]
    times += [h["at"] for h in shown["history"]]
    assert all(is_iso(t) for t in times), times

    # `run logs --output json`: JSON lines, one object per line
    lines = installation.cli("run", "logs", run_id, "--output", "json", check=True).stdout
    objects = [json.loads(line) for line in lines.splitlines()]
    said = next(o for o in objects if o["line"].startswith("args "))
    assert set(said) == {"rank", "time", "stream", "line"} and said["rank"] == 0
    assert said["stream"] == "stdout" and is_iso(said["time"])

    # downloads go under DEST/RUN_ID/, or into DEST itself with --flat
    dest = tmp_path / "out"
    got = installation.json("run", "download", run_id, str(dest))
    assert isinstance(got, dict) and got["run_id"] == run_id
    assert (dest / run_id / "outputs" / "result.txt").read_text() == "done"
    installation.cli("run", "download", run_id, str(dest / "flat"), "--flat", check=True)
    assert (dest / "flat" / "outputs" / "result.txt").read_text() == "done"


def test_a_bad_job_file_is_refused_naming_file_line_and_field(
    installation: Installation, tmp_path: Path
) -> None:
    source(tmp_path)
    before = len(run_ids(installation))
    cases = {
        "wrong type": (
            "script: train.py\nsource_directory: src\nresources:\n  cpus: 1\n  gpus: two\n",
            "job.yml:5: resources.gpus: expected an integer, got 'two'",
        ),
        "unknown key": (
            "script: train.py\nsource_directory: src\nnode_cout: 2\n",
            "job.yml:3: node_cout: unknown key; did you mean node_count?",
        ),
    }
    for name, (text, says) in cases.items():
        job = tmp_path / "job.yml"
        job.write_text(text)
        proc = installation.cli("run", "submit", "-f", str(job))
        assert proc.returncode == 2, (name, proc.stderr)
        assert says in proc.stderr and "Traceback" not in proc.stderr, (name, proc.stderr)
        as_json = installation.cli("run", "submit", "-f", str(job), "--output", "json")
        assert as_json.returncode == 2 and as_json.stdout == ""
        error = json.loads(as_json.stderr)
        assert error["code"] == "bad_input" and says in error["message"], (name, error)
    assert len(run_ids(installation)) == before  # nothing was submitted


def test_pip_does_not_swallow_the_source_dir(installation: Installation, tmp_path: Path) -> None:
    src = source(tmp_path, script="import sklearn\nprint('sklearn', sklearn.__version__)\n")
    proc = installation.cli(
        "run", "submit", "--pip", "scikit-learn", str(src), "--script", "train.py",
        "--wait", "--output", "json",
        timeout=600,
    )  # fmt: skip
    run_id = submitted(proc)
    shown = installation.json("run", "show", run_id)
    assert isinstance(shown, dict)
    assert shown["state"] == "Completed", shown["error"]
    assert shown["environment"]["pip"] == ["scikit-learn"]


def test_every_command_prints_json_and_yaml(installation: Installation, tmp_path: Path) -> None:
    src = source(tmp_path, script="import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    run_id = submitted(
        installation.cli("run", "submit", str(src), "--script", "train.py", "-o", "json")
    )
    wait_until(
        lambda: "up" in installation.cli("run", "logs", run_id).stdout, timeout=60, interval=0.5
    )
    for command in (
        ("status",),
        ("agent", "list"),
        ("compute", "list"),
        ("compute", "sizes"),
        ("run", "list"),
        ("run", "show", run_id),
        ("run", "why", run_id),
    ):
        as_json = json.loads(installation.cli(*command, "--output", "json", check=True).stdout)
        as_yaml = yaml.safe_load(installation.cli(*command, "-o", "yaml", check=True).stdout)
        # the same shape (values such as ages move between the two calls)
        assert type(as_yaml) is type(as_json), command
        if isinstance(as_json, dict):
            assert list(as_yaml) == list(as_json), command
    gc = ("gc", "--data-dir", str(installation.data_dir), "--dry-run", "-o", "json")
    report = json.loads(installation.cli(*gc, check=True).stdout)
    assert report["dry_run"] is True and isinstance(report["items"], list)
    agents = installation.json("agent", "list")
    assert isinstance(agents, list) and all(is_iso(a["last_seen"]) for a in agents)

    canceled = installation.json("run", "cancel", run_id)
    assert isinstance(canceled, dict) and canceled["run_id"] == run_id
    waited = installation.cli("run", "wait", run_id, "--output", "json", timeout=60)
    assert waited.returncode == 1  # the run did not complete
    outcome = json.loads(waited.stdout)
    assert outcome["state"] == "Canceled" and is_iso(outcome["ended_at"])


def test_errors_in_json_and_yaml_are_code_and_message_on_stderr(
    installation: Installation,
) -> None:
    proc = installation.cli("run", "show", "no-such-run", "--output", "json")
    assert proc.returncode == 2 and proc.stdout == ""
    assert json.loads(proc.stderr) == {
        "code": "not_found",
        "message": "no run 'no-such-run': `sortie run list` shows the runs",
    }
    proc = installation.cli("compute", "show", "nope", "-o", "yaml")
    assert proc.returncode == 2
    error = yaml.safe_load(proc.stderr)
    assert set(error) == {"code", "message"} and error["code"] == "not_found", error
    text = installation.cli("run", "show", "no-such-run")
    assert text.returncode == 2 and text.stderr.startswith("sortie: no run 'no-such-run'")


def test_an_unreachable_broker_is_code_unreachable(tmp_path: Path) -> None:
    import subprocess

    from sortie.bus.broker import free_port

    proc = subprocess.run(
        [*SORTIE, "--url", f"nats://127.0.0.1:{free_port()}", "run", "list", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert json.loads(proc.stderr)["code"] == "unreachable"


def test_run_list_filters(installation: Installation, tmp_path: Path) -> None:
    src = source(tmp_path)
    first = submitted(
        installation.cli(
            "run", "submit", str(src), "--script", "train.py", "--experiment", "filters",
            "--wait", "-o", "json",
        )
    )  # fmt: skip
    failing = source(tmp_path, "bad", script="raise SystemExit(4)\n")
    second = installation.cli(
        "run", "submit", str(failing), "--script", "train.py", "--experiment", "filters",
        "--wait", "-o", "json",
    )  # fmt: skip
    assert second.returncode == 1
    second_id = json.loads(second.stdout.splitlines()[0])["run_id"]

    assert run_ids(installation, "--experiment", "filters") == [second_id, first]
    assert run_ids(installation, "--experiment", "filters", "--state", "Completed") == [first]
    assert run_ids(installation, "--experiment", "filters", "--state", "Failed") == [second_id]
    assert run_ids(
        installation, "--experiment", "filters", "--state", "Failed", "--state", "Completed"
    ) == [second_id, first]
    assert run_ids(installation, "--experiment", "filters", "--target", "local") == [
        second_id,
        first,
    ]
    assert run_ids(installation, "--target", "nowhere") == []
    assert run_ids(installation, "--experiment", "filters", "--limit", "1") == [second_id]
    assert run_ids(installation, "--experiment", "filters", "--since", "1h") == [second_id, first]
    assert run_ids(installation, "--since", "2999-01-01T00:00:00Z") == []
    bad = installation.cli("run", "list", "--since", "yesterday")
    assert bad.returncode == 2 and "neither a duration" in bad.stderr
