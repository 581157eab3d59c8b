"""The Spark executor: hands a run to Spark (see the module docstring of proto.engines).

Contract stub: built by issue N's helper; until then preparing a run says so."""

from __future__ import annotations

from sortie.agents.envcache import EnvCache
from sortie.agents.executors import ExecutorError, Job, Prepared, Say
from sortie.proto.engines import SparkEngine


class SparkExecutor:
    def __init__(self, envs: EnvCache, engine: SparkEngine) -> None:
        self.envs = envs
        self.engine = engine

    async def prepare(self, job: Job, say: Say) -> Prepared:
        raise ExecutorError("this Sortie cannot hand runs to Spark yet")
