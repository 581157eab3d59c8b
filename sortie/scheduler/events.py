"""The scheduler's closed set of events (in) and commands (out), its decision config, and
how bytes from the bus become typed requests (or the reason they do not)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from sortie.proto import codec, notes, run_index, subjects
from sortie.proto import messages as m
from sortie.proto.pipelines import ImageLookup
from sortie.proto.queue import QueueRequest
from sortie.scheduler.reconcile import Timing

# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    request: m.SubmitRequest
    run_id: str  # made by the daemon (ids are not made in the core)
    reply_to: str
    # a pipeline's tagged container steps' images, as the daemon looked them up from their
    # targets' agents before this event (scheduler/image_lookup.py), by step name
    images: Mapping[str, ImageLookup] = field(default_factory=dict)


@dataclass(frozen=True)
class CancelAsked:
    run_id: str
    reply_to: str


@dataclass(frozen=True)
class TargetsAsked:
    reply_to: str


@dataclass(frozen=True)
class ComputeAsked:
    request: m.ComputeRequest
    reply_to: str


@dataclass(frozen=True)
class AgentAsked:
    request: m.AgentRequest
    reply_to: str


@dataclass(frozen=True)
class WhyAsked:
    run_id: str
    reply_to: str


@dataclass(frozen=True)
class QueueAsked:
    request: QueueRequest
    reply_to: str


@dataclass(frozen=True)
class TagAsked:
    request: notes.RunTagRequest
    reply_to: str


@dataclass(frozen=True)
class HeartbeatSeen:
    heartbeat: m.Heartbeat


@dataclass(frozen=True)
class ReportSeen:
    report: m.RunReport


@dataclass(frozen=True)
class NoteSeen:
    note: notes.RunNote


@dataclass(frozen=True)
class MetricsSeen:
    """A trial's points of its sweep's primary metric, from one batch of the metrics stream
    (``scheduler/sweep_feed.py``), in the order logged."""

    run_id: str
    attempt: int
    writer: str | None  # the agent id on the subject (None: the 0.1 form)
    values: tuple[float, ...]


@dataclass(frozen=True)
class NodeFailed:
    """The provider could not create a node, or a node's process died on its own."""

    node_id: str
    code: str
    message: str


@dataclass(frozen=True)
class NodeStopped:
    node_id: str


@dataclass(frozen=True)
class VmProgress:
    name: str
    line: str


@dataclass(frozen=True)
class VmAttached:
    name: str
    remote_port: int | None = None


@dataclass(frozen=True)
class VmFailed:
    name: str
    code: str
    message: str


@dataclass(frozen=True)
class VmDetached:
    name: str


@dataclass(frozen=True)
class VmLink:
    name: str
    link: str  # "connected" | "reconnecting"


@dataclass(frozen=True)
class Started:
    """The scheduler has loaded the stored state and begins listening (the first event of a
    scheduler's life): what did not outlive the previous one is settled here, not in the
    loading."""

    # the providers (cluster variants' ``provider`` tags) whose nodes were the previous
    # scheduler's children, so did not outlive it (the daemon reads its provider registry)
    children_of: frozenset[str]


@dataclass(frozen=True)
class Tick:
    pass


@dataclass(frozen=True)
class SweepFeedReady:
    """The metrics stream has been read up to where it was at start (every active sweep's
    trials' history is in): from now on sweeps are stepped."""


@dataclass(frozen=True)
class BrokerAway:
    """The scheduler lost its broker connection: until it is back, no agent is judged lost
    (their heartbeats cannot reach it)."""


@dataclass(frozen=True)
class BrokerBack:
    """The scheduler's broker connection came back after an outage: heartbeats sent while it
    was away never reached it, so no agent may be judged on them."""


# The events come in four kinds; ``core.handle`` dispatches on the kind, then on the event.
# A client's request, answered with a Reply (and maybe state changes).
RequestEvent = (
    Submitted
    | CancelAsked
    | TargetsAsked
    | ComputeAsked
    | AgentAsked
    | WhyAsked
    | QueueAsked
    | TagAsked
)
# News from an agent or about a node's process.
NodeEvent = HeartbeatSeen | ReportSeen | NoteSeen | MetricsSeen | NodeFailed | NodeStopped
# News from a VM attach (the vm tunnel's life).
VmEvent = VmProgress | VmAttached | VmFailed | VmDetached | VmLink
# The scheduler's own life: start, broker outage, and the periodic tick.
LifecycleEvent = Started | Tick | BrokerAway | BrokerBack | SweepFeedReady

Event = RequestEvent | NodeEvent | VmEvent | LifecycleEvent

# --- commands --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendToAgent:
    agent_id: str
    command: m.AgentCommand
    run_id: str | None


@dataclass(frozen=True)
class Reply:
    reply_to: str
    message: msgspec.Struct
    run_id: str | None = None  # if set, only sent once that run's record is stored


@dataclass(frozen=True)
class PublishEof:
    run_id: str
    attempt: int


@dataclass(frozen=True)
class CreateNode:
    node_id: str
    cluster: str
    shape: m.NodeShape
    priority: m.NodePriority
    labels: dict[str, str]
    run_id: None = None


@dataclass(frozen=True)
class StopNode:
    node_id: str
    grace_s: float
    run_id: None = None


@dataclass(frozen=True)
class AttachVm:
    """Install and start an agent on a machine over SSH, and keep a link to it."""

    name: str
    vm: m.VmConfig
    secret: m.SshSecret = field(repr=False)
    run_id: None = None


