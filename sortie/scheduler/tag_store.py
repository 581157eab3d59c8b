"""Tags and properties of a run the scheduler no longer holds in memory (it ended), and a
sweep trial's objective: read the stored record, apply the change (``run_notes``' rules for
tags), write it back by compare-and-set (shell)."""

from __future__ import annotations

import msgspec
import nats

from sortie.proto import codec, notes, subjects
from sortie.proto import messages as m
from sortie.scheduler.fence import FencedBucket
from sortie.scheduler.run_notes import tag_refusal, with_entries

TRIES = 5  # another writer between our read and write: read again


async def trial_objective_stored(
    kv: FencedBucket, run_id: str, objective: float | None, intervals: int
) -> tuple[m.RunRecord, int] | None:
    """A trial that ended before its last metrics were read: its objective and intervals on
    its stored record (compare-and-set). The written record and its revision, or None
    (nothing to change)."""
    for _ in range(TRIES):
        entry = await kv.get(run_id)
        rec = codec.decode(m.RunRecord, entry.value or b"")
        if rec.trial is None:
            return None
        trial = msgspec.structs.replace(rec.trial, objective=objective, intervals=intervals)
        if trial == rec.trial:
            return None
        updated = msgspec.structs.replace(rec, trial=trial)
        try:
            revision = await kv.update(run_id, codec.encode(updated), last=entry.revision or 0)
        except nats.js.errors.KeyWrongLastSequenceError:
            continue
        return updated, revision
    return None


async def tag_stored(kv: FencedBucket, req: notes.RunTagRequest) -> tuple[notes.RunTagReply, int]:
    """The tags and properties on a stored run (compare-and-set): the reply, and the revision
    of the record it holds (0 with an error)."""
    try:
        subjects.check_token("run id", req.run_id)
    except ValueError as exc:
        return m.ErrorReply(code="bad_request", message=str(exc)), 0
    for _ in range(TRIES):
        try:
            entry = await kv.get(req.run_id)
            rec = codec.decode(m.RunRecord, entry.value or b"")
        except nats.js.errors.KeyNotFoundError:
            return m.ErrorReply(code="not_found", message=f"no run {req.run_id!r}"), 0
        except codec.BadMessage as exc:
            return m.ErrorReply(code="internal", message=f"run {req.run_id}'s record: {exc}"), 0
        why = tag_refusal(rec, req)
        if why is not None:
            return m.ErrorReply(code="bad_request", message=why), 0
        updated = with_entries(rec, req.tags, req.properties)
        if updated is rec:
            return notes.RunTagged(record=rec), entry.revision or 0
        try:
            revision = await kv.update(req.run_id, codec.encode(updated), last=entry.revision or 0)
        except nats.js.errors.KeyWrongLastSequenceError:
            continue
        return notes.RunTagged(record=updated), revision
    refused = m.ErrorReply(code="internal", message=f"run {req.run_id} kept changing; tag it again")
    return refused, 0
