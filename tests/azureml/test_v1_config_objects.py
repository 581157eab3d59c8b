"""The v1 layer's configuration objects, without a broker: what they accept, what they refuse
(and the message a user reads), and the run spec they become through the one conversion."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sortie.azureml.core import Environment, RunConfiguration, ScriptRunConfig
from sortie.azureml.core.compute import AmlCompute, RemoteCompute
from sortie.azureml.core.compute_target import ComputeTargetException
from sortie.azureml.core.conda_dependencies import CondaDependencies
from sortie.azureml.core.runconfig import DEFAULT_CPU_IMAGE, DockerConfiguration
from sortie.azureml.core.workspace import find_config
from sortie.azureml.exceptions import UserErrorException
from sortie.client import runconfig as native
from sortie.client.envspec import EnvSpecError
from sortie.client.runconfig import RunConfigError, Source, run_spec

SOURCE = Source(snapshot_id="0" * 64, files=1, bytes=1, git=None)


def spec(config: native.ScriptRunConfig):
    return run_spec(config, SOURCE, experiment="e", submission_id="s")


def test_a_misspelt_attribute_is_refused_naming_the_close_match() -> None:
    rc = RunConfiguration()
    with pytest.raises(AttributeError) as err:
        rc.environment.python.conda_dependenciez = CondaDependencies()  # type: ignore[attr-defined]
    assert "PythonSection has no attribute 'conda_dependenciez'" in str(err.value)
    assert "did you mean 'conda_dependencies'" in str(err.value)
    with pytest.raises(AttributeError, match="did you mean 'environment_variables'"):
        rc.enviroment_variables = {}  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="did you mean 'base_image'"):
        print(rc.environment.docker.base_imag)  # type: ignore[attr-defined]


def test_the_native_configuration_refuses_them_too() -> None:
    rc = native.RunConfiguration()
    with pytest.raises(AttributeError, match="did you mean 'max_run_duration_seconds'"):
        rc.max_run_duration_second = 5  # type: ignore[attr-defined]


def test_conda_dependencies_are_honoured() -> None:
    rc = RunConfiguration()
    rc.environment.python.conda_dependencies = CondaDependencies.create(
        conda_packages=["scikit-learn"], pip_packages=["requests>=2"], python_version="3.11"
    )
    env = spec(ScriptRunConfig(".", script="train.py", run_config=rc)).environment.python
    assert not env.user_managed
    assert env.conda == ["scikit-learn"] and env.pip == ["requests>=2"]
    assert env.python_version == "3.11"


def test_conda_dependencies_with_a_user_managed_environment_are_refused() -> None:
    rc = RunConfiguration()
    rc.environment.python.user_managed_dependencies = True
    rc.environment.python.conda_dependencies = CondaDependencies.create(pip_packages=["numpy"])
    with pytest.raises(RunConfigError, match="user_managed_dependencies is True"):
        spec(ScriptRunConfig(".", script="train.py", run_config=rc))


def test_conda_dependencies_round_trip_through_yaml(tmp_path: Path) -> None:
    cd = CondaDependencies.create(conda_packages=["numpy"], pip_packages=["rich"])
    cd.add_pip_package("click")
    cd.add_channel("conda-forge")
    saved = Path(cd.save(tmp_path / "env.yml"))
    again = CondaDependencies(saved)
    assert list(again.conda_packages) == ["numpy"]
    assert list(again.pip_packages) == ["rich", "click"]
    assert list(again.conda_channels) == ["conda-forge"]
    env = Environment.from_conda_specification("from-file", saved)
    assert env.name == "from-file"
    assert spec(ScriptRunConfig(".", "t.py", environment=env)).environment.python.pip == [
        "rich",
        "click",
    ]


def test_a_package_index_is_refused_with_the_reason() -> None:
    with pytest.raises(EnvSpecError, match="package indexes are set up on the agent"):
        CondaDependencies.create(pip_indexurl="https://example.invalid/simple")


def test_environment_from_pip_requirements_and_its_v1_defaults(tmp_path: Path) -> None:
    req = tmp_path / "requirements.txt"
    req.write_text("numpy\n")
    env = Environment.from_pip_requirements("reqs", req)
    assert env.docker.base_image == DEFAULT_CPU_IMAGE and not env.docker.enabled
    assert not env.python.user_managed_dependencies
    assert spec(ScriptRunConfig(".", "t.py", environment=env)).environment.python.pip == ["numpy"]
    with pytest.raises(EnvSpecError, match="does not exist"):
        Environment.from_conda_specification("nope", tmp_path / "missing.yml")
    with pytest.raises(UserErrorException, match="no registered or curated environments"):
        Environment.get(None, "AzureML-sklearn-1.0")


def test_script_run_config_takes_v1_arguments() -> None:
    env = Environment("user")
    env.python.user_managed_dependencies = True
    env.python.interpreter_path = sys.executable
    env.environment_variables = {"FROM_ENV": "1"}
    src = ScriptRunConfig(
        source_directory=".",
        command=["python", "train.py", "--lr", 0.1],
        environment=env,
        docker_runtime_config=DockerConfiguration(use_docker=False),
    )
    src.run_config.environment_variables["OWN"] = "2"
    got = spec(src)
    assert (got.script, got.arguments) == ("train.py", ["--lr", "0.1"])
    assert got.environment.python.interpreter == sys.executable
    assert got.env_vars == {"FROM_ENV": "1", "OWN": "2"}
    assert got.max_duration_s == 2592000
    with pytest.raises(RunConfigError, match="needs script="):
        ScriptRunConfig(".")


def test_docker_configuration_turns_the_container_on() -> None:
    env = Environment("boxed")
    env.docker.base_image = "localhost/python:3.11"
    src = ScriptRunConfig(
        ".", "t.py", environment=env, docker_runtime_config=DockerConfiguration(use_docker=True)
    )
    assert spec(src).environment.docker.enabled
    bare = native.RunConfiguration()
    bare.docker = DockerConfiguration(use_docker=True)
    with pytest.raises(RunConfigError, match=r"environment.docker.base_image is not set"):
        spec(native.ScriptRunConfig(".", "t.py", run_config=bare))


class _Target:
    """Anything with a ``name``, as a ComputeTarget has."""

    def __init__(self, name: str) -> None:
        self.name = name


def test_a_compute_target_object_is_accepted_wherever_a_name_is() -> None:
    rc = RunConfiguration()
    rc.target = _Target("cpu-cluster")
    assert spec(ScriptRunConfig(".", "t.py", run_config=rc)).target == "cpu-cluster"
    src = ScriptRunConfig(".", "t.py", compute_target=_Target("gpu-box"))
    assert spec(src).target == "gpu-box"
    rc.target = 3  # type: ignore[assignment]
    with pytest.raises(RunConfigError, match="compute target name or a ComputeTarget, got int"):
        spec(ScriptRunConfig(".", "t.py", run_config=rc))


def test_provisioning_configuration_keeps_v1_defaults_and_azure_settings() -> None:
    cfg = AmlCompute.provisioning_configuration(
        vm_size="STANDARD_D2_V2",
        max_nodes=2,
        vnet_resourcegroup_name="rg",
        vnet_name="vnet",
        subnet_name="default",
        admin_username="azureuser",
        admin_user_password="hunter2",
    )
    assert (cfg.vnet_name, cfg.admin_username) == ("vnet", "azureuser")
    assert "hunter2" not in repr(cfg)
    cluster = cfg.to_spec()
    assert (cluster.vm_size, cluster.max_nodes, cluster.min_nodes) == ("STANDARD_D2_V2", 2, 0)
    default = AmlCompute.provisioning_configuration()
    assert (default.vm_size, default.max_nodes) == ("STANDARD_NC6", 4)
    assert default.idle_seconds_before_scaledown == 1800


def test_attach_configuration_needs_an_address() -> None:
    with pytest.raises(ComputeTargetException, match="give address="):
        RemoteCompute.attach_configuration(username="me", resource_id="/subscriptions/x")
    with pytest.raises(ComputeTargetException, match="one of them, not both"):
        RemoteCompute.attach_configuration("me", address="h", password="p", private_key_file="k")
    with pytest.raises(ComputeTargetException, match="username is not provided"):
        RemoteCompute.attach_configuration("", address="h", password="p")
    cfg = RemoteCompute.attach_configuration(
        username="me", address="10.0.0.5", ssh_port=2222, password="pw", trust_new_host_key=True
    )
    assert (cfg.address, cfg.ssh_port, cfg.private_key_file) == ("10.0.0.5", 2222, None)
    assert cfg.trust_new_host_key


def test_from_config_finds_the_file_up_the_tree(tmp_path: Path) -> None:
    (tmp_path / ".azureml").mkdir()
    found = tmp_path / ".azureml" / "config.json"
    found.write_text(json.dumps({"subscription_id": "s", "url": "nats://127.0.0.1:1"}))
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_config(deep) == found
    assert find_config(found) == found
    with pytest.raises(UserErrorException, match=r"no other\.json in"):
        find_config(deep, "other.json")


def test_workspace_config_command_prints_what_from_config_reads(tmp_path: Path) -> None:
    creds = tmp_path / "me.creds"
    creds.write_text("not read by this command\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sortie.cli",
            "--url",
            "nats://10.1.2.3:4222",
            "--creds",
            str(creds),
            "workspace",
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"SORTIE_PROFILE": str(tmp_path / "profile.json"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)
    assert config == {
        "workspace_name": "sortie",
        "url": "nats://10.1.2.3:4222",
        "creds": str(creds.resolve()),
    }
    assert "not read" not in proc.stdout


def test_get_context_outside_a_run_is_offline_unless_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sortie.azureml.core import Run
    from sortie.client import run_context

    monkeypatch.delenv("SORTIE_RUN_ID", raising=False)
    monkeypatch.setattr(run_context.Run, "_current", None)
    ctx = Run.get_context()
    ctx.log("loss", 0.5)
    assert "[metric] loss = 0.5" in capsys.readouterr().out
    with pytest.raises(UserErrorException, match="outside a Sortie run"):
        Run.get_context(allow_offline=False)


def test_with_a_run_config_the_other_settings_are_ignored_with_a_warning() -> None:
    rc = RunConfiguration()
    rc.environment.python.user_managed_dependencies = True
    env = Environment("not-used")
    with pytest.warns(UserWarning, match="environment, max_run_duration_seconds are ignored"):
        src = ScriptRunConfig(
            ".", "t.py", run_config=rc, environment=env, max_run_duration_seconds=60,
            compute_target="gpu-box",
        )  # fmt: skip
    got = spec(src)
    assert got.environment.python.user_managed and got.max_duration_s is None
    assert got.target == "gpu-box"
    assert rc.environment is not env  # the caller's configuration is not changed


def test_distributed_job_config_sets_the_node_count() -> None:
    from sortie.azureml.core.runconfig import MpiConfiguration, PyTorchConfiguration

    src = ScriptRunConfig(".", "t.py", distributed_job_config=PyTorchConfiguration(node_count=2))
    assert spec(src).node_count == 2
    assert ScriptRunConfig(".", "t.py", distributed_job_config=MpiConfiguration(node_count=3))
    # ranks per node (Slurm targets; the scheduler refuses more than one elsewhere)
    mpi = MpiConfiguration(process_count_per_node=4, node_count=1)
    assert spec(ScriptRunConfig(".", "t.py", distributed_job_config=mpi)).processes_per_node == 4
    torch = PyTorchConfiguration(process_count=8, node_count=2)
    got = spec(ScriptRunConfig(".", "t.py", distributed_job_config=torch))
    assert (got.node_count, got.processes_per_node) == (2, 4)
    with pytest.raises(RunConfigError, match="process_count=3 over node_count=2: give a whole"):
        PyTorchConfiguration(process_count=3, node_count=2)


def test_v1_module_paths_hold_the_native_classes() -> None:
    from sortie.azureml import core
    from sortie.azureml.core.model import Model
    from sortie.client import models, sdk

    assert core.Model is Model is models.Model
    assert issubclass(core.Run, sdk.SubmittedRun)
    assert issubclass(core.RunConfiguration, native.RunConfiguration)
    with pytest.raises(AttributeError, match="has no attribute 'Dataset'"):
        _ = core.Dataset


def test_v1_run_configuration_arguments_that_belong_elsewhere_are_refused() -> None:
    with pytest.raises(RunConfigError, match=r"give them to ScriptRunConfig\(source_directory"):
        RunConfiguration(script="train.py")
    with pytest.raises(RunConfigError, match="framework 'TensorFlow': Sortie runs Python"):
        RunConfiguration(framework="TensorFlow")
    assert RunConfiguration(framework="Python", communicator="None").node_count == 1


def test_a_config_file_that_is_not_json_is_refused_naming_it(tmp_path: Path) -> None:
    from sortie.azureml.core.workspace import read_config

    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(UserErrorException, match=f"cannot read workspace configuration {bad}"):
        read_config(bad)
    bad.write_text("[1]")
    with pytest.raises(UserErrorException, match="expected a JSON object, got list"):
        read_config(bad)
