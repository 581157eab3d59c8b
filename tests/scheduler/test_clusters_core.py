"""Compute targets, nodes, retries, preemption and agent administration through the core."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from sortie.proto import messages as m
from sortie.proto import subjects
from sortie.proto.engines import SlurmEngine
from sortie.proto.run_errors import RETRY, ErrorKind, Retry
from sortie.proto.states import RunState
from sortie.scheduler import core
from sortie.scheduler.events import read_request
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.reconcile import Timing
from sortie.scheduler.sizes import load_catalog
from tests.builders import heartbeat, spec

CFG = core.Config(
    timing=Timing(lease_s=10, assign_ack_s=3),
    catalog=load_catalog(None),
    preempt_grace_s=30,
    node_boot_timeout_s=60,
)


def ask(s: SchedulerState, req: m.Message, now: float = 0.0) -> m.Message:
    ev = (
        core.ComputeAsked(request=req, reply_to="r")
        if not isinstance(req, m.AgentList | m.AgentAdmin)
        else core.AgentAsked(request=req, reply_to="r")
    )
    (reply,) = [c.message for c in core.handle(s, ev, now, CFG) if isinstance(c, core.Reply)]
    return reply


def create(s: SchedulerState, name: str = "pool", **kw: object) -> m.Message:
    cfg = {"vm_size": "local_medium", "max_nodes": 3}
    cfg.update(kw)
    return ask(s, m.ComputeCreate(name=name, cluster=m.ProcessCluster(**cfg)))


def submit(s: SchedulerState, run_id: str, now: float = 0.0, **kw: object) -> m.Message:
    ev = core.Submitted(request=m.SubmitRequest(spec=spec(**kw)), run_id=run_id, reply_to="r")
    (reply,) = [c.message for c in core.handle(s, ev, now, CFG) if isinstance(c, core.Reply)]
    return reply


def ids() -> core.nodes.NodeIds:
    counter = itertools.count()
    return lambda cluster: f"{cluster}-{next(counter)}"


def test_compute_create_rules() -> None:
    s = SchedulerState()
    cases = [
        ({"name": "x"}, "2 to 16 characters, letters, digits and hyphens, starting with a letter"),
        ({"name": "9lives"}, "starting with a letter"),
        ({"name": "a" * 17}, "2 to 16 characters"),
        ({"name": "local"}, "exists"),
        ({"vm_size": "huge"}, "unknown vm size 'huge'"),
        ({"min_nodes": 4}, "min_nodes (4) is greater than max_nodes (3)"),
        ({"max_nodes": 0}, "max_nodes must be at least 1"),
    ]
    for kw, expected in cases:
        reply = create(s, **kw)
        assert isinstance(reply, m.ErrorReply) and expected in reply.message, (kw, reply)
    # a provider this scheduler does not offer (CFG offers process only)
    login = m.SshLogin(username="u", auth="password")
    pool = m.SshPoolCluster(vm_size="local_medium", max_nodes=1, hosts=["h1"], ssh=login)
    reply = ask(s, m.ComputeCreate(name="pool", cluster=pool, secret=m.SshSecret(password="p")))
    expected = "unknown node provider 'ssh'; known providers: process"
    assert isinstance(reply, m.ErrorReply) and expected in reply.message, reply
    assert s.computes == {}
    ok = create(s)
    assert isinstance(ok, m.ComputeReply)
    assert (
        ok.info.compute.shape.name == "LOCAL_MEDIUM"
        and ok.info.compute.provisioning_state == "Creating"
    )
    assert isinstance(create(s), m.ErrorReply)  # same name twice
    assert "pool" in s.known_targets()


def test_a_provider_no_variant_names_is_refused_as_a_bad_request() -> None:
    raw = b'{"type":"compute_create","name":"pool","cluster":'
    raw += b'{"provider":"cloud9","vm_size":"local_medium","max_nodes":3}}'
    reply = read_request(subjects.API_COMPUTE, raw)
    assert isinstance(reply, m.ErrorReply) and reply.code == "bad_request"
    assert "'cloud9'" in reply.message and "provider" in reply.message


def test_update_and_delete_rules() -> None:
    s = SchedulerState()
    create(s)
    reply = ask(s, m.ComputeUpdate(name="pool", min_nodes=5))
    assert isinstance(reply, m.ErrorReply) and "greater than max_nodes" in reply.message
    reply = ask(s, m.ComputeUpdate(name="pool", max_nodes=6, min_nodes=1))
    assert isinstance(reply, m.ComputeReply) and reply.info.compute.cluster.max_nodes == 6
    submit(s, "r1", target="pool")
    reply = ask(s, m.ComputeDelete(name="pool"))
    assert isinstance(reply, m.ErrorReply) and "1 queued run(s) target pool (r1)" in reply.message
    assert "--force" in reply.message
    reply = ask(s, m.ComputeDelete(name="pool", force=True))
    assert isinstance(reply, m.ComputeReply) and reply.info.compute.provisioning_state == "Deleting"
    r1 = s.runs["r1"]
    assert r1.state is RunState.FAILED and r1.error is not None
    assert r1.error.kind is ErrorKind.TARGET_DELETED
    assert r1.error.message == "its target pool was deleted"
    core.decide(s, 1.0, CFG, ids())
    assert "pool" not in s.computes and s.computes.deleted == {"pool"}


def test_submit_refuses_what_no_node_of_the_cluster_could_hold() -> None:
    s = SchedulerState()
    create(s)
    reply = submit(s, "big", target="pool", resources=m.Resources(cpus=8))
    assert isinstance(reply, m.ErrorReply)
    assert "no node of pool can hold it: it asks 8 CPUs" in reply.message
    assert "a LOCAL_MEDIUM node has 2 CPUs" in reply.message
    gang = submit(s, "gang", target="pool", node_count=4)
    assert isinstance(gang, m.ErrorReply) and "needs 4 nodes but pool has at most 3" in gang.message
    assert s.runs == {}


def test_scale_up_register_run_idle_scale_down() -> None:
    s = SchedulerState()
    create(s, idle_seconds_before_scaledown=30)
    submit(s, "r1", target="pool", resources=m.Resources(cpus=2))
    submit(s, "r2", target="pool", resources=m.Resources(cpus=2))
    new = ids()
    cmds = core.decide(s, 1.0, CFG, new)
    created = [c for c in cmds if isinstance(c, core.CreateNode)]
    assert [c.node_id for c in created] == ["pool-0", "pool-1"]
    assert created[0].labels == {"cluster": "pool"} and created[0].shape.cpus == 2
    assert s.computes["pool"].decisions[-1].action == "scale_up"
    assert core.decide(s, 2.0, CFG, new) == [] or not any(
        isinstance(c, core.CreateNode) for c in core.decide(s, 2.0, CFG, new)
    )
    for nid in ("pool-0", "pool-1"):
        core.handle(
            s,
            core.HeartbeatSeen(heartbeat=heartbeat(agent_id=nid, target="pool", cpus=2)),
            3.0,
            CFG,
        )
    assert s.nodes["pool-0"].state == "running"
    cmds = core.decide(s, 3.0, CFG, new)
    assert sorted(c.agent_id for c in cmds if isinstance(c, core.SendToAgent)) == [
        "pool-0",
        "pool-1",
    ]
    assert s.computes["pool"].provisioning_state == "Succeeded"
    for rid in ("r1", "r2"):
        agent = s.runs[rid].agent_id
        for st in (RunState.STARTING, RunState.RUNNING, RunState.FINALIZING, RunState.COMPLETED):
            core.handle(
                s,
                core.ReportSeen(
                    report=m.RunReport(
                        agent_id=agent, incarnation="i1", run_id=rid, attempt=1, state=st, at=4.0
                    )
                ),
                4.0,
                CFG,
            )
    core.decide(s, 5.0, CFG, new)  # both idle from now
    for nid in ("pool-0", "pool-1"):
        core.handle(
            s,
            core.HeartbeatSeen(heartbeat=heartbeat(agent_id=nid, target="pool", cpus=2)),
            30.0,
            CFG,
        )
    assert not [c for c in core.decide(s, 30.0, CFG, new) if isinstance(c, core.StopNode)]
    stops = [c for c in core.decide(s, 35.5, CFG, new) if isinstance(c, core.StopNode)]
    assert sorted(c.node_id for c in stops) == ["pool-0", "pool-1"]
    assert s.nodes["pool-0"].state == "stopping"
    core.handle(s, core.NodeStopped(node_id="pool-0"), 36.0, CFG)
    assert s.nodes["pool-0"].state == "stopped" and s.agents["pool-0"].lost


def test_provider_failure_is_recorded_and_backs_off() -> None:
    s = SchedulerState()
    create(s)
    submit(s, "r1", target="pool")
    new = ids()
    core.decide(s, 1.0, CFG, new)
    core.handle(
        s,
        core.NodeFailed(node_id="pool-0", code="spawn_failed", message="no such binary"),
        2.0,
        CFG,
    )
    rec = s.computes["pool"]
    assert rec.provisioning_state == "Failed"
    assert rec.provisioning_errors[-1].code == "spawn_failed" and rec.backoff_until == 7.0
    cmds = core.decide(s, 3.0, CFG, new)
    assert not any(isinstance(c, core.CreateNode) for c in cmds)
    assert s.computes["pool"].decisions[-1].action == "backoff"
    assert any(isinstance(c, core.CreateNode) for c in core.decide(s, 8.0, CFG, new))


def test_a_node_that_never_registers_fails_after_the_boot_timeout() -> None:
    s = SchedulerState()
    create(s)
    submit(s, "r1", target="pool")
    new = ids()
    core.decide(s, 0.0, CFG, new)
    cmds = core.decide(s, 61.0, CFG, new)
    assert s.nodes["pool-0"].state == "failed"
    assert any(isinstance(c, core.StopNode) and c.node_id == "pool-0" for c in cmds)
    assert "did not register within 60s" in s.computes["pool"].provisioning_errors[-1].message


def _placed(s: SchedulerState, rid: str, agent: str = "a1") -> None:
    core.decide(s, 1.0, CFG, ids())
    assert s.runs[rid].agent_id == agent


def _report(
    s: SchedulerState, rid: str, st: RunState, attempt: int = 1, agent: str = "a1", **kw: object
) -> None:
    core.handle(
        s,
        core.ReportSeen(
            report=m.RunReport(
                agent_id=agent,
                incarnation="i1",
                run_id=rid,
                attempt=attempt,
                state=st,
                at=2.0,
                **kw,
            )
        ),
        2.0,
        CFG,
    )


def test_retries_after_script_failures_then_fails() -> None:
    s = SchedulerState()
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat()), 0.0, CFG)
    submit(s, "r", max_retries=1)
    _placed(s, "r")
    err = m.RunError(kind="exit_code", message="script exited with code 1")
    for st in (RunState.STARTING, RunState.RUNNING, RunState.FINALIZING):
        _report(s, "r", st)
    _report(s, "r", RunState.FAILED, exit_code=1, error=err)
    rec = s.runs["r"]
    assert (rec.state, rec.attempt, rec.retries_used) == (RunState.QUEUED, 2, 1)
    assert rec.history[-1].reason is not None and rec.history[-1].reason.startswith("retry 1 of 1")
    _placed(s, "r")
    _report(s, "r", RunState.FAILED, attempt=2, exit_code=1, error=err)
    assert s.runs["r"].state is RunState.FAILED


def test_timeouts_and_cancels_are_not_retried() -> None:
    s = SchedulerState()
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat()), 0.0, CFG)
    submit(s, "r", max_retries=3)
    _placed(s, "r")
    _report(s, "r", RunState.FAILED, error=m.RunError(kind="timeout", message="too long"))
    assert s.runs["r"].state is RunState.FAILED


def test_every_error_kind_has_a_retry_policy() -> None:
    assert set(RETRY) == set(ErrorKind)


@pytest.mark.parametrize("kind", list(ErrorKind))
def test_a_failed_report_is_retried_as_its_kind_says(kind: ErrorKind) -> None:
    s = SchedulerState()
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat()), 0.0, CFG)
    submit(s, "r", max_retries=1)
    _placed(s, "r")
    _report(s, "r", RunState.FAILED, error=m.RunError(kind=kind, message="it failed"))
    rec = s.runs["r"]
    if RETRY[kind] is Retry.MAX_RETRIES:
        assert (rec.state, rec.attempt, rec.retries_used) == (RunState.QUEUED, 2, 1)
    else:
        assert (rec.state, rec.retries_used) == (RunState.FAILED, 0)
        assert rec.error is not None and rec.error.kind is kind


def test_preempted_attempt_requeues_without_using_retries() -> None:
    s = SchedulerState()
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat()), 0.0, CFG)
    submit(s, "r", max_retries=0)
    _placed(s, "r")
    _report(s, "r", RunState.RUNNING)
    _report(s, "r", RunState.QUEUED, error=m.RunError(kind="preempted", message="node preempted"))
    rec = s.runs["r"]
    assert (rec.state, rec.attempt, rec.retries_used, rec.preemptions) == (RunState.QUEUED, 2, 0, 1)
    assert rec.history[-1].reason == "preempted"
    assert [h.state for h in rec.history[-2:]] == [RunState.PREEMPTED, RunState.QUEUED]
    assert rec.error is None


def test_cordon_drain_and_preempt_keep_new_runs_away() -> None:
    s = SchedulerState()
    core.handle(s, core.HeartbeatSeen(heartbeat=heartbeat()), 0.0, CFG)
    for action, why in (("cordon", "agent is cordoned"), ("drain", "agent is draining")):
        reply = ask(s, m.AgentAdmin(agent_id="a1", action=action))
        assert isinstance(reply, m.AgentReply)
        submit(s, f"r-{action}")
        core.decide(s, 1.0, CFG, ids())
        assert s.why.of(s.runs[f"r-{action}"]) == {why: 1}
        ask(s, m.AgentAdmin(agent_id="a1", action="uncordon"))
        core.decide(s, 1.0, CFG, ids())
        assert s.runs[f"r-{action}"].state is RunState.PREPARING
    reply = ask(s, m.AgentAdmin(agent_id="a1", action="preempt"))
    assert isinstance(reply, m.AgentReply)
    cmds = core.handle(
        s,
        core.AgentAsked(request=m.AgentAdmin(agent_id="nobody", action="drain"), reply_to="r"),
        1.0,
        CFG,
    )
    assert any(isinstance(c, core.Reply) and isinstance(c.message, m.ErrorReply) for c in cmds)
    listed = ask(s, m.AgentList())
    assert isinstance(listed, m.AgentListReply) and listed.agents[0].agent_id == "a1"


def test_placement_filters_dedicated_gpu_type_and_labels() -> None:
    s = SchedulerState()
    low = m.Heartbeat(
        agent_id="low",
        incarnation="i",
        target="t",
        hostname="h",
        sent_at=0,
        capacity=m.Capacity(cpus=4, memory_mb=1000, gpus=1, gpu_type="NVIDIA A100"),
        priority="lowpriority",
        labels={"zone": "a"},
    )
    ded = m.Heartbeat(
        agent_id="ded",
        incarnation="i",
        target="t",
        hostname="h",
        sent_at=0,
        capacity=m.Capacity(cpus=4, memory_mb=1000, gpus=1, gpu_type="NVIDIA H100 80GB HBM3"),
        labels={"zone": "b"},
    )
    for hb in (low, ded):
        core.handle(s, core.HeartbeatSeen(heartbeat=hb), 0.0, CFG)
    submit(s, "h100", target="t", resources=m.Resources(gpus=1, gpu_type="h100"))
    submit(s, "zone-a", target="t", constraints={"zone": "a"})
    submit(s, "dedicated", target="t", dedicated_only=True, priority=-1)
    core.decide(s, 1.0, CFG, ids())
    assert s.runs["h100"].agent_id == "ded"
    assert s.runs["zone-a"].agent_id == "low"
    assert s.runs["dedicated"].agent_id == "ded"
    reply = submit(s, "v100", target="t", resources=m.Resources(gpus=1, gpu_type="V100"))
    assert isinstance(reply, m.ErrorReply) and "of type V100" in reply.message


def test_docker_runs_only_go_to_agents_with_an_engine() -> None:
    s = SchedulerState()
    plain = m.Heartbeat(
        agent_id="plain",
        incarnation="i",
        target="t",
        hostname="h",
        sent_at=0,
        capacity=m.Capacity(cpus=4, memory_mb=1000),
    )
    core.handle(s, core.HeartbeatSeen(heartbeat=plain), 0.0, CFG)
    docker = m.Environment(docker=m.DockerSection(enabled=True, base_image="img"))
    submit(s, "boxed", target="t", environment=docker)
    core.decide(s, 1.0, CFG, ids())
    no_engine = "agent has no container engine (docker.enabled needs one)"
    assert s.why.of(s.runs["boxed"]) == {no_engine: 1}
    with_engine = msgspec.structs.replace(plain, agent_id="eng", container_engine="podman 4.3.1")
    core.handle(s, core.HeartbeatSeen(heartbeat=with_engine), 2.0, CFG)
    core.decide(s, 2.0, CFG, ids())
    assert s.runs["boxed"].agent_id == "eng"
    assert s.agents["eng"].record().container_engine == "podman 4.3.1"
    no_image = m.Environment(docker=m.DockerSection(enabled=True))
    reply = submit(s, "no-image", target="t", environment=no_image)
    assert isinstance(reply, m.ErrorReply) and "needs a base image" in reply.message


def test_several_processes_per_node_only_on_a_slurm_target() -> None:
    s = SchedulerState()
    login = m.SshLogin(username="u", auth="key")
    for name, engine in (("box", None), ("hpc", SlurmEngine(partition="gpu"))):
        vm = m.VmConfig(address="10.0.0.9", ssh=login, engine=engine)
        s.vms.load(name, m.VmRecord(name=name, vm=vm, created_at=0.0))
    for target in ("box", "local"):
        reply = submit(s, f"r-{target}", target=target, processes_per_node=2)
        assert isinstance(reply, m.ErrorReply)
        assert "processes_per_node=2: only a Slurm target starts several processes" in reply.message
        assert f"and {target!r} is not one" in reply.message
    assert isinstance(submit(s, "r-hpc", target="hpc", processes_per_node=2), m.SubmitReply)
