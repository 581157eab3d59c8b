"""What a person or a program sees of runs, computes, machines, agents and the whole
installation: the JSON of the CLI's ``--output json`` and of the SDK's ``get_details`` /
``get_status``, one Struct per object.

These shapes are a promise to scripts that parse them, apart from the wire types in proto
(which may gain fields the user never sees): each view names its keys once, in the order they
are printed, and ``tests/client/test_views.py`` pins them. Timestamps are ISO 8601 strings
(``iso``: UTC, ``Z``) everywhere, never epoch seconds; durations are seconds (``_s``);
states are their names.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from sortie.client.client import SnapshotSummary
from sortie.proto import engines
from sortie.proto import messages as m
from sortie.proto.agent_env import redacted
from sortie.proto.states import RunState
from sortie.proto.waiting import shown_state


class View(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every view: printed as JSON, never read back."""


# --- runs ----------------------------------------------------------------------------------


class GitView(View, frozen=True, kw_only=True):
    commit: str | None
    branch: str | None
    dirty: bool
    remote: str | None


class SnapshotView(View, frozen=True, kw_only=True):
    id: str
    files: int
    bytes: int


class ErrorView(View, frozen=True, kw_only=True):
    kind: str
    message: str


class NodeView(View, frozen=True, kw_only=True):
    """One rank of the run's current attempt."""

    rank: int
    agent_id: str
    state: RunState


class StateChangeView(View, frozen=True, kw_only=True):
    state: RunState
    at: str | None
    attempt: int
    reason: str | None


class WaitingView(View, frozen=True, kw_only=True):
    """Why a queued run's target has no agent now (``RunRecord.waiting``)."""

    reason: str
    since: str | None


class EngineJobView(View, frozen=True, kw_only=True):
    """The run's current attempt as its engine sees it (``RunRecord.engine_job``)."""

    engine: engines.EngineKind
    job_id: str
    state: str  # in the engine's words: PENDING, RUNNING (Slurm); SUBMITTED, RUNNING (Spark)
    reason: str | None
    since: str | None


class RunView(View, frozen=True, kw_only=True):
    """`sortie run show --output json`, and the SDK's ``get_details``."""

    run_id: str
    state: RunState
    attempt: int
    exit_code: int | None
    experiment: str
    target: str
    script: str
    arguments: list[str]
    agent_id: str | None
    created_at: str | None
    started_at: str | None
    ended_at: str | None
    git: GitView
    snapshot: SnapshotView
    environment: m.PythonEnvironment
    docker: m.DockerSection
    metrics: dict[str, list[m.MetricValue]]
    artifacts: list[str]
    error: ErrorView | None
    cancel_requested: bool
    retries_used: int
    preemptions: int
    node_count: int
    secret_env: list[str]  # names only: values are never stored
    nodes: list[NodeView]
    history: list[StateChangeView]
    tags: dict[str, str] = {}
    properties: dict[str, str] = {}
    parent_id: str | None = None
    children: list[str] = []  # child run ids, oldest first
    waiting: WaitingView | None = None  # while Queued: why its target has no agent now
    engine_job: EngineJobView | None = None  # handed to Slurm or Spark: its job there


class RunSummaryView(View, frozen=True, kw_only=True):
    """One line of `sortie run list --output json`."""

    run_id: str
    experiment: str
    target: str
    state: RunState
    attempt: int
    created_at: str | None
    ended_at: str | None
    parent_id: str | None = None
    tags: dict[str, str] = {}


class SubmittedView(View, frozen=True, kw_only=True):
    """`sortie run submit --output json`: the run's id and what its snapshot cost."""

    run_id: str
    snapshot: SnapshotSummary


class LogLineView(View, frozen=True, kw_only=True):
    """One line of `sortie run logs --output json` (JSON lines: one object per line)."""

    rank: int
    time: str | None
    stream: Literal["stdout", "stderr", "system"]
    line: str


class CancelView(View, frozen=True, kw_only=True):
    """`sortie run cancel --output json`: the state after the request (still active until
    the run stops)."""

    run_id: str
    state: RunState


class OutcomeView(View, frozen=True, kw_only=True):
    """`sortie run wait --output json`: how the run ended."""

    run_id: str
    state: RunState
    exit_code: int | None
    error: ErrorView | None
    ended_at: str | None


