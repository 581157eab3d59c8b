"""The scheduler's Prometheus metrics.

Two halves, like the rest of the scheduler:

* :func:`gauges` is pure: a :class:`SchedulerState` and the time in, plain numbers out
  (queue depth, runs by state, agents, GPUs and CPUs, cluster nodes).
* :class:`Metrics` is the shell's part. It owns a dedicated ``CollectorRegistry`` (never the
  global one, so one process can hold several schedulers, as the tests do). The daemon calls
  :meth:`Metrics.observe` once per cycle, after ``decide`` and before the changed runs are
  written: it compares each changed run with what it saw last and feeds counters and
  histograms (placements, starts, requeues, preemptions, ends, autoscaler decisions,
  snapshot bytes, environment-cache hits from heartbeats). The gauges are computed from the
  state when Prometheus scrapes, by :class:`_StateCollector`.

**Invariant:** the registry is only read on the daemon's event loop (``sortie.metrics_http``
serves it from there), so a scrape never sees the state half-changed and no lock is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from sortie.proto import messages as m
from sortie.proto.pipelines import StepState
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import TERMINAL, RunState
from sortie.scheduler.capacity import slots
from sortie.scheduler.events import Event, HeartbeatSeen, Submitted
from sortie.scheduler.leadership import Standing
from sortie.scheduler.model import AgentView, SchedulerState
from sortie.scheduler.requests import compute_info

ACTIVE_STATES: tuple[RunState, ...] = tuple(s for s in RunState if s not in TERMINAL)
AGENT_STATES = ("ready", "cordoned", "draining", "preempting", "reconnecting", "lost")
NODE_KINDS = ("current", "target", "idle", "busy", "preempted")
SCALE_ACTIONS = ("scale_up", "scale_down", "backoff", "node_failed", "node_preempted")
REQUEUE_REASONS = ("lost", "preempted", "retry")
SEEN_SHARED_MAX = 10_000  # distinct (state, attempt, ...) values held for sharing

# seconds: a placement takes one cycle when there is room, hours when there is none
LATENCY_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    float("inf"),
)
CYCLE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


# --- the pure half ---------------------------------------------------------------------------


def agent_state(a: AgentView) -> str:
    """One state per agent, the first that applies (the order of ``AgentView.unavailable``)."""
    if a.lost:
        return "lost"
    if not a.confirmed:
        return "reconnecting"
    if a.preempting:
        return "preempting"
    if a.draining:
        return "draining"
    if a.cordoned:
        return "cordoned"
    return "ready"


@dataclass(frozen=True)
class Gauges:
    """What the state says right now, as plain numbers keyed by label values."""

    queue: dict[tuple[str, int], int]  # (target, priority) -> queued runs
    oldest_queued_s: dict[str, float]  # target -> how long its longest-waiting run has waited
    runs: dict[tuple[str, str], int]  # (state, target) -> active runs, zeros included
    agents: dict[tuple[str, str], int]  # (target, agent state) -> agents, zeros included
    gpus: dict[str, tuple[int, int]]  # target -> (total, used) on agents not lost
    cpus: dict[str, tuple[float, float]]  # target -> (total, used) on agents not lost
    nodes: dict[tuple[str, str], int]  # (cluster, kind) -> nodes
    broker_connected: bool
    sweeps_active: int = 0  # sweep runs not ended
    pipelines_active: int = 0  # pipeline runs not ended


def gauges(state: SchedulerState, now: float) -> Gauges:
    queue, oldest, runs = _run_gauges(state, now)
    gpus, cpus = _capacity_gauges(state)
    return Gauges(
        queue=queue,
        oldest_queued_s=oldest,
        runs=runs,
        agents=_agent_gauges(state),
        gpus=gpus,
        cpus=cpus,
        nodes=_node_gauges(state),
        broker_connected=not state.broker_away,
        sweeps_active=len(state.sweeps),
        pipelines_active=len(state.pipelines),
    )


def _run_gauges(
    state: SchedulerState, now: float
) -> tuple[dict[tuple[str, int], int], dict[str, float], dict[tuple[str, str], int]]:
    """The queue by (target, priority), the longest wait per target, and the active runs by
    (state, target), with zeros for every known target and active state."""
    targets = set(state.known_targets())
    queue: dict[tuple[str, int], int] = {}
    oldest: dict[str, float] = {}
    runs: dict[tuple[str, str], int] = {}
    for rec in state.runs.values():
        if rec.state in TERMINAL:  # stored this cycle, forgotten once written
            continue
        target = rec.spec.target
        targets.add(target)
        runs[(str(rec.state), target)] = runs.get((str(rec.state), target), 0) + 1
        if rec.state is RunState.QUEUED:
            key = (target, rec.spec.priority)
            queue[key] = queue.get(key, 0) + 1
            since = rec.history[-1].at if rec.history else rec.created_at
            oldest[target] = max(oldest.get(target, 0.0), max(0.0, now - since))
    for target in targets:
        for s in ACTIVE_STATES:
            runs.setdefault((str(s), target), 0)
    return queue, oldest, runs


def _agent_gauges(state: SchedulerState) -> dict[tuple[str, str], int]:
    agents: dict[tuple[str, str], int] = {}
    for a in state.agents.values():
        by_state = (a.target, agent_state(a))
        agents[by_state] = agents.get(by_state, 0) + 1
    for target in {a.target for a in state.agents.values()}:
        for name in AGENT_STATES:
            agents.setdefault((target, name), 0)
    return agents


def _capacity_gauges(
    state: SchedulerState,
) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[float, float]]]:
    """(total, used) GPUs and CPUs per target, on agents not lost."""
    gpus: dict[str, tuple[int, int]] = {}
    cpus: dict[str, tuple[float, float]] = {}
    for slot in slots(state):
        if state.agents[slot.agent_id].lost:
            continue
        total, used = gpus.get(slot.target, (0, 0))
        gpus[slot.target] = (total + slot.total.gpus, used + slot.total.gpus - slot.free_gpus)
        ctotal, cused = cpus.get(slot.target, (0.0, 0.0))
        cpus[slot.target] = (ctotal + slot.total.cpus, cused + slot.total.cpus - slot.free_cpus)
    return gpus, cpus


def _node_gauges(state: SchedulerState) -> dict[tuple[str, str], int]:
    nodes: dict[tuple[str, str], int] = {}
    for name in state.computes:
        counts = compute_info(state, name).counts
        for kind in NODE_KINDS:
            nodes[(name, kind)] = int(getattr(counts, kind))
    return nodes


def _queued_since(rec: m.RunRecord) -> float:
    """When the run's current attempt last became Queued (its submit, or its requeue)."""
    for change in reversed(rec.history):
        if change.state is RunState.QUEUED:
            return change.at
    return rec.created_at


