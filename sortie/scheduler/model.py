"""The scheduler's in-memory view of the world. Plain data; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from sortie.proto import messages as m

BUILTIN_TARGETS = frozenset({"local"})


@dataclass
class AgentView:
    """What the scheduler knows about one agent, from its heartbeats."""

    agent_id: str
    incarnation: str
    target: str
    hostname: str
    capacity: m.Capacity
    first_seen: float
    last_seen: float  # scheduler clock at the last heartbeat received
    running: frozenset[tuple[str, int]] = frozenset()
    finished: frozenset[tuple[str, int]] = frozenset()
    lost: bool = False
    confirmed: bool = True  # False when loaded from the store and not heard from yet
    cordoned: bool = False
    draining: bool = False
    preempting: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    priority: m.NodePriority = "dedicated"
    gpus: list[m.GpuDevice] = field(default_factory=list)
    container_engine: str | None = None

    def unavailable(self) -> str | None:
        """Why no new run may go here, or None."""
        if self.lost:
            return "agent lost"
        if not self.confirmed:
            return "agent reconnecting after a scheduler restart"
        if self.preempting:
            return "agent is being preempted"
        if self.draining:
            return "agent is draining"
        if self.cordoned:
            return "agent is cordoned"
        return None

    def record(self) -> m.AgentRecord:
        return m.AgentRecord(
            agent_id=self.agent_id,
            incarnation=self.incarnation,
            target=self.target,
            hostname=self.hostname,
            capacity=self.capacity,
            state="lost" if self.lost else "ready",
            first_seen=self.first_seen,
            last_seen=self.last_seen,
            cordoned=self.cordoned,
            draining=self.draining,
            labels=dict(self.labels),
            priority=self.priority,
            gpus=list(self.gpus),
            container_engine=self.container_engine,
        )


@dataclass
class SchedulerState:
    """Everything the decision code reads. Owned by the daemon loop, changed only by core.py."""

    runs: dict[str, m.RunRecord] = field(default_factory=dict)  # non-terminal (+ unsaved)
    agents: dict[str, AgentView] = field(default_factory=dict)
    # When this scheduler began listening (start, or the broker back after an outage): an
    # agent unheard of since gets a full lease from then, not from its last heartbeat.
    started_at: float = 0.0
    broker_away: bool = False  # the scheduler's own broker connection is down
    dirty_runs: set[str] = field(default_factory=set)
    dirty_agents: set[str] = field(default_factory=set)
    assign_sent_at: dict[str, float] = field(default_factory=dict)  # run id -> last Assign
    why: dict[str, dict[str, int]] = field(default_factory=dict)  # run id -> reason -> count
    submissions: dict[str, str] = field(default_factory=dict)  # submission id -> run id
    computes: dict[str, m.ComputeRecord] = field(default_factory=dict)
    nodes: dict[str, m.NodeRecord] = field(default_factory=dict)
    dirty_computes: set[str] = field(default_factory=set)
    dirty_nodes: set[str] = field(default_factory=set)
    deleted_computes: set[str] = field(default_factory=set)  # to remove from the store
    node_idle_since: dict[str, float] = field(default_factory=dict)
    preempt_deadline: dict[str, float] = field(default_factory=dict)  # node -> stop it at
    node_targets: dict[str, int] = field(default_factory=dict)  # cluster -> autoscaler target
    vms: dict[str, m.VmRecord] = field(default_factory=dict)  # attached machines
    dirty_vms: set[str] = field(default_factory=set)
    deleted_vms: set[str] = field(default_factory=set)

    def known_targets(self) -> set[str]:
        agents = {a.target for a in self.agents.values()}
        return set(BUILTIN_TARGETS) | agents | set(self.computes) | set(self.vms)
