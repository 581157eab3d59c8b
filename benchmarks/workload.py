"""The scheduler benchmarks' shared workload: 1,000 agents and 100,000 queued runs.

Agents come in the three shapes of ``tests/sim.py`` (4 CPUs; 8 CPUs + 1 H100; 16 CPUs + 8
H100s). Runs mix CPU-only work (0.5 to 4 CPUs, 2 GB per CPU) with 1-, 2- and 8-GPU jobs
(2 CPUs and 8 GB per GPU), a few at a higher priority. The same seed gives the same
workload, so ``decisions.py`` (the decision code alone) and ``placement.py`` (the real
scheduler on a real nats-server) measure the same thing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sortie.proto import messages as m
from sortie.proto.states import RunState
from tests.sim import SHAPES

TARGET = "sim"
SNAPSHOT = "0" * 64


@dataclass(frozen=True)
class Agent:
    agent_id: str
    capacity: m.Capacity


def agents(n: int, seed: int = 0) -> list[Agent]:
    rng = random.Random(seed)
    return [Agent(agent_id=f"sim-{i:04d}", capacity=rng.choice(SHAPES)) for i in range(n)]


def resources(rng: random.Random) -> m.Resources:
    roll = rng.random()
    if roll < 0.60:
        cpus = rng.choice([0.5, 1.0, 2.0, 4.0])
        return m.Resources(cpus=cpus, memory_mb=int(cpus * 2048))
    gpus = 1 if roll < 0.85 else 2 if roll < 0.95 else 8
    return m.Resources(
        cpus=2.0 * gpus,
        memory_mb=8192 * gpus,
        gpus=gpus,
        gpu_type="H100" if rng.random() < 0.5 else None,
    )


def queued(n: int, seed: int = 0, now: float = 1_000_000.0) -> list[m.RunRecord]:
    """``n`` queued run records, oldest first (created one millisecond apart)."""
    rng = random.Random(seed + 1)
    out = []
    for i in range(n):
        at = now + i / 1000
        out.append(
            m.RunRecord(
                run_id=f"bench_{i:06d}",
                spec=m.RunSpec(
                    experiment="bench",
                    target=TARGET,
                    script="train.py",
                    snapshot_id=SNAPSHOT,
                    resources=resources(rng),
                    priority=1 if rng.random() < 0.05 else 0,
                ),
                state=RunState.QUEUED,
                attempt=1,
                created_at=at,
                history=[m.StateChange(state=RunState.QUEUED, at=at, attempt=1)],
            )
        )
    return out
