"""The queue as placement sees it: queued runs in placement order, each with its position and
why it waits, in one request (``sortie.api.queue``), for the dashboard's Queue page and any
client that wants the whole picture instead of one `sortie run why` per run."""

from __future__ import annotations

from sortie.proto.messages import ErrorReply, Message, Resources

MAX_LIMIT = 1000  # queued runs one reply lists at most (``QueueReply.total`` counts them all)


class QueueRequest(Message, frozen=True, kw_only=True, tag="queue"):
    limit: int = 100  # the first this many in placement order (1 to MAX_LIMIT)
    target: str | None = None  # only runs for this compute target


class QueuedRun(Message, frozen=True, kw_only=True):
    run_id: str
    position: int  # 1: placed first
    experiment: str
    target: str
    priority: int
    created_at: float
    queued_at: float  # when it last became Queued (its place comes from created_at)
    attempt: int
    resources: Resources
    node_count: int = 1
    reasons: dict[str, int] = {}  # reason -> number of agents it applies to (`run why`)
    summary: str  # the sentence `sortie run why` prints


class QueueReply(Message, frozen=True, kw_only=True, tag="queue_reply"):
    runs: list[QueuedRun] = []
    total: int = 0  # queued runs in all (for this target), however many are listed


QueueReplyOrError = QueueReply | ErrorReply
