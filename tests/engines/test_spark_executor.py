"""The Spark executor against the real standalone cluster (tests/engines/spark_cluster.py): an
attempt's launch prepared and started as an agent does it, spark-submit for real."""

from __future__ import annotations

import asyncio
import os
import pwd
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sortie.agents.attempt import ChildEnv, child_env, script_argv, write_runtime
from sortie.agents.envcache import EnvCache
from sortie.agents.executors import AttemptFiles, Job, Launch, Outcome
from sortie.agents.executors.spark import SparkExecution, SparkExecutor, capacity
from sortie.agents.executors.spark_submit import APP_ID
from sortie.agents.isolation import DEFAULT_RUN_USER
from sortie.agents.metrics_fifo import MetricsFifo, parse_metric
from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.engines import EngineJob, SparkEngine
from sortie.proto.states import RunState
from tests.agents.agent_builders import Reports, agent, spec, stream_batches, upload_snapshot
from tests.engines.spark_cluster import SparkCluster

pytestmark = pytest.mark.timeout(300)

AGGREGATE = """\
import os
from pyspark.sql import SparkSession, functions as F
from sortie import Run
from helpers import double

spark = SparkSession.builder.appName("aggregate").getOrCreate()
df = spark.createDataFrame([("a", 1), ("b", 2), ("a", 3)], ["key", "value"])
rows = sorted(df.groupBy("key").agg(F.sum("value").alias("total")).collect())
print("totals", [(r.key, r.total) for r in rows], flush=True)
# double runs on the worker's executor: it imports helpers from the --py-files zip
doubled = spark.sparkContext.parallelize([1, 2, 3]).map(double).sum()
print("doubled", doubled, flush=True)
print("driver uid", os.getuid(), flush=True)
Run.get_context().log("total_a", rows[0].total)
os.makedirs("outputs", exist_ok=True)
with open("outputs/totals.csv", "w") as fh:
    fh.writelines(f"{r.key},{r.total}\\n" for r in rows)
spark.stop()
"""

FAILING = """\
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
print("count", spark.range(3).count(), flush=True)
spark.stop()
sys.exit(3)
"""

SLEEPING = """\
import time
from pyspark.sql import SparkSession

spark = SparkSession.builder.appName("sleeper").getOrCreate()
print("count", spark.range(3).count(), flush=True)
time.sleep(600)
"""


@dataclass
class Attempt:
    """What an attempt hands the Spark executor, and what comes back."""

    execution: SparkExecution
    fifo: MetricsFifo
    workdir: Path
    lines: list[tuple[str, str]] = field(default_factory=list)
    jobs: list[EngineJob] = field(default_factory=list)
    metric_lines: list[bytes] = field(default_factory=list)

    def stdout(self) -> list[str]:
        return [text for stream, text in self.lines if stream == "stdout"]

    async def wait(self) -> Outcome:
        try:
            return await self.execution.wait()
        finally:
            self.fifo.close()


