"""v1 flows written with `sortie.azureml` imports, against a real `sortie up`: the workspace
from the config.json `sortie up` wrote, a local user-managed run, a persistent cluster by
get-or-create, and the errors a user sees."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sortie.azureml.core import Environment, Experiment, Run, ScriptRunConfig, Workspace
from sortie.azureml.core.compute import AmlCompute, ComputeTarget
from sortie.azureml.core.compute_target import ComputeTargetException
from sortie.azureml.exceptions import ActivityFailedException
from tests.e2e.conftest import Installation

TRAIN = """\
import argparse
from sortie import Run

parser = argparse.ArgumentParser()
parser.add_argument("--alpha", type=float)
args = parser.parse_args()
run = Run.get_context()
run.log("alpha", args.alpha)
print("trained with alpha", args.alpha)
"""


@pytest.fixture(scope="module")
def ws(installation: Installation) -> Iterator[Workspace]:
    """The workspace from the config.json `sortie up` wrote beside its profile."""
    config = Path(installation.env["SORTIE_PROFILE"]).with_name("config.json")
    w = Workspace.from_config(path=config)
    yield w
    w.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text(TRAIN)
    return tmp_path


def user_managed() -> Environment:
    env = Environment("user-managed-env")
    env.python.user_managed_dependencies = True
    env.python.interpreter_path = sys.executable
    return env


def test_sortie_up_writes_the_config_that_sortie_workspace_config_prints(
    installation: Installation, ws: Workspace
) -> None:
    written = json.loads(
        Path(installation.env["SORTIE_PROFILE"]).with_name("config.json").read_text()
    )
    printed = json.loads(installation.cli("workspace", "config", check=True).stdout)
    assert written == printed
    assert written["url"] == installation.url == ws.url
    assert written["creds"] == str(installation.client_creds.resolve())
    assert ws.name == "sortie"


def test_write_config_then_from_config(ws: Workspace, tmp_path: Path) -> None:
    written = Path(ws.write_config(tmp_path))
    assert written == tmp_path / ".azureml" / "config.json"
    with Workspace.from_config(tmp_path) as again:
        assert again.url == ws.url


def test_local_user_managed_run(
    ws: Workspace, source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = ScriptRunConfig(
        source_directory=str(source),
        script="train.py",
        arguments=["--alpha", 0.5],
        compute_target="local",
        environment=user_managed(),
    )
    run = Experiment(workspace=ws, name="v1-local").submit(src)
    assert isinstance(run, Run)
    run.wait_for_completion(show_output=True)
    assert "trained with alpha 0.5" in capsys.readouterr().out
    assert run.get_status() == "Completed"
    assert run.get_metrics()["alpha"] == 0.5
    again = ws.get_run(run.id)
    assert (again.id, again.experiment.name) == (run.id, "v1-local")
    assert "v1-local" in [e.name for e in Experiment.list(ws)]


def test_a_failed_run_raises_activity_failed(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("raise SystemExit(3)\n")
    src = ScriptRunConfig(str(tmp_path), "bad.py", environment=user_managed())
    run = Experiment(ws, "v1-fail").submit(src)
    with pytest.raises(ActivityFailedException, match="ended Failed: exit_code"):
        run.wait_for_completion()
    assert run.wait_for_completion(raise_on_error=False)["exit_code"] == 3


def test_persistent_cluster_by_get_or_create(
    ws: Workspace, source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = "v1-cpu"
    with pytest.raises(ComputeTargetException, match="v1-cpu not found"):
        ComputeTarget(workspace=ws, name=name)
    assert any(
        s["name"] == "STANDARD_D2_V2" and s["vCPUs"] == 2 for s in AmlCompute.supported_vmsizes(ws)
    )
    try:
        cluster = ComputeTarget(workspace=ws, name=name)
    except ComputeTargetException:
        config = AmlCompute.provisioning_configuration(
            vm_size="Standard_D2_v2", min_nodes=1, max_nodes=2, vnet_name="ignored-here"
        )
        cluster = ComputeTarget.create(ws, name, config)
    cluster.wait_for_completion(show_output=True, min_node_count=1, timeout_in_minutes=3)
    assert "Minimum number of nodes requested have been provisioned" in capsys.readouterr().out

    found = ComputeTarget(workspace=ws, name=name)
    assert isinstance(found, AmlCompute) and found.type == "AmlCompute"
    assert isinstance(ws.compute_targets[name], AmlCompute)
    status = found.get_status().serialize()
    assert status["vmSize"] == "STANDARD_D2_V2" and status["provisioningState"] == "Succeeded"
    assert status["scaleSettings"]["maxNodeCount"] == 2 and status["currentNodeCount"] >= 1
    found.update(max_nodes=3)
    assert cluster.get_status().scale_settings.maximum_node_count == 3

    src = ScriptRunConfig(
        str(source),
        "train.py",
        arguments=["--alpha", 2],
        compute_target=cluster,
        environment=user_managed(),
    )
    run = Experiment(ws, "v1-cluster").submit(src)
    run.wait_for_completion()
    assert run.get_details()["target"] == name

    cluster.delete()
    cluster.wait_for_completion(is_delete_operation=True, timeout_in_minutes=2)
    with pytest.raises(ComputeTargetException, match="not found"):
        ComputeTarget(ws, name)


def test_bad_cluster_requests_say_what_is_wrong(ws: Workspace) -> None:
    with pytest.raises(ComputeTargetException) as err:
        ComputeTarget.create(
            ws,
            "v1-bad",
            AmlCompute.provisioning_configuration(vm_size="STANDARD_NOPE_V9", max_nodes=1),
        )
    assert "cannot create 'v1-bad'" in str(err.value) and "STANDARD_NOPE_V9" in str(err.value)
    with pytest.raises(ComputeTargetException, match="not found"):
        AmlCompute(ws, "v1-bad")


def test_v1_constructors_connect_and_record_azure_names(
    installation: Installation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SORTIE_PROFILE", installation.env["SORTIE_PROFILE"])
    monkeypatch.delenv("SORTIE_URL", raising=False)
    with Workspace("sub-123", "my-rg", "my-ws") as ws:
        assert (ws.subscription_id, ws.resource_group, ws.name) == ("sub-123", "my-rg", "my-ws")
        assert ws.url == installation.url
    with Workspace.get("other", subscription_id="sub-9") as ws:
        assert (ws.name, ws.subscription_id) == ("other", "sub-9")


def test_azure_size_names_are_listed_and_accepted_by_the_cli(installation: Installation) -> None:
    sizes = installation.json("compute", "sizes")
    assert isinstance(sizes, list)
    d2v2 = next(s for s in sizes if s["name"] == "STANDARD_D2_V2")
    assert (d2v2["cpus"], d2v2["memory_mb"]) == (2, 7168)
    installation.cli(
        "compute", "create", "v1-cli", "--type", "cluster", "--vm-size", "standard_ds3_v2",
        "--max-nodes", "1", check=True,
    )  # fmt: skip
    shown = installation.json("compute", "show", "v1-cli")
    assert isinstance(shown, dict) and "STANDARD_DS3_V2" in json.dumps(shown)
    installation.cli("compute", "delete", "v1-cli", check=True)


def test_system_managed_conda_dependencies_without_conda_on_the_host(
    ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """v1's system-managed flow: conda packages on a host with no conda come from PyPI."""
    import shutil

    from sortie.azureml.core.conda_dependencies import CondaDependencies

    assert shutil.which("conda") is None and shutil.which("micromamba") is None
    (tmp_path / "fit.py").write_text(
        "import sklearn\nfrom sortie.azureml.core import Run\n"
        "Run.get_context().log('sklearn', sklearn.__version__)\n"
        "print('fitted with scikit-learn', sklearn.__version__)\n"
    )
    env = Environment("sklearn-env")
    env.python.user_managed_dependencies = False
    env.python.conda_dependencies = CondaDependencies.create(conda_packages=["scikit-learn"])
    src = ScriptRunConfig(str(tmp_path), "fit.py", compute_target="local", environment=env)
    run = Experiment(ws, "v1-conda").submit(src)
    run.wait_for_completion(show_output=True)
    out = capsys.readouterr().out
    assert "no conda on this host: installing conda packages scikit-learn from PyPI with uv" in out
    assert "fitted with scikit-learn" in out
    assert run.get_metrics()["sklearn"].split(".")[0].isdigit()
