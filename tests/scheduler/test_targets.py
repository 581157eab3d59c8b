"""Target lifecycle through the core: deleted, detached and failed targets refuse runs, a
target without an agent says why, queue timeouts, and run-based (temporary) clusters."""

from __future__ import annotations

import itertools

import msgspec

from sortie.proto import messages as m
from sortie.proto.run_errors import RETRY, ErrorKind, Retry
from sortie.proto.states import RunState
from sortie.proto.waiting import describe
from sortie.scheduler import core, targets
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.reconcile import Timing
from sortie.scheduler.sizes import load_catalog
from tests.builders import heartbeat, spec

CFG = core.Config(
    timing=Timing(lease_s=10, assign_ack_s=3), catalog=load_catalog(None), node_boot_timeout_s=60
)
SECRET = m.SshSecret(password="hunter2-very-secret")
LOGIN = m.SshLogin(username="alice", auth="password")


def ask(s: SchedulerState, req: m.Message, now: float = 0.0) -> m.Message:
    ev = core.ComputeAsked(request=req, reply_to="r")
    (reply,) = [c.message for c in core.handle(s, ev, now, CFG) if isinstance(c, core.Reply)]
    return reply


def submit(s: SchedulerState, run_id: str, now: float = 0.0, **kw: object) -> m.Message:
    ev = core.Submitted(request=m.SubmitRequest(spec=spec(**kw)), run_id=run_id, reply_to="r")
    (reply,) = [c.message for c in core.handle(s, ev, now, CFG) if isinstance(c, core.Reply)]
    return reply


def attach(s: SchedulerState, name: str = "lab-box", now: float = 1.0) -> m.Message:
    vm = m.VmConfig(address="10.0.0.5", ssh=LOGIN)
    return ask(s, m.ComputeAttach(name=name, vm=vm, secret=SECRET), now)


def fail_attach(s: SchedulerState, name: str = "lab-box", now: float = 2.0) -> None:
    ev = core.VmFailed(name=name, code="unreachable", message="connection refused")
    core.handle(s, ev, now, CFG)


def ids() -> core.nodes.NodeIds:
    counter = itertools.count()
    return lambda cluster: f"{cluster}-{next(counter)}"


def error_of(reply: m.Message) -> str:
    assert isinstance(reply, m.ErrorReply), reply
    return reply.message


def test_new_kinds_are_never_retried() -> None:
    assert RETRY[ErrorKind.TARGET_DELETED] is Retry.NEVER
    assert RETRY[ErrorKind.QUEUE_TIMEOUT] is Retry.NEVER


def test_a_deleted_cluster_refuses_runs_then_is_unknown() -> None:
    s = SchedulerState()
    ask(
        s,
        m.ComputeCreate(name="pool", cluster=m.ProcessCluster(vm_size="local_small", max_nodes=1)),
    )
    assert isinstance(ask(s, m.ComputeDelete(name="pool")), m.ComputeReply)
    why = error_of(submit(s, "r1", target="pool"))
    assert "compute target 'pool' is being deleted" in why and "sortie compute list" in why
    core.decide(s, 1.0, CFG, ids())
    assert "pool" not in s.computes
    why = error_of(submit(s, "r2", target="pool"))
    assert "unknown compute target 'pool'" in why
    assert s.runs == {}


def test_a_failed_attach_refuses_runs_with_its_error_and_attaching_again_retries() -> None:
    s = SchedulerState()
    attach(s)
    assert isinstance(submit(s, "early", target="lab-box"), m.SubmitAccepted)
    fail_attach(s)
    why = error_of(submit(s, "r1", target="lab-box"))
    assert "attaching compute target 'lab-box' failed (unreachable: connection refused)" in why
    assert "sortie compute attach lab-box" in why
    # the run that was queued before says why it waits, since when
    core.decide(s, 3.0, CFG, ids())
    wait = s.runs["early"].waiting
    assert wait == m.TargetWait(reason="attach failed: unreachable: connection refused", since=2.0)
    assert describe("lab-box", wait, 182.0).startswith(
        "target lab-box has no agent: attach failed: unreachable: connection refused (since "
    )
    assert describe("lab-box", wait, 182.0).endswith(", 3 min ago)")
    again = attach(s, now=5.0)
    assert isinstance(again, m.VmReply) and again.vm.provisioning_state == "Creating"
    assert again.vm.progress[-1] == "attaching again" and again.vm.created_at == 1.0
    assert isinstance(submit(s, "r2", target="lab-box"), m.SubmitAccepted)
    core.handle(s, core.VmAttached(name="lab-box", remote_port=4000), 6.0, CFG)
    # a machine that attached is not attached twice
    assert "exists" in error_of(attach(s, now=7.0))


