from hypothesis import given, settings
from hypothesis import strategies as st

from sortie.proto import messages as m
from sortie.scheduler.placement import Slot, place, queue_order
from tests.builders import capacity, record, spec


def slot(
    agent_id: str,
    *,
    cpus: float = 4,
    gpus: int = 0,
    target: str = "local",
    free_cpus: float | None = None,
    available: bool = True,
) -> Slot:
    cap = capacity(cpus=cpus, gpus=gpus)
    return Slot(
        agent_id=agent_id,
        target=target,
        free_cpus=cpus if free_cpus is None else free_cpus,
        free_memory_mb=cap.memory_mb,
        free_gpus=gpus,
        total=cap,
        available=available,
    )


def run(
    run_id: str,
    *,
    cpus: float = 1,
    gpus: int = 0,
    target: str = "local",
    priority: int = 0,
    created: float = 0.0,
) -> m.RunRecord:
    return record(
        run_id,
        created_at=created,
        spec=spec(target=target, priority=priority, resources=m.Resources(cpus=cpus, gpus=gpus)),
    )


def test_best_fit_prefers_the_fuller_agent() -> None:
    plan = place([run("r1", cpus=1)], [slot("big", cpus=8), slot("small", cpus=8, free_cpus=1)])
    assert [(p.run_id, p.agent_id) for p in plan.placements] == [("r1", "small")]


def test_a_run_that_does_not_fit_waits_with_counted_reasons() -> None:
    plan = place(
        [run("r1", gpus=1)],
        [slot("a", cpus=4), slot("b", cpus=4), slot("c", cpus=4, gpus=1, available=False)],
    )
    assert plan.placements == []
    assert plan.waits.examined["r1"] == {
        "agent has too few GPUs": 2,
        "agent not available (lost or reconnecting)": 1,
    }


def test_unknown_target_reason() -> None:
    plan = place([run("r1", target="gpu")], [slot("a")])
    assert plan.waits.examined == {"r1": {"no agent serves target 'gpu'": 1}}


def test_queue_order_priority_then_age() -> None:
    runs = [run("old", created=1), run("new", created=2), run("vip", created=3, priority=5)]
    assert [r.run_id for r in queue_order(runs)] == ["vip", "old", "new"]


def test_higher_priority_takes_the_last_slot() -> None:
    plan = place([run("low", created=1), run("high", created=2, priority=1)], [slot("a", cpus=1)])
    assert [p.run_id for p in plan.placements] == ["high"]
    assert plan.waits.examined["low"] == {"CPUs busy": 1}


runs_st = st.lists(
    st.tuples(st.sampled_from([0.5, 1, 2, 3]), st.integers(0, 2)), min_size=0, max_size=40
)
agents_st = st.lists(
    st.tuples(st.sampled_from([1, 2, 4, 8]), st.integers(0, 4)), min_size=0, max_size=8
)


@settings(max_examples=200, deadline=None)
@given(runs_st, agents_st)
def test_never_oversubscribes_and_same_input_same_plan(rs, ags) -> None:
    runs = [run(f"r{i}", cpus=c, gpus=g, created=i) for i, (c, g) in enumerate(rs)]
    slots = [slot(f"a{i}", cpus=c, gpus=g) for i, (c, g) in enumerate(ags)]
    plan = place(runs, slots)
    again = place(runs, [slot(f"a{i}", cpus=c, gpus=g) for i, (c, g) in enumerate(ags)])
    assert plan.placements == again.placements
    used: dict[str, list[float]] = {}
    by_id = {r.run_id: r for r in runs}
    for p in plan.placements:
        res = by_id[p.run_id].spec.resources
        u = used.setdefault(p.agent_id, [0.0, 0.0])
        u[0] += res.cpus
        u[1] += res.gpus
    caps = {f"a{i}": (c, g) for i, (c, g) in enumerate(ags)}
    for agent_id, (cpu, gpu) in used.items():
        assert cpu <= caps[agent_id][0] + 1e-9
        assert gpu <= caps[agent_id][1]
    placed = {p.run_id for p in plan.placements}
    assert placed.isdisjoint(plan.waits.examined)
    assert all(plan.waits.of(r) for r in runs if r.run_id not in placed)  # the rest say why
