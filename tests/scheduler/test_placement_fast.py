"""The indexed placement (request classes, heaps, full classes, the placement limit) decides
exactly what the plain filter-score-choose scan over every agent decides, and the GPU
reserve keeps queued GPU runs from finding GPUs stranded without CPUs."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from sortie.proto import messages as m
from sortie.scheduler.placement import (
    Placement,
    Plan,
    Slot,
    _score,
    agents_needed,
    gpu_demand,
    place,
    queue_order,
    reject,
)
from tests.builders import record, spec


def reference(pending: Sequence[m.RunRecord], slots: Sequence[Slot]) -> Plan:
    """The obvious O(runs x agents) scan: every run checks every agent of its target."""
    by_target: dict[str, list[Slot]] = {}
    for s in sorted(slots, key=lambda s: s.agent_id):
        by_target.setdefault(s.target, []).append(s)
    demand = gpu_demand((r.spec.target, r.spec.resources) for r in pending)
    plan = Plan()
    for run in queue_order(pending):
        candidates = by_target.get(run.spec.target, [])
        feasible = sorted(
            (_score(s, run.spec), s.agent_id, s)
            for s in candidates
            if reject(s, run.spec, demand.get(run.spec.target)) is None
        )
        need = agents_needed(run.spec, candidates)
        if len(feasible) < need or not candidates:
            plan.waits.examined[run.run_id] = {}
            continue
        chosen = [s for _, _, s in feasible[:need]]
        req = run.spec.resources
        for s in chosen:
            s.free_cpus -= req.cpus
            s.free_memory_mb -= req.memory_mb
            s.free_gpus -= req.gpus
        plan.placements.append(Placement(run.run_id, tuple(s.agent_id for s in chosen)))
    return plan


SHAPES = [
    m.Capacity(cpus=4, memory_mb=16384),
    m.Capacity(cpus=8, memory_mb=32768, gpus=1, gpu_type="NVIDIA H100"),
    m.Capacity(cpus=16, memory_mb=65536, gpus=8, gpu_type="NVIDIA H100"),
    m.Capacity(cpus=8, memory_mb=0, gpus=2, gpu_type="NVIDIA A100"),
]
REQUESTS = [
    m.Resources(cpus=0.5, memory_mb=1024),
    m.Resources(cpus=2, memory_mb=4096),
    m.Resources(cpus=4, memory_mb=8192),
    m.Resources(cpus=2, memory_mb=8192, gpus=1),
    m.Resources(cpus=2, memory_mb=8192, gpus=1, gpu_type="H100"),
    m.Resources(cpus=4, memory_mb=16384, gpus=2, gpu_type="A100"),
    m.Resources(cpus=16, memory_mb=65536, gpus=8),
]

agent_st = st.tuples(
    st.sampled_from(range(len(SHAPES))),
    st.floats(0, 1),  # share of the agent already in use
    st.sampled_from(["a", "b"]),  # target
    st.booleans(),  # available
)
run_st = st.tuples(
    st.sampled_from(range(len(REQUESTS))),
    st.integers(0, 2),  # priority
    st.sampled_from(["a", "b", "c"]),  # target ("c": no agent serves it)
    st.sampled_from([1, 1, 1, 2, 3]),  # node count
    st.sampled_from(["binpack", "binpack", "spread"]),
)


def build(agents: list[tuple[int, float, str, bool]]) -> list[Slot]:
    out = []
    for i, (shape, busy, target, available) in enumerate(agents):
        cap = SHAPES[shape]
        out.append(
            Slot(
                agent_id=f"ag{i:02d}",
                target=target,
                free_cpus=cap.cpus * (1 - busy),
                free_memory_mb=int(cap.memory_mb * (1 - busy)),
                free_gpus=int(cap.gpus * (1 - busy)),
                total=cap,
                available=available,
            )
        )
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.lists(agent_st, max_size=12),
    st.lists(run_st, max_size=60),
    st.one_of(st.none(), st.integers(0, 10)),
)
def test_indexed_placement_decides_like_the_plain_scan(agents, runs, limit) -> None:
    recs = [
        record(
            f"r{i:03d}",
            created_at=i,
            spec=spec(
                target=target,
                priority=prio,
                resources=REQUESTS[req],
                node_count=nodes,
                strategy=strategy,
            ),
        )
        for i, (req, prio, target, nodes, strategy) in enumerate(runs)
    ]
    slots = build(agents)
    fast = place(recs, copy.deepcopy(slots), limit=limit)
    slow = reference(recs, copy.deepcopy(slots))
    if limit is None:
        assert fast.placements == slow.placements
    else:
        # the limit cuts the reference's plan short, in queue order
        assert fast.placements == slow.placements[:limit]
    placed = {p.run_id for p in fast.placements}
    assert placed.isdisjoint(fast.waits.examined)
    for rec in recs:  # every run not placed waits with counted reasons
        if rec.run_id not in placed:
            reasons = fast.waits.of(rec)
            assert reasons and all(n > 0 for n in reasons.values()), rec.run_id


def gpu_box(agent_id: str = "g") -> Slot:
    cap = m.Capacity(cpus=8, memory_mb=32768, gpus=1)
    return Slot(agent_id, "local", 8, 32768, 1, cap)


def test_a_cpu_run_leaves_the_cpus_a_queued_gpu_run_needs() -> None:
    cpu = record("cpu", created_at=1, spec=spec(resources=m.Resources(cpus=7)))
    gpu = record("gpu", created_at=2, spec=spec(resources=m.Resources(cpus=2, gpus=1)))
    plan = place([cpu, gpu], [gpu_box()])
    assert [p.run_id for p in plan.placements] == ["gpu"]
    assert plan.waits.of(cpu) == {"CPUs held for queued GPU runs": 1}


def test_with_no_gpu_run_queued_a_cpu_run_may_use_a_gpu_agent() -> None:
    cpu = record("cpu", spec=spec(resources=m.Resources(cpus=7)))
    assert [p.run_id for p in place([cpu], [gpu_box()]).placements] == ["cpu"]


def test_the_reserve_shrinks_as_gpus_are_taken() -> None:
    # the GPU run goes first (priority); the CPU run may then use what is left
    gpu = record("gpu", spec=spec(priority=1, resources=m.Resources(cpus=2, gpus=1)))
    cpu = record("cpu", spec=spec(resources=m.Resources(cpus=6)))
    plan = place([cpu, gpu], [gpu_box()])
    assert [p.run_id for p in plan.placements] == ["gpu", "cpu"]


def test_the_limit_keeps_queue_order_and_says_why_the_rest_wait() -> None:
    recs = [
        record(f"r{i}", created_at=i, spec=spec(resources=m.Resources(cpus=1))) for i in range(5)
    ]
    big = Slot("a", "local", 64, 1 << 20, 0, m.Capacity(cpus=64, memory_mb=1 << 20))
    plan = place(recs, [big], limit=2)
    assert [p.run_id for p in plan.placements] == ["r0", "r1"]
    for rec in recs[2:]:
        assert plan.waits.of(rec) == {"not examined this pass (placement limit of 2 reached)": 1}
