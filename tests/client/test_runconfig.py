"""One run configuration: the SDK's ``ScriptRunConfig`` and `sortie run submit`'s flags reach
``RunSpec`` through the one conversion (``runconfig.run_spec``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sortie.cli.main import _parser
from sortie.cli.submit import script_run_config as _script_run_config
from sortie.client.runconfig import (
    DockerSettings,
    EnvironmentSection,
    PythonSection,
    RunConfigError,
    RunConfiguration,
    ScriptRunConfig,
    Source,
    run_spec,
)
from sortie.proto import messages as m

SOURCE = Source(snapshot_id="0" * 64, files=2, bytes=10, git=m.GitInfo(commit="abc"))


def spec_of(config: ScriptRunConfig) -> m.RunSpec:
    return run_spec(config, SOURCE, experiment="exp", submission_id="sub-1")


def everything_set() -> ScriptRunConfig:
    """A configuration with every setting away from its default."""
    return ScriptRunConfig(
        source_directory="src",
        script="./nested/train.py",
        arguments=["--lr", 0.5],
        compute_target="gpu",
        run_config=RunConfiguration(
            target="ignored-by-compute-target",
            environment=EnvironmentSection(
                python=PythonSection(user_managed_dependencies=False, pip_packages=["numpy"]),
                docker=DockerSettings(
                    enabled=True,
                    base_image="python:3.11",
                    gpu_support=True,
                    shm_size="2g",
                    arguments=["--ipc=host"],
                ),
            ),
            environment_variables={"A": "1"},
            secret_environment_variables={"TOKEN": "s3cret", "KEY": "k"},
            max_run_duration_seconds=60.0,
            priority=3,
            cpus=2.0,
            memory_mb=512,
            gpus=1,
            gpu_type="H100",
            node_count=2,
            max_retries=4,
            constraints={"zone": "a"},
            dedicated_only=True,
            strategy="spread",
            queue_timeout_seconds=30.0,
        ),
    )


def test_every_setting_reaches_the_spec() -> None:
    assert spec_of(everything_set()) == m.RunSpec(
        experiment="exp",
        target="gpu",
        script="nested/train.py",
        arguments=["--lr", "0.5"],
        environment=m.Environment(
            python=m.PythonEnvironment(user_managed=False, pip=["numpy"]),
            docker=m.DockerSection(
                enabled=True,
                base_image="python:3.11",
                gpu_support=True,
                shm_size="2g",
                arguments=["--ipc=host"],
            ),
        ),
        env_vars={"A": "1"},
        max_duration_s=60.0,
        resources=m.Resources(cpus=2.0, memory_mb=512, gpus=1, gpu_type="H100"),
        priority=3,
        snapshot_id="0" * 64,
        snapshot_files=2,
        snapshot_bytes=10,
        git=m.GitInfo(commit="abc"),
        submission_id="sub-1",
        node_count=2,
        max_retries=4,
        constraints={"zone": "a"},
        dedicated_only=True,
        strategy="spread",
        secret_env_names=["KEY", "TOKEN"],  # names only, sorted; values travel apart
        queue_timeout_s=30.0,
    )


def test_the_defaults_are_the_specs_defaults() -> None:
    spec = spec_of(ScriptRunConfig(source_directory="src", script="train.py"))
    plain = m.RunSpec(experiment="exp", script="train.py", snapshot_id="0" * 64)
    assert spec == m.RunSpec(
        experiment="exp",
        script="train.py",
        snapshot_id="0" * 64,
        snapshot_files=2,
        snapshot_bytes=10,
        git=m.GitInfo(commit="abc"),
        submission_id="sub-1",
    )
    assert (spec.resources, spec.environment, spec.target) == (
        plain.resources,
        plain.environment,
        plain.target,
    )


def cli_config(*flags: str, script_args: tuple[str, ...] = ()) -> ScriptRunConfig:
    args = _parser().parse_args(["run", "submit", "src", "--script", "./nested/train.py", *flags])
    return _script_run_config(args, list(script_args))


def test_the_cli_builds_the_sdk_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKEN", "s3cret")
    monkeypatch.setenv("KEY", "k")
    flags = (
        "--target", "gpu", "--pip", "numpy", "--docker-image", "python:3.11", "--docker-gpus",
        "--docker-shm-size", "2g", "--docker-arg=--ipc=host", "--env", "A=1",
        "--secret-env", "TOKEN", "--secret-env", "KEY", "--max-duration", "60",
        "--priority", "3", "--cpus", "2", "--memory-mb", "512", "--gpus", "1",
        "--gpu-type", "H100", "--node-count", "2", "--max-retries", "4",
        "--constraint", "zone=a", "--dedicated-only", "--spread", "--arg=--lr",
        "--queue-timeout", "30",
    )  # fmt: skip
    config = cli_config(*flags, script_args=("0.5",))
    assert config.source_directory == Path("src")
    assert spec_of(config) == spec_of(everything_set())


def test_cli_environment_flags() -> None:
    assert cli_config().run_config.environment.python == PythonSection()
    assert cli_config("--python", "/opt/py").run_config.environment.python == PythonSection(
        interpreter_path="/opt/py"
    )
    section = cli_config("--requirements", "req.txt").run_config.environment.python
    assert section == PythonSection(user_managed_dependencies=False, requirements_file="req.txt")
    section = cli_config("--conda-file", "env.yml").run_config.environment.python
    assert section == PythonSection(
        user_managed_dependencies=False, conda_dependencies_file="env.yml"
    )
    assert cli_config("--memory", "1.5").run_config.memory_mb == 1536
    assert cli_config().run_config.environment.docker == DockerSettings()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            RunConfiguration(
                environment=EnvironmentSection(python=PythonSection(pip_packages=["x"]))
            ),
            "user_managed_dependencies is True",
        ),
        (
            RunConfiguration(
                environment=EnvironmentSection(
                    python=PythonSection(
                        user_managed_dependencies=False,
                        pip_packages=["x"],
                        requirements_file="r.txt",
                    )
                )
            ),
            "give one of",
        ),
        (
            RunConfiguration(environment=EnvironmentSection(docker=DockerSettings(enabled=True))),
            "docker.base_image",
        ),
        (RunConfiguration(strategy="packed"), "binpack"),  # type: ignore[arg-type]  # a typo the type checker would catch, made at run time
    ],
)
def test_what_cannot_be_submitted_says_what_to_change(
    config: RunConfiguration, message: str
) -> None:
    with pytest.raises(RunConfigError, match=message):
        spec_of(ScriptRunConfig(source_directory="src", script="t.py", run_config=config))


def test_run_based_creation_from_the_sdk_and_the_cli() -> None:
    rc = RunConfiguration(target="amlcompute")
    rc.amlcompute.vm_size = "STANDARD_D2_V2"
    rc.amlcompute.vm_priority = "lowpriority"
    rc.amlcompute._cluster_max_node_count = 2
    spec = spec_of(ScriptRunConfig(source_directory="src", script="t.py", run_config=rc))
    wanted = m.AmlComputeSpec(vm_size="STANDARD_D2_V2", vm_priority="lowpriority", max_nodes=2)
    assert spec.target == "amlcompute" and spec.amlcompute == wanted
    flags = ("--target", "amlcompute", "--vm-size", "STANDARD_D2_V2", "--vm-priority",
             "lowpriority", "--max-nodes", "2")  # fmt: skip
    assert spec_of(cli_config(*flags)).amlcompute == wanted
    assert spec_of(ScriptRunConfig(source_directory="src", script="t.py")).amlcompute is None
    rc.amlcompute.vm_priority = "urgent"
    with pytest.raises(RunConfigError, match="vm_priority must be 'dedicated' or 'lowpriority'"):
        spec_of(ScriptRunConfig(source_directory="src", script="t.py", run_config=rc))
