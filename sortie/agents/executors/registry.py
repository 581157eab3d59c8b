"""Which executor runs a run, and the one place each :class:`ExecutorKind` gets its module.

A new executor is a module beside ``process`` and ``container`` plus one ``case`` below; a
kind without one is a type error (``assert_never``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import assert_never

from sortie.agents.envcache import EnvCache
from sortie.agents.executors import Executor, ExecutorKind
from sortie.agents.executors.container import ContainerExecutor
from sortie.agents.executors.process import ProcessExecutor
from sortie.agents.executors.sandbox import NO_ISOLATION, Isolation
from sortie.proto import messages as m


@dataclass(frozen=True, kw_only=True)
class ExecutorSettings:
    """What the agent's executors are built from."""

    envs: EnvCache  # the process executor's Python environments
    docker_host: str  # the engine container runs use
    images_dir: Path | None = None  # where container runs record their environment images' use
    isolation: Isolation = NO_ISOLATION  # how process runs are kept from the agent's files


def executor_kind(spec: m.RunSpec) -> ExecutorKind:
    """The executor a run asks for (pure)."""
    if spec.environment.docker.enabled:
        return ExecutorKind.CONTAINER
    return ExecutorKind.PROCESS


def make_executor(kind: ExecutorKind, settings: ExecutorSettings) -> Executor:
    match kind:
        case ExecutorKind.PROCESS:
            return ProcessExecutor(settings.envs, settings.isolation)
        case ExecutorKind.CONTAINER:
            return ContainerExecutor(settings.docker_host, settings.images_dir)
        case _:
            assert_never(kind)


def make_executors(settings: ExecutorSettings) -> dict[ExecutorKind, Executor]:
    """One executor of every kind, for an agent's attempts to share."""
    return {kind: make_executor(kind, settings) for kind in ExecutorKind}
