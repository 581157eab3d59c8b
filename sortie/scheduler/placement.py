"""Placement: which queued run goes to which agent. A pure function of plain data.

Filter (can this agent hold the run at all: availability, dedicated-only, label constraints,
GPU type, totals, then free capacity), then score (best fit by default: the agent left with
the least free capacity wins; ``spread``: the emptiest wins), then choose (ties broken by
agent id, so the same input always gives the same plan). Every run left unplaced carries
its reasons, counted per agent, which is what ``sortie run why`` shows.
"""

from __future__ import annotations

import heapq
import operator
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from sortie.proto import messages as m
from sortie.proto.engines import EngineKind


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
    engine: EngineKind | None = None  # an engine agent: its engine places a gang's nodes


@dataclass(frozen=True)
class Placement:
    run_id: str
    agent_ids: tuple[str, ...]  # rank 0 first; one per node of the run

    @property
    def agent_id(self) -> str:
        return self.agent_ids[0]


class ClassKey(NamedTuple):
    """What placement reads of a run: runs with one key are placed alike (a class)."""

    target: str
    resources: m.Resources
    container: bool
    dedicated_only: bool
    constraints: tuple[tuple[str, str], ...] | None
    strategy: str
    node_count: int


def class_key(spec: m.RunSpec) -> ClassKey:
    return ClassKey(
        spec.target,
        spec.resources,
        spec.environment.docker.enabled,
        spec.dedicated_only,
        tuple(sorted(spec.constraints.items())) if spec.constraints else None,
        spec.strategy,
        spec.node_count,
    )


@dataclass
class Waits:
    """Why the queued runs of a pass wait, kept small: the runs examined, each with its
    class's counted reasons (one dict shared per class: readers copy); the classes that were
    full at the end of the pass; and, when the placement limit ended the pass, the reason of
    every run not examined whose class was not full."""

    examined: dict[str, dict[str, int]] = field(default_factory=dict)  # run -> reason -> n
    full: dict[ClassKey, dict[str, int]] = field(default_factory=dict)
    unexamined: dict[str, int] = field(default_factory=dict)

    def of(self, rec: m.RunRecord) -> dict[str, int]:
        """A queued run's reasons (empty: not yet looked at by a pass)."""
        found = self.examined.get(rec.run_id)
        if found is None:
            found = self.full.get(class_key(rec.spec)) or self.unexamined
        return dict(found)

    def forget(self, run_id: str) -> None:
        """A run no longer waits (placed, ended, or not stored)."""
        self.examined.pop(run_id, None)


@dataclass
class Plan:
    placements: list[Placement] = field(default_factory=list)
    waits: Waits = field(default_factory=Waits)


def queue_order(runs: Iterable[m.RunRecord]) -> list[m.RunRecord]:
    """Priority first (higher first), then submission time, then run id."""
    # one C-keyed sort per priority level: a Python key function per run is the slow part
    levels: dict[int, list[m.RunRecord]] = {}
    for r in runs:
        levels.setdefault(r.spec.priority, []).append(r)
    out: list[m.RunRecord] = []
    for priority in sorted(levels, reverse=True):
        out.extend(sorted(levels[priority], key=_age))
    return out


_age = operator.attrgetter("created_at", "run_id")


def _reject(slot: Slot, spec: m.RunSpec) -> str | None:
    """Why ``slot`` cannot take the run, or None. Cheapest and most permanent checks first."""
    return _reject_permanent(slot, spec) or _busy(slot, spec.resources)


def _busy(slot: Slot, req: m.Resources) -> str | None:
    """The free-capacity half of ``_reject``: what is in use now."""
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


