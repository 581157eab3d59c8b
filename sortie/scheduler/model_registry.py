"""The model registry, carried out (shell): the scheduler's side of ``sortie.api.models``.

It reads what :func:`scheduler.model_versions.plan_register` decides from (the run, the name's
stored versions, which uploaded blobs are missing) and writes the new version with a create
that expects no value under its key. A create that finds the key taken (another scheduler
registered that version first) reads the versions again, up to ``ATTEMPTS`` times.
Records are only ever created here: the scheduler is the one writer of the models bucket.
"""

from __future__ import annotations

import time

import nats.js.errors
from nats.js.kv import KeyValue

from sortie.bus.blobs import missing_blobs
from sortie.bus.connection import Bus
from sortie.bus.kv import kv_items
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.scheduler.fence import FencedBucket
from sortie.scheduler.model_versions import plan_register, version_of

ATTEMPTS = 5  # creates that may find their version taken before the request is refused


async def _run(bus: Bus, run_id: str) -> m.RunRecord | None:
    try:
        subjects.check_token("run id", run_id)
        entry = await bus.runs.get(run_id)
    except (ValueError, nats.js.errors.KeyNotFoundError):
        return None
    return codec.decode(m.RunRecord, entry.value or b"")


async def stored_versions(kv: KeyValue, name: str) -> list[int]:
    """The versions of ``name`` in the models bucket."""
    found = (version_of(e.key, name) for e in await kv_items(kv))
    return [v for v in found if v is not None]


async def register_model(
    bus: Bus, models: FencedBucket, request: m.ModelRegister
) -> m.ModelReplyOrError:
    """Store the next version ``request`` registers in ``models`` (the leader's, fenced); the
    reply says which, or why not."""
    run = await _run(bus, request.run_id) if request.run_id is not None else None
    missing = await missing_blobs(bus.blobs, [f.sha256 for f in request.files])
    for _ in range(ATTEMPTS):
        versions = await stored_versions(models.kv, request.name)
        decided = plan_register(request, run, versions, missing, time.time())
        if isinstance(decided, m.ErrorReply):
            return decided
        try:
            key = subjects.model_key(decided.name, decided.version)
            await models.create(key, codec.encode(decided))
        except nats.js.errors.KeyWrongLastSequenceError:
            continue  # that version was just taken: read the versions again
        return m.ModelRegistered(model=decided)
    return m.ErrorReply(
        code="conflict",
        message=f"model {request.name!r}: {ATTEMPTS} versions were taken while registering; "
        "try again",
    )
