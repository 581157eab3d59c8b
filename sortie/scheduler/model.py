"""The scheduler's in-memory view of the world. Plain data; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from sortie.proto import messages as m
from sortie.proto.engines import EngineKind
from sortie.proto.pipelines import CachedStep, LastKey, StepState, cache_id
from sortie.proto.states import TERMINAL
from sortie.scheduler.compact import Shared
from sortie.scheduler.pipelines.controller import StepRunView
from sortie.scheduler.placement import Waits
from sortie.scheduler.run_table import RunTable
from sortie.scheduler.sweeps.controller import SweepMemo, TrialView
from sortie.scheduler.tables import Table

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
    # scheduler clock when each attempt in ``finished`` was first seen there: an attempt
    # that ended without its report reaching the scheduler is reconciled after a bound
    finished_since: dict[tuple[str, int], float] = field(default_factory=dict)
    listing: str = ""  # the digest of ``running`` and ``finished`` (Heartbeat.listing)
    lost: bool = False
    confirmed: bool = True  # False when loaded from the store and not heard from yet
    cordoned: bool = False
    draining: bool = False
    preempting: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    priority: m.NodePriority = "dedicated"
    gpus: list[m.GpuDevice] = field(default_factory=list)
    container_engine: str | None = None
    isolation: m.RunIsolation = "unknown"  # how it keeps runs from credentials (Heartbeat)
    engine: EngineKind | None = None  # the engine it hands runs to (Heartbeat.engine)

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

    @classmethod
    def restored(cls, rec: m.AgentRecord, now: float) -> AgentView:
        """An agent found in the store at start: unconfirmed until it heartbeats, and given a
        full lease from ``now`` (its last heartbeat went to the previous scheduler)."""
        return cls(
            agent_id=rec.agent_id,
            incarnation=rec.incarnation,
            target=rec.target,
            hostname=rec.hostname,
            capacity=rec.capacity,
            first_seen=rec.first_seen,
            last_seen=now,
            confirmed=False,
            cordoned=rec.cordoned,
            draining=rec.draining,
            labels=dict(rec.labels),
            priority=rec.priority,
            engine=rec.engine,
        )

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
            isolation=self.isolation,
            engine=self.engine,
        )


@dataclass
class SweepTrack:
    """What the scheduler keeps in memory for one active sweep (``scheduler/sweep_runs.py``):
    every trial issued, ended ones too (their records leave ``SchedulerState.runs`` once
    stored), and the primary metric each reported in its current attempt, from the metrics
    stream. Derived data: rebuilt from the store and the stream after a restart."""

    trials: dict[str, TrialView] = field(default_factory=dict)  # trial run id -> view
    attempts: dict[str, int] = field(default_factory=dict)  # trial run id -> its attempt
    metrics: dict[str, list[float]] = field(default_factory=dict)  # values, in order logged
    metric_attempt: dict[str, int] = field(default_factory=dict)  # the attempt they are of
    fresh: set[str] = field(default_factory=set)  # trials with new values since the last step
    memo: SweepMemo = field(default_factory=SweepMemo)
    changed: bool = True  # trials or metrics changed since the last step


@dataclass
class PipelineTrack:
    """What the scheduler keeps in memory for one active pipeline
    (``scheduler/pipeline_runs.py``): the run of every step submitted, ended ones too (their
    records leave ``SchedulerState.runs`` once stored). Derived data: rebuilt from the stored
    step runs after a restart."""

    steps: dict[str, StepRunView] = field(default_factory=dict)  # step name -> its run
    changed: bool = True  # a step's run changed since the last step of the controller


@dataclass
class SchedulerState:
    """Everything the decision code reads. Owned by the daemon loop, changed only by core.py.

    Each stored kind is a ``Table`` (one per bucket): its writes mark themselves, and the
    daemon writes what they marked. The other fields live in memory only.
    """

    runs: RunTable = field(default_factory=RunTable)  # non-terminal (+ unsaved)
    agents: Table[AgentView] = field(default_factory=Table)  # stored as AgentView.record()
    computes: Table[m.ComputeRecord] = field(default_factory=Table)
    nodes: Table[m.NodeRecord] = field(default_factory=Table)
    vms: Table[m.VmRecord] = field(default_factory=Table)  # attached machines
    # When this scheduler began listening (start, or the broker back after an outage): an
    # agent unheard of since gets a full lease from then, not from its last heartbeat.
    started_at: float = 0.0
    broker_away: bool = False  # the scheduler's own broker connection is down
    assign_sent_at: dict[str, float] = field(default_factory=dict)  # run id -> last Assign
    # Assigns decided in this cycle: they are published after it (its writes first), so each
    # is stamped as sent when the next cycle starts, not when decided (core.decide). A long
    # cycle then does not count against the agent's time to confirm.
    assigns_out: list[str] = field(default_factory=list)
    # Reconciliation's memory (reconcile.Scope): runs to judge again, and attempts listed
    # stale; from heartbeats since it last looked, the runs whose listing on an agent changed
    # and the attempts newly listed.
    unsettled: list[str] = field(default_factory=list)
    stale_held: list[tuple[str, tuple[str, int]]] = field(default_factory=list)
    relisted: dict[str, None] = field(default_factory=dict)
    newly_listed: list[tuple[str, tuple[str, int]]] = field(default_factory=list)
    why: Waits = field(default_factory=Waits)  # why queued runs wait (the last pass)
    submissions: dict[str, str] = field(default_factory=dict)  # submission id -> run id
    node_idle_since: dict[str, float] = field(default_factory=dict)
    preempt_deadline: dict[str, float] = field(default_factory=dict)  # node -> stop it at
    node_targets: dict[str, int] = field(default_factory=dict)  # cluster -> autoscaler target
    # agents of detached machines and deleted clusters: their heartbeats are ignored
    retired: set[str] = field(default_factory=set)
    # parent run id -> its children still running (they end with it: run_notes.end_children)
    children: dict[str, set[str]] = field(default_factory=dict)
    # sweep run id -> its trials and their metrics, for each sweep not ended (sweep_runs.py)
    sweeps: dict[str, SweepTrack] = field(default_factory=dict)
    # whether the metrics stream has been read up to where it was at start (the daemon sets
    # it False until then): sweeps are stepped only on the whole history of their metrics
    sweep_feed_ready: bool = True
    # pipeline run id -> its steps' runs, for each pipeline not ended (pipeline_runs.py)
    pipelines: dict[str, PipelineTrack] = field(default_factory=dict)
    # the step cache (bucket KV_STEP_CACHE): completed steps by cache_id, and each step's
    # key at its last run by last_key_id; loaded whole at start, written after the runs
    step_cache: Table[CachedStep] = field(default_factory=Table)
    last_keys: Table[LastKey] = field(default_factory=Table)
    # what runs placed alike have alike (their gang, writers, state change), held once: a
    # saving only, not part of what the state is (left out of comparing and printing)
    shared: Shared = field(default_factory=Shared, compare=False, repr=False)

    def known_targets(self) -> set[str]:
        agents = {a.target for a in self.agents.values()}
        return set(BUILTIN_TARGETS) | agents | set(self.computes) | set(self.vms)


def ends_with_parent(rec: m.RunRecord) -> bool:
    """A child run a script started: it has no attempt of its own and ends with its parent
    (a sweep's trial and a pipeline's step are children with attempts of their own)."""
    return rec.parent_id is not None and rec.trial is None and rec.step is None


def trial_view(rec: m.RunRecord, trial: m.Trial) -> TrialView:
    """A trial's record as the sweep controller sees it."""
    return TrialView(run_id=rec.run_id, index=trial.index, params=trial.params, state=rec.state)


