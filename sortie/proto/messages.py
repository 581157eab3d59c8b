"""Every message that crosses the bus or is stored in JetStream, as msgspec Structs.

Rules (see ARCHITECTURE.md): frozen, keyword-only Structs; tagged unions for variants; new
fields get defaults; a field's type never changes. Unknown fields are ignored on decode so
that an older reader accepts a newer writer's messages.
"""

from __future__ import annotations

from typing import Literal

from sortie.proto import (
    engines,
    pipelines,  # a module import: pipelines imports this module too
)
from sortie.proto.base import Message as Message  # re-exported: m.Message
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState
from sortie.proto.sweeps import Sweep as Sweep  # re-exported, as are the two below
from sortie.proto.sweeps import SweepSpec as SweepSpec
from sortie.proto.sweeps import Trial as Trial

# --- snapshots ---------------------------------------------------------------------------


class FileEntry(Message, frozen=True, kw_only=True):
    path: str  # relative POSIX path inside the source directory
    size: int
    mode: int  # permission bits (e.g. 0o755)
    sha256: str  # hex digest: also the blob's name in the object store


class Manifest(Message, frozen=True, kw_only=True):
    """The source directory at submit time; stored as a blob named by its own sha256."""

    files: list[FileEntry]


class GitInfo(Message, frozen=True, kw_only=True):
    commit: str | None = None
    branch: str | None = None
    dirty: bool = False
    remote: str | None = None


# --- run configuration -------------------------------------------------------------------


class PythonEnvironment(Message, frozen=True, kw_only=True):
    """How the run's Python is provided.

    user_managed=True: use ``interpreter`` (or the agent's own Python) as is.
    user_managed=False: build a venv from ``pip`` (requirement strings, in order) once per
    content hash; ``conda`` lists conda packages other than python/pip (conda or
    micromamba on the agent builds them; without, uv installs them from PyPI by name);
    ``python_version`` asks for a specific interpreter version.
    """

    user_managed: bool = True
    interpreter: str | None = None
    pip: list[str] = []
    conda: list[str] = []
    python_version: str | None = None
    channels: list[str] = []  # conda channels, in priority order


class DockerSection(Message, frozen=True, kw_only=True):
    """Run the script in a container (a Docker-compatible engine on the agent host).

    ``arguments`` are extra ``docker run``-style options; the supported ones are
    ``--ipc=host|private``, ``--cap-add=CAP``, ``--ulimit=NAME=SOFT[:HARD]`` and
    ``--env=KEY=VALUE``.
    """

    enabled: bool = False
    base_image: str | None = None
    gpu_support: bool = False  # pass the run's GPUs as device requests
    shm_size: str | None = None  # e.g. "2g"
    arguments: list[str] = []


class Environment(Message, frozen=True, kw_only=True):
    python: PythonEnvironment = PythonEnvironment()
    docker: DockerSection = DockerSection()


class Resources(Message, frozen=True, kw_only=True):
    cpus: float = 1.0
    memory_mb: int = 0
    gpus: int = 0
    gpu_type: str | None = None  # e.g. "H100": matched as a substring of the agent's GPU name


class SecretEnv(Message, frozen=True, kw_only=True):
    """Environment variables whose values are secret (API keys, tokens): name -> value.

    Carried in a submit request and in each ``Assign`` of the run, and kept by the scheduler
    on its own host only (owner-only files) until the run ends. Never in a run record, a
    reply, a log line or the run's log stream; the repr names the variables, not the values.
    """

    values: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"SecretEnv(names={sorted(self.values)!r}, values=<redacted>)"


class AmlComputeSpec(Message, frozen=True, kw_only=True):
    """The temporary cluster of a run-based creation (v1's ``AmlComputeConfiguration``)."""

    vm_size: str
    vm_priority: NodePriority = "dedicated"
    max_nodes: int = 1  # v1's _cluster_max_node_count


