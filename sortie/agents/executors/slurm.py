"""The Slurm executor: hands a run to Slurm (see the module docstring of proto.engines).

Contract stub: built by issue N's helper; until then preparing a run says so."""

from __future__ import annotations

from sortie.agents.envcache import EnvCache
from sortie.agents.executors import ExecutorError, Job, Prepared, Say
from sortie.proto.engines import SlurmEngine


class SlurmExecutor:
    def __init__(self, envs: EnvCache, engine: SlurmEngine) -> None:
        self.envs = envs
        self.engine = engine

    async def prepare(self, job: Job, say: Say) -> Prepared:
        raise ExecutorError("this Sortie cannot hand runs to Slurm yet")
