"""Reading a whole KV bucket."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import KV_PRE_TEMPLATE
from nats.js.kv import KV_OP, KeyValue

from sortie.proto.subjects import reserved_key

# An ephemeral consumer outlives its reader by this long on the server (nats-py's watchers
# keep theirs 5 minutes; a client that reads the store every second would pile them up).
CONSUMER_IDLE_S = 5.0
REMOVED = ("DEL", "PURGE")  # a deletion's KeyValue.Entry.operation
FETCH_BATCH = 1000  # entries asked for at once


# ASYNC109: ``timeout`` is nats-py's wait for each next entry, not a deadline for the whole call.
async def kv_items(kv: KeyValue, *, timeout: float = 30.0) -> list[KeyValue.Entry]:  # noqa: ASYNC109
    """The current value of every key in a bucket, in one ordered pass (no per-key requests),
    read until the entry the server says is the last one pending (:func:`kv_entries`).
    Sortie's own keys (``subjects.reserved_key``: the leader's fence) are left out."""
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
    timeout: float = 30.0,  # noqa: ASYNC109 - the wait for each next batch
) -> AsyncIterator[KeyValue.Entry]:
    """Every key's current entry in a bucket, one at a time (for a bucket too big to hold at
    once; :func:`kv_items` holds them), up to the last one pending when the read began; a key
    written meanwhile may come again, and a deletion comes as an entry whose ``operation`` is
    in ``REMOVED``. Sortie's own keys are left out.

    Read by an ephemeral pull consumer in batches of ``FETCH_BATCH``: nats-py's watchers push
    through flow control and deliver some 20 times fewer entries a second.
    """
    if not (await kv.status()).values:
        return
    # nats-py 2.16 keeps the bucket's JetStream context and name private; the stream and
    # subjects are JetStream's documented KV layout
    js: JetStreamContext = kv._js
    bucket: str = kv._name
    pre = KV_PRE_TEMPLATE.format(bucket=bucket)
    sub = await js.pull_subscribe(
        f"{pre}>",
        stream=f"KV_{bucket}",
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=CONSUMER_IDLE_S,
            mem_storage=True,
        ),
    )
    try:
        while True:
            for msg in await sub.fetch(batch=FETCH_BATCH, timeout=timeout):
                meta = msg.metadata
                key = msg.subject[len(pre) :]
                if not reserved_key(key):
                    yield KeyValue.Entry(
                        bucket=bucket,
                        key=key,
                        value=msg.data,
                        revision=meta.sequence.stream,
                        delta=meta.num_pending,
                        created=None,  # unused; nats-py types it int, sets a datetime
                        operation=(msg.headers or {}).get(KV_OP),
                    )
                if meta.num_pending == 0:
                    return
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
