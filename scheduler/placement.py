"""Placement: which queued run goes to which agent. A pure function of plain data.

Filter (can this agent hold the run at all: availability, dedicated-only, label constraints,
GPU type, totals, then free capacity), then score (best fit by default: the agent left with
the least free capacity wins; ``spread``: the emptiest wins), then choose (ties broken by
agent id, so the same input always gives the same plan). Every run left unplaced carries
its reasons, counted per agent, which is what ``sortie run why`` shows.
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
    unavailable_why: str = "agent not available (lost or reconnecting)"
    priority: m.NodePriority = "dedicated"
    labels: dict[str, str] = field(default_factory=dict)
    container_engine: bool = False


@dataclass(frozen=True)
class Placement:
    run_id: str
    agent_ids: tuple[str, ...]  # rank 0 first; one per node of the run

    @property
    def agent_id(self) -> str:
        return self.agent_ids[0]


@dataclass
class Plan:
    placements: list[Placement] = field(default_factory=list)
    unplaced: dict[str, dict[str, int]] = field(default_factory=dict)  # run -> reason -> n


def queue_order(runs: Iterable[m.RunRecord]) -> list[m.RunRecord]:
    """Priority first (higher first), then submission time, then run id."""
    return sorted(runs, key=lambda r: (-r.spec.priority, r.created_at, r.run_id))


def _reject(slot: Slot, spec: m.RunSpec) -> str | None:
    """Why ``slot`` cannot take the run, or None. Cheapest and most permanent checks first."""
    req = spec.resources
    if not slot.available:
        return slot.unavailable_why
    if spec.environment.docker.enabled and not slot.container_engine:
        return "agent has no container engine (docker.enabled needs one)"
    if spec.dedicated_only and slot.priority == "lowpriority":
        return "run needs a dedicated node; agent is low-priority"
    for key, want in sorted(spec.constraints.items()):
        have = slot.labels.get(key)
        if have != want:
            return f"label {key}={want} not on agent"
    if req.gpu_type and req.gpus > 0 and not gpu_type_matches(req.gpu_type, slot.total.gpu_type):
        return f"agent lacks GPUs of type {req.gpu_type}"
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


def gpu_type_matches(wanted: str, have: str | None) -> bool:
    """``H100`` matches ``NVIDIA H100 80GB HBM3``: a case-insensitive substring test."""
    return have is not None and wanted.strip().lower() in have.lower()


def could_ever_hold(capacity: m.Capacity, spec: m.RunSpec) -> bool:
    """Could a node of this capacity hold the run when empty? (Used to refuse at submit.)"""
    req = spec.resources
    if req.gpus > capacity.gpus or req.cpus > capacity.cpus + 1e-9:
        return False
    if capacity.memory_mb > 0 and req.memory_mb > capacity.memory_mb:
        return False
    return not (req.gpu_type and req.gpus and not gpu_type_matches(req.gpu_type, capacity.gpu_type))


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
        feasible: list[tuple[tuple[float, float, float, str], Slot]] = []
        for slot in candidates:
            why = _reject(slot, run.spec)
            if why is not None:
                reasons[why] += 1
                continue
            key = _leftover(slot, req)
            if run.spec.strategy == "spread":
                # spread: the emptiest agent wins (negate the leftover, keep the id tie-break)
                key = (-key[0], -key[1], 0.0, key[3])
            feasible.append((key, slot))
        need = max(1, run.spec.node_count)
        if len(feasible) < need:
            if need > 1:
                reasons[f"needs {need} agents at once; {len(feasible)} can take it now"] += 1
            plan.unplaced[run.run_id] = dict(reasons)
            continue
        # a gang is all or nothing: the best ``need`` distinct agents, rank 0 the best of them
        if need == 1:
            chosen = [min(feasible, key=lambda ks: ks[0])[1]]
        else:
            chosen = [slot for _, slot in sorted(feasible, key=lambda ks: ks[0])[:need]]
        for slot in chosen:
            slot.free_cpus -= req.cpus
            slot.free_memory_mb -= req.memory_mb
            slot.free_gpus -= req.gpus
        plan.placements.append(
            Placement(run_id=run.run_id, agent_ids=tuple(s.agent_id for s in chosen))
        )
    return plan
