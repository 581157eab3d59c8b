"""The Python SDK in the hosted-platform shape, against a real `sortie up`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sortie import Experiment, RunConfiguration, ScriptRunConfig, Workspace
from sortie.bus.errors import BrokerUnreachable
from sortie.client.sdk import RunFailed
from tests.e2e.conftest import REPO, Installation


@pytest.fixture
def ws(installation: Installation, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SORTIE_PROFILE", installation.env["SORTIE_PROFILE"])
    monkeypatch.delenv("SORTIE_URL", raising=False)
    w = Workspace.connect()  # finds the installation through its profile, no URL given
    yield w
    w.close()


def test_issue_example_through_the_sdk(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    rc = RunConfiguration(target="local")
    rc.environment.python.user_managed_dependencies = False
    rc.environment.python.pip_packages = ["scikit-learn"]
    run = Experiment(ws, "digits").submit(
        ScriptRunConfig(
            source_directory=str(REPO / "examples" / "sklearn-digits"),
            script="train.py",
            arguments=["--C", "0.5"],
            run_config=rc,
        )
    )
    details = run.wait_for_completion(show_output=True)
    out = capsys.readouterr().out
    assert "test accuracy" in out
    assert run.get_status() == "Completed" and details["state"] == "Completed"
    metrics = run.get_metrics()
    assert metrics["C"] == 0.5 and 0.9 < metrics["accuracy"] <= 1.0
    assert "outputs/model.pkl" in run.get_file_names()


def test_failed_run_raises_unless_asked_not_to(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("raise SystemExit(7)\n")
    run = Experiment(ws, "sdk-fail").submit(
        ScriptRunConfig(source_directory=tmp_path, script="bad.py")
    )
    with pytest.raises(RunFailed, match="Failed: exit_code"):
        run.wait_for_completion()
    details = run.wait_for_completion(raise_on_error=False)
    assert details["exit_code"] == 7


def test_metrics_logged_many_times_come_back_as_lists(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "from sortie import Run\nrun = Run.get_context()\n"
        "for i in range(5):\n    run.log('loss', 1.0 / (i + 1), step=i)\nrun.log('name', 'x')\n"
    )
    run = Experiment(ws, "sdk-metrics").submit(
        ScriptRunConfig(source_directory=tmp_path, script="m.py")
    )
    run.wait_for_completion()
    metrics = run.get_metrics()
    assert metrics["loss"] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert metrics["name"] == "x"


def test_env_vars_reach_the_script_and_user_managed_interpreter(
    ws: Workspace, tmp_path: Path
) -> None:
    (tmp_path / "e.py").write_text(
        "import os, sys\nprint('GREETING=' + os.environ['GREETING'])\n"
        "print('EXE=' + sys.executable)\n"
        "print('RUN=' + os.environ['SORTIE_RUN_ID'])\n"
    )
    import sys

    rc = RunConfiguration()
    rc.environment_variables = {"GREETING": "hello"}
    rc.environment.python.interpreter_path = sys.executable
    run = Experiment(ws, "sdk-env").submit(
        ScriptRunConfig(source_directory=tmp_path, script="e.py", run_config=rc)
    )
    run.wait_for_completion()
    lines = ws._run(_collect(ws, run.id))
    assert "GREETING=hello" in lines
    assert f"EXE={sys.executable}" in lines
    assert f"RUN={run.id}" in lines


async def _collect(ws: Workspace, run_id: str) -> list[str]:
    return [line.text async for _, line in ws._client.logs(run_id)]


def test_unreachable_broker_says_which_url_and_what_to_do() -> None:
    os.environ.pop("SORTIE_URL", None)
    with pytest.raises(BrokerUnreachable, match=r"nats://127\.0\.0\.1:9 .*sortie up"):
        Workspace.connect("nats://127.0.0.1:9")