class RunSpec(Message, frozen=True, kw_only=True):
    """What the user asked for. Immutable once the run is accepted."""

    experiment: str
    target: str = "local"
    script: str
    arguments: list[str] = []
    environment: Environment = Environment()
    env_vars: dict[str, str] = {}
    max_duration_s: float | None = None
    resources: Resources = Resources()
    priority: int = 0  # higher runs first
    snapshot_id: str  # sha256 of the encoded Manifest blob
    snapshot_files: int = 0
    snapshot_bytes: int = 0
    git: GitInfo | None = None
    submission_id: str | None = None  # client-chosen id that makes retries idempotent
    node_count: int = 1  # > 1: a gang placed all-or-nothing on that many agents
    # tasks started on each node: an engine run's ranks per node (Slurm's --ntasks-per-node);
    # an agent that runs the script itself starts one
    processes_per_node: int = 1
    max_retries: int = 0  # re-runs after a failure of the script or its preparation
    constraints: dict[str, str] = {}  # agent labels that must match exactly
    dedicated_only: bool = False  # never place on low-priority (preemptible) nodes
    strategy: Literal["binpack", "spread"] = "binpack"
    # names of the run's secret variables; their values travel apart (SecretEnv), never here
    secret_env_names: list[str] = []
    # fail the run (kind queue_timeout) if it is still Queued this long after it was queued
    queue_timeout_s: float | None = None
    # target "amlcompute": a temporary cluster of this shape is made for the run and deleted
    # when the run ends (run-based creation)
    amlcompute: AmlComputeSpec | None = None
    tags: dict[str, str] = {}  # the run's tags at submit (Experiment.submit(tags=...))
    # a pipeline step: PipelineData it reads (name -> manifest id of its content: the agent
    # lays the files out and puts their path where the arguments hold ``data_token(name)``)
    data_inputs: dict[str, str] = {}
    # PipelineData it writes: the agent makes an empty directory for each (its path where the
    # arguments hold the token) and stores what is in it when the run completes
    data_outputs: list[str] = []


# --- run history ---------------------------------------------------------------------------


class RunError(Message, frozen=True, kw_only=True):
    kind: ErrorKind  # what failed; decides retries (proto/run_errors.py: RETRY)
    message: str


class Artifact(Message, frozen=True, kw_only=True):
    path: str  # relative to the run's outputs/ directory's parent, e.g. "outputs/model.pkl"
    size: int
    sha256: str


class GangMember(Message, frozen=True, kw_only=True):
    """One node of a run: rank r on an agent. A single-node run is a gang of one."""

    rank: int
    agent_id: str
    incarnation: str
    hostname: str = ""
    state: RunState = RunState.PREPARING


class Writer(Message, frozen=True, kw_only=True):
    """The agent that held one rank of one attempt: readers keep the logs and metrics of that
    attempt and rank only from it (``subjects.logs(run_id, agent_id)`` names the writer)."""

    attempt: int
    rank: int
    agent_id: str


class StateChange(Message, frozen=True, kw_only=True):
    state: RunState
    at: float
    attempt: int
    reason: str | None = None  # e.g. "preempted", "agent lost", "retry 1 of 3"


class RunRecord(Message, frozen=True, kw_only=True):
    """One run as stored in the runs KV bucket (key: run_id). Written only by the scheduler."""

    run_id: str
    spec: RunSpec
    state: RunState
    attempt: int  # raised every time the run goes back to Queued
    created_at: float
    agent_id: str | None = None
    agent_incarnation: str | None = None
    assigned_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    error: RunError | None = None
    artifacts: list[Artifact] = []
    cancel_requested: bool = False
    history: list[StateChange] = []
    retries_used: int = 0
    preemptions: int = 0
    gang: list[GangMember] = []  # where the current attempt runs, rank 0 first
    master_port: int | None = None  # rendezvous port for multi-node runs
    writers: list[Writer] = []  # who held each attempt's ranks (none: stored by Sortie 0.1)
    # set by the script (Run.tag / add_properties, relayed by its agent) or by a client
    tags: dict[str, str] = {}
    properties: dict[str, str] = {}  # added, never changed (as the hosted platform's)
    # a child run (Run.child_run in the parent's script) names its parent; a child has no
    # attempt of its own: it is written from the parent's agent's notes and ends with it
    parent_id: str | None = None
    waiting: TargetWait | None = None  # while Queued: why its target has no agent now
    # the last value of each plain metric the script logged (at most run_index.LATEST_METRICS
    # names), from its agent's reports: what run lists show
    metrics: dict[str, float] = {}
    # a sweep (hyperparameter tuning): its spec and progress. A sweep run has no attempt of
    # its own: its trials are runs (parent_id: the sweep, ``trial`` set) that the scheduler's
    # sweep controller submits and stops; it ends when the sweep is done (proto/sweeps.py)
    sweep: Sweep | None = None
    # one trial of a sweep: placed and run like any run, with its parameters as arguments
    trial: Trial | None = None
    # a pipeline: its spec and each step's state. A pipeline run has no attempt of its own:
    # its steps are runs (parent_id: the pipeline, ``step`` set) that the scheduler's pipeline
    # controller submits (or marks reused or skipped); it ends when every step has ended
    # (proto/pipelines.py)
    pipeline: pipelines.Pipeline | None = None
    step: str | None = None  # one step of a pipeline: the step's name
    # what this run's step wrote for later steps: PipelineData name -> manifest id
    data_outputs: dict[str, str] = {}
    # the current attempt's job in its engine (Slurm, Spark), from its agent's reports: a run
    # Starting with a PENDING Slurm job waits in Slurm's queue, and `run why` says why
    engine_job: engines.EngineJob | None = None
    # a completed container run: the ID of the image its docker.base_image named where it
    # ran (RunReport.image_id); a pipeline step's cache entry is keyed on it
    image_id: str | None = None


