"""The autoscaler: table-driven cases and properties."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sortie.proto import messages as m
from sortie.scheduler.autoscale import NodeView, autoscale
from tests.builders import record, spec

SHAPE = m.NodeShape(name="S", cpus=4, memory_mb=8192, gpus=1, gpu_type="NVIDIA H100 80GB HBM3")


def compute(
    min_nodes: int = 0,
    max_nodes: int = 4,
    *,
    idle: float = 120,
    priority: str = "dedicated",
    state: str = "Succeeded",
    backoff_until: float | None = None,
) -> m.ComputeRecord:
    return m.ComputeRecord(
        name="pool",
        cluster=m.ProcessCluster(
            vm_size="S",
            min_nodes=min_nodes,
            max_nodes=max_nodes,
            idle_seconds_before_scaledown=idle,
            vm_priority=priority,
        ),
        shape=SHAPE,
        provisioning_state=state,
        created_at=0.0,
        backoff_until=backoff_until,
    )


def queued(n: int, cpus: float = 1, gpus: int = 0, **kw: object) -> list[m.RunRecord]:
    return [
        record(
            f"r{i}",
            created_at=i,
            spec=spec(target="pool", resources=m.Resources(cpus=cpus, gpus=gpus), **kw),
        )
        for i in range(n)
    ]


def node(
    i: int,
    state: str = "running",
    *,
    busy: bool = False,
    idle_since: float | None = None,
    free_cpus: float = 4,
    free_gpus: int = 1,
) -> NodeView:
    return NodeView(
        node_id=f"n{i}",
        state=state,
        created_at=0.0,
        busy=busy,
        idle_since=idle_since,
        free_cpus=free_cpus,
        free_memory_mb=8192,
        free_gpus=free_gpus,
    )


def test_scales_up_by_packing_demand_onto_new_nodes() -> None:
    plan = autoscale(compute(), queued(6, cpus=2), [], now=10)
    assert (plan.create, plan.stop, plan.target) == (3, [], 3)
    assert "6 queued run(s) need 3 more S node(s)" in plan.reasons[0]


def test_never_above_max_and_says_so() -> None:
    plan = autoscale(compute(max_nodes=2), queued(20), [node(0, free_cpus=0)], now=10)
    assert plan.create == 1 and plan.target == 2
    assert any("capped at max_nodes 2" in r for r in plan.reasons)


def test_capacity_on_starting_nodes_counts() -> None:
    plan = autoscale(compute(), queued(4), [node(0, state="creating")], now=10)
    assert plan.create == 0


def test_runs_a_node_could_never_hold_do_not_scale_the_cluster() -> None:
    too_big = queued(3, cpus=16) + queued(2, gpus=2)
    assert autoscale(compute(), too_big, [], now=10).create == 0
    dedicated = queued(2, dedicated_only=True)
    assert autoscale(compute(priority="lowpriority"), dedicated, [], now=10).create == 0
    assert autoscale(compute(), queued(2, constraints={"zone": "b"}), [], now=10).create == 0
    assert autoscale(compute(), queued(1, constraints={"cluster": "pool"}), [], now=10).create == 1


def test_min_nodes_kept() -> None:
    plan = autoscale(compute(min_nodes=2), [], [], now=0)
    assert plan.create == 2 and "below min_nodes 2" in plan.reasons[0]


def test_idle_nodes_stop_after_the_idle_time_never_below_min_never_busy() -> None:
    nodes = [
        node(0, idle_since=0),
        node(1, idle_since=30),
        node(2, busy=True),
        node(3, idle_since=95),
    ]
    plan = autoscale(compute(min_nodes=1, idle=60), [], nodes, now=100)
    assert plan.stop == ["n0", "n1"]  # n3 idle only 5s; n2 busy
    assert plan.target == 2
    plan = autoscale(compute(min_nodes=3, idle=60), [], nodes, now=100)
    assert plan.stop == ["n0"]


def test_no_scale_down_while_there_is_unmet_demand() -> None:
    nodes = [node(0, idle_since=0, free_cpus=1)]
    plan = autoscale(compute(idle=10), queued(1, cpus=3), nodes, now=100)
    assert plan.stop == [] and plan.create == 1


def test_backoff_holds_scale_up_and_reports_it() -> None:
    plan = autoscale(compute(backoff_until=50), queued(3), [], now=40)
    assert plan.create == 0 and plan.backoff
    assert "backing off after provider errors" in plan.reasons[0]
    assert autoscale(compute(backoff_until=50), queued(3), [], now=51).create == 1


def test_deleting_stops_everything() -> None:
    nodes = [node(0, busy=True), node(1, state="creating")]
    plan = autoscale(compute(state="Deleting"), queued(5), nodes, now=1)
    assert plan.stop == ["n0", "n1"] and plan.create == 0


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 4),
    st.integers(1, 8),
    st.integers(0, 30),
    st.lists(
        st.tuples(
            st.sampled_from(["creating", "running"]),
            st.booleans(),
            st.one_of(st.none(), st.floats(0, 200)),
        ),
        max_size=10,
    ),
    st.floats(0, 300),
)
def test_properties(min_n, max_n, n_runs, node_specs, now) -> None:
    min_n = min(min_n, max_n)
    nodes = [
        node(i, state=s, busy=b, idle_since=None if b or s != "running" else t)
        for i, (s, b, t) in enumerate(node_specs)
    ]
    c = compute(min_nodes=min_n, max_nodes=max_n, idle=60)
    runs = queued(n_runs)
    plan = autoscale(c, runs, nodes, now)
    again = autoscale(c, runs, nodes, now)
    assert (plan.create, plan.stop, plan.target) == (again.create, again.stop, again.target)
    current = len(nodes)
    after = current + plan.create - len(plan.stop)
    busy = {n.node_id for n in nodes if n.busy}
    assert not busy & set(plan.stop), "a busy node was stopped"
    assert not (plan.create and plan.stop)
    if plan.create:
        assert after <= max_n
    if plan.stop:
        assert after >= min_n
    if min_n <= current <= max_n:
        assert min_n <= after <= max_n
