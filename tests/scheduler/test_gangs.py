"""Multi-node runs: all-or-nothing placement, rank environment, failure of one rank."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.scheduler import core
from sortie.scheduler.autoscale import autoscale
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.placement import Slot, place
from sortie.scheduler.reconcile import Timing
from tests.builders import capacity, record, spec

CFG = core.Config(timing=Timing(lease_s=10, assign_ack_s=3))


def slot(i: int, cpus: float = 4) -> Slot:
    cap = capacity(cpus=cpus)
    return Slot(
        agent_id=f"a{i}",
        target="local",
        free_cpus=cpus,
        free_memory_mb=cap.memory_mb,
        free_gpus=0,
        total=cap,
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=15), st.integers(0, 6))
def test_gangs_are_all_or_nothing_on_distinct_agents(sizes, n_agents) -> None:
    runs = [
        record(f"r{i}", created_at=i, spec=spec(node_count=k, resources=m.Resources(cpus=2)))
        for i, k in enumerate(sizes)
    ]
    plan = place(runs, [slot(i) for i in range(n_agents)])
    for p in plan.placements:
        want = next(r.spec.node_count for r in runs if r.run_id == p.run_id)
        assert len(p.agent_ids) == want and len(set(p.agent_ids)) == want
    used: dict[str, float] = {}
    for p in plan.placements:
        for a in p.agent_ids:
            used[a] = used.get(a, 0) + 2
    assert all(v <= 4 for v in used.values())
    big = [r for r in runs if r.spec.node_count > n_agents]
    assert all(plan.waits.of(r) for r in big)


def test_unplaced_gang_says_how_many_agents_it_needs() -> None:
    plan = place([record("g", spec=spec(node_count=3))], [slot(0), slot(1)])
    assert plan.waits.examined["g"] == {"needs 3 agents at once; 2 can take it now": 1}


def started(n: int = 3) -> SchedulerState:
    s = SchedulerState()
    for i in range(n):
        hb = m.Heartbeat(
            agent_id=f"a{i}",
            incarnation="i1",
            target="local",
            hostname=f"host{i}",
            capacity=capacity(cpus=2),
            sent_at=0,
        )
        core.handle(s, core.HeartbeatSeen(heartbeat=hb), 0.0, CFG)
    return s


def submit_gang(s: SchedulerState, run_id: str = "g", k: int = 2) -> list[core.SendToAgent]:
    req = m.SubmitRequest(spec=spec(node_count=k, resources=m.Resources(cpus=2)))
    core.handle(s, core.Submitted(request=req, run_id=run_id, reply_to="r"), 1.0, CFG)
    return [c for c in core.decide(s, 1.0, CFG) if isinstance(c, core.SendToAgent)]


def report(
    s: SchedulerState, agent: str, st_: RunState, run_id: str = "g", attempt: int = 1, **kw: object
) -> list[core.Command]:
    rep = m.RunReport(
        agent_id=agent, incarnation="i1", run_id=run_id, attempt=attempt, state=st_, at=2.0, **kw
    )
    return core.handle(s, core.ReportSeen(report=rep), 2.0, CFG)


def test_a_two_node_gang_gets_ranks_and_follows_its_slowest_member() -> None:
    s = started()
    sends = submit_gang(s)
    assigns = sorted((c.command for c in sends), key=lambda a: a.rank)
    assert [(a.rank, a.world_size) for a in assigns] == [(0, 2), (1, 2)]
    a0, a1 = (sends[0].agent_id, sends[1].agent_id)
    assert a0 != a1
    master = assigns[0]
    assert master.master_addr == s.agents[a0].hostname and master.master_port
    assert all(a.master_port == master.master_port for a in assigns)
    assert assigns[1].hosts == [s.agents[a0].hostname, s.agents[a1].hostname]
    report(s, a0, RunState.STARTING)
    assert s.runs["g"].state is RunState.PREPARING  # rank 1 still preparing
    report(s, a1, RunState.STARTING)
    assert s.runs["g"].state is RunState.STARTING
    for st_ in (RunState.RUNNING, RunState.FINALIZING):
        report(s, a0, st_)
        report(s, a1, st_)
    report(s, a1, RunState.COMPLETED, exit_code=0)
    assert s.runs["g"].state is RunState.FINALIZING
    cmds = report(
        s,
        a0,
        RunState.COMPLETED,
        exit_code=0,
        artifacts=[m.Artifact(path="outputs/m.pt", size=1, sha256="0" * 64)],
    )
    rec = s.runs["g"]
    assert rec.state is RunState.COMPLETED and [a.path for a in rec.artifacts] == ["outputs/m.pt"]
    assert core.PublishEof(run_id="g", attempt=1) in cmds


def test_one_rank_failing_fails_the_run_and_stops_the_others() -> None:
    s = started()
    sends = submit_gang(s)
    a0, a1 = sends[0].agent_id, sends[1].agent_id
    report(s, a0, RunState.STARTING)
    report(s, a1, RunState.STARTING)
    cmds = report(
        s,
        a1,
        RunState.FAILED,
        exit_code=1,
        error=m.RunError(kind="exit_code", message="script exited with code 1"),
    )
    rec = s.runs["g"]
    assert rec.state is RunState.FAILED and rec.error is not None
    assert rec.error.message == "rank 1: script exited with code 1"
    stops = [(c.agent_id, c.command) for c in cmds if isinstance(c, core.SendToAgent)]
    assert stops == [(a0, m.Cancel(run_id="g", attempt=1, reason="stale"))]


def test_a_lost_member_requeues_the_whole_gang() -> None:
    s = started()
    sends = submit_gang(s)
    lost = sends[1].agent_id
    for a in s.agents.values():
        if a.agent_id != lost:
            a.last_seen = 20.0
    core.decide(s, 12.0, CFG)
    assert s.runs["g"].attempt == 1  # lost, but the kill grace has not passed yet
    core.decide(s, 21.0, CFG)
    rec = s.runs["g"]
    assert rec.attempt == 2 and rec.gang  # placed again at once on the two live agents
    assert lost not in {g.agent_id for g in rec.gang}
    assert rec.history[-2].state is RunState.QUEUED and "was lost" in (rec.history[-2].reason or "")


def test_cancel_reaches_every_rank() -> None:
    s = started()
    sends = submit_gang(s)
    cmds = core.handle(s, core.CancelAsked(run_id="g", reply_to="x"), 2.0, CFG)
    assert sorted(c.agent_id for c in cmds if isinstance(c, core.SendToAgent)) == sorted(
        c.agent_id for c in sends
    )


def test_autoscaler_gives_a_gang_distinct_nodes() -> None:
    comp = m.ComputeRecord(
        name="pool",
        cluster=m.ProcessCluster(vm_size="S", max_nodes=4),
        shape=m.NodeShape(name="S", cpus=8, memory_mb=8192),
        created_at=0,
    )
    gang = record("g", spec=spec(target="pool", node_count=3, resources=m.Resources(cpus=1)))
    assert autoscale(comp, [gang], [], now=0).create == 3
