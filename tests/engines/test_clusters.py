"""The engines the engine tests stand on, checked directly: a job on the one-node Slurm
cluster as the tests' SSH user (two tasks see their ranks, a held job waits with its reason,
scancel ends one), and a PySpark application on the standalone Spark cluster."""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest

from tests.engines.slurm_cluster import SlurmCluster
from tests.engines.spark_cluster import SparkCluster
from tests.ssh.conftest import SSH_TEST_USER

pytestmark = pytest.mark.timeout(180)


def _user_dir(path: Path) -> Path:
    user = pwd.getpwnam(SSH_TEST_USER)
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, user.pw_uid, user.pw_gid)
    return path


def _job_state(slurm: SlurmCluster, job: str) -> tuple[str, str]:
    state, _, reason = (
        slurm.command("squeue", "-h", "-t", "all", "-j", job, "-o", "%T %r").strip().partition(" ")
    )
    return state, reason


def _wait_state(
    slurm: SlurmCluster, job: str, wanted: set[str], limit: float = 60
) -> tuple[str, str]:
    deadline = time.monotonic() + limit
    state, reason = "", ""
    while time.monotonic() < deadline:
        state, reason = _job_state(slurm, job)
        if state in wanted:
            return state, reason
        time.sleep(0.3)
    raise AssertionError(f"job {job} is {state} ({reason}), not one of {sorted(wanted)}")


def test_a_two_task_job_sees_both_ranks(slurm: SlurmCluster, tmp_path: Path) -> None:
    work = _user_dir(tmp_path / "job")
    job = slurm.command(
        "sbatch",
        "--parsable",
        "--ntasks=2",
        "--job-name=ranks",
        f"--output={work}/out.txt",
        f"--chdir={work}",
        "--wrap",
        "srun sh -c 'echo rank=$SLURM_PROCID of $SLURM_NTASKS'",
        user=SSH_TEST_USER,
    ).strip()
    _wait_state(slurm, job, {"COMPLETED"})
    lines = sorted((work / "out.txt").read_text().split("\n"))
    assert [line for line in lines if line] == ["rank=0 of 2", "rank=1 of 2"]
    assert "ExitCode=0:0" in slurm.command("scontrol", "show", "job", "-o", job)


def test_a_held_job_pends_with_its_reason_and_scancel_ends_it(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    work = _user_dir(tmp_path / "held")
    job = slurm.command(
        "sbatch",
        "--parsable",
        "--hold",
        f"--chdir={work}",
        f"--output={work}/out.txt",
        "--wrap",
        "true",
        user=SSH_TEST_USER,
    ).strip()
    assert _wait_state(slurm, job, {"PENDING"}) == ("PENDING", "JobHeldUser")
    slurm.command("scancel", job, user=SSH_TEST_USER)
    assert _wait_state(slurm, job, {"CANCELLED"})[0] == "CANCELLED"


def test_a_failing_job_keeps_its_exit_code(slurm: SlurmCluster, tmp_path: Path) -> None:
    work = _user_dir(tmp_path / "fail")
    job = slurm.command(
        "sbatch",
        "--parsable",
        f"--chdir={work}",
        f"--output={work}/out.txt",
        "--wrap",
        "exit 3",
        user=SSH_TEST_USER,
    ).strip()
    _wait_state(slurm, job, {"FAILED"})
    assert "ExitCode=3:0" in slurm.command("scontrol", "show", "job", "-o", job)


AGGREGATE = """
from pyspark.sql import SparkSession, functions as F
spark = SparkSession.builder.appName("sortie-cluster-check").getOrCreate()
df = spark.createDataFrame([("a", 1), ("b", 2), ("a", 3)], ["key", "value"])
rows = sorted(df.groupBy("key").agg(F.sum("value").alias("total")).collect())
print("totals", [(r.key, r.total) for r in rows])
spark.stop()
"""


def test_a_pyspark_application_runs_on_the_standalone_cluster(
    spark: SparkCluster, tmp_path: Path
) -> None:
    script = tmp_path / "aggregate.py"
    script.write_text(AGGREGATE)
    done = subprocess.run(
        [str(spark.spark_submit), "--master", spark.master_url, str(script)],
        env={**os.environ, **spark.env},
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "totals [('a', 4), ('b', 2)]" in done.stdout
    apps = spark.state()["completedapps"]  # (the session's other tests' apps too)
    assert "sortie-cluster-check" in [app["name"] for app in apps]  # type: ignore[index]
