"""``azureml.core.script_run_config``: ``ScriptRunConfig`` with v1's constructor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sortie.azureml.core.runconfig import RunConfiguration
from sortie.client import runconfig as native
from sortie.client.runconfig import DockerConfiguration, RunConfigError

MAX_DURATION_SECONDS = 2592000  # v1's default limit: 30 days

__all__ = ["ScriptRunConfig"]


class ScriptRunConfig(native.ScriptRunConfig):
    """A script in a source directory with its run configuration. ``compute_target`` (a name
    or a ``ComputeTarget``), ``environment`` and ``docker_runtime_config`` are set on
    ``run_config``; ``distributed_job_config``'s ``node_count`` becomes the run's."""

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
        rc = run_config if run_config is not None else RunConfiguration()
        super().__init__(
            source_directory=source_directory,
            script=script,
            arguments=list(arguments),
            run_config=rc,
            compute_target=compute_target,
        )
        if resume_from is not None:
            raise RunConfigError(
                "resume_from is not supported: keep checkpoints in a directory every attempt "
                "can read and load the latest at start"
            )
        if environment is not None:
            rc.environment = environment
        if docker_runtime_config is not None:
            rc.docker = docker_runtime_config
        if max_run_duration_seconds != MAX_DURATION_SECONDS or rc.max_run_duration_seconds is None:
            rc.max_run_duration_seconds = max_run_duration_seconds  # the run_config's own stays
        nodes = getattr(distributed_job_config, "node_count", None)
        if isinstance(nodes, int):
            rc.node_count = nodes
        self._telemetry_values = _telemetry_values
        self._distributed_job_config = distributed_job_config  # recorded


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
