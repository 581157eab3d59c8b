"""Reading a whole KV bucket."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import KV_PRE_TEMPLATE
from nats.js.kv import KV_OP, KeyValue

from sortie.proto.subjects import reserved_key

# An ephemeral consumer outlives its reader by this long on the server (nats-py's watchers
# keep theirs 5 minutes; a client that reads the store every second would pile them up).
CONSUMER_IDLE_S = 5.0
REMOVED = ("DEL", "PURGE")  # a deletion's KeyValue.Entry.operation
# one change of a KV key read from the bucket's stream: the key, its stream sequence, and its
# value (None: the key was deleted or purged)
KvChange = tuple[str, int, bytes | None]
FETCH_BATCH = 1000  # messages asked for at once
# a reader's pull consumer is deleted when it is done; this long after its last fetch if the
# reader died (or its process was too busy to ask for the next batch)
READER_IDLE_S = 60.0


def kv_change(msg: Msg, prefix: str) -> KvChange | None:
    """A message of a KV bucket's stream (``prefix``: its subjects' prefix, KV_PRE_TEMPLATE)
    as the change it stores, or None for Sortie's own keys (``subjects.reserved_key``)."""
    key = msg.subject[len(prefix) :]
    if reserved_key(key):
        return None
    removed = (msg.headers or {}).get(KV_OP) in REMOVED
    return key, msg.metadata.sequence.stream, None if removed else msg.data


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
    in ``REMOVED``. Sortie's own keys are left out."""
    if not (await kv.status()).values:
        return
    # nats-py 2.16 keeps the bucket's JetStream context and name private; the stream and
    # subjects are JetStream's documented KV layout
    js: JetStreamContext = kv._js
    bucket: str = kv._name
    pre = KV_PRE_TEMPLATE.format(bucket=bucket)
    config = ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
    async for msg in read_all(js, f"KV_{bucket}", f"{pre}>", config, timeout=timeout):
        key = msg.subject[len(pre) :]
        if not reserved_key(key):
            meta = msg.metadata
            yield KeyValue.Entry(
                bucket=bucket,
                key=key,
                value=msg.data,
                revision=meta.sequence.stream,
                delta=meta.num_pending,
                created=None,  # unused; nats-py types it int, sets a datetime
                operation=(msg.headers or {}).get(KV_OP),
            )


async def read_all(
    js: JetStreamContext,
    stream: str,
    subject: str,
    config: ConsumerConfig,
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 - the wait for each next batch
) -> AsyncIterator[Msg]:
    """Every message of ``stream`` on ``subject`` that ``config`` (its deliver policy, start
    sequence) selects, up to the last one pending when the read began.

    Read by an ephemeral pull consumer in batches of ``FETCH_BATCH``, acknowledged by none:
    nats-py's ordered push consumers (watchers, object gets) go through flow control and
    deliver some 20 times fewer messages a second, and a watcher over a million keys stopped
    early (its pending count reached 0 at 178,302).
    """
    sub = await js.pull_subscribe(
        subject,
        stream=stream,
        config=dataclasses.replace(
            config,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=READER_IDLE_S,
            mem_storage=True,
        ),
    )
    try:
        if (await sub.consumer_info()).num_pending == 0:
            return
        while True:
            for msg in await sub.fetch(batch=FETCH_BATCH, timeout=timeout):
                yield msg
                if msg.metadata.num_pending == 0:
                    return
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
