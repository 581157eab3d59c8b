"""Cluster nodes: the autoscaler's plan applied to state, and node events. Pure."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from sortie.proto import messages as m
from sortie.scheduler import clusters, targets
from sortie.scheduler.autoscale import NodeView, ScalePlan, autoscale, node_labels
from sortie.scheduler.capacity import busy_agents, slots
from sortie.scheduler.events import Command, Config, CreateNode, Log, NodeFailed, StopNode
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.placement import Slot

NodeIds = Callable[[str], str]  # cluster name -> a fresh node id (made by the daemon)


def _set_node(
    state: SchedulerState,
    node: m.NodeRecord,
    new: m.NodeState,
    now: float,
    message: str | None = None,
) -> m.NodeRecord:
    changed = msgspec.structs.replace(node, state=new, changed_at=now, message=message)
    state.nodes.put(node.node_id, changed)
    return changed


def _decide(state: SchedulerState, name: str, decision: m.ScaleDecision) -> None:
    state.computes.put(name, clusters.with_decision(state.computes[name], decision))


def _agent_gone(state: SchedulerState, node_id: str) -> None:
    view = state.agents.get(node_id)
    if view is not None and not view.lost:
        view.lost = True
        state.agents.touch(node_id)


def step_clusters(
    state: SchedulerState, now: float, config: Config, new_node_id: NodeIds
) -> list[Command]:
    cmds: list[Command] = []
    busy = busy_agents(state)
    free = {s.agent_id: s for s in slots(state)}
    for name in sorted(state.computes):
        nodes = sorted(
            (n for n in state.nodes.values() if n.cluster == name), key=lambda n: n.node_id
        )
        cmds += _watch_nodes(state, nodes, busy, now, config)
        compute = state.computes[name]  # watching may have recorded a failure on it
        views = [_node_view(state, state.nodes[n.node_id], busy, free) for n in nodes]
        pending = [r for r in state.runs.queued() if r.spec.target == name]
        plan = autoscale(compute, pending, views, now)
        state.node_targets[name] = plan.target
        creates = _create_nodes(state, compute, plan.create, now, new_node_id)
        cmds += creates
        for node_id in plan.stop:
            _set_node(state, state.nodes[node_id], "stopping", now)
            state.node_idle_since.pop(node_id, None)
            cmds.append(StopNode(node_id, config.node_stop_grace_s))
        cmds += _record_scaling(state, name, plan, [c.node_id for c in creates], now)
        _settle(state, name, now, cmds)
    return cmds


def _watch_nodes(
    state: SchedulerState,
    nodes: list[m.NodeRecord],
    busy: set[str],
    now: float,
    config: Config,
) -> list[Command]:
    """Fail the nodes that did not boot in time, stop the preempted ones whose grace is over,
    and note when each running node became idle."""
    cmds: list[Command] = []
    for n in nodes:
        if n.state == "creating" and now - n.created_at > config.node_boot_timeout_s:
            why = f"node {n.node_id} did not register within {config.node_boot_timeout_s:.0f}s"
            cmds += node_failed(state, NodeFailed(n.node_id, "boot_timeout", why), now, config)
        deadline = state.preempt_deadline.get(n.node_id)
        if deadline is not None and now >= deadline:
            del state.preempt_deadline[n.node_id]
            cmds.append(StopNode(n.node_id, config.node_stop_grace_s))
        if state.nodes[n.node_id].state == "running" and n.node_id not in busy:
            state.node_idle_since.setdefault(n.node_id, now)
        else:
            state.node_idle_since.pop(n.node_id, None)
    return cmds


def _node_view(
    state: SchedulerState, n: m.NodeRecord, busy: set[str], free: dict[str, Slot]
) -> NodeView:
    """The node as the autoscaler sees it (free room only on an available agent)."""
    slot = free.get(n.node_id)
    return NodeView(
        node_id=n.node_id,
        state=n.state,
        created_at=n.created_at,
        busy=n.node_id in busy,
        idle_since=state.node_idle_since.get(n.node_id),
        free_cpus=slot.free_cpus if slot and slot.available else 0.0,
        free_memory_mb=slot.free_memory_mb if slot and slot.available else 0,
        free_gpus=slot.free_gpus if slot and slot.available else 0,
    )


def _create_nodes(
    state: SchedulerState,
    compute: m.ComputeRecord,
    count: int,
    now: float,
    new_node_id: NodeIds,
) -> list[CreateNode]:
    """Record ``count`` new nodes as creating; the commands that ask the provider for them."""
    name = compute.name
    created: list[CreateNode] = []
    for _ in range(count):
        node_id = new_node_id(name)
        state.nodes.put(
            node_id,
            m.NodeRecord(
                node_id=node_id,
                cluster=name,
                state="creating",
                priority=compute.cluster.vm_priority,
                created_at=now,
                changed_at=now,
            ),
        )
        created.append(
            CreateNode(
                node_id=node_id,
                cluster=name,
                shape=compute.shape,
                priority=compute.cluster.vm_priority,
                labels=node_labels(name),
            )
        )
    return created


def _record_scaling(
    state: SchedulerState,
    name: str,
    plan: ScalePlan,
    created: list[str],
    now: float,
) -> list[Command]:
    """The cluster's decision log: scale up, scale down, and a backoff (once per streak)."""
    cmds: list[Command] = []
    reason = "; ".join(plan.reasons)
    if created:
        _decide(
            state, name, m.ScaleDecision(at=now, action="scale_up", nodes=created, reason=reason)
        )
        cmds.append(Log("scale up", {"compute": name, "nodes": created}))
    if plan.stop:
        _decide(
            state,
            name,
            m.ScaleDecision(at=now, action="scale_down", nodes=plan.stop, reason=reason),
        )
        cmds.append(Log("scale down", {"compute": name, "nodes": plan.stop}))
    recent = state.computes[name].decisions
    if plan.backoff and (not recent or recent[-1].action != "backoff"):
        _decide(state, name, m.ScaleDecision(at=now, action="backoff", reason=reason))
    return cmds


