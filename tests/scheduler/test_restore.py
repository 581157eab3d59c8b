"""Loading only loads (model.restore); the Started event settles what did not survive."""

from __future__ import annotations

from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.scheduler import core
from sortie.scheduler.model import SchedulerState, Stored, restore
from tests.builders import capacity, record, spec

CFG = core.Config()
NOW = 500.0


def compute(name: str) -> m.ComputeRecord:
    return m.ComputeRecord(
        name=name,
        cluster=m.ProcessCluster(vm_size="local_medium", max_nodes=4),  # provider: process
        shape=m.NodeShape(name="LOCAL_MEDIUM", cpus=4, memory_mb=8192),
        created_at=0.0,
    )


def node(node_id: str, state: m.NodeState, cluster: str = "pool") -> m.NodeRecord:
    return m.NodeRecord(
        node_id=node_id, cluster=cluster, state=state, created_at=1.0, changed_at=2.0
    )


def agent(agent_id: str, state: m.AgentState = "ready", target: str = "pool") -> m.AgentRecord:
    return m.AgentRecord(
        agent_id=agent_id,
        incarnation="i1",
        target=target,
        hostname=agent_id,
        capacity=capacity(),
        state=state,
        first_seen=1.0,
        last_seen=3.0,
        cordoned=True,
    )


def loaded(records: list[Stored]) -> SchedulerState:
    """What the daemon's load makes of these records (buckets in its order)."""
    s = SchedulerState()
    order = [m.RunRecord, m.AgentRecord, m.ComputeRecord, m.NodeRecord, m.VmRecord]
    for rec in sorted(records, key=lambda r: order.index(type(r))):
        restore(s, rec, NOW)
    return s


def test_restore_keeps_what_the_scheduler_works_on_and_marks_nothing() -> None:
    s = loaded(
        [
            record("q", spec=spec(submission_id="sub-q")),
            record("done", RunState.COMPLETED, spec=spec(submission_id="sub-done")),
            agent("a1", target="local"),
            agent("gone", "lost", target="local"),
            compute("pool"),
            node("pool-1", "running"),
            node("old-1", "running", cluster="old"),  # its compute was deleted
        ]
    )
    assert list(s.runs) == ["q"]
    assert s.submissions == {"sub-q": "q", "sub-done": "done"}
    view = s.agents["a1"]
    assert list(s.agents) == ["a1"] and not view.confirmed and view.last_seen == NOW
    assert view.cordoned and view.record().cordoned
    assert list(s.computes) == ["pool"] and list(s.nodes) == ["pool-1"]
    assert s.nodes["pool-1"].state == "running"  # loading decides nothing
    for table in (s.runs, s.agents, s.computes, s.nodes, s.vms):
        assert not table.changed and not table.deleted


def test_started_stops_the_process_nodes_that_did_not_survive_and_loses_their_agents() -> None:
    up = ["creating", "running", "stopping"]
    down = ["stopped", "failed", "preempted"]
    s = loaded(
        [
            compute("pool"),
            *(node(f"pool-{st}", st) for st in [*up, *down]),
            *(agent(f"pool-{st}") for st in [*up, *down]),
            agent("a1", target="local"),
        ]
    )
    cmds = core.handle(s, core.Started(children_of=frozenset({"process"})), NOW, CFG)
    assert s.started_at == NOW
    stopped = {f"pool-{st}" for st in up}
    for node_id, n in s.nodes.items():
        if node_id in stopped:
            assert (n.state, n.changed_at, n.message) == ("stopped", NOW, "scheduler restarted")
        else:
            assert n == node(node_id, n.state), node_id  # unchanged
    assert {a for a, v in s.agents.items() if v.lost} == stopped
    # the changes are written by the first cycle's persist
    assert s.nodes.changed == stopped and s.agents.changed == stopped
    assert not s.computes.changed and not s.runs.changed
    (line,) = cmds
    assert isinstance(line, core.Log) and line.event == "process nodes did not survive a restart"
    assert set(line.fields["nodes"]) == stopped  # type: ignore[call-overload]  # a list of ids


def test_started_on_an_empty_store_only_starts_the_lease_clock() -> None:
    s = SchedulerState()
    assert core.handle(s, core.Started(children_of=frozenset({"process"})), NOW, CFG) == []
    assert s.started_at == NOW
