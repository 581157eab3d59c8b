"""The user's path through the CLI, against a real `sortie up`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.e2e.conftest import REPO, Installation, shared_dir

EXAMPLE = REPO / "examples" / "sklearn-digits"


def copy_example(tmp_path: Path) -> Path:
    src = tmp_path / "digits"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    return src


def test_example_in_a_system_managed_env_end_to_end(
    installation: Installation, tmp_path: Path
) -> None:
    src = copy_example(tmp_path)
    proc = installation.cli(
        "run",
        "submit",
        str(src),
        "--script",
        "train.py",
        "--experiment",
        "digits",
        "--pip",
        "scikit-learn",
        "--arg=--C",
        "--arg",
        "0.5",
        "--wait",
        "--output",
        "json",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    first = json.loads(proc.stdout.strip().splitlines()[0])
    run_id = first["run_id"]
    snap = first["snapshot"]
    assert snap["files"] == 3 and snap["uploaded_files"] == 3
    assert snap["bytes"] == snap["uploaded_bytes"] > 0

    shown = installation.json("run", "show", run_id)
    assert isinstance(shown, dict)
    assert shown["state"] == "Completed" and shown["exit_code"] == 0 and shown["attempt"] == 1
    assert shown["experiment"] == "digits" and shown["target"] == "local"
    assert shown["arguments"] == ["--C", "0.5"]
    assert shown["error"] is None
    assert shown["created_at"] <= shown["started_at"] <= shown["ended_at"]
    assert 0.9 < shown["metrics"]["accuracy"][0] <= 1.0
    assert shown["metrics"]["C"] == [0.5]
    assert sorted(shown["artifacts"]) == ["outputs/metrics.json", "outputs/model.pkl"]
    assert [h["state"] for h in shown["history"]] == [
        "Queued",
        "Preparing",
        "Starting",
        "Running",
        "Finalizing",
        "Completed",
    ]
    assert set(shown["git"]) >= {"commit", "branch", "dirty"}

    logs = installation.cli("run", "logs", run_id, check=True).stdout
    assert "test accuracy" in logs
    assert "building environment" in logs or "using cached environment" in logs

    out = tmp_path / "out"
    installation.cli("run", "download", run_id, str(out), check=True)
    # under DEST/RUN_ID/, so that a second run's download never overwrites the first
    assert (out / run_id / "outputs" / "model.pkl").stat().st_size > 1000
    assert json.loads((out / run_id / "outputs" / "metrics.json").read_text())["accuracy"] > 0.9

    listed = installation.json("run", "list", "--experiment", "digits")
    assert isinstance(listed, list) and listed[0]["run_id"] == run_id

    # the same spec again: the environment comes from the cache and no file is re-sent
    again = installation.cli(
        "run",
        "submit",
        str(src),
        "--script",
        "train.py",
        "--experiment",
        "digits",
        "--pip",
        "scikit-learn",
        "--wait",
        "--output",
        "json",
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    snap2 = json.loads(again.stdout.strip().splitlines()[0])
    assert snap2["snapshot"]["uploaded_files"] == 0 and snap2["snapshot"]["uploaded_bytes"] == 0
    logs2 = installation.cli("run", "logs", snap2["run_id"], check=True).stdout
    assert "using cached environment" in logs2


def test_edit_one_file_uploads_only_that_file(installation: Installation, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}.txt").write_text(f"file {i}\n" * 50)
    (src / "main.py").write_text("print('hi')\n")
    (src / ".gitignore").write_text("*.log\n")
    (src / "big.log").write_text("x" * 10000)
    args = ("run", "submit", str(src), "--script", "main.py")
    first = installation.json(*args)
    assert isinstance(first, dict)
    assert first["snapshot"]["files"] == 22  # 20 + main.py + .gitignore; big.log ignored
    (src / "f3.txt").write_text("changed\n")
    second = installation.json(*args)
    assert isinstance(second, dict)
    assert second["snapshot"]["uploaded_files"] == 1
    assert second["snapshot"]["uploaded_bytes"] == len("changed\n")


def test_wait_streams_output_and_exit_code_follows_the_run(
    installation: Installation, tmp_path: Path
) -> None:
    src = tmp_path / "fails"
    src.mkdir()
    (src / "boom.py").write_text(
        "import sys\nprint('before the end', flush=True)\n"
        "print('to stderr', file=sys.stderr, flush=True)\nsys.exit(3)\n"
    )
    proc = installation.cli("run", "submit", str(src), "--script", "boom.py", "--wait")
    assert proc.returncode == 1
    assert "before the end" in proc.stdout
    assert "to stderr" in proc.stderr
    assert "Failed (exit code 3)" in proc.stderr


def test_max_duration_fails_with_timeout(installation: Installation, tmp_path: Path) -> None:
    src = tmp_path / "slow"
    src.mkdir()
    (src / "slow.py").write_text("import time\nprint('start', flush=True)\ntime.sleep(120)\n")
    proc = installation.cli(
        "run",
        "submit",
        str(src),
        "--script",
        "slow.py",
        "--max-duration",
        "1.5",
        "--wait",
        "--output",
        "json",
        timeout=60,
    )
    assert proc.returncode == 1
    run_id = json.loads(proc.stdout.splitlines()[0])["run_id"]
    shown = installation.json("run", "show", run_id)
    assert isinstance(shown, dict)
    assert shown["state"] == "Failed"
    assert shown["error"]["kind"] == "timeout" and "1.5" in shown["error"]["message"]


def test_cancel_stops_the_whole_process_group(installation: Installation, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    src.mkdir()
    # where a run may write beyond its own dirs (SORTIE_RUN_WRITABLE)
    marker = shared_dir(installation.data_dir.parent) / f"child-alive-{tmp_path.name}"
    (src / "parent.sh").write_text(
        f"( while true; do date > {marker}; sleep 0.2; done ) &\necho started\nwait\n"
    )
    sub = installation.json("run", "submit", str(src), "--script", "parent.sh")
    assert isinstance(sub, dict)
    run_id = sub["run_id"]
    from tests.e2e.conftest import wait_until

    wait_until(lambda: marker.exists(), timeout=30)
    installation.cli("run", "cancel", run_id, check=True)
    done = installation.cli("run", "wait", run_id, timeout=60)
    assert done.returncode == 1 and "Canceled" in done.stderr
    import time

    before = marker.stat().st_mtime
    time.sleep(1.0)
    assert marker.stat().st_mtime == before, "the script's child kept running after cancel"
    again = installation.cli("run", "cancel", run_id)
    assert again.returncode == 2 and "already ended: Canceled" in again.stderr


def test_bad_input_gets_clear_errors_and_changes_nothing(
    installation: Installation, tmp_path: Path
) -> None:
    src = tmp_path / "ok"
    src.mkdir()
    (src / "t.py").write_text("print(1)\n")
    before = installation.json("run", "list")
    cases = [
        (
            ("run", "submit", str(src), "--script", "t.py", "--target", "nowhere"),
            "unknown compute target 'nowhere'; known targets: local",
        ),
        (("run", "submit", str(src), "--script", "missing.py"), "'missing.py' was not found"),
        (("run", "submit", str(tmp_path / "nope"), "--script", "t.py"), "does not exist"),
        (
            ("run", "submit", str(src), "--script", "t.py", "--experiment", "a b"),
            "experiment name 'a b' is not valid",
        ),
        (
            (
                "run",
                "submit",
                str(src),
                "--script",
                "t.py",
                "--requirements",
                str(tmp_path / "r.txt"),
            ),
            "does not exist",
        ),
        (("run", "submit", str(src), "--script", "t.py", "--env", "NOEQUALS"), "KEY=VALUE"),
        (("run", "show", "no_such_run"), "no run 'no_such_run'"),
        (
            ("--url", "nats://127.0.0.1:9", "run", "list"),
            "cannot reach the Sortie broker at nats://127.0.0.1:9",
        ),
    ]
    for args, expected in cases:
        proc = installation.cli(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert expected in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert installation.json("run", "list") == before


def test_link_leaving_the_tree_is_refused(installation: Installation, tmp_path: Path) -> None:
    src = tmp_path / "linked"
    src.mkdir()
    (src / "t.py").write_text("print(1)\n")
    (src / "secret").symlink_to("/etc/hostname")
    proc = installation.cli("run", "submit", str(src), "--script", "t.py")
    assert proc.returncode == 2
    assert "secret" in proc.stderr and "/etc/hostname" in proc.stderr


def test_environment_from_requirements_and_conda_file(
    installation: Installation, tmp_path: Path
) -> None:
    src = tmp_path / "envs"
    src.mkdir()
    (src / "use_six.py").write_text("import six\nprint('six', six.__version__)\n")
    (tmp_path / "req.txt").write_text("# pinned for the test\nsix==1.16.0\n")
    (tmp_path / "env.yml").write_text(
        "name: t\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n      - six==1.17.0\n"
    )
    r1 = installation.cli(
        "run",
        "submit",
        str(src),
        "--script",
        "use_six.py",
        "--requirements",
        str(tmp_path / "req.txt"),
        "--wait",
        timeout=300,
    )
    assert r1.returncode == 0, r1.stderr
    assert "six 1.16.0" in r1.stdout
    r2 = installation.cli(
        "run",
        "submit",
        str(src),
        "--script",
        "use_six.py",
        "--conda-file",
        str(tmp_path / "env.yml"),
        "--wait",
        timeout=300,
    )
    assert r2.returncode == 0, r2.stderr
    assert "six 1.17.0" in r2.stdout


def test_failed_environment_build_fails_the_run_with_its_output(
    installation: Installation, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "t.py").write_text("print('never')\n")
    proc = installation.cli(
        "run",
        "submit",
        str(src),
        "--script",
        "t.py",
        "--pip",
        "sortie-no-such-package-zz9",
        "--wait",
        "--output",
        "json",
        timeout=300,
    )
    assert proc.returncode == 1
    run_id = json.loads(proc.stdout.splitlines()[0])["run_id"]
    shown = installation.json("run", "show", run_id)
    assert isinstance(shown, dict)
    assert shown["state"] == "Failed" and shown["error"]["kind"] == "environment"
    assert "sortie-no-such-package-zz9" in shown["error"]["message"]
    logs = installation.cli("run", "logs", run_id, check=True).stdout
    assert "sortie-no-such-package-zz9" in logs and "never" not in logs
