"""Which executor runs a run, and the one place each :class:`ExecutorKind` gets its module.

A new executor is a module beside ``process`` and ``container`` plus one ``case`` below; a
kind without one is a type error (``assert_never``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import assert_never

from sortie.agents.envcache import EnvCache
from sortie.agents.executors import ENGINE_KINDS, Executor, ExecutorKind
from sortie.agents.executors.container import ContainerExecutor
from sortie.agents.executors.process import ProcessExecutor
from sortie.agents.executors.sandbox import NO_ISOLATION, Isolation
from sortie.proto import messages as m
from sortie.proto.engines import Engine, SlurmEngine, SparkEngine, kind_of


@dataclass(frozen=True, kw_only=True)
class ExecutorSettings:
    """What the agent's executors are built from."""

    envs: EnvCache  # the process executor's Python environments
    docker_host: str  # the engine container runs use
    images_dir: Path | None = None  # where container runs record their environment images' use
    isolation: Isolation = NO_ISOLATION  # how process runs are kept from the agent's files
    engine: Engine | None = None  # the engine this agent hands every run to (--engine)


def engine_kind(engine: Engine) -> ExecutorKind:
    """The executor of an engine (pure)."""
    return ExecutorKind(kind_of(engine))


def executor_kind(spec: m.RunSpec, engine: Engine | None = None) -> ExecutorKind:
    """The executor a run asks for (pure): an engine agent's runs all go to its engine."""
    if engine is not None:
        return engine_kind(engine)
    if spec.environment.docker.enabled:
        return ExecutorKind.CONTAINER
    return ExecutorKind.PROCESS


def make_executor(kind: ExecutorKind, settings: ExecutorSettings) -> Executor:
    match kind:
        case ExecutorKind.PROCESS:
            return ProcessExecutor(settings.envs, settings.isolation)
        case ExecutorKind.CONTAINER:
            return ContainerExecutor(settings.docker_host, settings.images_dir)
        case ExecutorKind.SLURM:
            from sortie.agents.executors.slurm import SlurmExecutor

            slurm = settings.engine if isinstance(settings.engine, SlurmEngine) else SlurmEngine()
            return SlurmExecutor(settings.envs, slurm)
        case ExecutorKind.SPARK:
            from sortie.agents.executors.spark import SparkExecutor

            spark = settings.engine if isinstance(settings.engine, SparkEngine) else SparkEngine()
            return SparkExecutor(settings.envs, spark, settings.isolation)
        case _:
            assert_never(kind)


def make_executors(settings: ExecutorSettings) -> dict[ExecutorKind, Executor]:
    """The executors an agent's attempts share: an engine agent's one engine executor, or a
    plain agent's process and container executors."""
    if settings.engine is not None:
        kind = engine_kind(settings.engine)
        return {kind: make_executor(kind, settings)}
    return {
        kind: make_executor(kind, settings) for kind in ExecutorKind if kind not in ENGINE_KINDS
    }
