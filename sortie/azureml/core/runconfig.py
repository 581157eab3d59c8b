"""``azureml.core.runconfig``: the run configuration with v1's constructor and defaults.

The classes are Sortie's own (``sortie.client.runconfig``): the same objects the native
SDK and the CLI submit, refusing attribute names they do not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sortie.client import runconfig as native
from sortie.client.conda import CondaDependencies
from sortie.client.runconfig import DockerConfiguration, RunConfigError

# v1's default images, named for scripts that set them; Sortie pulls whatever image is named
DEFAULT_CPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest"
DEFAULT_GPU_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.1-cudnn8-ubuntu20.04:latest"

# ``run_config.amlcompute``: with target "amlcompute", a cluster made for the run (vm_size,
# vm_priority, _cluster_max_node_count) and deleted when it ends
AmlComputeConfiguration = native.AmlComputeSection

__all__ = [
    "DEFAULT_CPU_IMAGE",
    "DEFAULT_GPU_IMAGE",
    "AmlComputeConfiguration",
    "DockerConfiguration",
    "MpiConfiguration",
    "PyTorchConfiguration",
    "RunConfiguration",
    "TensorflowConfiguration",
]


def v1_environment(env: native.EnvironmentSection) -> native.EnvironmentSection:
    """v1's defaults on an environment: Sortie builds it (not user-managed) and a container
    would start from ``DEFAULT_CPU_IMAGE``."""
    env.python.user_managed_dependencies = False
    env.docker.base_image = DEFAULT_CPU_IMAGE
    return env


class RunConfiguration(native.RunConfiguration):
    """v1's ``RunConfiguration(script=None, arguments=None, framework=None,
    communicator=None, conda_dependencies=None, ...)``. ``script`` and ``arguments`` belong
    to ``ScriptRunConfig`` here; ``framework`` must be Python."""

    def __init__(  # noqa: PLR0917  # the hosted SDK v1's signature, kept for its users' scripts
        self,
        script: str | None = None,
        arguments: list[Any] | None = None,
        framework: str | None = None,
        communicator: str | None = None,
        conda_dependencies: CondaDependencies | None = None,
        _history_enabled: bool | None = None,
        _path: str | None = None,
        _name: str | None = None,
        command: str | list[str] | None = None,
    ) -> None:
        super().__init__()
        v1_environment(self.environment)
        if script is not None or arguments or command is not None:
            raise RunConfigError(
                "RunConfiguration(script=, arguments=, command=): give them to "
                "ScriptRunConfig(source_directory, script=..., arguments=...) instead"
            )
        if framework is not None and framework.lower() != "python":
            raise RunConfigError(f"framework {framework!r}: Sortie runs Python scripts only")
        self._communicator = communicator  # recorded: a gang's ranks get their variables
        if conda_dependencies is not None:
            self.environment.python.conda_dependencies = conda_dependencies


def _per_node(process_count: int | None, node_count: int) -> int:
    """Processes per node from v1's total ``process_count`` (None: one per node)."""
    if process_count is None:
        return 1
    if node_count < 1 or process_count % node_count or process_count < node_count:
        raise RunConfigError(
            f"process_count={process_count} over node_count={node_count}: give a whole number "
            "of processes per node (process_count a multiple of node_count)"
        )
    return process_count // node_count


@dataclass
class MpiConfiguration:
    """``distributed_job_config``: ``node_count`` nodes, ``process_count_per_node`` ranks on
    each (more than one: Slurm targets only, refused at submit elsewhere)."""

    process_count_per_node: int = 1
    node_count: int = 1

    @property
    def processes_per_node(self) -> int:
        return self.process_count_per_node


@dataclass
class PyTorchConfiguration:
    """``distributed_job_config``: ``node_count`` nodes, ``process_count`` ranks in all
    (spread evenly; more than one per node: Slurm targets only, refused at submit elsewhere).
    The backend is the script's choice; kept as given."""

    communication_backend: str = "Nccl"
    process_count: int | None = None
    node_count: int = 1

    def __post_init__(self) -> None:
        _per_node(self.process_count, self.node_count)

    @property
    def processes_per_node(self) -> int:
        return _per_node(self.process_count, self.node_count)


@dataclass
class TensorflowConfiguration:
    """``distributed_job_config``: ``worker_count`` nodes; parameter servers are not
    started for the script."""

    worker_count: int = 1
    parameter_server_count: int = 1