class TargetWait(Message, frozen=True, kw_only=True):
    """Why a queued run's target has no agent right now, and since when (scheduler clock)."""

    reason: str  # e.g. "its only node was stopped by the autoscaler", "attach failed: ..."
    since: float


# --- client <-> scheduler API --------------------------------------------------------------


class SubmitRequest(Message, frozen=True, kw_only=True, tag="submit"):
    spec: RunSpec
    validate_only: bool = False  # check everything, create nothing
    secret_env: SecretEnv | None = None  # values of spec.secret_env_names (kept off the record)
    # bytes of the snapshot this submission uploaded (the rest was already in the store); for
    # the scheduler's metrics only. None: the client does not say.
    uploaded_bytes: int | None = None
    # a sweep: ``spec`` is its trials' template (each trial's parameters are appended to its
    # arguments); the reply's run id is the sweep run's
    sweep: SweepSpec | None = None
    # a pipeline: its steps are in ``pipeline``, and ``spec`` is the pipeline run's own (see
    # proto/pipelines.PipelineRequest); the reply's run id is the pipeline run's
    pipeline: pipelines.PipelineRequest | None = None


class SubmitAccepted(Message, frozen=True, kw_only=True, tag="submit_accepted"):
    run_id: str
    created: bool = True  # False when submission_id matched an existing run


class SubmitValid(Message, frozen=True, kw_only=True, tag="submit_valid"):
    """Reply to a ``validate_only`` submit: the run would be accepted."""

    target: str


class CancelRequest(Message, frozen=True, kw_only=True, tag="cancel"):
    run_id: str


class CancelAccepted(Message, frozen=True, kw_only=True, tag="cancel_accepted"):
    run_id: str
    state: RunState  # the state after the request: Canceled, or still running until it stops


class TargetsRequest(Message, frozen=True, kw_only=True, tag="targets"):
    pass


class TargetInfo(Message, frozen=True, kw_only=True):
    name: str
    kind: Literal["local", "agents"]
    agents: int  # live agents serving it


class TargetsReply(Message, frozen=True, kw_only=True, tag="targets_reply"):
    targets: list[TargetInfo]


ErrorCode = Literal[
    "bad_request",  # undecodable or invalid message
    "unknown_target",
    "not_found",
    "conflict",
    "invalid_state",
    "snapshot_missing",
    "blob_corrupt",  # an uploaded blob does not match its hash (it was quarantined)
    "internal",
]


class ErrorReply(Message, frozen=True, kw_only=True, tag="error"):
    code: ErrorCode
    message: str


SubmitReply = SubmitAccepted | SubmitValid | ErrorReply
CancelReply = CancelAccepted | ErrorReply
TargetsReplyOrError = TargetsReply | ErrorReply


class RenewRequest(Message, frozen=True, kw_only=True, tag="renew"):
    """An agent or client asks for a fresh JWT for its own user key (``subjects.AUTH_RENEW``).
    Only the JWT travels, never the seed; a JWT is worth nothing without its seed. The repr
    hides it (no JWT is ever logged)."""

    jwt: str

    def __repr__(self) -> str:
        return "RenewRequest(jwt=<redacted>)"


class RenewReply(Message, frozen=True, kw_only=True, tag="renewed"):
    """The fresh JWT: same user key and name, this version's permissions, a new ``exp``."""

    jwt: str
    expires_at: int  # unix seconds

    def __repr__(self) -> str:
        return f"RenewReply(jwt=<redacted>, expires_at={self.expires_at})"