class DownloadView(View, frozen=True, kw_only=True):
    """`sortie run download --output json`: the files written."""

    run_id: str
    files: list[str]


def log_line_view(rank: int, line: m.LogLine) -> LogLineView:
    return LogLineView(rank=rank, time=iso(line.t), stream=line.stream, line=line.text)


def outcome_view(rec: m.RunRecord) -> OutcomeView:
    error = rec.error
    return OutcomeView(
        run_id=rec.run_id,
        state=rec.state,
        exit_code=rec.exit_code,
        error=None if error is None else ErrorView(kind=error.kind, message=error.message),
        ended_at=iso(rec.ended_at),
    )


def run_view(
    rec: m.RunRecord,
    metrics: dict[str, list[m.MetricValue]],
    children: list[str] | None = None,
) -> RunView:
    spec = rec.spec
    git = spec.git or m.GitInfo()
    error = rec.error
    return RunView(
        run_id=rec.run_id,
        state=shown_state(rec),
        attempt=rec.attempt,
        exit_code=rec.exit_code,
        experiment=spec.experiment,
        target=spec.target,
        script=spec.script,
        arguments=list(spec.arguments),
        agent_id=rec.agent_id,
        created_at=iso(rec.created_at),
        started_at=iso(rec.started_at),
        ended_at=iso(rec.ended_at),
        git=GitView(commit=git.commit, branch=git.branch, dirty=git.dirty, remote=git.remote),
        snapshot=SnapshotView(
            id=spec.snapshot_id, files=spec.snapshot_files, bytes=spec.snapshot_bytes
        ),
        environment=spec.environment.python,
        docker=spec.environment.docker,
        metrics=metrics,
        artifacts=[a.path for a in rec.artifacts],
        error=None if error is None else ErrorView(kind=error.kind, message=error.message),
        cancel_requested=rec.cancel_requested,
        retries_used=rec.retries_used,
        preemptions=rec.preemptions,
        node_count=spec.node_count,
        secret_env=list(spec.secret_env_names),
        nodes=[NodeView(rank=g.rank, agent_id=g.agent_id, state=g.state) for g in rec.gang],
        history=[
            StateChangeView(state=h.state, at=iso(h.at), attempt=h.attempt, reason=h.reason)
            for h in rec.history
        ],
        tags=dict(rec.tags),
        properties=dict(rec.properties),
        parent_id=rec.parent_id,
        children=list(children or []),
        waiting=None
        if rec.waiting is None
        else WaitingView(reason=rec.waiting.reason, since=iso(rec.waiting.since)),
        engine_job=None if rec.engine_job is None else engine_job_view(rec.engine_job),
    )


def engine_job_view(job: engines.EngineJob) -> EngineJobView:
    return EngineJobView(
        engine=job.engine,
        job_id=job.job_id,
        state=job.state,
        reason=job.reason,
        since=iso(job.since),
    )


def run_summary_view(rec: m.RunRecord) -> RunSummaryView:
    return RunSummaryView(
        run_id=rec.run_id,
        experiment=rec.spec.experiment,
        target=rec.spec.target,
        state=shown_state(rec),
        attempt=rec.attempt,
        created_at=iso(rec.created_at),
        ended_at=iso(rec.ended_at),
        parent_id=rec.parent_id,
        tags=dict(rec.tags),
    )


def children_under_parents(runs: list[m.RunRecord]) -> list[m.RunRecord]:
    """``runs`` in their order, each listed child moved right after its parent (oldest
    child first); a child whose parent is not listed stays where it is."""
    listed = {r.run_id for r in runs}
    kids: dict[str, list[m.RunRecord]] = {}
    for r in runs:
        if r.parent_id is not None and r.parent_id in listed:
            kids.setdefault(r.parent_id, []).append(r)
    out: list[m.RunRecord] = []

    def add(rec: m.RunRecord) -> None:
        out.append(rec)
        for kid in sorted(kids.get(rec.run_id, []), key=lambda k: (k.created_at, k.run_id)):
            add(kid)

    for r in runs:
        if r.parent_id is None or r.parent_id not in listed:
            add(r)
    return out


# --- compute targets and agents ------------------------------------------------------------