async def start_attempt(
    spark: SparkCluster, tmp_path: Path, script: str, files: dict[str, str] | None = None
) -> Attempt:
    run_id = "r-" + tmp_path.name[-20:].replace("_", "-")
    here = tmp_path / "runs" / run_id
    workdir = here / "1"
    workdir.mkdir(parents=True)
    for name, text in {"job.py": script, **(files or {})}.items():
        (workdir / name).write_text(text)
    runtime = tmp_path / "runtime"
    write_runtime(runtime)
    attempt_files = AttemptFiles(
        workdir=workdir,
        runtime_dir=runtime,
        metrics=here / "1.metrics",
        stop_reason=here / "1.stop-reason",
        hostfile=here / "1.hostfile",
        pid_file=here / "1.pid",
    )
    spec = m.RunSpec(experiment="spark", script="job.py", snapshot_id="s")
    job = Job(
        run_id=run_id, attempt=1, agent_id="a1", incarnation="i1", spec=spec, files=attempt_files
    )
    engine = SparkEngine(
        master=spark.master_url, submit=str(spark.spark_submit), ui_port=spark.ui_port
    )
    executor = SparkExecutor(EnvCache(tmp_path / "envs"), engine)
    said: list[str] = []
    prepared = await executor.prepare(job, said.append)
    view = prepared.view(None)
    # the head node's variables: where Spark is, loopback only (the cluster's own settings)
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    base.update({k: v for k, v in spark.env.items() if k != "PYSPARK_PYTHON"})
    env = child_env(
        base,
        spec,
        ChildEnv(
            run_id=run_id,
            attempt=1,
            metrics_file=view.metrics_file,
            outputs_dir=view.outputs_dir,
            runtime_dir=view.runtime_dir,
            stop_reason_file=view.stop_reason_file,
        ),
    )
    metric_lines: list[bytes] = []
    fifo = MetricsFifo(attempt_files.metrics, metric_lines.append)
    fifo.open()
    jobs: list[EngineJob] = []

    async def on_engine_job(job: EngineJob) -> None:
        jobs.append(job)

    lines: list[tuple[str, str]] = []
    launch = Launch(
        argv=script_argv(prepared.python, view.workdir / spec.script, []),
        cwd=workdir,
        env=env,
        kill_grace_s=20.0,
        stop_reason_file=attempt_files.stop_reason,
        on_engine_job=on_engine_job,
    )
    execution = await prepared.start(launch, None, lambda s, t: lines.append((s, t)))
    assert isinstance(execution, SparkExecution)
    return Attempt(execution, fifo, workdir, lines, jobs, metric_lines)


def apps(spark: SparkCluster, which: str) -> dict[str, str]:
    """The master's applications of one kind (activeapps, completedapps): id -> state."""
    listed = spark.state()[which]
    assert isinstance(listed, list)
    return {app["id"]: app["state"] for app in listed}


async def wait_for_app_id(attempt: Attempt, limit_s: float = 120) -> str:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if attempt.jobs and APP_ID.fullmatch(attempt.jobs[-1].job_id):
            return attempt.jobs[-1].job_id
        await asyncio.sleep(0.5)
    raise AssertionError(f"no application id reported: {attempt.jobs}, {attempt.lines[-20:]}")


async def test_a_pyspark_run_aggregates_logs_a_metric_and_writes_outputs(
    spark: SparkCluster, tmp_path: Path
) -> None:
    attempt = await start_attempt(
        spark, tmp_path, AGGREGATE, {"helpers.py": "def double(x):\n    return 2 * x\n"}
    )
    outcome = await attempt.wait()
    assert outcome.exit_code == 0, attempt.lines[-40:]
    assert "totals [('a', 4), ('b', 2)]" in attempt.stdout()
    assert "doubled 12" in attempt.stdout()
    points = [parse_metric(line) for line in attempt.metric_lines]
    assert [(p.name, p.value) for p in points if isinstance(p, m.MetricPoint)] == [("total_a", 4.0)]
    assert (attempt.workdir / "outputs" / "totals.csv").read_text() == "a,4\nb,2\n"
    # reported RUNNING at once with the driver's pid, then with the application's id
    first, last = attempt.jobs[0], attempt.jobs[-1]
    assert first.engine == "spark" and first.state == "RUNNING"
    assert first.job_id == str(attempt.execution.pid)
    assert APP_ID.fullmatch(last.job_id) and last.state == "RUNNING", attempt.jobs
    assert apps(spark, "completedapps").get(last.job_id) == "FINISHED"


async def test_a_failing_application_ends_with_its_scripts_exit_code(
    spark: SparkCluster, tmp_path: Path
) -> None:
    attempt = await start_attempt(spark, tmp_path, FAILING)
    outcome = await attempt.wait()
    assert outcome.exit_code == 3, attempt.lines[-40:]
    assert "count 3" in attempt.stdout() and not outcome.stopped


