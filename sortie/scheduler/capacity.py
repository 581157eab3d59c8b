"""Free capacity per agent, as placement and the autoscaler see it (derived, pure)."""

from __future__ import annotations

from sortie.proto import messages as m
from sortie.proto.gang import members
from sortie.scheduler.model import AgentView, SchedulerState
from sortie.scheduler.placement import Slot


def slots(state: SchedulerState) -> list[Slot]:
    free: dict[str, Slot] = {}
    for a in state.agents.values():
        why = a.unavailable()
        free[a.agent_id] = Slot(
            agent_id=a.agent_id,
            target=a.target,
            free_cpus=a.capacity.cpus,
            free_memory_mb=a.capacity.memory_mb,
            free_gpus=a.capacity.gpus,
            total=a.capacity,
            available=why is None,
            unavailable_why=why or "",
            priority=a.priority,
            labels=a.labels,
            container_engine=a.container_engine is not None,
            engine=a.engine,
        )
    for rec in state.runs.on_agent():
        res = rec.spec.resources
        for member in rec.gang or members(rec):  # (no copy of the gang list)
            s = free.get(member.agent_id)
            if s is not None and s.engine is None:  # an engine queues: its slot stays whole
                s.free_cpus -= res.cpus
                s.free_memory_mb -= res.memory_mb
                s.free_gpus -= res.gpus
    return list(free.values())


def busy_agents(state: SchedulerState) -> set[str]:
    return {member.agent_id for r in state.runs.on_agent() for member in members(r)}


def status(state: SchedulerState, agent: AgentView) -> m.AgentStatus:
    """An agent's state in one word: the first that holds of stopped (its cluster node was
    stopped), lost, reconnecting, preempting, draining, cordoned; else ready."""
    node = state.nodes.get(agent.agent_id)
    if node is not None and node.state in ("stopped", "failed"):
        return "stopped"
    if agent.lost:
        return "lost"
    if not agent.confirmed:
        return "reconnecting"
    if agent.preempting:
        return "preempting"
    if agent.draining:
        return "draining"
    return "cordoned" if agent.cordoned else "ready"


def usage(state: SchedulerState) -> dict[str, m.AgentUsage]:
    """What each agent holds now: the resources its runs asked for, and their ids."""
    used: dict[str, list[float]] = {a: [0.0, 0, 0] for a in state.agents}
    runs: dict[str, list[str]] = {a: [] for a in state.agents}
    for rec in state.runs.on_agent():
        res = rec.spec.resources
        for member in rec.gang or members(rec):
            if member.agent_id in used:
                held = used[member.agent_id]
                held[0] += res.cpus
                held[1] += res.memory_mb
                held[2] += res.gpus
                runs[member.agent_id].append(rec.run_id)
    return {
        agent_id: m.AgentUsage(
            agent_id=agent_id,
            status=status(state, state.agents[agent_id]),
            used=m.Capacity(cpus=held[0], memory_mb=int(held[1]), gpus=int(held[2])),
            runs=sorted(set(runs[agent_id])),
        )
        for agent_id, held in used.items()
    }
