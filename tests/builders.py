"""Small builders for plain test data (no mocks)."""

from __future__ import annotations

from sortie.proto import messages as m
from sortie.proto.states import RunState

SNAP = "0" * 64


def spec(**kw: object) -> m.RunSpec:
    base: dict[str, object] = {"experiment": "exp", "script": "train.py", "snapshot_id": SNAP}
    base.update(kw)
    return m.RunSpec(**base)


def record(run_id: str, state: RunState = RunState.QUEUED, **kw: object) -> m.RunRecord:
    base: dict[str, object] = {
        "run_id": run_id,
        "spec": kw.pop("spec", spec()),
        "state": state,
        "attempt": 1,
        "created_at": 0.0,
    }
    base.update(kw)
    return m.RunRecord(**base)


def capacity(cpus: float = 4, memory_mb: int = 8192, gpus: int = 0) -> m.Capacity:
    return m.Capacity(cpus=cpus, memory_mb=memory_mb, gpus=gpus)


def heartbeat(
    agent_id: str = "a1",
    incarnation: str = "i1",
    target: str = "local",
    *,
    running: list[tuple[str, int]] | None = None,
    finished: list[tuple[str, int]] | None = None,
    cpus: float = 4,
    gpus: int = 0,
    at: float = 0.0,
) -> m.Heartbeat:
    return m.Heartbeat(
        agent_id=agent_id,
        incarnation=incarnation,
        target=target,
        hostname="h",
        capacity=capacity(cpus=cpus, gpus=gpus),
        running=[m.RunRef(run_id=r, attempt=a) for r, a in (running or [])],
        finished=[m.RunRef(run_id=r, attempt=a) for r, a in (finished or [])],
        sent_at=at,
    )