RenewReplyOrError = RenewReply | ErrorReply


# --- agents ----------------------------------------------------------------------------------


class Capacity(Message, frozen=True, kw_only=True):
    cpus: float
    memory_mb: int
    gpus: int = 0
    gpu_type: str | None = None


class GpuDevice(Message, frozen=True, kw_only=True):
    index: int
    name: str
    uuid: str | None = None
    memory_total_mb: int = 0
    memory_used_mb: int = 0
    utilization_pct: int | None = None
    run_id: str | None = None  # the run this GPU is given to, if any


NodePriority = Literal["dedicated", "lowpriority"]
# how an agent keeps a run from its credentials and other runs (agents.isolation); "unknown":
# an agent older than the field
RunIsolation = Literal["unknown", "none", "landlock", "user", "user+landlock"]


class RunRef(Message, frozen=True, kw_only=True):
    run_id: str
    attempt: int


class HeartbeatNow(Message, frozen=True, kw_only=True, tag="heartbeat_now"):
    """Scheduler -> every agent, when a scheduler starts leading: heartbeat now (so it knows
    every agent at once), and the epoch it leads at: an agent refuses an Assign or Cancel of an
    older epoch from then on (a deposed leader resumed after a pause may still send one).
    An empty message (an older scheduler) asks for the heartbeat only.

    ``short_heartbeats``: this scheduler reads heartbeats that leave their listing out
    (``Heartbeat.listed``); an agent sends them only while the newest leader it heard says so
    (so an older scheduler is never sent one)."""

    epoch: int = 0
    short_heartbeats: bool = False


class Heartbeat(Message, frozen=True, kw_only=True, tag="heartbeat"):
    """Agent -> scheduler, every heartbeat interval. Also how an agent registers."""

    agent_id: str
    incarnation: str  # new random value every time the agent process starts
    target: str
    hostname: str
    capacity: Capacity
    running: list[RunRef] = []  # runs this incarnation holds now
    finished: list[RunRef] = []  # runs it finished recently (so a late resend is ignored)
    # A digest of ``running`` and ``finished`` (the *listing*; "" from an older agent). With
    # ``listed`` False both are left out: the listing is the one last sent in full with this
    # digest. An agent holding hundreds of runs then sends a few dozen bytes a beat instead of
    # its whole listing, and lists in full when it changes, when a new leader asks
    # (HeartbeatNow), and every few beats (a scheduler that missed one has it again soon).
    listing: str = ""
    listed: bool = True
    sent_at: float
    version: str = ""
    env_cache_hits: int = 0
    env_cache_misses: int = 0
    gpus: list[GpuDevice] = []
    labels: dict[str, str] = {}
    priority: NodePriority = "dedicated"
    preempting: bool = False  # a preemption notice arrived: take no new runs
    container_engine: str | None = None  # e.g. "podman 4.3.1" when DOCKER_HOST answers
    isolation: RunIsolation = "unknown"
    # the engine this agent hands runs to (None: it runs them itself). Such an agent's
    # capacity is the largest node the engine has; the engine queues, so placement does not
    # count what the agent's runs hold, and a multi-node run is one run on it
    engine: engines.EngineKind | None = None


class HeartbeatListed(Message, frozen=True, kw_only=True):
    """A Heartbeat read for whether it lists in full, alone (the scheduler's receiving side
    keeps a full listing a later short heartbeat would otherwise replace unread)."""

    listed: bool = True


class Assign(Message, frozen=True, kw_only=True, tag="assign"):
    run_id: str
    attempt: int
    incarnation: str  # the agent incarnation this is meant for
    spec: RunSpec
    rank: int = 0  # NODE_RANK / RANK of this node in a multi-node run
    world_size: int = 1
    master_addr: str | None = None  # rank 0's host
    master_port: int | None = None
    hosts: list[str] = []  # every rank's host, by rank (written to the hostfile)
    secret_env: SecretEnv | None = None  # values of spec.secret_env_names, added by the daemon
    # the sending leader's epoch (leadership.Leadership): an agent refuses an Assign or Cancel
    # older than the newest epoch it has seen (0: sent by no leader, e.g. a tool or a test)
    epoch: int = 0
    short_heartbeats: bool = False  # as in HeartbeatNow: the sender reads short heartbeats


