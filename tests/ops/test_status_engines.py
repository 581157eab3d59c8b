"""`sortie status` with an attached Slurm login node: the target's kind is its engine, and
runs waiting in Slurm's queue are said. Pure (``summarise``/``render``, no broker)."""

from __future__ import annotations

from sortie.cli.status import render, summarise
from sortie.proto import messages as m
from sortie.proto.engines import EngineJob, SlurmEngine
from sortie.proto.states import RunState
from tests import builders as b
from tests.ops.test_status_cli import observed


def starting(run_id: str, reason: str) -> m.RunRecord:
    job = EngineJob(engine="slurm", job_id="7", state="PENDING", reason=reason, since=10.0)
    return b.record(
        run_id,
        RunState.STARTING,
        spec=b.spec(target="hpc"),
        agent_id="hpc",
        engine_job=job,
        history=[m.StateChange(state=RunState.STARTING, at=10.0, attempt=1)],
    )


def test_a_slurm_target_and_its_runs_in_slurms_queue() -> None:
    vm = m.VmRecord(
        name="hpc",
        vm=m.VmConfig(
            address="login1",
            ssh=m.SshLogin(username="u", auth="key"),
            engine=SlurmEngine(partition="gpu"),
        ),
        created_at=0.0,
        provisioning_state="Succeeded",
    )
    runs = [starting("r1", "Resources"), starting("r2", "Priority")]
    s = summarise(observed(vms=[vm], runs=runs), now=100.0)
    (hpc,) = [t for t in s.targets if t.name == "hpc"]
    assert hpc.kind == "slurm"
    assert hpc.waiting == "target hpc: 2 runs waiting in slurm's queue: Resources"
    assert hpc.waiting in "\n".join(render(s))
    # once they run, nothing waits
    running = [
        b.record("r1", RunState.RUNNING, spec=b.spec(target="hpc"), agent_id="hpc"),
    ]
    (hpc,) = [
        t for t in summarise(observed(vms=[vm], runs=running), now=100.0).targets if t.name == "hpc"
    ]
    assert hpc.waiting is None