# --- the fast path: the same decisions, without re-scanning every agent for every run --------
#
# Runs with the same request (target, resources, constraints, strategy, ...) form a class.
# A class checks the permanent facts (availability, labels, GPU type, totals) once per agent
# and keeps the agents that pass in a heap ordered by its score; an agent's entry is replaced
# whenever its free capacity changes (older entries are skipped as stale). Choosing is then a
# heap pop instead of a scan, and a class that no agent can take is known to be full: free
# capacity only shrinks during a pass, so every later run of that class waits with the reasons
# counted when it first filled (instead of each counting them again over every agent). The
# one way room comes back within a pass is the GPU reserve below shrinking as GPUs are taken:
# an agent's changed entry is offered to every class that could use it, which un-fills it.


@dataclass(frozen=True)
class GpuDemand:
    """What queued GPU runs of a target need per GPU: a run without GPUs leaves this much
    CPU and memory beside each free GPU of an agent (where at least ``min_gpus`` are free),
    so that GPU runs behind it in the queue do not find GPUs stranded without CPUs."""

    min_gpus: int
    cpus_per_gpu: float
    memory_mb_per_gpu: float


def gpu_demand(requests: Iterable[tuple[str, m.Resources]]) -> dict[str, GpuDemand]:
    """Per target, the smallest GPU count and CPU and memory per GPU among queued GPU runs
    (``requests``: each queued run's target and resources, or each distinct pair)."""
    out: dict[str, GpuDemand] = {}
    distinct = set(requests)
    for target, req in sorted(distinct, key=lambda tr: (tr[0], tr[1].gpus, tr[1].cpus)):
        if req.gpus <= 0:
            continue
        d = GpuDemand(req.gpus, req.cpus / req.gpus, req.memory_mb / req.gpus)
        old = out.get(target)
        if old is not None:
            d = GpuDemand(
                min(old.min_gpus, d.min_gpus),
                min(old.cpus_per_gpu, d.cpus_per_gpu),
                min(old.memory_mb_per_gpu, d.memory_mb_per_gpu),
            )
        out[target] = d
    return out


def _held_for_gpus(slot: Slot, req: m.Resources, demand: GpuDemand | None) -> str | None:
    """Does a run without GPUs eat into what this agent's free GPUs need? (a reason, or None)"""
    if demand is None or req.gpus > 0 or slot.free_gpus < demand.min_gpus or slot.free_gpus <= 0:
        return None
    if slot.free_cpus - req.cpus < slot.free_gpus * demand.cpus_per_gpu - 1e-9:
        return "CPUs held for queued GPU runs"
    if (
        slot.total.memory_mb > 0
        and slot.free_memory_mb - req.memory_mb < slot.free_gpus * demand.memory_mb_per_gpu
    ):
        return "memory held for queued GPU runs"
    return None


def reject(slot: Slot, spec: m.RunSpec, demand: GpuDemand | None = None) -> str | None:
    """Why ``slot`` cannot take the run now (every check, the GPU reserve included), or None."""
    return _reject(slot, spec) or _held_for_gpus(slot, spec.resources, demand)


_Key = tuple[float, float, float, str]


def _score(slot: Slot, spec: m.RunSpec) -> _Key:
    key = _leftover(slot, spec.resources)
    if spec.strategy == "spread":
        # spread: the emptiest agent wins (negate the leftover, keep the id tie-break)
        return (-key[0], -key[1], 0.0, key[3])
    return key


def _fits_now(slot: Slot, req: m.Resources) -> bool:
    """The permanent half of ``_reject`` was checked once, for the class."""
    return _busy(slot, req) is None