class Cancel(Message, frozen=True, kw_only=True, tag="cancel"):
    run_id: str
    attempt: int
    reason: Literal["canceled", "stale", "early_terminated"] = "canceled"
    epoch: int = 0  # as Assign.epoch


class Preempt(Message, frozen=True, kw_only=True, tag="preempt"):
    """Scheduler -> agent: the node is being taken away; stop runs within the grace period."""

    reason: str = "preempted"


class Retire(Message, frozen=True, kw_only=True, tag="retire"):
    """Scheduler -> agent: its target is gone (a detached machine, a deleted cluster): stop
    for good instead of reconnecting and heartbeating forever."""

    reason: str


AgentCommand = Assign | Cancel | Preempt | Retire


class ImageQuery(Message, frozen=True, kw_only=True, tag="image_query"):
    """Scheduler -> one agent that runs containers (``subjects.agent_images``, replied to on
    ``subjects.image_answer``): which image does ``reference`` name on your engine? Asked for
    a pipeline's container step whose image is a tag, so that its key follows the image,
    not the name (``pipelines.ImageLookup``)."""

    reference: str


class ImageFound(Message, frozen=True, kw_only=True, tag="image_found"):
    reference: str
    image_id: str  # the engine's ID of the image the reference names there


class ImageAbsent(Message, frozen=True, kw_only=True, tag="image_absent"):
    """The agent's engine has no image under the reference (a run of it would fail there)."""

    reference: str


class ImageLookupFailed(Message, frozen=True, kw_only=True, tag="image_lookup_failed"):
    """The agent could not ask its engine (down, no answer in time, a refusal)."""

    reference: str
    error: str


ImageAnswer = ImageFound | ImageAbsent | ImageLookupFailed


class RunReport(Message, frozen=True, kw_only=True, tag="report"):
    """Agent -> scheduler: a run's attempt reached ``state``. Durable (JetStream)."""

    agent_id: str
    incarnation: str
    run_id: str
    attempt: int
    state: RunState
    at: float
    exit_code: int | None = None
    error: RunError | None = None
    artifacts: list[Artifact] = []
    # the last value of each plain metric published so far (a bounded number of names)
    metrics: dict[str, float] = {}
    # a pipeline step that completed: each output directory (RunSpec.data_outputs) stored as
    # a manifest, by PipelineData name -> manifest id
    data_outputs: dict[str, str] = {}
    # the attempt's job in its engine (an engine agent's runs): sent again, in the same state,
    # whenever the engine's state or reason changes
    engine_job: engines.EngineJob | None = None
    # a container run that completed: the engine's ID of the image its docker.base_image
    # named when the container was made (the image that ran, whatever the tag names later)
    image_id: str | None = None


class AgentRecord(Message, frozen=True, kw_only=True):
    """One agent as stored in the agents KV bucket (key: agent_id), for status views."""

    agent_id: str
    incarnation: str
    target: str
    hostname: str
    capacity: Capacity
    state: Literal["ready", "lost"]
    first_seen: float
    last_seen: float
    cordoned: bool = False  # takes no new runs
    draining: bool = False  # takes no new runs; its current ones finish
    labels: dict[str, str] = {}
    priority: NodePriority = "dedicated"
    gpus: list[GpuDevice] = []
    container_engine: str | None = None
    isolation: RunIsolation = "unknown"
    engine: engines.EngineKind | None = None  # see Heartbeat.engine


# --- compute targets (clusters), nodes, agent administration --------------------------------


class NodeShape(Message, frozen=True, kw_only=True):
    """A node size from the catalog (``sortie compute sizes``)."""

    name: str
    cpus: float
    memory_mb: int
    gpus: int = 0
    gpu_type: str | None = None


class SshLogin(Message, frozen=True, kw_only=True):
    """How to connect to a machine over SSH: the one place for these settings, carried by
    every message that logs in to a machine (an attached one, an ssh pool). Holds no secret."""

    username: str
    ssh_port: int = 22
    auth: Literal["key", "password"]
    known_hosts: str | None = None  # a known_hosts file on the scheduler's host
    # record the key of a host not yet in known_hosts when it is first connected to (an
    # explicit choice): an attached machine's at attach, each pool host's when it gets a node
    trust_new_host_key: bool = False
    # trust a new host's key only if its SHA-256 fingerprint is this one ("SHA256:..."): the
    # key a person confirmed (the dashboard shows `HostKeyScan`'s answer first); any other
    # key is refused as changed. A host already in known_hosts is checked against it as ever.
    host_key_fingerprint: str | None = None