class ProvisioningErrorView(View, frozen=True, kw_only=True):
    at: str | None
    code: str
    message: str


class ScaleDecisionView(View, frozen=True, kw_only=True):
    at: str | None
    action: Literal["scale_up", "scale_down", "backoff", "node_failed", "node_preempted"]
    nodes: list[str]
    reason: str


class ClusterNodeView(View, frozen=True, kw_only=True):
    node_id: str
    cluster: str
    state: m.NodeState
    priority: m.NodePriority
    created_at: str | None
    changed_at: str | None
    message: str | None


class ComputeView(View, frozen=True, kw_only=True):
    """A managed cluster: `sortie compute show|create|... --output json`, ``get_status``."""

    name: str
    type: Literal["cluster"]
    vm_size: str
    vm_priority: m.NodePriority
    min_nodes: int
    max_nodes: int
    idle_seconds_before_scaledown: float
    provider: str
    shape: m.NodeShape
    provisioning_state: m.ProvisioningState
    provisioning_errors: list[ProvisioningErrorView]
    nodes: m.NodeCounts
    node_list: list[ClusterNodeView]
    decisions: list[ScaleDecisionView]
    created_at: str | None


class MachineView(View, frozen=True, kw_only=True):
    """A machine attached over SSH: `sortie compute attach|show ... --output json`."""

    name: str
    type: Literal["vm"] = "vm"
    address: str
    ssh_port: int
    username: str
    auth: Literal["key", "password"]
    advertised_url: str | None
    agent_env: dict[str, str] = {}  # user information in URLs shown as ***
    provisioning_state: m.ProvisioningState
    provisioning_errors: list[ProvisioningErrorView]
    link: Literal["none", "connected", "reconnecting"]
    progress: list[str]
    created_at: str | None
    # the engine it hands runs to (a Slurm login node, a Spark head node); None: it runs them
    engine: engines.Engine | None = None


class AgentView(View, frozen=True, kw_only=True):
    """One agent: `sortie agent list|cordon|... --output json`."""

    agent_id: str
    incarnation: str
    target: str
    hostname: str
    capacity: m.Capacity
    state: Literal["ready", "lost"]
    first_seen: str | None
    last_seen: str | None
    cordoned: bool
    draining: bool
    labels: dict[str, str]
    priority: m.NodePriority
    gpus: list[m.GpuDevice]
    container_engine: str | None
    isolation: m.RunIsolation  # "none": its runs can read its credentials
    engine: engines.EngineKind | None = None  # it hands runs to Slurm or Spark


def compute_view(info: m.ComputeInfo) -> ComputeView:
    c = info.compute
    return ComputeView(
        name=c.name,
        type=c.type,
        vm_size=c.cluster.vm_size,
        vm_priority=c.cluster.vm_priority,
        min_nodes=c.cluster.min_nodes,
        max_nodes=c.cluster.max_nodes,
        idle_seconds_before_scaledown=c.cluster.idle_seconds_before_scaledown,
        provider=c.cluster.provider,
        shape=c.shape,
        provisioning_state=c.provisioning_state,
        provisioning_errors=_errors(c.provisioning_errors),
        nodes=info.counts,
        node_list=[
            ClusterNodeView(
                node_id=n.node_id,
                cluster=n.cluster,
                state=n.state,
                priority=n.priority,
                created_at=iso(n.created_at),
                changed_at=iso(n.changed_at),
                message=n.message,
            )
            for n in info.nodes
        ],
        decisions=[
            ScaleDecisionView(at=iso(d.at), action=d.action, nodes=list(d.nodes), reason=d.reason)
            for d in c.decisions
        ],
        created_at=iso(c.created_at),
    )


def _errors(errors: list[m.ProvisioningError]) -> list[ProvisioningErrorView]:
    return [ProvisioningErrorView(at=iso(e.at), code=e.code, message=e.message) for e in errors]


def machine_view(vm: m.VmRecord) -> MachineView:
    return MachineView(
        name=vm.name,
        address=vm.vm.address,
        ssh_port=vm.vm.ssh.ssh_port,
        username=vm.vm.ssh.username,
        auth=vm.vm.ssh.auth,
        advertised_url=vm.vm.advertised_url,
        agent_env=redacted(vm.vm.agent_env),
        provisioning_state=vm.provisioning_state,
        provisioning_errors=_errors(vm.provisioning_errors),
        link=vm.link,
        progress=list(vm.progress),
        created_at=iso(vm.created_at),
        engine=vm.vm.engine,
    )