def _entered(rec: m.RunRecord, state: RunState) -> float | None:
    for change in reversed(rec.history):
        if change.state is state:
            return change.at
    return None


# --- the shell's half ------------------------------------------------------------------------


@dataclass
class CycleCounts:
    """What one cycle did: the fields of the daemon's one log line per cycle."""

    events: int = 0
    submitted: int = 0
    placed: int = 0
    started: int = 0
    ended: int = 0
    requeued: int = 0
    preempted: int = 0
    scaled: int = 0  # autoscaler decisions
    changed: int = 0  # runs written
    placed_runs: list[str] = field(default_factory=list)  # ids, the first few

    @property
    def busy(self) -> bool:
        """Did the cycle change anything a person would want to see at info level?"""
        return bool(self.changed or self.scaled)

    def fields(self) -> dict[str, object]:
        out: dict[str, object] = {
            "events": self.events,
            "submitted": self.submitted,
            "placed": self.placed,
            "started": self.started,
            "ended": self.ended,
            "requeued": self.requeued,
            "preempted": self.preempted,
            "scaled": self.scaled,
            "changed": self.changed,
        }
        if self.placed_runs:
            out["placed_runs"] = self.placed_runs
        return out


@dataclass(frozen=True, slots=True)
class _Seen:
    """A run as the metrics last saw it. Equal ones are held once (``Metrics._seen``): a
    million runs held in a few dozen objects, not 136 MB of them."""

    state: RunState
    attempt: int
    preemptions: int
    retries_used: int
    started: bool  # has been Running (submit -> start is observed once per run)
    reused: int = 0  # a pipeline run: its steps that were reused


def _reused(rec: m.RunRecord) -> int:
    """A pipeline run's steps that were reused (0 for any other run)."""
    if rec.pipeline is None:
        return 0
    return sum(1 for s in rec.pipeline.steps.values() if s.state is StepState.REUSED)


