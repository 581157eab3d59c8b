"""v1's RemoteCompute flow written with `sortie.azureml` imports, against a real `sortie up` and
the tests' sshd: attach by key and by password, run a script there with the target object,
read its metric back, detach."""

from __future__ import annotations

from pathlib import Path

import pytest

from sortie.azureml.core import Environment, Experiment, ScriptRunConfig, Workspace
from sortie.azureml.core.compute import ComputeTarget, RemoteCompute
from sortie.azureml.core.compute_target import ComputeTargetException
from tests.e2e.conftest import Installation, wait_until
from tests.e2e.conftest import installation as installation  # the fixture, shared
from tests.ssh.conftest import SSH_TEST_PASSWORD, SSH_TEST_USER, ClientKey, Sshd
from tests.ssh.test_attach_e2e import key_file

SCRIPT = """\
import getpass
from sortie.azureml.core import Run
run = Run.get_context()
run.log("user", getpass.getuser())
print("ran on the attached machine as", getpass.getuser(), flush=True)
"""


def attach_and_run(ws: Workspace, name: str, config: object, source: Path) -> None:
    target = ComputeTarget.attach(ws, name, config)
    target.wait_for_completion(show_output=True)
    assert isinstance(ComputeTarget(ws, name), RemoteCompute)
    env = Environment("on-the-box")  # the remote agent's own interpreter
    src = ScriptRunConfig(str(source), "job.py", compute_target=target, environment=env)
    run = Experiment(ws, "v1-remote").submit(src)
    run.wait_for_completion(show_output=True)
    assert run.get_metrics()["user"] == SSH_TEST_USER
    assert run.get_details()["target"] == name
    target.detach()
    target.wait_for_completion(is_delete_operation=True, timeout_in_minutes=2)
    with pytest.raises(ComputeTargetException, match="not found"):
        ComputeTarget(ws, name)


def test_v1_remote_compute_by_key_and_by_password(
    installation: Installation,
    sshd: Sshd,
    *,
    known_hosts: Path,
    client_key: ClientKey,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "job.py").write_text(SCRIPT)
    config_file = Path(installation.env["SORTIE_PROFILE"]).with_name("config.json")
    with Workspace.from_config(path=config_file) as ws:
        by_key = RemoteCompute.attach_configuration(
            username=SSH_TEST_USER,
            address=sshd.host,
            ssh_port=sshd.port,
            private_key_file=str(key_file(tmp_path, client_key)),
            known_hosts=str(known_hosts),
        )
        attach_and_run(ws, "v1-key-box", by_key, source)
        by_password = RemoteCompute.attach_configuration(
            username=SSH_TEST_USER,
            address=sshd.host,
            ssh_port=sshd.port,
            password=SSH_TEST_PASSWORD,
            known_hosts=str(known_hosts),
        )
        attach_and_run(ws, "v1-pw-box", by_password, source)
        wait_until(lambda: ComputeTarget.list(ws) == [], timeout=30)
    shown = capsys.readouterr()
    assert f"ran on the attached machine as {SSH_TEST_USER}" in shown.out
    assert SSH_TEST_PASSWORD not in shown.out + shown.err + repr(by_password)
