"""The Slurm executor against the real one-node Slurm cluster: it prepares an attempt as an
agent's attempt does, submits it with sbatch, follows it with squeue, and ends with the
outcome the attempt reports (the agent runs as root here: its jobs run as root)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sortie.agents.attempt import ChildEnv, RankInfo, child_env, script_argv, write_runtime
from sortie.agents.envcache import EnvCache
from sortie.agents.executors import AttemptFiles, Job, Launch, Outcome
from sortie.agents.executors.slurm import (
    SlurmExecution,
    SlurmExecutor,
    cancel_leftovers,
    capacity,
)
from sortie.agents.metrics_fifo import parse_metric
from sortie.proto import messages as m
from sortie.proto.engines import EngineJob, SlurmEngine
from sortie.proto.run_errors import ErrorKind
from tests.engines.slurm_cluster import SlurmCluster

pytestmark = pytest.mark.timeout(240)


@dataclass
class Seen:
    """What the execution handed on: output lines, metric lines, engine job states."""

    lines: list[str] = field(default_factory=list)
    metrics: list[bytes] = field(default_factory=list)
    jobs: list[EngineJob] = field(default_factory=list)

    def on_output(self, stream: str, text: str) -> None:
        self.lines.append(text)

    async def on_engine_job(self, job: EngineJob) -> None:
        self.jobs.append(job)

    async def until(self, state: str, limit: float = 60) -> EngineJob:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for job in self.jobs:
                if job.state == state:
                    return job
            await asyncio.sleep(0.2)
        raise AssertionError(f"the job never reported {state}: {self.jobs}")


@dataclass
class Started:
    execution: SlurmExecution
    seen: Seen
    files: AttemptFiles


@pytest.fixture
def on_slurm(slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """The agent's environment names the cluster, as a login node's does."""
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    return slurm


@pytest.fixture
async def cleanup(on_slurm: SlurmCluster) -> AsyncIterator[list[SlurmExecution]]:
    started: list[SlurmExecution] = []
    yield started
    for execution in started:  # a failed test leaves no job behind
        await execution.stop("canceled", 0.5)


async def start_run(
    slurm: SlurmCluster,
    tmp_path: Path,
    started: list[SlurmExecution],
    source: str,
    *,
    max_s: float | None = None,
    grace: float = 5.0,
    **spec_kw: object,
) -> Started:
    data = tmp_path / "data"
    workdir = data / "runs" / "r1" / "1"
    workdir.mkdir(parents=True)
    (workdir / "outputs").mkdir()
    (workdir / "train.py").write_text(source)
    runtime = data / "runtime"
    write_runtime(runtime)
    here = workdir.parent
    files = AttemptFiles(
        workdir=workdir,
        runtime_dir=runtime,
        metrics=here / "1.metrics",
        stop_reason=here / "1.stop-reason",
        hostfile=here / "1.hostfile",
        pid_file=here / "1.pid",
    )
    spec = m.RunSpec(
        experiment="e",
        script="train.py",
        snapshot_id="s",
        max_duration_s=max_s,
        environment=m.Environment(python=m.PythonEnvironment(interpreter=sys.executable)),
        **spec_kw,  # type: ignore[arg-type]
    )
    job = Job(run_id="r1", attempt=1, agent_id="a1", incarnation="i1", spec=spec, files=files)
    executor = SlurmExecutor(EnvCache(data / "envs"), SlurmEngine(partition=slurm.partition))
    prepared = await executor.prepare(job, lambda _line: None)
    view = prepared.view(None)
    seen = Seen()
    launch = Launch(
        argv=script_argv(prepared.python, view.workdir / spec.script, []),
        cwd=workdir,
        env=child_env(
            view.base_env,
            spec,
            ChildEnv(
                run_id="r1",
                attempt=1,
                metrics_file=view.metrics_file,
                outputs_dir=view.outputs_dir,
                runtime_dir=view.runtime_dir,
                stop_reason_file=view.stop_reason_file,
                rank=RankInfo(0, 1, "127.0.0.1", 29612, view.hostfile),
            ),
        ),
        max_duration_s=max_s,
        kill_grace_s=grace,
        stop_reason_file=files.stop_reason,
        on_engine_job=seen.on_engine_job,
        on_metric_line=seen.metrics.append,
    )
    execution = await prepared.start(launch, None, seen.on_output)
    started.append(execution)
    return Started(execution, seen, files)


def squeue_state(slurm: SlurmCluster, job_id: str) -> str:
    return slurm.command("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T").strip()


async def test_a_run_completes_with_its_output_metrics_and_files(
    on_slurm: SlurmCluster, tmp_path: Path, cleanup: list[SlurmExecution]
) -> None:
    run = await start_run(
        on_slurm,
        tmp_path,
        cleanup,
        "import os\n"
        "from sortie import Run\n"
        "print('hello from slurm')\n"
        "Run.get_context().log('loss', 0.25)\n"
        "with open(os.path.join(os.environ['SORTIE_OUTPUTS_DIR'], 'model.txt'), 'w') as f:\n"
        "    f.write('weights')\n"
        "print('bye')\n",
    )
    outcome = await run.execution.wait()
    assert outcome == Outcome(exit_code=0, duration_s=outcome.duration_s)
    assert run.seen.lines == ["hello from slurm", "bye"]
    points = [parse_metric(line) for line in run.seen.metrics]
    assert [(p.name, p.value) for p in points if isinstance(p, m.MetricPoint)] == [("loss", 0.25)]
    assert (run.files.workdir / "outputs" / "model.txt").read_text() == "weights"
    states = [job.state for job in run.seen.jobs]
    # (a job this short can start and end between two polls: RUNNING is not always seen)
    assert states[-1] == "COMPLETED"
    assert {job.job_id for job in run.seen.jobs} == {run.execution.job_id}
    env_file = run.files.workdir.parent / "1.sbatch-env"
    assert env_file.stat().st_mode & 0o777 == 0o600


async def test_two_tasks_on_one_node_see_their_ranks(
    on_slurm: SlurmCluster, tmp_path: Path, cleanup: list[SlurmExecution]
) -> None:
    if on_slurm.cpus < 2:
        pytest.fail(f"the test cluster's node has {on_slurm.cpus} CPU: two tasks need two")
    run = await start_run(
        on_slurm,
        tmp_path,
        cleanup,
        "import os\n"
        "e = os.environ\n"
        "print(f\"RANK {e['RANK']} WORLD_SIZE {e['WORLD_SIZE']} LOCAL_RANK {e['LOCAL_RANK']} "
        "MASTER {e['MASTER_ADDR']}:{e['MASTER_PORT']}\")\n",
        processes_per_node=2,
    )
    outcome = await run.execution.wait()
    assert outcome.exit_code == 0
    master = f"MASTER {on_slurm.node}:29612"
    assert sorted(run.seen.lines) == [
        f"RANK 0 WORLD_SIZE 2 LOCAL_RANK 0 {master}",
        f"RANK 1 WORLD_SIZE 2 LOCAL_RANK 1 {master}",
    ]


async def test_a_stop_cancels_the_job(
    on_slurm: SlurmCluster, tmp_path: Path, cleanup: list[SlurmExecution]
) -> None:
    run = await start_run(
        on_slurm,
        tmp_path,
        cleanup,
        "import time\nprint('ready', flush=True)\ntime.sleep(300)\n",
    )
    await run.seen.until("RUNNING")
    await run.execution.stop("canceled", 2.0)
    outcome = await run.execution.wait()
    assert outcome.stopped and not outcome.timed_out and outcome.engine_error is None
    assert squeue_state(on_slurm, run.execution.job_id) == "CANCELLED"
    assert run.files.stop_reason.read_text().strip() == "canceled"


async def test_a_run_over_its_max_duration_ends_timed_out(
    on_slurm: SlurmCluster, tmp_path: Path, cleanup: list[SlurmExecution]
) -> None:
    run = await start_run(
        on_slurm, tmp_path, cleanup, "import time\ntime.sleep(300)\n", max_s=3, grace=1.0
    )
    outcome = await run.execution.wait()
    assert outcome.timed_out and not outcome.stopped and outcome.engine_error is None
    assert run.files.stop_reason.read_text().strip() == "timeout"
    assert squeue_state(on_slurm, run.execution.job_id) == "CANCELLED"


async def test_a_run_waiting_for_the_node_reports_pending_with_the_reason(
    on_slurm: SlurmCluster, tmp_path: Path, cleanup: list[SlurmExecution]
) -> None:
    blocker = on_slurm.command(
        "sbatch",
        "--parsable",
        f"--cpus-per-task={on_slurm.cpus}",
        f"--chdir={tmp_path}",
        "--output=/dev/null",
        "--wrap",
        "sleep 300",
    ).strip()
    try:
        run = await start_run(on_slurm, tmp_path, cleanup, "print('never')\n")
        pending = await run.seen.until("PENDING")
        assert pending.reason in ("Resources", "Priority")
        await run.execution.stop("canceled", 1.0)
        outcome = await run.execution.wait()
        assert outcome.stopped and run.seen.lines == []
        assert squeue_state(on_slurm, run.execution.job_id) == "CANCELLED"
    finally:
        on_slurm.command("scancel", blocker)


async def test_capacity_is_the_largest_node(on_slurm: SlurmCluster) -> None:
    assert await capacity(SlurmEngine(partition=on_slurm.partition)) == (
        on_slurm.cpus,
        on_slurm.memory_mb,
        0,
    )


async def test_slurms_own_time_limit_ends_the_run_timed_out(
    on_slurm: SlurmCluster, tmp_path: Path, cleanup: list[SlurmExecution]
) -> None:
    """Slurm's --time (whole minutes) stops the job before the agent's own timer would: the
    limit is cut to seconds once it runs, and the job ends TIMEOUT."""
    run = await start_run(
        on_slurm, tmp_path, cleanup, "import time\ntime.sleep(300)\n", max_s=170, grace=1.0
    )
    await run.seen.until("RUNNING")
    job_id = run.execution.job_id
    assert "TimeLimit=00:03:00" in on_slurm.command("scontrol", "show", "job", "-o", job_id)
    on_slurm.command("scontrol", "update", f"JobId={job_id}", "TimeLimit=00:00:02")
    outcome = await run.execution.wait()
    assert outcome.timed_out and not outcome.stopped and outcome.engine_error is None
    assert run.seen.jobs[-1].state == "TIMEOUT"


async def test_a_job_cancelled_outside_sortie_fails_the_run_saying_so(
    on_slurm: SlurmCluster, tmp_path: Path, cleanup: list[SlurmExecution]
) -> None:
    run = await start_run(on_slurm, tmp_path, cleanup, "import time\ntime.sleep(300)\n")
    await run.seen.until("RUNNING")
    on_slurm.command("scancel", run.execution.job_id)
    outcome = await run.execution.wait()
    assert not outcome.stopped and outcome.engine_error is not None
    assert outcome.engine_error.kind == "canceled"
    assert "cancelled outside Sortie" in outcome.engine_error.message


def whole_node_job(slurm: SlurmCluster, tmp_path: Path, partition: str) -> str:
    """A plain job (not Sortie's) that needs every CPU of the node, as a user would submit."""
    return slurm.command(
        "sbatch",
        "--parsable",
        f"--partition={partition}",
        f"--cpus-per-task={slurm.cpus}",
        f"--chdir={tmp_path}",
        "--output=/dev/null",
        "--wrap",
        "sleep 300",
    ).strip()


async def test_a_job_preempted_by_a_higher_partition_ends_the_attempt_preempted(
    on_slurm: SlurmCluster, tmp_path: Path, cleanup: list[SlurmExecution]
) -> None:
    """A job of the high partition (a higher PriorityTier) that needs the whole node makes
    Slurm cancel the run's job in the debug partition (PREEMPTED): the outcome gives the
    attempt back as preempted, for Sortie to requeue, and says so."""
    run = await start_run(
        on_slurm,
        tmp_path,
        cleanup,
        "import time\nprint('ready', flush=True)\ntime.sleep(300)\n",
    )
    await run.seen.until("RUNNING")
    job_id = run.execution.job_id
    high = whole_node_job(on_slurm, tmp_path, on_slurm.high_partition)
    try:
        outcome = await asyncio.wait_for(run.execution.wait(), 120)
        assert not outcome.stopped and not outcome.timed_out
        assert outcome.engine_error == m.RunError(
            kind=ErrorKind.PREEMPTED,
            message=f"Slurm preempted job {job_id}; the run will be requeued",
        )
        assert run.seen.jobs[-1].state == "PREEMPTED"
        assert squeue_state(on_slurm, job_id) == "PREEMPTED"
        assert not run.files.stop_reason.exists()  # not stopped by Sortie
        assert not (run.files.workdir.parent / "1.slurm-job").exists()
        deadline = time.monotonic() + 60  # the node went to the job that preempted it
        while squeue_state(on_slurm, high) != "RUNNING":
            assert time.monotonic() < deadline, squeue_state(on_slurm, high)
            await asyncio.sleep(0.3)
    finally:
        on_slurm.command("scancel", high)


async def test_a_job_of_the_same_partition_waits_instead_of_preempting(
    on_slurm: SlurmCluster, tmp_path: Path, cleanup: list[SlurmExecution]
) -> None:
    """Only a higher PriorityTier preempts: a whole-node job in the run's own partition waits
    for the run, which completes."""
    run = await start_run(
        on_slurm,
        tmp_path,
        cleanup,
        "import time\nprint('ready', flush=True)\ntime.sleep(4)\nprint('done', flush=True)\n",
    )
    await run.seen.until("RUNNING")
    other = whole_node_job(on_slurm, tmp_path, on_slurm.partition)
    try:
        outcome = await asyncio.wait_for(run.execution.wait(), 120)
        assert outcome.exit_code == 0 and outcome.engine_error is None
        assert run.seen.lines == ["ready", "done"]
        assert run.seen.jobs[-1].state == "COMPLETED"
    finally:
        on_slurm.command("scancel", other)


async def test_a_restarted_agent_cancels_the_jobs_its_predecessor_left(
    on_slurm: SlurmCluster, tmp_path: Path, cleanup: list[SlurmExecution]
) -> None:
    """An agent that died under a running job left its record; the next agent on the data
    directory cancels the job (its run is requeued by the scheduler: it must not run twice)."""
    run = await start_run(on_slurm, tmp_path, cleanup, "import time\ntime.sleep(300)\n")
    await run.seen.until("RUNNING")
    record = run.files.workdir.parent / "1.slurm-job"
    assert record.read_text().strip() == run.execution.job_id
    runs_dir = tmp_path / "data" / "runs"
    assert await cancel_leftovers(runs_dir) == ([run.execution.job_id], [])
    assert not record.exists()
    deadline = time.monotonic() + 60
    while squeue_state(on_slurm, run.execution.job_id) != "CANCELLED":
        assert time.monotonic() < deadline, squeue_state(on_slurm, run.execution.job_id)
        await asyncio.sleep(0.3)
    assert await cancel_leftovers(runs_dir) == ([], [])  # nothing left to find


async def test_an_ended_job_leaves_no_record(
    on_slurm: SlurmCluster, tmp_path: Path, cleanup: list[SlurmExecution]
) -> None:
    run = await start_run(on_slurm, tmp_path, cleanup, "print('done')\n")
    assert (await run.execution.wait()).exit_code == 0
    assert not (run.files.workdir.parent / "1.slurm-job").exists()
