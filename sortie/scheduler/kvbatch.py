"""Atomic batches of compare-and-set writes to a KV bucket (shell: this module does I/O).

With ``sync_interval: always`` nats-server fsyncs every stored message, so writing run
records one compare-and-set at a time tops out at a few thousand a second however many are
in flight. nats-server 2.12 and later can commit an *atomic batch*: up to 1,000 messages,
each with its own expected last revision (``Nats-Expected-Last-Subject-Sequence``), stored
all together or not at all, in one pass (and one fsync). The scheduler writes each cycle's
changed runs that way when the bucket's stream allows it, and falls back to single writes
otherwise, or for a batch the server refused (a conflict anywhere refuses the whole batch;
the single writes then find which record changed).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence

from nats.js.kv import KeyValue

BATCH_MAX = 1000  # nats-server's limit on messages in one atomic batch


class BatchRefused(Exception):
    """The server stored none of the batch (``code`` is its ``err_code``, e.g. 10071 for a
    wrong last sequence)."""

    def __init__(self, code: int | None, description: str) -> None:
        super().__init__(description)
        self.code = code


async def enable_atomic(kv: KeyValue, timeout: float = 5.0) -> bool:  # noqa: ASYNC109
    """Allow atomic batches on the bucket's stream. False where the server cannot (older than
    2.12): then every write stays a single compare-and-set."""
    js = kv._js
    nc = js._nc
    api = js._prefix
    stream = kv._stream
    info = json.loads((await nc.request(f"{api}.STREAM.INFO.{stream}", b"", timeout=timeout)).data)
    config = info.get("config")
    if not isinstance(config, dict):
        return False
    if config.get("allow_atomic"):
        return True
    config["allow_atomic"] = True
    reply = await nc.request(
        f"{api}.STREAM.UPDATE.{stream}", json.dumps(config).encode(), timeout=timeout
    )
    updated = json.loads(reply.data).get("config")
    return isinstance(updated, dict) and bool(updated.get("allow_atomic"))


async def write_batch(
    kv: KeyValue,
    items: Sequence[tuple[str, bytes, int]],
    timeout: float = 10.0,  # noqa: ASYNC109
) -> list[int]:
    """Write every ``(key, value, last revision)`` (0: the key must not exist yet), all or
    none. Returns each key's new revision; raises ``BatchRefused`` if nothing was stored."""
    if not items or len(items) > BATCH_MAX:
        raise ValueError(f"an atomic batch holds 1 to {BATCH_MAX} writes, not {len(items)}")
    nc = kv._js._nc
    pre = kv._pre
    batch_id = secrets.token_hex(11)
    last = len(items)
    for n, (key, value, revision) in enumerate(items, 1):
        headers = {
            "Nats-Batch-Id": batch_id,
            "Nats-Batch-Sequence": str(n),
            "Nats-Expected-Last-Subject-Sequence": str(revision),
        }
        if n < last:
            await nc.publish(pre + key, value, headers=headers)
            continue
        headers["Nats-Batch-Commit"] = "1"
        reply = await nc.request(pre + key, value, headers=headers, timeout=timeout)
    ack = json.loads(reply.data)
    error = ack.get("error")
    if error is not None:
        raise BatchRefused(error.get("err_code"), str(error.get("description", error)))
    # the batch is stored contiguously: the commit's sequence is the last message's
    first = int(ack["seq"]) - last + 1
    return [first + i for i in range(last)]