def test_a_failed_machine_detaches_without_force_and_its_queued_runs_fail() -> None:
    s = SchedulerState()
    attach(s)
    submit(s, "early", target="lab-box")
    fail_attach(s)
    reply = ask(s, m.ComputeDetach(name="lab-box"), 3.0)
    assert isinstance(reply, m.VmReply) and reply.vm.provisioning_state == "Deleting"
    early = s.runs["early"]
    assert early.state is RunState.FAILED and early.error is not None
    assert early.error.kind is ErrorKind.TARGET_DELETED
    assert early.error.message == "its target lab-box was detached"
    why = error_of(submit(s, "r1", target="lab-box"))
    assert "compute target 'lab-box' is being detached" in why


def test_a_detached_machine_leaves_the_agents_and_its_heartbeats_are_ignored() -> None:
    s = SchedulerState()
    attach(s)
    core.handle(s, core.VmAttached(name="lab-box", remote_port=4000), 2.0, CFG)
    hb = heartbeat("lab-box", target="lab-box")
    core.handle(s, core.HeartbeatSeen(hb), 2.5, CFG)
    assert "lab-box" in s.agents
    ask(s, m.ComputeDetach(name="lab-box"), 3.0)
    core.handle(s, core.VmDetached(name="lab-box"), 4.0, CFG)
    assert "lab-box" not in s.agents and "lab-box" in s.agents.deleted
    (told,) = core.handle(s, core.HeartbeatSeen(hb), 5.0, CFG)
    assert isinstance(told, core.SendToAgent) and isinstance(told.command, m.Retire)
    assert told.agent_id == "lab-box"
    assert "lab-box" not in s.agents and "lab-box" not in s.known_targets()
    assert "unknown compute target" in error_of(submit(s, "r1", target="lab-box"))


def test_a_failed_cluster_refuses_runs_until_an_update_tries_again() -> None:
    s = SchedulerState()
    ask(
        s,
        m.ComputeCreate(name="pool", cluster=m.ProcessCluster(vm_size="local_small", max_nodes=1)),
    )
    submit(s, "r0", target="pool")
    core.decide(s, 1.0, CFG, ids())
    (node,) = s.nodes
    core.handle(s, core.NodeFailed(node, "spawn", "no such binary"), 2.0, CFG)
    assert s.computes["pool"].provisioning_state == "Failed"
    why = error_of(submit(s, "r1", target="pool"))
    assert "failed to provision (spawn: no such binary)" in why
    assert "sortie compute update pool" in why
    reply = ask(s, m.ComputeUpdate(name="pool", max_nodes=2), 3.0)
    assert isinstance(reply, m.ComputeReply)
    assert reply.info.compute.provisioning_state == "Creating"
    assert isinstance(submit(s, "r1", target="pool"), m.SubmitAccepted)


def test_why_names_the_autoscaler_stop_and_since_when() -> None:
    s = SchedulerState()
    compute = m.ComputeRecord(
        name="gpu-pool",
        cluster=m.ProcessCluster(vm_size="LOCAL_SMALL", max_nodes=1),
        shape=CFG.catalog["LOCAL_SMALL"],
        provisioning_state="Succeeded",
        created_at=0.0,
        decisions=[
            m.ScaleDecision(at=10.0, action="scale_up", nodes=["n1"], reason="r"),
            m.ScaleDecision(at=50.0, action="scale_down", nodes=["n1"], reason="idle"),
        ],
    )
    s.computes.put("gpu-pool", compute)
    wait = targets.no_agent(s, "gpu-pool")
    assert wait == m.TargetWait(reason="its only node was stopped by the autoscaler", since=50.0)
    s.runs.put(
        "r1",
        m.RunRecord(
            run_id="r1",
            spec=spec(target="gpu-pool"),
            state=RunState.QUEUED,
            attempt=1,
            created_at=60.0,
            waiting=wait,
        ),
    )
    (reply,) = [
        c.message
        for c in core.handle(s, core.WhyAsked(run_id="r1", reply_to="w"), 230.0, CFG)
        if isinstance(c, core.Reply)
    ]
    assert isinstance(reply, m.WhyReply)
    assert reply.summary.startswith(
        "queued: target gpu-pool has no agent: its only node was stopped by the autoscaler"
    )
    assert reply.summary.endswith("3 min ago)")


