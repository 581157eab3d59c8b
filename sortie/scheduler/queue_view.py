"""The answer to a ``QueueRequest``: the queued runs in the order placement takes them, each
with its position and what `sortie run why` says of it. Pure: state and time in, a reply out."""

from __future__ import annotations

import itertools

from sortie.proto import messages as m
from sortie.proto.queue import MAX_LIMIT, QueuedRun, QueueReply, QueueRequest
from sortie.proto.states import RunState
from sortie.scheduler.events import Command, QueueAsked, Reply
from sortie.scheduler.model import SchedulerState
from sortie.scheduler.requests import queue_summary


def on_queue(state: SchedulerState, ev: QueueAsked, now: float) -> list[Command]:
    reply = queue_reply(state, ev.request, now)
    return [Reply(ev.reply_to, reply)]


def queue_reply(state: SchedulerState, req: QueueRequest, now: float) -> QueueReply | m.ErrorReply:
    if not 1 <= req.limit <= MAX_LIMIT:
        return m.ErrorReply(
            code="bad_request", message=f"queue limit {req.limit}: give 1 to {MAX_LIMIT}"
        )
    if req.target is None:  # the queue as the runs table keeps it: its head, and its size
        ordered = list(itertools.islice(state.runs.queued(), req.limit))
        total = state.runs.queued_count
    else:
        ordered = [r for r in state.runs.queued() if r.spec.target == req.target]
        total = len(ordered)
    shown = [
        _entry(state, rec, position, now)
        for position, rec in enumerate(ordered[: req.limit], start=1)
    ]
    return QueueReply(runs=shown, total=total)


def _entry(state: SchedulerState, rec: m.RunRecord, position: int, now: float) -> QueuedRun:
    queued_at = next(
        (h.at for h in reversed(rec.history) if h.state is RunState.QUEUED), rec.created_at
    )
    return QueuedRun(
        run_id=rec.run_id,
        position=position,
        experiment=rec.spec.experiment,
        target=rec.spec.target,
        priority=rec.spec.priority,
        created_at=rec.created_at,
        queued_at=queued_at,
        attempt=rec.attempt,
        resources=rec.spec.resources,
        node_count=rec.spec.node_count,
        reasons=state.why.of(rec),
        summary=queue_summary(state, rec, now),
    )
