"""``azureml.core.script_run_config``: ``ScriptRunConfig`` with v1's constructor."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from sortie.azureml.core.runconfig import RunConfiguration
from sortie.client import runconfig as native
from sortie.client.runconfig import DockerConfiguration, RunConfigError

MAX_DURATION_SECONDS = 2592000  # v1's default limit: 30 days

__all__ = ["ScriptRunConfig"]


class ScriptRunConfig(native.ScriptRunConfig):
    """A script in a source directory with its run configuration. Without ``run_config``,
    ``environment``, ``docker_runtime_config``, ``max_run_duration_seconds`` and
    ``distributed_job_config``'s ``node_count`` make a new one; with it, they are ignored with
    a warning, as in v1. ``compute_target`` (a name or a ``ComputeTarget``) is the run's
    target either way."""

    def __init__(  # noqa: PLR0913, PLR0917  # the hosted SDK v1's signature, kept for its users' scripts
        self,
        source_directory: str | Path,
        script: str | None = None,
        arguments: list[Any] | None = None,
        run_config: native.RunConfiguration | None = None,
        _telemetry_values: Any = None,
        compute_target: str | native.NamedTarget | None = None,
        environment: native.EnvironmentSection | None = None,
        distributed_job_config: Any = None,
        resume_from: Any = None,
        max_run_duration_seconds: float | None = MAX_DURATION_SECONDS,
        command: str | list[str] | None = None,
        docker_runtime_config: DockerConfiguration | None = None,
    ) -> None:
        script, arguments = _script_of(script, arguments, command)
        if resume_from is not None:
            raise RunConfigError(
                "resume_from is not supported: keep checkpoints in a directory every attempt "
                "can read and load the latest at start"
            )
        own = {
            "environment": environment,
            "distributed_job_config": distributed_job_config,
            "docker_runtime_config": docker_runtime_config,
        }
        if run_config is None:
            run_config = RunConfiguration()
            _configure(run_config, environment, distributed_job_config, docker_runtime_config)
            run_config.max_run_duration_seconds = max_run_duration_seconds
        else:
            ignored = [k for k, v in own.items() if v is not None]
            if max_run_duration_seconds != MAX_DURATION_SECONDS:
                ignored.append("max_run_duration_seconds")
            if ignored:
                warnings.warn(
                    f"run_config was given, so {', '.join(ignored)} are ignored (as in v1): "
                    "set them on run_config instead",
                    stacklevel=2,
                )
        super().__init__(
            source_directory=source_directory,
            script=script,
            arguments=list(arguments),
            run_config=run_config,
            compute_target=compute_target,
        )
        self._telemetry_values = _telemetry_values


def _configure(
    rc: native.RunConfiguration,
    environment: native.EnvironmentSection | None,
    distributed: Any,
    docker: DockerConfiguration | None,
) -> None:
    """What ``ScriptRunConfig``'s own arguments set on the run configuration it makes."""
    if environment is not None:
        rc.environment = environment
    if docker is not None:
        rc.docker = docker
    if distributed is not None:
        nodes = getattr(distributed, "node_count", getattr(distributed, "worker_count", None))
        if not isinstance(nodes, int):
            raise RunConfigError(
                "distributed_job_config must be an MpiConfiguration, PyTorchConfiguration or "
                "TensorflowConfiguration (an object with node_count)"
            )
        rc.node_count = nodes
        rc.processes_per_node = getattr(distributed, "processes_per_node", 1)


def _script_of(
    script: str | None, arguments: list[Any] | None, command: str | list[str] | None
) -> tuple[str, list[Any]]:
    """``script`` and ``arguments``, or both read from a ``python SCRIPT ARGS`` command."""
    if command is None:
        if script is None:
            raise RunConfigError(
                "ScriptRunConfig needs script= (the file to run, relative to source_directory)"
            )
        return script, list(arguments or [])
    words = command.split() if isinstance(command, str) else [str(w) for w in command]
    if script is not None or len(words) < 2 or Path(words[0]).name not in ("python", "python3"):
        raise RunConfigError(
            f"command {command!r}: give either script= and arguments=, or a command of the "
            "form 'python SCRIPT ARGS...'"
        )
    return words[1], [*words[2:], *(arguments or [])]