async def test_a_stop_ends_the_application(spark: SparkCluster, tmp_path: Path) -> None:
    attempt = await start_attempt(spark, tmp_path, SLEEPING)
    app_id = await wait_for_app_id(attempt)
    assert app_id in apps(spark, "activeapps")
    await attempt.execution.stop("canceled")
    outcome = await attempt.wait()
    assert outcome.stopped and outcome.exit_code != 0
    assert (attempt.workdir.parent / "1.stop-reason").read_text() == "canceled\n"
    deadline = time.monotonic() + 60
    while app_id in apps(spark, "activeapps") and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert app_id not in apps(spark, "activeapps")
    assert apps(spark, "completedapps").get(app_id) in ("FINISHED", "KILLED")


async def test_capacity_is_the_largest_workers(spark: SparkCluster) -> None:
    engine = SparkEngine(master=spark.master_url, ui_port=spark.ui_port)
    assert await capacity(engine) == (1.0, 1024)  # the fixture's worker: 1 core, 1g
    assert await capacity(SparkEngine(master="local[2]")) is None


async def test_a_spark_agent_runs_an_assigned_run_on_the_cluster(
    spark: SparkCluster, bus: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real agent started with a Spark engine, a real broker: the run's reports name the
    engine job (the driver's pid, then the application), its outputs and metric are stored,
    and the agent's capacity is the worker's."""
    for key, value in spark.env.items():  # the head node's variables
        if key != "PYSPARK_PYTHON":
            monkeypatch.setenv(key, value)
    reports = Reports(bus.js)
    await reports.open()
    snap = await upload_snapshot(
        bus,
        {
            "train.py": (AGGREGATE.encode(), 0o644),
            "helpers.py": (b"def double(x):\n    return 2 * x\n", 0o644),
        },
    )
    engine = SparkEngine(
        master=spark.master_url, submit=str(spark.spark_submit), ui_port=spark.ui_port
    )
    async with agent(bus, tmp_path, engine=engine) as sched:
        inc = await sched.incarnation()
        capacity = sched.heartbeats[-1].capacity
        assert (capacity.cpus, capacity.memory_mb, capacity.gpus) == (1.0, 1024, 0)
        await sched.send(m.Assign(run_id="sp1", attempt=1, incarnation=inc, spec=spec(snap)))
        got = await reports.until_terminal("sp1", timeout=240)
    await reports.close()
    assert [r.state for r in got] == [
        RunState.STARTING,
        RunState.RUNNING,  # the driver's pid
        RunState.RUNNING,  # the application's id
        RunState.FINALIZING,
        RunState.COMPLETED,
    ], got
    pid_job, app_job = got[1].engine_job, got[2].engine_job
    assert pid_job is not None and pid_job.job_id.isdigit()
    assert app_job is not None and APP_ID.fullmatch(app_job.job_id)
    assert apps(spark, "completedapps").get(app_job.job_id) == "FINISHED"
    final = got[-1]
    assert final.exit_code == 0 and final.error is None
    assert [a.path for a in final.artifacts] == ["outputs/totals.csv"]
    lines = [
        ln.text
        for d in await stream_batches(bus.js, subjects.run_logs("sp1"))
        for ln in codec.decode(m.LogBatch, d).lines
    ]
    assert "totals [('a', 4), ('b', 2)]" in lines and "doubled 12" in lines
    # a root agent starts the driver as its run user, as any run
    uid = pwd.getpwnam(DEFAULT_RUN_USER).pw_uid if os.geteuid() == 0 else os.geteuid()
    assert f"driver uid {uid}" in lines
    assert f"spark job {app_job.job_id}: RUNNING" in lines
    metrics = [
        (p.name, p.value)
        for d in await stream_batches(bus.js, subjects.run_metrics("sp1"))
        for p in codec.decode(m.MetricBatch, d).points
    ]
    assert metrics == [("total_a", 4.0)]