class VmConfig(Message, frozen=True, kw_only=True):
    """An attached machine: where it is and how to log in."""

    address: str
    ssh: SshLogin
    advertised_url: str | None = None  # the agent connects here instead of a reverse forward
    # the remote agent's environment variables (proxy, CA, UV_*), passed on to its builds;
    # shown and logged only through proto.agent_env.redacted (a proxy URL may hold a password)
    agent_env: dict[str, str] = {}
    # an engine the machine hands runs to (its login or head node): Slurm or Spark; None: the
    # machine runs them itself (processes, containers)
    engine: engines.Engine | None = None


class SshSecret(Message, frozen=True, kw_only=True):
    """Credentials, carried once in an attach request and kept only on the scheduler's host,
    readable by its user alone. Never stored in the KV store, a record, or a log."""

    password: str | None = None
    private_key: str | None = None  # the key file's text
    passphrase: str | None = None

    def __repr__(self) -> str:
        return "SshSecret(<redacted>)"


class ClusterBase(Message, frozen=True, kw_only=True, tag_field="provider"):
    """What every cluster has, whichever node provider makes its nodes.

    The variants below are tagged by ``provider``, the field (and values) that 0.1.0 wrote,
    so its records decode as the variant they name; a field of another provider is ignored.
    """

    vm_size: str
    max_nodes: int
    min_nodes: int = 0
    idle_seconds_before_scaledown: float = 120.0
    vm_priority: NodePriority = "dedicated"

    @property
    def provider(self) -> str:
        """The node provider's name: the variant's tag."""
        return str(self.__struct_config__.tag)


class ProcessCluster(ClusterBase, frozen=True, kw_only=True, tag="process"):
    """Nodes are ``sortie agent`` processes on the scheduler's host."""


class SshPoolCluster(ClusterBase, frozen=True, kw_only=True, tag="ssh"):
    """Nodes are agents installed over SSH on a pool of machines, one node per machine."""

    hosts: list[str]  # the machines of the pool
    ssh: SshLogin  # how to log in to them (the credentials travel apart: ComputeCreate.secret)


ClusterConfig = ProcessCluster | SshPoolCluster


class ProvisioningError(Message, frozen=True, kw_only=True):
    at: float
    code: str
    message: str


class ScaleDecision(Message, frozen=True, kw_only=True):
    at: float
    action: Literal["scale_up", "scale_down", "backoff", "node_failed", "node_preempted"]
    nodes: list[str] = []
    reason: str


ProvisioningState = Literal["Creating", "Succeeded", "Failed", "Deleting"]


class ComputeRecord(Message, frozen=True, kw_only=True):
    """A managed cluster as stored in the computes KV bucket (key: name)."""

    name: str
    type: Literal["cluster"] = "cluster"
    cluster: ClusterConfig
    shape: NodeShape
    provisioning_state: ProvisioningState = "Creating"
    provisioning_errors: list[ProvisioningError] = []
    decisions: list[ScaleDecision] = []  # the last few, newest last
    created_at: float
    error_streak: int = 0  # consecutive provider errors (drives backoff)
    backoff_until: float | None = None
    for_run: str | None = None  # a run-based creation's run: deleted when that run ends


NodeState = Literal["creating", "running", "stopping", "stopped", "failed", "preempted"]


class NodeRecord(Message, frozen=True, kw_only=True):
    """One node of a cluster (key: node id, which is also its agent id)."""

    node_id: str
    cluster: str
    state: NodeState
    priority: NodePriority = "dedicated"
    created_at: float
    changed_at: float
    message: str | None = None


class NodeCounts(Message, frozen=True, kw_only=True):
    current: int = 0  # creating + running
    target: int = 0  # what the autoscaler wants now
    idle: int = 0
    busy: int = 0
    preempted: int = 0


class ComputeInfo(Message, frozen=True, kw_only=True):
    compute: ComputeRecord
    counts: NodeCounts
    nodes: list[NodeRecord] = []


class ComputeCreate(Message, frozen=True, kw_only=True, tag="compute_create"):
    name: str
    cluster: ClusterConfig
    secret: SshSecret | None = None  # provider "ssh": credentials for the pool's hosts


