"""Reading a whole KV bucket."""

from __future__ import annotations

import contextlib

import nats
import nats.errors
import nats.js.errors
from nats.js.api import (
    DeliverPolicy,
)
from nats.js.kv import KeyValue


# ASYNC109: ``timeout`` is nats-py's wait for each next entry, not a deadline for the whole call.
async def kv_items(kv: KeyValue, *, timeout: float = 30.0) -> list[KeyValue.Entry]:  # noqa: ASYNC109
    """The current value of every key in a bucket, in one ordered pass (no per-key requests).

    Not nats-py's ``watchall``: its "initial values done" marker can arrive before the last
    value (it compares a consumer count with messages still in flight), which would silently
    drop keys. Here the end is the consumer's own ``num_pending == 0`` on a delivered message.
    """
    bucket = kv._name
    stream = f"KV_{bucket}"
    prefix = f"$KV.{bucket}."
    info = await kv._js.stream_info(stream)
    if not info.state.messages:
        return []
    sub = await kv._js.subscribe(
        f"{prefix}>",
        stream=stream,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
    )
    found: dict[str, KeyValue.Entry] = {}
    try:
        while True:
            msg = await sub.next_msg(timeout=timeout)
            key = msg.subject[len(prefix) :]
            op = (msg.headers or {}).get("KV-Operation")
            meta = msg.metadata
            if op in ("DEL", "PURGE"):
                found.pop(key, None)
            else:
                found[key] = KeyValue.Entry(
                    bucket=bucket,
                    key=key,
                    value=msg.data,
                    revision=meta.sequence.stream,
                    delta=meta.num_pending,
                    created=None,
                    operation=None,
                )
            if meta.num_pending == 0:
                break
    finally:
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
    return list(found.values())
