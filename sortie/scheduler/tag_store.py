"""Tags and properties of a run the scheduler no longer holds in memory (it ended): read the
stored record, apply ``run_notes``' rules, write it back by compare-and-set (shell)."""

from __future__ import annotations

import nats
from nats.js.kv import KeyValue

from sortie.proto import codec, notes, subjects
from sortie.proto import messages as m
from sortie.scheduler.run_notes import tag_refusal, with_entries

TRIES = 5  # another writer between our read and write: read again


async def tag_stored(kv: KeyValue, req: notes.RunTagRequest) -> notes.RunTagReply:
    try:
        subjects.check_token("run id", req.run_id)
    except ValueError as exc:
        return m.ErrorReply(code="bad_request", message=str(exc))
    for _ in range(TRIES):
        try:
            entry = await kv.get(req.run_id)
            rec = codec.decode(m.RunRecord, entry.value or b"")
        except nats.js.errors.KeyNotFoundError:
            return m.ErrorReply(code="not_found", message=f"no run {req.run_id!r}")
        except codec.BadMessage as exc:
            return m.ErrorReply(code="internal", message=f"run {req.run_id}'s record: {exc}")
        why = tag_refusal(rec, req)
        if why is not None:
            return m.ErrorReply(code="bad_request", message=why)
        updated = with_entries(rec, req.tags, req.properties)
        if updated is rec:
            return notes.RunTagged(record=rec)
        try:
            await kv.update(req.run_id, codec.encode(updated), last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            continue
        return notes.RunTagged(record=updated)
    return m.ErrorReply(code="internal", message=f"run {req.run_id} kept changing; tag it again")