def _settle(state: SchedulerState, name: str, now: float, cmds: list[Command]) -> None:
    """Provisioning state follows the nodes; a deleted cluster goes once its nodes are gone."""
    compute = state.computes[name]
    nodes = [n for n in state.nodes.values() if n.cluster == name]
    if compute.provisioning_state == "Deleting":
        if not any(n.state in ("creating", "running", "stopping") for n in nodes):
            state.computes.delete(name)
            for n in nodes:
                state.nodes.delete(n.node_id)
                targets.retire_agent(state, n.node_id)  # its agent leaves every listing too
            state.node_targets.pop(name, None)
            cmds.append(Log("compute deleted", {"compute": name}))
        return
    running = sum(1 for n in nodes if n.state == "running")
    # Creating -> Succeeded once min_nodes run; Failed -> Succeeded once any node runs again
    settled = running >= compute.cluster.min_nodes and (
        compute.provisioning_state == "Creating"
        or (compute.provisioning_state == "Failed" and running > 0)
    )
    if settled:
        state.computes.put(name, msgspec.structs.replace(compute, provisioning_state="Succeeded"))


def node_registered(state: SchedulerState, node_id: str, now: float) -> None:
    """The node's agent sent its first heartbeat: the node is running."""
    node = state.nodes.get(node_id)
    if node is None or node.state != "creating":
        return
    _set_node(state, node, "running", now)
    compute = state.computes.get(node.cluster)
    if compute is not None and compute.error_streak:
        state.computes.put(
            node.cluster, msgspec.structs.replace(compute, error_streak=0, backoff_until=None)
        )


def node_failed(
    state: SchedulerState, failure: NodeFailed, now: float, config: Config
) -> list[Command]:
    node_id, code, message = failure.node_id, failure.code, failure.message
    node = state.nodes.get(node_id)
    if node is None or node.state in ("stopped", "failed"):
        return []
    if node.state in ("stopping", "preempted"):
        return node_stopped(state, node_id, now)
    _set_node(state, node, "failed", now, message)
    _agent_gone(state, node_id)
    cmds: list[Command] = [
        StopNode(node_id, config.node_stop_grace_s),
        Log("node failed", {"node_id": node_id, "code": code}),
    ]
    compute = state.computes.get(node.cluster)
    if compute is not None:
        err = m.ProvisioningError(at=now, code=code, message=message)
        running = any(
            n.cluster == node.cluster and n.state == "running" for n in state.nodes.values()
        )
        if not running and compute.provisioning_state != "Deleting":
            # no node can be had: the cluster is Failed until one runs again
            compute = msgspec.structs.replace(compute, provisioning_state="Failed")
        state.computes.put(
            node.cluster,
            clusters.with_decision(
                clusters.with_error(compute, err, now),
                m.ScaleDecision(at=now, action="node_failed", nodes=[node_id], reason=message),
            ),
        )
    return cmds


def node_stopped(state: SchedulerState, node_id: str, now: float) -> list[Command]:
    node = state.nodes.get(node_id)
    if node is None:
        return []
    _agent_gone(state, node_id)
    state.node_idle_since.pop(node_id, None)
    if node.state in ("preempted", "failed", "stopped"):
        return []
    _set_node(state, node, "stopped", now)
    return []


def scheduler_started(
    state: SchedulerState, now: float, children_of: frozenset[str]
) -> list[Command]:
    """Nodes of the providers in ``children_of`` (process nodes) are children of the
    scheduler: those the store says were up did not outlive the previous one. They are
    stopped, and their agents lost."""
    gone: list[str] = []
    for node in list(state.nodes.values()):
        compute = state.computes.get(node.cluster)
        if compute is None or compute.cluster.provider not in children_of:
            continue
        if node.state in ("creating", "running", "stopping"):
            _set_node(state, node, "stopped", now, "scheduler restarted")
            _agent_gone(state, node.node_id)
            gone.append(node.node_id)
    return [Log("process nodes did not survive a restart", {"nodes": gone})] if gone else []
