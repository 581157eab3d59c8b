"""Placement: which queued run goes to which agent. A pure function of plain data.

Filter (can this agent hold the run at all, cheapest checks first), then score (best fit:
the agent left with the least free capacity wins), then choose (ties broken by agent id, so
the same input always gives the same plan). Every run left unplaced carries its reasons,
counted per agent, which is what ``sortie run why`` shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from proto import messages as m


@dataclass
class Slot:
    """One agent's free capacity as placement sees it."""

    agent_id: str
    target: str
    free_cpus: float
    free_memory_mb: int
    free_gpus: int
    total: m.Capacity
    available: bool = True  # False when lost or not yet confirmed after a restart


@dataclass(frozen=True)
class Placement:
    run_id: str
    agent_id: str


@dataclass
class Plan:
    placements: list[Placement] = field(default_factory=list)
    unplaced: dict[str, dict[str, int]] = field(default_factory=dict)  # run -> reason -> n


def queue_order(runs: Iterable[m.RunRecord]) -> list[m.RunRecord]:
    """Priority first (higher first), then submission time, then run id."""
    return sorted(runs, key=lambda r: (-r.spec.priority, r.created_at, r.run_id))


def _reject(slot: Slot, req: m.Resources) -> str | None:
    if not slot.available:
        return "agent not available (lost or reconnecting)"
    if req.gpus > slot.total.gpus:
        return "agent has too few GPUs"
    if req.cpus > slot.total.cpus:
        return "agent has too few CPUs"
    if req.memory_mb > slot.total.memory_mb and slot.total.memory_mb > 0:
        return "agent has too little memory"
    if req.gpus > slot.free_gpus:
        return "GPUs busy"
    if req.cpus > slot.free_cpus + 1e-9:
        return "CPUs busy"
    if req.memory_mb > slot.free_memory_mb and slot.total.memory_mb > 0:
        return "memory busy"
    return None


def _leftover(slot: Slot, req: m.Resources) -> tuple[float, float, float, str]:
    """Best fit: smaller leftover is better (GPUs weigh most: stranding them is costliest)."""
    cpus = (slot.free_cpus - req.cpus) / max(slot.total.cpus, 1e-9)
    mem = (
        (slot.free_memory_mb - req.memory_mb) / slot.total.memory_mb
        if slot.total.memory_mb > 0
        else 0.0
    )
    gpus = (slot.free_gpus - req.gpus) / slot.total.gpus if slot.total.gpus else 0.0
    return (gpus, cpus + mem, 0.0, slot.agent_id)


def place(pending: Sequence[m.RunRecord], slots: Sequence[Slot]) -> Plan:
    """Place queued runs onto agents, never beyond any agent's free capacity."""
    by_target: dict[str, list[Slot]] = {}
    for s in sorted(slots, key=lambda s: s.agent_id):
        by_target.setdefault(s.target, []).append(s)
    plan = Plan()
    for run in queue_order(pending):
        req = run.spec.resources
        candidates = by_target.get(run.spec.target, [])
        if not candidates:
            plan.unplaced[run.run_id] = {f"no agent serves target {run.spec.target!r}": 1}
            continue
        reasons: Counter[str] = Counter()
        best: Slot | None = None
        best_key: tuple[float, float, float, str] | None = None
        for slot in candidates:
            why = _reject(slot, req)
            if why is not None:
                reasons[why] += 1
                continue
            key = _leftover(slot, req)
            if best_key is None or key < best_key:
                best, best_key = slot, key
        if best is None:
            plan.unplaced[run.run_id] = dict(reasons)
            continue
        best.free_cpus -= req.cpus
        best.free_memory_mb -= req.memory_mb
        best.free_gpus -= req.gpus
        plan.placements.append(Placement(run_id=run.run_id, agent_id=best.agent_id))
    return plan
