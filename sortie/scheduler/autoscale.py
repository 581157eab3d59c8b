"""The autoscaler: how many nodes a cluster should have. A pure function of data and time.

Scale up while queued runs that a node of the cluster's shape could hold lack capacity
(counted by packing them first-fit onto free capacity, then onto new shape-sized nodes), never
above ``max_nodes``; scale up to ``min_nodes``; stop a node only after it has been idle for
``idle_seconds_before_scaledown``, never below ``min_nodes``, never a busy node; hold off
scale-up while a provider backoff is in force. Every decision carries its reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sortie.proto import messages as m
from sortie.scheduler.placement import could_ever_hold, queue_order

ACTIVE = frozenset({"creating", "running"})


@dataclass(frozen=True)
class NodeView:
    node_id: str
    state: m.NodeState
    created_at: float
    busy: bool = False
    idle_since: float | None = None  # when it last became idle (running nodes only)
    free_cpus: float = 0.0
    free_memory_mb: int = 0
    free_gpus: int = 0


@dataclass
class ScalePlan:
    create: int = 0
    stop: list[str] = field(default_factory=list)
    target: int = 0  # nodes wanted after this plan
    reasons: list[str] = field(default_factory=list)
    backoff: bool = False


@dataclass
class _Bin:
    cpus: float
    memory_mb: int
    gpus: int

    def take(self, req: m.Resources) -> bool:
        if (
            req.cpus <= self.cpus + 1e-9
            and req.memory_mb <= self.memory_mb
            and req.gpus <= self.gpus
        ):
            self.cpus -= req.cpus
            self.memory_mb -= req.memory_mb
            self.gpus -= req.gpus
            return True
        return False


def servable(compute: m.ComputeRecord, spec: m.RunSpec) -> bool:
    """Could a node of this cluster ever run ``spec``?"""
    shape = compute.shape
    cap = m.Capacity(
        cpus=shape.cpus, memory_mb=shape.memory_mb, gpus=shape.gpus, gpu_type=shape.gpu_type
    )
    if not could_ever_hold(cap, spec):
        return False
    if spec.dedicated_only and compute.cluster.vm_priority == "lowpriority":
        return False
    labels = node_labels(compute.name)
    return all(labels.get(k) == v for k, v in spec.constraints.items())


def node_labels(cluster: str) -> dict[str, str]:
    """The labels every node of a cluster carries."""
    return {"cluster": cluster}


def _nodes_needed(
    compute: m.ComputeRecord, demand: Sequence[m.RunRecord], nodes: Sequence[NodeView]
) -> int:
    shape = compute.shape
    bins = [
        _Bin(n.free_cpus, n.free_memory_mb, n.free_gpus)
        if n.state == "running"
        else _Bin(shape.cpus, shape.memory_mb, shape.gpus)
        for n in nodes
        if n.state in ACTIVE
    ]
    new: list[_Bin] = []
    for run in demand:
        req = run.spec.resources
        if run.spec.node_count <= 1:
            if any(b.take(req) for b in bins) or any(b.take(req) for b in new):
                continue
            fresh = _Bin(shape.cpus, shape.memory_mb, shape.gpus)
            fresh.take(req)
            new.append(fresh)
            continue
        # a gang needs its ranks on distinct nodes: existing ones first, then new ones
        placed = 0
        for b in [*bins, *new]:
            if placed < run.spec.node_count and b.take(req):
                placed += 1
        while placed < run.spec.node_count:
            fresh = _Bin(shape.cpus, shape.memory_mb, shape.gpus)
            fresh.take(req)
            new.append(fresh)
            placed += 1
    return len(new)


def autoscale(
    compute: m.ComputeRecord,
    pending: Sequence[m.RunRecord],
    nodes: Sequence[NodeView],
    now: float,
) -> ScalePlan:
    active = [n for n in nodes if n.state in ACTIVE]
    if compute.provisioning_state == "Deleting":
        return _stop_all(active)
    demand = [r for r in queue_order(pending) if servable(compute, r.spec)]
    needed = _nodes_needed(compute, demand, nodes)
    plan = _scale_up(compute, len(demand), needed, len(active), now)
    if needed == 0 and plan.create == 0:
        _scale_down(plan, compute.cluster, active, now)
    return plan


def _stop_all(active: list[NodeView]) -> ScalePlan:
    """A cluster being deleted: every active node stops."""
    plan = ScalePlan(target=0, stop=sorted(n.node_id for n in active))
    if plan.stop:
        plan.reasons.append(f"cluster is being deleted: stopping {len(plan.stop)} node(s)")
    return plan


def _scale_up(
    compute: m.ComputeRecord, demand: int, needed: int, current: int, now: float
) -> ScalePlan:
    """Nodes to create for ``demand`` servable queued runs needing ``needed`` more nodes, and
    for min_nodes, up to max_nodes; none while backing off after provider errors."""
    cfg = compute.cluster
    plan = ScalePlan(target=current)
    wanted = max(cfg.min_nodes, current + needed)
    target = min(wanted, cfg.max_nodes)
    create = max(0, target - current)
    if create:
        if needed:
            plan.reasons.append(
                f"{demand} queued run(s) need {needed} more {compute.shape.name} node(s); "
                f"adding {create} (current {current}, max {cfg.max_nodes})"
            )
        else:
            plan.reasons.append(f"below min_nodes {cfg.min_nodes}: adding {create}")
        if wanted > cfg.max_nodes:
            plan.reasons.append(f"capped at max_nodes {cfg.max_nodes}")
    if create and compute.backoff_until is not None and now < compute.backoff_until:
        plan.reasons = [
            f"holding {create} new node(s): backing off after provider errors until "
            f"{compute.backoff_until:.0f} ({compute.backoff_until - now:.0f}s left)"
        ]
        plan.backoff = True
        create = 0
        target = current
    plan.create = create
    plan.target = target
    return plan


def _scale_down(plan: ScalePlan, cfg: m.ClusterConfig, active: list[NodeView], now: float) -> None:
    """Stop the nodes idle for idle_seconds_before_scaledown, longest idle first, down to
    min_nodes."""
    current = len(active)
    idle = sorted(
        (
            n
            for n in active
            if n.state == "running"
            and not n.busy
            and n.idle_since is not None
            and now - n.idle_since >= cfg.idle_seconds_before_scaledown
        ),
        key=lambda n: (n.idle_since, n.node_id),
    )
    room = max(0, current - cfg.min_nodes)
    for n in idle[:room]:
        plan.stop.append(n.node_id)
        plan.reasons.append(
            f"node {n.node_id} idle for {now - (n.idle_since or now):.0f}s "
            f"(>= {cfg.idle_seconds_before_scaledown:.0f}s): stopping"
        )
    plan.target = current - len(plan.stop)
