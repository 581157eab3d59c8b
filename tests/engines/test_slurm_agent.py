"""A real agent started with a Slurm engine, against a real broker and the real one-node
Slurm cluster: it advertises the cluster's largest node, and a run it is given goes through
sbatch and reports its Slurm job on the way to Completed (the agent runs as root here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.engines import SlurmEngine
from sortie.proto.states import RunState
from tests.agents.agent_builders import Reports, agent, spec, stream_batches, upload_snapshot
from tests.engines.slurm_cluster import SlurmCluster

pytestmark = pytest.mark.timeout(180)

# it stays a few seconds in Slurm's RUNNING: the agent polls squeue every second, and a job
# that ended between two polls (under load) was never reported Running with its Slurm job
TRAIN = b"""\
import os
import time
from sortie import Run
run = Run.get_context()
print("hello from", run.id, "rank", os.environ["RANK"])
run.log("acc", 0.5)
with open(os.path.join(os.environ["SORTIE_OUTPUTS_DIR"], "model.txt"), "w") as fh:
    fh.write("weights")
time.sleep(3)
"""


async def test_a_slurm_agent_runs_a_run_through_sbatch(
    bus: Bus, tmp_path: Path, slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    reports = Reports(bus.js)
    await reports.open()
    snap = await upload_snapshot(bus, {"train.py": (TRAIN, 0o644)})
    engine = SlurmEngine(partition=slurm.partition)
    async with agent(bus, tmp_path, engine=engine) as sched:
        inc = await sched.incarnation()
        hb = sched.heartbeats[-1]
        assert hb.engine == "slurm"
        assert (hb.capacity.cpus, hb.capacity.memory_mb) == (slurm.cpus, slurm.memory_mb)
        await sched.send(m.Assign(run_id="run1", attempt=1, incarnation=inc, spec=spec(snap)))
        got = await reports.until_terminal("run1", timeout=90)
    final = got[-1]
    assert final.state == RunState.COMPLETED and final.exit_code == 0, final.error
    assert [a.path for a in final.artifacts] == ["outputs/model.txt"]
    running = [r for r in got if r.state == RunState.RUNNING]
    assert len(running) == 1 and running[0].engine_job is not None
    assert running[0].engine_job.engine == "slurm" and running[0].engine_job.state == "RUNNING"
    job_id = running[0].engine_job.job_id
    lines = [
        (ln.stream, ln.text)
        for d in await stream_batches(bus.js, subjects.run_logs("run1"))
        for ln in codec.decode(m.LogBatch, d).lines
    ]
    assert ("stdout", "hello from run1 rank 0") in lines
    assert ("system", f"slurm job {job_id}: RUNNING") in lines
    metrics = [
        (p.name, p.value)
        for d in await stream_batches(bus.js, subjects.run_metrics("run1"))
        for p in codec.decode(m.MetricBatch, d).points
    ]
    assert metrics == [("acc", 0.5)]


async def test_a_job_cancelled_outside_sortie_fails_the_run_with_slurms_word(
    bus: Bus, tmp_path: Path, slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    reports = Reports(bus.js)
    await reports.open()
    snap = await upload_snapshot(bus, {"train.py": (b"import time\ntime.sleep(300)\n", 0o644)})
    async with agent(bus, tmp_path, engine=SlurmEngine(partition=slurm.partition)) as sched:
        inc = await sched.incarnation()
        await sched.send(m.Assign(run_id="run2", attempt=1, incarnation=inc, spec=spec(snap)))
        running = await reports.until_terminal_or(RunState.RUNNING, "run2", timeout=60)
        assert running.state == RunState.RUNNING and running.engine_job is not None
        slurm.command("scancel", running.engine_job.job_id)
        final = (await reports.until_terminal("run2", timeout=60))[-1]
    assert final.state == RunState.FAILED and final.error is not None
    assert final.error.kind == "canceled"
    assert f"Slurm job {running.engine_job.job_id} was cancelled outside Sortie" in (
        final.error.message
    )