class Metrics:
    """The scheduler's metrics, in a registry of their own."""

    def __init__(
        self,
        state: Callable[[], SchedulerState],
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._declare_run_counters(self.registry)
        self._declare_latencies(self.registry)
        self._declare_scheduler_counters(self.registry)
        for kind in ("uploaded", "deduplicated"):
            self.snapshot_bytes.labels(kind=kind)
        self.registry.register(_StateCollector(state, clock))
        self._runs: dict[str, _Seen] = {}
        self._seen: dict[_Seen, _Seen] = {}  # each distinct one, shared by the runs equal to it
        self._env: dict[str, tuple[str, int, int]] = {}  # agent -> (incarnation, hits, misses)

    def _declare_run_counters(self, r: CollectorRegistry) -> None:
        """Runs submitted, ended, requeued and preempted."""
        self.submitted = Counter(
            "sortie_runs_submitted", "Runs accepted by the scheduler.", ["target"], registry=r
        )
        self.ended = Counter(
            "sortie_runs_ended",
            "Runs that reached a terminal state.",
            ["target", "state"],
            registry=r,
        )
        self.requeues = Counter(
            "sortie_run_requeues",
            "Attempts that ended with the run going back to Queued as a new attempt "
            "(reason: lost agent or given back, preempted node, retry after a failure).",
            ["target", "reason"],
            registry=r,
        )
        self.preemptions = Counter(
            "sortie_run_preemptions",
            "Attempts ended by the preemption of a low-priority node.",
            ["target"],
            registry=r,
        )
        self.trials_started = Counter(
            "sortie_sweep_trials_started",
            "Trials the sweep controller submitted.",
            ["target"],
            registry=r,
        )
        self.trials_early_terminated = Counter(
            "sortie_sweep_trials_early_terminated",
            "Trials that ended Canceled because their sweep's early-termination policy "
            "stopped them.",
            ["target"],
            registry=r,
        )

        self.steps_submitted = Counter(
            "sortie_pipeline_steps_submitted",
            "Pipeline steps the pipeline controller submitted as runs.",
            ["target"],
            registry=r,
        )
        self.steps_reused = Counter(
            "sortie_pipeline_steps_reused",
            "Pipeline steps that were reused (an earlier completed step had their key), so "
            "never ran.",
            registry=r,
        )

    def _declare_latencies(self, r: CollectorRegistry) -> None:
        """How long placement, starting and a scheduler cycle take."""
        self.placement = Histogram(
            "sortie_placement_latency_seconds",
            "From a run becoming Queued (submitted or requeued) to its placement on agents.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.submit_to_start = Histogram(
            "sortie_submit_to_start_seconds",
            "From a run's submission to its first Running report (includes preparing the "
            "snapshot and the environment).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cycle_seconds = Histogram(
            "sortie_scheduler_cycle_seconds",
            "Time the scheduler took for one cycle: handling a batch of events, deciding, "
            "storing the changed records and sending the commands.",
            buckets=CYCLE_BUCKETS,
            registry=r,
        )

    def _declare_scheduler_counters(self, r: CollectorRegistry) -> None:
        """The scheduler's own work: events, autoscaler actions, snapshots, env caches."""
        self.events = Counter(
            "sortie_scheduler_events",
            "Events the scheduler handled, by kind.",
            ["kind"],
            registry=r,
        )
        self.scale_actions = Counter(
            "sortie_autoscaler_actions",
            "Autoscaler decisions, by cluster and action.",
            ["cluster", "action"],
            registry=r,
        )
        self.snapshot_bytes = Counter(
            "sortie_snapshot_bytes",
            "Bytes of submitted snapshots: uploaded, or deduplicated (already in the store, "
            "not sent again). Submissions from clients that do not say are not counted.",
            ["kind"],
            registry=r,
        )
        self.env_hits = Counter(
            "sortie_env_cache_hits",
            "Runs whose environment an agent found in its cache (from heartbeats).",
            ["target"],
            registry=r,
        )
        self.env_misses = Counter(
            "sortie_env_cache_misses",
            "Runs whose environment an agent had to build (from heartbeats).",
            ["target"],
            registry=r,
        )

    def seed(self, state: SchedulerState) -> None:
        """Remember the runs loaded at start, so that nothing they did before counts."""
        for rec in state.runs.values():
            self._remember(rec, started=rec.started_at is not None)

    def _remember(self, rec: m.RunRecord, *, started: bool) -> None:
        seen = _Seen(
            state=rec.state,
            attempt=rec.attempt,
            preemptions=rec.preemptions,
            retries_used=rec.retries_used,
            started=started,
            reused=_reused(rec),
        )
        if len(self._seen) >= SEEN_SHARED_MAX:  # only runs retried very often make new ones
            self._seen.clear()
        self._runs[rec.run_id] = self._seen.setdefault(seen, seen)

    def observe(self, events: Iterable[Event], state: SchedulerState, now: float) -> CycleCounts:
        """Feed the counters from one cycle: its events and the runs it changed (call after
        ``decide``, before the changed runs are written)."""
        counts = CycleCounts()
        submitted: list[Submitted] = []
        kinds: dict[type, int] = {}
        for event in events:
            kinds[type(event)] = kinds.get(type(event), 0) + 1
            if isinstance(event, HeartbeatSeen):
                self._heartbeat(event.heartbeat)
            elif isinstance(event, Submitted) and not event.request.validate_only:
                submitted.append(event)
        for kind, n in kinds.items():  # once per kind: a batch may hold thousands of events
            self.events.labels(kind=kind.__name__).inc(n)
            counts.events += n
        for ev in submitted:
            if ev.run_id in state.runs and ev.run_id not in self._runs:
                self._submitted(ev, counts)
        for run_id in state.runs.changed:
            rec = state.runs.get(run_id)
            if rec is not None:
                self._changed(rec, now, counts)
        for name, compute in state.computes.items():
            for decision in compute.decisions:
                if decision.at == now:  # made in this cycle (every cycle has its own `now`)
                    counts.scaled += 1
                    self.scale_actions.labels(cluster=name, action=decision.action).inc()
        return counts

    def cycle_done(self, seconds: float) -> None:
        self.cycle_seconds.observe(seconds)

    def _submitted(self, ev: Submitted, counts: CycleCounts) -> None:
        spec = ev.request.spec
        counts.submitted += 1
        self.submitted.labels(target=spec.target).inc()
        uploaded = ev.request.uploaded_bytes
        if uploaded is not None:
            uploaded = min(max(uploaded, 0), spec.snapshot_bytes)
            self.snapshot_bytes.labels(kind="uploaded").inc(uploaded)
            self.snapshot_bytes.labels(kind="deduplicated").inc(spec.snapshot_bytes - uploaded)

    def _changed(self, rec: m.RunRecord, now: float, counts: CycleCounts) -> None:
        counts.changed += 1
        target = rec.spec.target
        before = self._runs.get(rec.run_id)
        if rec.trial is not None:
            self._trial(rec, before)
        if rec.step is not None and before is None and rec.state not in TERMINAL:
            self.steps_submitted.labels(target=target).inc()
        if rec.pipeline is not None and (new := _reused(rec) - (before.reused if before else 0)):
            self.steps_reused.inc(new)
        if before is not None and rec.attempt > before.attempt:
            requeues = rec.attempt - before.attempt
            preempted = max(0, rec.preemptions - before.preemptions)
            retried = max(0, rec.retries_used - before.retries_used)
            lost = max(0, requeues - preempted - retried)
            for reason, n in (("preempted", preempted), ("retry", retried), ("lost", lost)):
                if n:
                    self.requeues.labels(target=target, reason=reason).inc(n)
            if preempted:
                self.preemptions.labels(target=target).inc(preempted)
            counts.requeued += requeues
            counts.preempted += preempted
        if rec.state is RunState.PREPARING and rec.assigned_at == now:
            # placed in this cycle (every cycle has its own `now`)
            self.placement.observe(max(0.0, now - _queued_since(rec)))
            counts.placed += 1
            if len(counts.placed_runs) < 20:
                counts.placed_runs.append(rec.run_id)
        started = before.started if before is not None else False
        if not started and (at := _entered(rec, RunState.RUNNING)) is not None:
            # from the history: one batch may carry Running and what came after it
            self.submit_to_start.observe(max(0.0, at - rec.created_at))
            counts.started += 1
            started = True
        if rec.state in TERMINAL:
            self.ended.labels(target=target, state=str(rec.state)).inc()
            counts.ended += 1
            self._runs.pop(rec.run_id, None)
            return
        self._remember(rec, started=started)

    def _trial(self, rec: m.RunRecord, before: _Seen | None) -> None:
        """A sweep's trial: new (not seen before, not ended), or stopped by its policy."""
        if before is None and rec.state not in TERMINAL:
            self.trials_started.labels(target=rec.spec.target).inc()
        early = rec.error is not None and rec.error.kind is ErrorKind.EARLY_TERMINATED
        if rec.state is RunState.CANCELED and early:
            self.trials_early_terminated.labels(target=rec.spec.target).inc()

    def _heartbeat(self, hb: m.Heartbeat) -> None:
        """Heartbeats carry an agent's running totals (from 0 at each start): count the rise."""
        last = self._env.get(hb.agent_id)
        hits, misses = hb.env_cache_hits, hb.env_cache_misses
        if last is not None and last[0] == hb.incarnation:
            new_hits, new_misses = max(0, hits - last[1]), max(0, misses - last[2])
        else:  # a new agent, or a restarted one (its totals began again from 0)
            new_hits, new_misses = hits, misses
        if new_hits:
            self.env_hits.labels(target=hb.target).inc(new_hits)
        if new_misses:
            self.env_misses.labels(target=hb.target).inc(new_misses)
        self._env[hb.agent_id] = (hb.incarnation, hits, misses)


class LeadershipCollector:
    """This scheduler's standing (leader or standby), from its lease when scraped: served by
    a standby too, so Prometheus sees every scheduler and which one leads."""

    def __init__(self, standing: Callable[[], Standing]) -> None:
        self._standing = standing

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "sortie_scheduler_leader", "1 while this scheduler leads, 0 while it stands by."
            ),
            GaugeMetricFamily(
                "sortie_scheduler_leader_epoch",
                "The leader epoch this scheduler leads at, or the leader's it last read.",
            ),
            GaugeMetricFamily(
                "sortie_scheduler_lease_age_seconds",
                "Seconds since the leader lease was renewed: the leader's own last renewal, "
                "or, for a standby, since it last saw the lease change (it takes over at the "
                "lease's length).",
            ),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        now = self._standing()
        leader, epoch, age = self._families()
        leader.add_metric([], 1.0 if now.leading else 0.0)
        epoch.add_metric([], float(now.epoch))
        age.add_metric([], now.lease_age_s)
        yield from (leader, epoch, age)