class ComputeUpdate(Message, frozen=True, kw_only=True, tag="compute_update"):
    name: str
    min_nodes: int | None = None
    max_nodes: int | None = None
    idle_seconds_before_scaledown: float | None = None


class ComputeDelete(Message, frozen=True, kw_only=True, tag="compute_delete"):
    name: str
    force: bool = False  # cancel the cluster's active runs


class ComputeShow(Message, frozen=True, kw_only=True, tag="compute_show"):
    name: str


class ComputeList(Message, frozen=True, kw_only=True, tag="compute_list"):
    pass


class SizesList(Message, frozen=True, kw_only=True, tag="sizes_list"):
    pass


class ComputeReply(Message, frozen=True, kw_only=True, tag="compute"):
    info: ComputeInfo


class ComputeListReply(Message, frozen=True, kw_only=True, tag="computes"):
    computes: list[ComputeInfo]
    vms: list[VmRecord] = []


class SizesReply(Message, frozen=True, kw_only=True, tag="sizes"):
    sizes: list[NodeShape]


class VmRecord(Message, frozen=True, kw_only=True):
    """An attached machine (key: name in the vms KV bucket). Its agent's id is its name."""

    name: str
    vm: VmConfig
    provisioning_state: ProvisioningState = "Creating"
    provisioning_errors: list[ProvisioningError] = []
    progress: list[str] = []  # the last steps of attaching, newest last
    created_at: float
    link: Literal["none", "connected", "reconnecting"] = "none"
    remote_port: int | None = None  # the reverse forward's port on the machine (kept on reconnect)


class ComputeAttach(Message, frozen=True, kw_only=True, tag="compute_attach"):
    name: str
    vm: VmConfig
    secret: SshSecret


class ComputeDetach(Message, frozen=True, kw_only=True, tag="compute_detach"):
    name: str
    keep_files: bool = False
    force: bool = False  # cancel the target's active runs


class VmReply(Message, frozen=True, kw_only=True, tag="vm"):
    vm: VmRecord


class AgentList(Message, frozen=True, kw_only=True, tag="agent_list"):
    pass


class AgentAdmin(Message, frozen=True, kw_only=True, tag="agent_admin"):
    agent_id: str
    action: Literal["cordon", "uncordon", "drain", "preempt"]


# "stopped": a cluster node's agent whose node was stopped; "reconnecting": not heard from
# since the scheduler started
AgentStatus = Literal[
    "ready", "cordoned", "draining", "preempting", "reconnecting", "lost", "stopped"
]


class AgentUsage(Message, frozen=True, kw_only=True):
    """What an agent holds now, as placement counts it (in an ``AgentListReply``)."""

    agent_id: str
    status: AgentStatus  # its state in one word (capacity.status says which wins)
    used: Capacity  # what its runs asked for (gpu_type: None)
    runs: list[str] = []  # ids of the runs on it (any rank of a gang)


class AgentListReply(Message, frozen=True, kw_only=True, tag="agents"):
    agents: list[AgentRecord]
    usage: list[AgentUsage] = []  # one per agent, in the same order (none: an older scheduler)


class AgentReply(Message, frozen=True, kw_only=True, tag="agent"):
    agent: AgentRecord


class WhyRequest(Message, frozen=True, kw_only=True, tag="why"):
    run_id: str


class WhyReply(Message, frozen=True, kw_only=True, tag="why_reply"):
    run_id: str
    state: RunState
    reasons: dict[str, int] = {}  # reason -> number of agents it applies to
    summary: str


class HostKeyScan(Message, frozen=True, kw_only=True, tag="host_key_scan"):
    """Ask for the host key a machine's SSH server offers, before attaching it: the scheduler
    connects from its host, logs in to nothing, trusts and records nothing, and says how the
    key compares with its known_hosts. The dashboard shows it for a person to confirm, then
    attaches with ``SshLogin.host_key_fingerprint`` pinned to it."""

    address: str
    ssh_port: int = 22
    known_hosts: str | None = None  # as in SshLogin (None: ~/.ssh/known_hosts)


HostKeyVerdict = Literal["known", "unknown", "changed", "revoked"]


class HostKeyReply(Message, frozen=True, kw_only=True, tag="host_key"):
    address: str
    ssh_port: int
    algorithm: str  # "ssh-ed25519"
    fingerprint: str  # "SHA256:...", as `ssh-keygen -lf` prints it
    verdict: HostKeyVerdict  # known: trusted already; unknown: confirm it; else refused
    message: str  # what it means and what to do