def test_a_lost_agent_is_the_reason_until_one_is_back() -> None:
    s = SchedulerState()
    core.handle(s, core.HeartbeatSeen(heartbeat("g1", target="gpu")), 0.0, CFG)
    s.agents["g1"].lost = True
    submit(s, "r1", target="gpu")
    core.decide(s, 1.0, CFG, ids())
    wait = s.runs["r1"].waiting
    assert wait == m.TargetWait(reason="its agent g1 was lost (last heard from)", since=0.0)
    core.handle(s, core.HeartbeatSeen(heartbeat("g1", "i2", target="gpu")), 2.0, CFG)
    core.decide(s, 3.0, CFG, ids())
    rec = s.runs["r1"]
    assert rec.state is RunState.PREPARING and rec.waiting is None


def test_queue_timeout_fails_the_run_naming_why_it_waited() -> None:
    s = SchedulerState()
    attach(s)
    fail_attach(s, now=1.5)
    submit_ok = core.handle(
        s,
        core.Submitted(
            request=m.SubmitRequest(spec=spec(target="local", queue_timeout_s=30)),
            run_id="r1",
            reply_to="r",
        ),
        2.0,
        CFG,
    )
    assert any(isinstance(c, core.Reply) for c in submit_ok)
    core.decide(s, 20.0, CFG, ids())
    assert s.runs["r1"].state is RunState.QUEUED
    core.decide(s, 32.0, CFG, ids())
    rec = s.runs["r1"]
    assert rec.state is RunState.FAILED and rec.error is not None
    assert rec.error.kind is ErrorKind.QUEUE_TIMEOUT
    assert rec.error.message.startswith("still queued after 30s (queue timeout 30s): ")
    assert "queued: " not in rec.error.message
    assert rec.waiting is None


def test_timed_out_counts_from_the_last_time_it_was_queued() -> None:
    rec = m.RunRecord(
        run_id="r",
        spec=spec(queue_timeout_s=10),
        state=RunState.QUEUED,
        attempt=2,
        created_at=0.0,
        history=[m.StateChange(state=RunState.QUEUED, at=100.0, attempt=2)],
    )
    assert targets.timed_out([rec], 105.0) == []
    assert targets.timed_out([rec], 110.0) == [rec]
    assert targets.timed_out([msgspec.structs.replace(rec, spec=spec())], 1e9) == []


def test_run_based_creation_makes_a_temporary_cluster_and_deletes_it_when_the_run_ends() -> None:
    s = SchedulerState()
    aml = m.AmlComputeSpec(vm_size="local_small", max_nodes=2)
    reply = submit(s, "exp_1_abcd1234", target="amlcompute", amlcompute=aml)
    assert isinstance(reply, m.SubmitAccepted)
    rec = s.runs["exp_1_abcd1234"]
    assert rec.spec.target == "run-abcd1234"
    compute = s.computes["run-abcd1234"]
    assert compute.for_run == "exp_1_abcd1234" and compute.cluster.max_nodes == 2
    assert compute.cluster.vm_size == "LOCAL_SMALL"
    core.decide(s, 1.0, CFG, ids())
    assert [n.cluster for n in s.nodes.values()] == ["run-abcd1234"]
    wait = s.runs[rec.run_id].waiting
    assert wait == m.TargetWait(reason="nodes of run-abcd1234 are starting", since=1.0)
    core.handle(s, core.CancelAsked(run_id=rec.run_id, reply_to="c"), 2.0, CFG)
    assert s.runs[rec.run_id].state is RunState.CANCELED
    core.forget_finished(s, rec.run_id)
    cmds = core.decide(s, 3.0, CFG, ids())
    assert s.computes["run-abcd1234"].provisioning_state == "Deleting"
    assert any(isinstance(c, core.StopNode) for c in cmds)