class _StateCollector:
    """The gauges, computed from the scheduler's state when scraped."""

    def __init__(self, state: Callable[[], SchedulerState], clock: Callable[[], float]) -> None:
        self._state = state
        self._clock = clock

    def describe(self) -> Iterator[Metric]:
        # names only: registering must not read the state
        yield from _families()

    def collect(self) -> Iterator[Metric]:
        g = gauges(self._state(), self._clock())
        fam = _families()
        queue, oldest, runs, agents, gpus, gpus_used, cpus, cpus_used, nodes, broker, *rest = fam
        sweeps, pipelines = rest
        for (target, priority), n in sorted(g.queue.items()):
            queue.add_metric([target, str(priority)], n)
        for target, age in sorted(g.oldest_queued_s.items()):
            oldest.add_metric([target], age)
        for (state, target), n in sorted(g.runs.items()):
            runs.add_metric([state, target], n)
        for (target, state), n in sorted(g.agents.items()):
            agents.add_metric([target, state], n)
        for target, (total, used) in sorted(g.gpus.items()):
            gpus.add_metric([target], total)
            gpus_used.add_metric([target], used)
        for target, (ctotal, cused) in sorted(g.cpus.items()):
            cpus.add_metric([target], ctotal)
            cpus_used.add_metric([target], cused)
        for (cluster, kind), n in sorted(g.nodes.items()):
            nodes.add_metric([cluster, kind], n)
        broker.add_metric([], 1.0 if g.broker_connected else 0.0)
        sweeps.add_metric([], g.sweeps_active)
        pipelines.add_metric([], g.pipelines_active)
        yield from fam


