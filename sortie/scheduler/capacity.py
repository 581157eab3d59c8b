"""Free capacity per agent, as placement and the autoscaler see it (derived, pure)."""

from __future__ import annotations

from sortie.proto.gang import members
from sortie.proto.states import ON_AGENT
from sortie.scheduler.model import SchedulerState
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
        )
    for rec in state.runs.values():
        if rec.state not in ON_AGENT:
            continue
        res = rec.spec.resources
        for member in rec.gang or members(rec):  # (no copy of the gang list)
            s = free.get(member.agent_id)
            if s is not None:
                s.free_cpus -= res.cpus
                s.free_memory_mb -= res.memory_mb
                s.free_gpus -= res.gpus
    return list(free.values())


def busy_agents(state: SchedulerState) -> set[str]:
    return {
        member.agent_id for r in state.runs.values() if r.state in ON_AGENT for member in members(r)
    }
