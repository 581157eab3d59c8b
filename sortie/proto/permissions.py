"""Who may publish and subscribe to what: the NATS permissions of each role.

A broker with authentication on (``sortie up`` by default) gives every connection one of these
roles, enforced by nats-server itself (``sortie.bus.auth`` writes them into each user's JWT):

- ``scheduler``: everything (it owns the streams, buckets and records);
- ``client`` (CLI, SDK, the dashboard, other services): send API requests, read runs,
  registered models, dashboard tokens (their hashes), the schedulers' leader lease and
  standbys, agents, logs and metrics, upload
  snapshot blobs and read artifacts. It can neither write a record nor act as an agent or
  the scheduler (no heartbeats, reports or agent commands; it cannot serve ``sortie.api.*``);
- ``agent`` (one per agent id): receive its own commands (and image queries) only, publish
  its own heartbeats, reports and image answers, logs and metrics under its own id (readers
  keep only those of the agent that held the attempt), fetch snapshots and upload outputs.
  It reads no records and no other agent's commands or replies.

Everything not listed is refused. Replies go to a per-identity inbox prefix
(:func:`inbox_prefix`) that only that identity may subscribe to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sortie.proto import subjects as s

RoleKind = Literal["scheduler", "client", "agent"]


@dataclass(frozen=True)
class Role:
    kind: RoleKind
    agent_id: str | None = None  # for ``agent`` only

    def __post_init__(self) -> None:
        if (self.kind == "agent") != (self.agent_id is not None):
            raise ValueError("an agent role needs an agent id, and only an agent role has one")
        if self.agent_id is not None:
            s.check_token("agent id", self.agent_id)

    @property
    def identity(self) -> str:
        """The user's name in its JWT: ``scheduler``, ``client`` or ``agent.<id>``."""
        return f"agent.{self.agent_id}" if self.agent_id is not None else self.kind


def role_of(identity: str) -> Role | None:
    """The role whose ``identity`` this is (the name in a user JWT); ``None`` if none."""
    try:
        if identity.startswith("agent."):
            return Role("agent", identity.removeprefix("agent."))
    except ValueError:
        return None
    if identity == "scheduler":
        return Role("scheduler")
    if identity == "client":
        return Role("client")
    return None


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def inbox_prefix(identity: str) -> str:
    """The reply-subject prefix a connection of ``identity`` uses (see ``Role.identity``)."""
    if identity.startswith("agent."):
        return s.agent_inbox(identity.removeprefix("agent."))
    if identity == "client":
        return s.CLIENT_INBOX
    if identity == "scheduler":
        return s.SCHEDULER_INBOX
    return s.INBOX


def _read_stream(stream: str) -> list[str]:
    """JetStream API calls that read a stream: ordered and pull consumers (KV watches and
    whole reads, log streams, object gets; created, looked at, fetched from and deleted) and
    single-message gets."""
    api = s.JS_API
    return [
        f"{api}.CONSUMER.*.{stream}",
        f"{api}.CONSUMER.*.{stream}.>",
        f"{api}.CONSUMER.MSG.NEXT.{stream}.>",  # pull consumers' batches (bus.kv.kv_entries)
        f"{api}.DIRECT.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{s.JS_FLOW_CONTROL}.{stream}.>",
    ]


def _blobs() -> list[str]:
    """Read blobs, and add them: publish chunks, then ask the scheduler to commit them. Only
    the scheduler writes a meta entry (once, after checking the hash: ``bus/blobcommit.py``),
    so nobody else can overwrite or delete a blob."""
    return [
        *_read_stream(s.obj_stream(s.OBJ_BLOBS)),
        s.obj_chunks(s.OBJ_BLOBS),
        s.BLOB_COMMIT,
    ]


def scheduler() -> Permissions:
    return Permissions(publish=(">",), subscribe=(">",))


def client() -> Permissions:
    # Agents, computes and machines are read through the scheduler's API, not the buckets.
    # the dashboard tokens' hashes: the dashboard (a client) checks tokens against them
    readable = [
        s.kv_stream(s.KV_RUNS),
        s.kv_stream(s.KV_MODELS),
        s.kv_stream(s.KV_WEB_TOKENS),
        s.kv_stream(s.KV_LEADERSHIP),  # which scheduler leads, and its standbys (`status`)
        s.STREAM_LOGS,
        s.STREAM_METRICS,
    ]
    publish = [
        s.API_ALL,
        s.AUTH_RENEW,
        f"{s.JS_API}.INFO",
        f"{s.JS_API}.STREAM.INFO.*",
        f"{s.JS_API}.STREAM.NAMES",
        *(p for stream in readable for p in _read_stream(stream)),
        *_blobs(),
    ]
    return Permissions(publish=tuple(publish), subscribe=(f"{s.CLIENT_INBOX}.>",))


def agent(agent_id: str) -> Permissions:
    publish = [
        s.heartbeat(agent_id),
        s.report(agent_id),
        s.AUTH_RENEW,
        s.agent_logs_any_run(agent_id),  # under its own id only: readers check it held the run
        s.agent_metrics_any_run(agent_id),
        s.image_answers(agent_id),  # answers to the scheduler's ImageQuery, under its own id
        f"{s.JS_API}.INFO",
        f"{s.JS_API}.STREAM.INFO.*",
        f"{s.JS_API}.STREAM.NAMES",
        *_blobs(),
    ]
    subscribe = [
        s.agent_commands(agent_id),
        s.agent_images(agent_id),
        s.HEARTBEAT_NOW,
        f"{s.agent_inbox(agent_id)}.>",
    ]
    return Permissions(publish=tuple(publish), subscribe=tuple(subscribe))


def of(role: Role) -> Permissions:
    if role.kind == "scheduler":
        return scheduler()
    if role.kind == "client":
        return client()
    assert role.agent_id is not None
    return agent(role.agent_id)