def _families() -> list[GaugeMetricFamily]:
    return [
        GaugeMetricFamily("sortie_queue_depth", "Queued runs.", labels=["target", "priority"]),
        GaugeMetricFamily(
            "sortie_queue_oldest_seconds",
            "How long the longest-waiting queued run of a target has waited.",
            labels=["target"],
        ),
        GaugeMetricFamily(
            "sortie_runs", "Active (not ended) runs by state.", labels=["state", "target"]
        ),
        GaugeMetricFamily(
            "sortie_agents",
            "Agents by state (ready, cordoned, draining, preempting, reconnecting, lost).",
            labels=["target", "state"],
        ),
        GaugeMetricFamily("sortie_gpus", "GPUs that agents not lost advertise.", labels=["target"]),
        GaugeMetricFamily("sortie_gpus_used", "GPUs given to active runs.", labels=["target"]),
        GaugeMetricFamily("sortie_cpus", "CPUs that agents not lost advertise.", labels=["target"]),
        GaugeMetricFamily("sortie_cpus_used", "CPUs given to active runs.", labels=["target"]),
        GaugeMetricFamily(
            "sortie_cluster_nodes",
            "Nodes of autoscaling clusters: current (creating or running), target (what the "
            "autoscaler wants now), idle, busy, preempted.",
            labels=["cluster", "kind"],
        ),
        GaugeMetricFamily(
            "sortie_scheduler_broker_connected",
            "1 while the scheduler's own broker connection is up.",
        ),
        GaugeMetricFamily("sortie_sweeps_active", "Sweep runs not ended."),
        GaugeMetricFamily("sortie_pipelines_active", "Pipeline runs not ended."),
    ]
