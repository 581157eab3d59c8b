"""Placement on engine agents (a Slurm or Spark login node): the engine places a run's nodes,
so a run of any node_count takes ONE such agent."""

import dataclasses

import pytest

from sortie.proto import messages as m
from sortie.proto.engines import EngineKind
from sortie.scheduler.placement import Slot, agents_needed, place
from tests.builders import capacity, record, spec


def slot(agent_id: str, engine: EngineKind | None, *, target: str = "hpc") -> Slot:
    cap = capacity(cpus=8)
    return Slot(
        agent_id=agent_id,
        target=target,
        free_cpus=cap.cpus,
        free_memory_mb=cap.memory_mb,
        free_gpus=0,
        total=cap,
        engine=engine,
    )


def run(run_id: str, nodes: int, *, target: str = "hpc") -> m.RunRecord:
    return record(run_id, spec=spec(target=target, node_count=nodes, resources=m.Resources(cpus=2)))


@pytest.mark.parametrize(
    ("engines", "nodes", "need"),
    [
        (["slurm"], 4, 1),  # the engine places the four nodes
        (["spark"], 3, 1),
        (["slurm"], 1, 1),
        ([None, None], 2, 2),  # plain machines: one agent per node
        ([None], 1, 1),
        ([], 3, 3),  # no agent yet: what a plain target would need
        (["slurm", None], 2, 2),  # a mixed target (not made by attach): per node
    ],
)
def test_agents_needed(engines: list[EngineKind | None], nodes: int, need: int) -> None:
    slots = [slot(f"a{i}", e) for i, e in enumerate(engines)]
    assert agents_needed(run("r", nodes).spec, slots) == need


def test_a_gang_goes_to_the_one_engine_agent() -> None:
    plan = place([run("r1", 4)], [slot("login", "slurm")])
    assert [(p.run_id, p.agent_ids) for p in plan.placements] == [("r1", ("login",))]
    assert plan.waits.examined == {}


def test_a_gang_on_one_plain_machine_waits_with_its_reason() -> None:
    plan = place([run("r1", 2)], [slot("box", None)])
    assert plan.placements == []
    assert plan.waits.examined["r1"] == {"needs 2 agents at once; 1 can take it now": 1}


def test_an_engine_agent_takes_every_run_that_fits_its_largest_node() -> None:
    # the engine queues what does not fit now (Heartbeat.engine): placement takes nothing
    runs = [run(f"r{i}", 2) for i in range(6)]
    big = record("big", spec=spec(target="hpc", resources=m.Resources(cpus=16)))
    plan = place([*runs, big], [slot("login", "slurm")])
    assert [p.run_id for p in plan.placements] == [f"r{i}" for i in range(6)]
    assert plan.waits.examined == {"big": {"agent has too few CPUs": 1}}


def test_an_unavailable_engine_agent_says_why() -> None:
    lost = dataclasses.replace(slot("login", "slurm"), available=False)
    plan = place([run("r1", 3)], [lost])
    assert plan.waits.examined["r1"] == {"agent not available (lost or reconnecting)": 1}