def test_run_based_creation_refusals_create_nothing() -> None:
    s = SchedulerState()
    why = error_of(submit(s, "exp_1_aaaa1111", target="amlcompute"))
    assert "run_config.amlcompute.vm_size" in why and "--vm-size" in why
    why = error_of(
        submit(
            s, "exp_1_aaaa1111", target="amlcompute", amlcompute=m.AmlComputeSpec(vm_size="huge")
        )
    )
    assert "unknown vm size 'huge'" in why
    why = error_of(
        submit(
            s,
            "exp_1_aaaa1111",
            target="amlcompute",
            amlcompute=m.AmlComputeSpec(vm_size="local_small"),
            resources=m.Resources(cpus=64),
        )
    )
    assert "no node of run-aaaa1111 can hold it" in why
    assert s.computes == {} and s.runs == {}


def test_a_temporary_cluster_whose_run_is_unknown_after_a_restart_is_deleted() -> None:
    s = SchedulerState()
    s.computes.load(
        "run-0000ffff",
        m.ComputeRecord(
            name="run-0000ffff",
            cluster=m.ProcessCluster(vm_size="LOCAL_SMALL", max_nodes=1),
            shape=CFG.catalog["LOCAL_SMALL"],
            created_at=0.0,
            for_run="gone_1_0000ffff",
        ),
    )
    core.decide(s, 1.0, CFG, ids())
    core.decide(s, 2.0, CFG, ids())
    assert "run-0000ffff" not in s.computes


def test_temporary_names_fit_the_compute_name_rule() -> None:
    from sortie.scheduler.clusters import check_compute_name

    for run_id in ("exp_1700000000_abcd1234", "x", "a-b_c"):
        assert check_compute_name(targets.temporary_name(run_id)) is None


def detach_cmd(s: SchedulerState, now: float, **kw: object) -> core.DetachVm:
    ev = core.ComputeAsked(request=m.ComputeDetach(name="lab-box", **kw), reply_to="r")
    (cmd,) = [c for c in core.handle(s, ev, now, CFG) if isinstance(c, core.DetachVm)]
    return cmd


def test_a_detach_that_could_not_clean_up_leaves_the_machine_failed_to_detach_again() -> None:
    s = SchedulerState()
    attach(s)
    core.handle(s, core.VmAttached(name="lab-box", remote_port=4000), 2.0, CFG)
    assert detach_cmd(s, 3.0).force is False  # an attached machine is cleaned up for real
    left = "could not stop the agent and remove ~/.sortie on alice@10.0.0.5:22: refused"
    core.handle(s, core.VmFailed(name="lab-box", code="detach_incomplete", message=left), 4.0, CFG)
    vm = s.vms["lab-box"]
    assert vm.provisioning_state == "Failed" and vm.provisioning_errors[-1].message == left
    why = error_of(submit(s, "r1", target="lab-box"))
    assert why.startswith("detaching compute target 'lab-box' failed (detach_incomplete: could")
    assert detach_cmd(s, 5.0).force is False  # a plain detach tries the clean-up again
    core.handle(s, core.VmFailed(name="lab-box", code="detach_incomplete", message=left), 6.0, CFG)
    assert detach_cmd(s, 7.0, force=True).force is True  # --force forgets it


def test_an_attach_failure_while_detaching_does_not_stop_the_detach() -> None:
    s = SchedulerState()
    attach(s)
    assert detach_cmd(s, 2.0).force is False
    core.handle(s, core.VmFailed(name="lab-box", code="unreachable", message="refused"), 3.0, CFG)
    assert s.vms["lab-box"].provisioning_state == "Deleting"


def test_a_machine_whose_attach_failed_is_forgotten_even_if_it_cannot_be_cleaned() -> None:
    s = SchedulerState()
    attach(s)
    fail_attach(s)
    assert detach_cmd(s, 3.0).force is True