HostKeyReplyOrError = HostKeyReply | ErrorReply


ComputeRequest = (
    ComputeCreate
    | ComputeUpdate
    | ComputeDelete
    | ComputeShow
    | ComputeList
    | SizesList
    | ComputeAttach
    | ComputeDetach
)
ComputeReplyOrError = ComputeReply | ComputeListReply | SizesReply | VmReply | ErrorReply
AgentRequest = AgentList | AgentAdmin
AgentReplyOrError = AgentListReply | AgentReply | ErrorReply
WhyReplyOrError = WhyReply | ErrorReply


# --- run output ------------------------------------------------------------------------------


class LogLine(Message, frozen=True, kw_only=True):
    t: float
    stream: Literal["stdout", "stderr", "system"]
    text: str


class LogBatch(Message, frozen=True, kw_only=True):
    """Published on ``subjects.logs(run_id)``. ``eof`` marks the end of the run's output."""

    run_id: str
    attempt: int
    lines: list[LogLine] = []
    eof: bool = False
    rank: int = 0  # which node of a multi-node run wrote these lines


MetricValue = float | int | str | bool


class MetricPoint(Message, frozen=True, kw_only=True):
    name: str
    value: MetricValue
    t: float
    step: int | None = None
    # a table metric's column (Run.log_row / log_table): the value is one cell of it
    column: str | None = None
    # a child run's point (published on its parent's subject): the child's run id
    run: str | None = None


class MetricBatch(Message, frozen=True, kw_only=True):
    run_id: str
    attempt: int
    points: list[MetricPoint]


# --- blobs ---------------------------------------------------------------------------------


class BlobCommit(Message, frozen=True, kw_only=True, tag="blob_commit"):
    """Store blob ``sha256`` from the ``chunks`` chunks (``size`` bytes) the uploader published,
    in order, on the object store's chunk subject of ``nuid``. The scheduler reads them back,
    checks the hash and only then writes the object's meta entry: nothing else can."""

    sha256: str
    nuid: str
    size: int
    chunks: int


class BlobCommitted(Message, frozen=True, kw_only=True, tag="blob_committed"):
    sha256: str
    new: bool  # False: it was already stored (and verified); the uploaded chunks were dropped


BlobCommitReply = BlobCommitted | ErrorReply


class QuarantinedBlob(Message, frozen=True, kw_only=True):
    """A blob the scheduler refused or removed because its bytes do not match its hash."""

    sha256: str
    reason: str
    by: str  # who uploaded it, from its reply inbox: "client", "agent.<id>", or "unknown"
    at: float  # unix time
    size: int


# --- the model registry ----------------------------------------------------------------------


class ModelFile(Message, frozen=True, kw_only=True):
    """One file of a registered model; its bytes are the blob ``sha256`` (content-addressed,
    shared with the snapshot or run artifact it came from)."""

    path: str  # relative POSIX path inside the model, its first part the model's root name
    sha256: str
    size: int
    mode: int = 0o644


class ModelRecord(Message, frozen=True, kw_only=True):
    """One version of a registered model (key: ``subjects.model_key(name, version)`` in the
    models KV bucket). Written only by the scheduler, created once, never changed."""

    name: str
    version: int  # 1, 2, ... per name
    files: list[ModelFile]
    created_at: float
    tags: dict[str, str] = {}
    properties: dict[str, str] = {}
    description: str | None = None
    framework: str | None = None
    framework_version: str | None = None
    # lineage: the run it was registered from (None: uploaded from a client's disk)
    run_id: str | None = None
    experiment: str | None = None
    snapshot_id: str | None = None
    git_commit: str | None = None


class ModelRegister(Message, frozen=True, kw_only=True, tag="model_register"):
    """Register the next version of model ``name``: either ``files`` a client uploaded (each
    blob already stored), or the artifacts of run ``run_id`` at ``run_path`` (one artifact,
    or every artifact under that folder: their blobs are reused, nothing is uploaded)."""

    name: str
    files: list[ModelFile] = []
    run_id: str | None = None
    run_path: str | None = None
    tags: dict[str, str] = {}
    properties: dict[str, str] = {}
    description: str | None = None
    framework: str | None = None
    framework_version: str | None = None


class ModelRegistered(Message, frozen=True, kw_only=True, tag="model_registered"):
    model: ModelRecord


ModelReplyOrError = ModelRegistered | ErrorReply