def step_view(rec: m.RunRecord) -> StepRunView:
    """A step's run as the pipeline controller sees it."""
    return StepRunView(
        run_id=rec.run_id,
        state=rec.state,
        data_outputs=dict(rec.data_outputs),
        error=rec.error,
        ended_at=rec.ended_at,
        image_id=rec.image_id,
    )


Stored = m.RunRecord | m.AgentRecord | m.ComputeRecord | m.NodeRecord | m.VmRecord


def _track(state: SchedulerState, rec: m.RunRecord, *, keep: bool) -> None:
    """A sweep's or pipeline's run record, or one of their trials' or steps' (ended ones
    too): what their controller is stepped on."""
    if rec.trial is not None and rec.parent_id is not None:  # ended ones too
        track = state.sweeps.setdefault(rec.parent_id, SweepTrack())
        track.trials[rec.run_id] = trial_view(rec, rec.trial)
        track.attempts[rec.run_id] = rec.attempt
    elif rec.sweep is not None and keep:
        state.sweeps.setdefault(rec.run_id, SweepTrack())
    elif rec.step is not None and rec.parent_id is not None:  # ended ones too
        steps = state.pipelines.setdefault(rec.parent_id, PipelineTrack()).steps
        steps[rec.step] = step_view(rec)
    elif rec.pipeline is not None and keep:
        state.pipelines.setdefault(rec.run_id, PipelineTrack())