class _Class:
    """Runs with one request: the agents that could ever take them, best first."""

    def __init__(
        self, spec: m.RunSpec, candidates: list[Slot], demand: GpuDemand | None, pass_: _Pass
    ) -> None:
        self.spec = spec
        self.req = spec.resources
        self.demand = demand
        self.pass_ = pass_
        self.heap: list[tuple[_Key, int, int]] = []  # (score, slot version, slot index)
        self.full = False
        self.need = agents_needed(spec, candidates)
        self.reasons: dict[str, int] = {}  # shared by every waiting run of the class
        if not candidates:
            self.full = True
            self.reasons = {f"no agent serves target {spec.target!r}": 1}
        permanent: Counter[str] = Counter()
        for slot in candidates:
            why = _reject_permanent(slot, spec)
            if why is not None:
                permanent[why] += 1
                continue
            i = pass_.index[slot.agent_id]
            pass_.classes_of[i].append(self)
            self.offer(i)
        heapq.heapify(self.heap)

    def offer(self, i: int) -> None:
        slot = self.pass_.slots[i]
        if _fits_now(slot, self.req) and _held_for_gpus(slot, self.req, self.demand) is None:
            heapq.heappush(self.heap, (_score(slot, self.spec), self.pass_.version[i], i))
            self.full = False

    def choose(self, need: int) -> list[int] | None:
        """The best ``need`` distinct agents (removed from the heap), or None: the class is
        full for the rest of this pass (until an agent's change makes room again)."""
        version = self.pass_.version
        got: list[tuple[_Key, int, int]] = []
        while self.heap and len(got) < need:
            entry = heapq.heappop(self.heap)
            if entry[1] == version[entry[2]]:
                got.append(entry)
        if len(got) == need:
            return [i for _, _, i in got]
        for entry in got:
            heapq.heappush(self.heap, entry)
        self.full = True
        return None


def agents_needed(spec: m.RunSpec, candidates: Sequence[Slot]) -> int:
    """How many distinct agents a run takes: one per node, except on an engine's agents (a
    Slurm or Spark login node), where ONE agent submits the whole run and the engine places
    its nodes."""
    if candidates and all(s.engine is not None for s in candidates):
        return 1
    return max(1, spec.node_count)


def _reject_permanent(slot: Slot, spec: m.RunSpec) -> str | None:
    """The half of ``_reject`` that does not change in a pass (checked once per class)."""
    why = _agent_unfit(slot, spec)
    if why is not None:
        return why
    return _too_small(slot.total, spec.resources)


def _agent_unfit(slot: Slot, spec: m.RunSpec) -> str | None:
    """What the agent is (available, its engine, priority and labels) against the spec."""
    if not slot.available:
        return slot.unavailable_why
    if spec.environment.docker.enabled and not slot.container_engine:
        return "agent has no container engine (docker.enabled needs one)"
    if spec.dedicated_only and slot.priority == "lowpriority":
        return "run needs a dedicated node; agent is low-priority"
    for key, want in sorted(spec.constraints.items()):
        if slot.labels.get(key) != want:
            return f"label {key}={want} not on agent"
    return None


def _too_small(total: m.Capacity, req: m.Resources) -> str | None:
    """What the agent has in all (not what is free now) against what the run asks."""
    if req.gpu_type and req.gpus > 0 and not gpu_type_matches(req.gpu_type, total.gpu_type):
        return f"agent lacks GPUs of type {req.gpu_type}"
    if req.gpus > total.gpus:
        return "agent has too few GPUs"
    if req.cpus > total.cpus:
        return "agent has too few CPUs"
    if req.memory_mb > total.memory_mb and total.memory_mb > 0:
        return "agent has too little memory"
    return None


@dataclass
class _Pass:
    slots: list[Slot]
    index: dict[str, int]
    version: list[int]
    classes_of: list[list[_Class]]


def place(pending: Sequence[m.RunRecord], slots: Sequence[Slot], limit: int | None = None) -> Plan:
    """:func:`place_queue` over runs in any order."""
    return place_queue(
        queue_order(pending), Counter(class_key(r.spec) for r in pending), slots, limit
    )