@dataclass(frozen=True)
class DetachVm:
    name: str
    keep_files: bool
    run_id: None = None
    # forget the machine even when its agent could not be stopped or its files removed
    force: bool = False


@dataclass(frozen=True)
class SaveSecret:
    """Keep credentials on the scheduler's host (owner-only), under a compute's name."""

    name: str
    secret: m.SshSecret = field(repr=False)
    run_id: None = None


@dataclass(frozen=True)
class SaveRunSecret:
    """Keep a new run's secret variables on the scheduler's host (owner-only) until it ends.

    The daemon carries this out before it stores the run, so a stored run never lacks them.
    """

    run_id: str
    secret: m.SecretEnv = field(repr=False)


@dataclass(frozen=True)
class Log:
    """One line for the daemon's log, with ids bound."""

    event: str
    fields: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class SetTrialObjective:
    """Write a trial's objective and intervals on its stored record: it ended (so left
    memory) before its last metrics were read (``tag_store.trial_objective_stored``)."""

    run_id: str
    objective: float | None
    intervals: int


Command = (
    SendToAgent
    | Reply
    | PublishEof
    | CreateNode
    | StopNode
    | AttachVm
    | DetachVm
    | SaveSecret
    | SaveRunSecret
    | SetTrialObjective
    | Log
)


@dataclass(frozen=True)
class Config:
    timing: Timing = field(default_factory=Timing)
    catalog: Mapping[str, m.NodeShape] = field(default_factory=dict)  # vm size -> shape
    providers: frozenset[str] = frozenset({"process"})
    preempt_grace_s: float = 30.0  # SIGTERM -> SIGKILL for runs on a preempted node
    node_boot_timeout_s: float = 120.0  # a node not heard from by then has failed
    node_stop_grace_s: float = 10.0
    # at most this many runs placed per decision pass: a huge queue is placed in steps whose
    # records are stored and whose Assigns go out before the next (None: no limit)
    placement_limit: int | None = 10_000


# --- from the bus (pure) ---------------------------------------------------------------------

AgentNews = m.RunReport | notes.RunNote  # what comes on an agent's report subject

# the requests the event loop answers; a model registration is answered beside it (it writes
# the models bucket only: scheduler/model_registry.py), a host-key scan too (it reads a
# machine's SSH server and changes nothing: scheduler/ssh/hostkeys.py)
LoopRequest = (
    m.SubmitRequest
    | m.CancelRequest
    | m.TargetsRequest
    | m.ComputeRequest
    | m.AgentRequest
    | m.WhyRequest
    | QueueRequest
    | notes.RunTagRequest
)
# a query of the run index is answered beside it too, from the index (scheduler/run_index.py)
IndexQuery = run_index.RunQuery | run_index.ExperimentsQuery
ApiRequest = LoopRequest | m.ModelRegister | IndexQuery | m.HostKeyScan
API_TYPES: dict[str, Any] = {
    subjects.API_SUBMIT: m.SubmitRequest,
    subjects.API_CANCEL: m.CancelRequest,
    subjects.API_TARGETS: m.TargetsRequest,
    subjects.API_COMPUTE: m.ComputeRequest,
    subjects.API_AGENTS: m.AgentRequest,
    subjects.API_WHY: m.WhyRequest,
    subjects.API_QUEUE: QueueRequest,
    subjects.API_RUN_TAG: notes.RunTagRequest,
    subjects.API_MODELS: m.ModelRegister,
    subjects.API_RUNS_QUERY: run_index.RunQuery,
    subjects.API_EXPERIMENTS: run_index.ExperimentsQuery,
    subjects.API_HOST_KEY: m.HostKeyScan,
}


def read_request(subject: str, data: bytes) -> ApiRequest | m.ErrorReply:
    """The request on an API subject, or the ``bad_request`` answer that says what was wrong."""
    kind = API_TYPES.get(subject)
    if kind is None:
        known = ", ".join(sorted(API_TYPES))
        return m.ErrorReply(
            code="bad_request", message=f"unknown API subject {subject}; known: {known}"
        )
    try:
        request: ApiRequest = codec.decode(kind, data)
    except codec.BadMessage as exc:
        return m.ErrorReply(code="bad_request", message=str(exc))
    return request


def read_heartbeat(subject: str, data: bytes) -> m.Heartbeat | str:
    """A heartbeat, or why it is ignored (it must come on its own agent's subject)."""
    try:
        hb = codec.decode(m.Heartbeat, data)
        if subjects.heartbeat(hb.agent_id) != subject:
            return f"heartbeat for {hb.agent_id!r} on {subject}"
    except ValueError as exc:  # codec.BadMessage, or an agent id no subject can carry
        return str(exc)
    return hb


def lists_in_full(data: bytes) -> bool:
    """Whether a heartbeat lists its runs in full (one that does not decode counts as full:
    it is handled, and logged, as before)."""
    try:
        return codec.decode(m.HeartbeatListed, data).listed
    except codec.BadMessage:
        return True


def read_report(subject: str, data: bytes) -> m.RunReport | notes.RunNote | str:
    """A run report or note, or why it is ignored (it must come on its own agent's subject)."""
    try:
        rep: m.RunReport | notes.RunNote = codec.decode(AgentNews, data)
        if subjects.report(rep.agent_id) != subject:
            return f"report from {rep.agent_id!r} on {subject}"
    except ValueError as exc:  # codec.BadMessage, or an agent id no subject can carry
        return str(exc)
    return rep
