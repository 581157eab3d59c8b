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


def _one_process_per_node(per_node: int | None, what: str) -> None:
    if per_node not in (None, 1):
        raise RunConfigError(
            f"{what}: Sortie starts one process per node (with RANK, LOCAL_RANK, WORLD_SIZE, "
            "MASTER_ADDR set); start more per node from the script (e.g. torchrun)"
        )


@dataclass
class MpiConfiguration:
    """``distributed_job_config``: ``node_count`` nodes, one process each."""

    process_count_per_node: int = 1
    node_count: int = 1

    def __post_init__(self) -> None:
        _one_process_per_node(self.process_count_per_node, "process_count_per_node")


@dataclass
class PyTorchConfiguration:
    """``distributed_job_config``: ``node_count`` nodes, one process each (the backend is
    the script's choice; kept as given)."""

    communication_backend: str = "Nccl"
    process_count: int | None = None
    node_count: int = 1

    def __post_init__(self) -> None:
        per_node = None if self.process_count is None else self.process_count // self.node_count
        if self.process_count is not None and self.process_count % self.node_count:
            per_node = 0  # not a whole number per node
        _one_process_per_node(per_node, f"process_count={self.process_count}")


@dataclass
class TensorflowConfiguration:
    """``distributed_job_config``: ``worker_count`` nodes; parameter servers are not
    started for the script."""

    worker_count: int = 1
    parameter_server_count: int = 1