def restore(state: SchedulerState, rec: Stored, now: float) -> bool:
    """Take one record found in the store at start, as stored (nothing marked). True when it
    is kept in memory. Kept: unfinished runs (every run's submission id, so a repeated submit
    finds it), agents not lost, every compute and machine, and nodes of a known compute (load
    computes first). Nothing is decided here: that is the ``Started`` event's work."""
    if isinstance(rec, m.RunRecord):
        if rec.spec.submission_id is not None:
            state.submissions[rec.spec.submission_id] = rec.run_id
        keep = rec.state not in TERMINAL
        _track(state, rec, keep=keep)
        if keep:
            state.runs.load(rec.run_id, rec)
            if rec.parent_id is not None and ends_with_parent(rec):
                state.children.setdefault(rec.parent_id, set()).add(rec.run_id)
        return keep
    if isinstance(rec, m.AgentRecord):
        if rec.state == "lost":
            return False
        state.agents.load(rec.agent_id, AgentView.restored(rec, now))
    elif isinstance(rec, m.ComputeRecord):
        state.computes.load(rec.name, rec)
    elif isinstance(rec, m.NodeRecord):
        if rec.cluster not in state.computes:
            return False
        state.nodes.load(rec.node_id, rec)
    else:
        state.vms.load(rec.name, rec)
    return True


def restore_step_cache(state: SchedulerState, records: list[m.RunRecord]) -> list[str]:
    """Put back the step-cache entries of completed steps that the stored pipeline records
    name and the loaded cache lacks (the scheduler stopped after storing the runs of a pass
    and before its cache entries), so their reuse is not lost. ``records``: the stored
    pipeline runs and their step runs (a step's ``completed_at`` is its run's end). Entries
    already loaded are kept; of two runs with one key, the later. Put, not loaded: the next
    write stores them. Returns the keys put back, sorted. Load the cache first."""
    ended = {r.run_id: r.ended_at for r in records if r.step is not None}
    found: dict[str, CachedStep] = {}
    for rec in records:
        for status in rec.pipeline.steps.values() if rec.pipeline is not None else ():
            if status.state is not StepState.COMPLETED or status.key is None:
                continue
            if status.run_id is None:
                continue
            key = cache_id(status.key)
            entry = CachedStep(
                run_id=status.run_id,
                outputs=dict(status.outputs),
                completed_at=ended.get(status.run_id) or 0.0,
            )
            if key not in state.step_cache and (
                key not in found or found[key].completed_at < entry.completed_at
            ):
                found[key] = entry
    for key, entry in found.items():
        state.step_cache.put(key, entry)
    return sorted(found)
