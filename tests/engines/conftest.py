"""Real engines for the engine tests: a one-node Slurm cluster and a Spark standalone cluster
on 127.0.0.1, each started once per session (see slurm_cluster.py and spark_cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.engines.slurm_cluster import SlurmCluster, SlurmStartError, start_slurm, stop_slurm
from tests.engines.spark_cluster import SparkCluster, SparkStartError, start_spark, stop_spark


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    try:
        cluster = start_slurm()
    except SlurmStartError as e:
        pytest.fail(str(e))
    try:
        yield cluster
    finally:
        stop_slurm(cluster)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkCluster]:
    try:
        cluster = start_spark()
    except SparkStartError as e:
        pytest.fail(str(e))
    try:
        yield cluster
    finally:
        stop_spark(cluster)