def place_queue(
    queue: Iterable[m.RunRecord],
    classes: Mapping[ClassKey, int],
    slots: Sequence[Slot],
    limit: int | None = None,
) -> Plan:
    """Place queued runs onto agents, never beyond any agent's free capacity.

    ``queue``: the queued runs in queue order, read lazily (only its head when the pass ends
    early); ``classes``: how many of them each class has. Runs are taken in queue order; each
    goes to its best agent (or its best N distinct agents for a gang) or waits with counted
    reasons. The pass ends after ``limit`` placements (one pass over a huge queue stays short;
    nothing behind jumps ahead), or once every class still in the queue is full: nothing after
    that could be placed.
    """
    pass_, by_target = _new_pass(slots)
    demand = gpu_demand((k.target, k.resources) for k in classes)
    built: dict[ClassKey, _Class] = {}
    plan = Plan()
    left = Counter(classes)  # runs of each class not yet examined
    waited = 0
    check_at = 64
    for run in queue:
        if limit is not None and len(plan.placements) >= limit:
            plan.waits.unexamined = {
                f"not examined this pass (placement limit of {limit} reached)": 1
            }
            break
        spec = run.spec
        ckey = class_key(spec)
        left[ckey] -= 1
        cls = built.get(ckey)
        if cls is None:
            candidates = by_target.get(spec.target, [])
            cls = built[ckey] = _Class(spec, candidates, demand.get(spec.target), pass_)
        chosen = None if cls.full else cls.choose(cls.need)
        if chosen is not None:
            _take(pass_, chosen, spec.resources)
            plan.placements.append(
                Placement(
                    run_id=run.run_id, agent_ids=tuple(pass_.slots[i].agent_id for i in chosen)
                )
            )
            continue
        if not cls.reasons:  # counted once, when the class first fills
            cls.reasons = _why_not(spec, by_target[spec.target], cls.need, demand.get(spec.target))
        plan.waits.examined[run.run_id] = cls.reasons  # one dict shared: readers copy
        waited += 1
        if waited >= check_at:
            if _rest_all_full(left, built):
                break
            check_at = waited + max(64, len(left))
    plan.waits.full = {k: c.reasons for k, c in built.items() if c.full}
    return plan


def _new_pass(slots: Sequence[Slot]) -> tuple[_Pass, dict[str, list[Slot]]]:
    """The pass over the slots in agent id order, and the slots of each target."""
    ordered = sorted(slots, key=lambda s: s.agent_id)
    by_target: dict[str, list[Slot]] = {}
    for s in ordered:
        by_target.setdefault(s.target, []).append(s)
    pass_ = _Pass(
        slots=ordered,
        index={s.agent_id: i for i, s in enumerate(ordered)},
        version=[0] * len(ordered),
        classes_of=[[] for _ in ordered],
    )
    return pass_, by_target


def _take(pass_: _Pass, chosen: list[int], req: m.Resources) -> None:
    """Take a placed run's resources from its agents, and offer each changed agent again to
    the classes that want it."""
    for i in chosen:
        slot = pass_.slots[i]
        if slot.engine is None:  # an engine queues what does not fit now: nothing to take
            slot.free_cpus -= req.cpus
            slot.free_memory_mb -= req.memory_mb
            slot.free_gpus -= req.gpus
        pass_.version[i] += 1
        for other in pass_.classes_of[i]:
            other.offer(i)


def _rest_all_full(left: Counter[ClassKey], classes: dict[ClassKey, _Class]) -> bool:
    """Is every class with runs still to examine full for the rest of this pass?"""
    return all(c == 0 or (k in classes and classes[k].full) for k, c in left.items())


def _why_not(
    spec: m.RunSpec, candidates: list[Slot], need: int, demand: GpuDemand | None
) -> dict[str, int]:
    """Counted reasons a run waits (every agent of its target checked)."""
    reasons: Counter[str] = Counter()
    feasible = 0
    for slot in candidates:
        why = reject(slot, spec, demand)
        if why is None:
            feasible += 1
        else:
            reasons[why] += 1
    if need > 1:
        reasons[f"needs {need} agents at once; {feasible} can take it now"] += 1
    return dict(reasons)