def agent_view(a: m.AgentRecord) -> AgentView:
    return AgentView(
        agent_id=a.agent_id,
        incarnation=a.incarnation,
        target=a.target,
        hostname=a.hostname,
        capacity=a.capacity,
        state=a.state,
        first_seen=iso(a.first_seen),
        last_seen=iso(a.last_seen),
        cordoned=a.cordoned,
        draining=a.draining,
        labels=dict(a.labels),
        priority=a.priority,
        gpus=list(a.gpus),
        container_engine=a.container_engine,
        isolation=a.isolation,
        engine=a.engine,
    )


# --- `sortie status` -----------------------------------------------------------------------


class StatusTarget(View, frozen=True, kw_only=True):
    name: str
    kind: str  # "local", "agents", "cluster", "vm", or an attached engine: "slurm", "spark"
    agents: int  # live agents serving it
    queued: int
    active: int
    waiting: str | None = None  # why its queued runs have no agent (or wait in its engine)


class StatusCluster(View, frozen=True, kw_only=True):
    name: str
    type: Literal["cluster"]
    vm_size: str
    vm_priority: m.NodePriority
    provisioning_state: m.ProvisioningState
    min_nodes: int
    max_nodes: int
    nodes: m.NodeCounts


class StatusMachine(View, frozen=True, kw_only=True):
    name: str
    type: Literal["vm"] = "vm"
    address: str
    provisioning_state: m.ProvisioningState
    link: Literal["none", "connected", "reconnecting"]


class StatusAgent(View, frozen=True, kw_only=True):
    agent_id: str
    target: str
    state: Literal["ready", "lost", "stopped"]  # stopped: its node was stopped on purpose
    cordoned: bool
    draining: bool
    priority: m.NodePriority
    cpus: float
    cpus_used: float
    memory_mb: int
    gpus: int
    gpus_used: int
    gpu_type: str | None
    runs: int
    last_seen: str | None
    isolation: m.RunIsolation


class QueuedGroup(View, frozen=True, kw_only=True):
    """Queued runs of one target at one priority."""

    target: str
    priority: int
    queued: int
    oldest_queued_at: str | None
    waiting_s: float


class StatusQueue(View, frozen=True, kw_only=True):
    total: int
    by_target: list[QueuedGroup]


class StatusRun(View, frozen=True, kw_only=True):
    """A run on agents (Preparing, Running, Stopping)."""

    run_id: str
    experiment: str
    target: str
    state: RunState
    attempt: int
    agents: list[str]
    started_at: str | None
    in_state_s: float


class StatusScheduler(View, frozen=True, kw_only=True):
    """One scheduler process: the leader (it holds the lease) or a standby."""

    role: Literal["leader", "standby"]
    epoch: int  # the leader's epoch; a standby's: the leader epoch it last saw
    lease_age_s: float  # since its last renewal (a leader's lease lapses after lease_s)
    lease_s: float
    host: str
    pid: int
    holder: str
    since: str | None  # the leader: when it took the lease; a standby: when it started


class StatusView(View, frozen=True, kw_only=True):
    """`sortie status --output json`."""

    broker: str
    targets: list[StatusTarget]
    computes: list[StatusCluster | StatusMachine]
    agents: list[StatusAgent]
    queue: StatusQueue
    runs: list[StatusRun]
    ended_last_hour: dict[str, int]  # terminal state -> runs that reached it
    schedulers: list[StatusScheduler] = []  # the leader first, then live standbys


# --- encoding ------------------------------------------------------------------------------


def to_json(view: object, *, indent: bool = True) -> str:
    """A view (or a list of views) as JSON text, indented by two spaces unless ``indent`` is
    False (one line, for output that is piped line by line)."""
    data = msgspec.json.encode(view)
    return (msgspec.json.format(data, indent=2) if indent else data).decode()


def as_dict(view: View) -> dict[str, Any]:
    """A view as plain data (what the SDK returns: dicts, lists, strings, numbers)."""
    data = msgspec.to_builtins(view)
    assert isinstance(data, dict)
    return data


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
