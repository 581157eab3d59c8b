"""Reading a whole KV bucket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import nats.errors
from nats.js.kv import KeyValue

from sortie.proto.subjects import reserved_key

# An ephemeral consumer outlives its reader by this long on the server (nats-py's watchers
# keep theirs 5 minutes; a client that reads the store every second would pile them up).
CONSUMER_IDLE_S = 5.0
REMOVED = ("DEL", "PURGE")  # a deletion's KeyValue.Entry.operation


# ASYNC109: ``timeout`` is nats-py's wait for each next entry, not a deadline for the whole call.
async def kv_items(kv: KeyValue, *, timeout: float = 30.0) -> list[KeyValue.Entry]:  # noqa: ASYNC109
    """The current value of every key in a bucket, in one ordered pass (no per-key requests).

    A nats-py watcher over the whole bucket, read until the entry the server says is the last
    one pending (its ``delta`` is the consumer's ``num_pending``). The watcher's own "initial
    values done" marker (``None``) is skipped: it can arrive before the last value (it
    compares a consumer count with messages still in flight), which would drop keys. Sortie's
    own keys (``subjects.reserved_key``: the leader's fence) are left out.
    """
    found: dict[str, KeyValue.Entry] = {}
    async for entry in kv_entries(kv, timeout=timeout):
        if entry.operation in REMOVED:
            found.pop(entry.key, None)
        else:
            found[entry.key] = entry
    return list(found.values())


async def kv_entries(
    kv: KeyValue,
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 - nats-py's wait for each next entry
) -> AsyncIterator[KeyValue.Entry]:
    """Every key's current entry in a bucket, one at a time as the server sends them (for a
    bucket too big to hold at once; :func:`kv_items` holds them), up to the last one pending
    when the read began; a key written meanwhile may come again, and a deletion comes as an
    entry whose ``operation`` is in ``REMOVED``. Sortie's own keys are left out."""
    if not (await kv.status()).values:
        return
    watcher = await kv.watchall(inactive_threshold=CONSUMER_IDLE_S)
    try:
        while True:
            update = watcher.updates(timeout=timeout)  # type: ignore[no-untyped-call]  # unannotated in nats-py 2.16
            entry: KeyValue.Entry | None = await update
            if entry is None:
                continue
            if not reserved_key(entry.key):
                yield entry
            if entry.delta == 0:
                break
    finally:
        with contextlib.suppress(nats.errors.Error):
            await watcher.stop()  # type: ignore[no-untyped-call]  # unannotated in nats-py 2.16
