"""Atomic batches of compare-and-set writes to a KV bucket (shell: this module does I/O).

With ``sync_interval: always`` nats-server fsyncs every stored message, so writing run
records one compare-and-set at a time tops out at a few thousand a second however many are
in flight. nats-server 2.12 and later can commit an *atomic batch*: up to 1,000 messages,
each with its own expected last revision (``Nats-Expected-Last-Subject-Sequence``), stored
all together or not at all, in one pass (and one fsync). The scheduler writes each cycle's
changed runs that way when the bucket's stream allows it, and falls back to single writes
otherwise, or for a batch the server refused (a conflict anywhere refuses the whole batch;
the single writes then find which record changed).

Only nats-py's public API is used: the connection and JetStream context the caller already
holds, the bucket's name, and JetStream's documented subjects and headers.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.client import KV_PRE_TEMPLATE

from sortie.bus.resources import kv_stream

BATCH_MAX = 1000  # nats-server's limit on messages in one atomic batch


class BatchRefused(Exception):
    """The server stored none of the batch (``code`` is its ``err_code``, e.g. 10071 for a
    wrong last sequence; ``error`` the server's whole answer, as nats-py's
    ``APIError.from_error`` reads it)."""

    def __init__(self, code: int | None, description: str, error: dict[str, Any]) -> None:
        super().__init__(description)
        self.code = code
        self.error = error


async def enable_atomic(js: JetStreamContext, bucket: str) -> bool:
    """Allow atomic batches on the bucket's stream. False where the server cannot (older than
    2.12): then every write stays a single compare-and-set."""
    info = await js.stream_info(kv_stream(bucket))
    config = info.config
    # a nats-py older than 2.12's stream fields (pyproject allows them) drops the flag from
    # both the server's answer and the update: it cannot ask for atomic batches
    if not hasattr(config, "allow_atomic"):
        return False
    if config.allow_atomic:
        return True
    updated = await js.update_stream(config, allow_atomic=True)
    return bool(updated.config.allow_atomic)


async def write_batch(
    nc: NATS,
    bucket: str,
    items: Sequence[tuple[str, bytes, int | None]],
    timeout: float = 10.0,  # noqa: ASYNC109 - the wait for the commit's acknowledgement
    *,
    lead: tuple[str, bytes, dict[str, str]] | None = None,
) -> list[int]:
    """Write every ``(key, value, last revision)`` (0: the key must not exist yet; None:
    whatever it holds), all or none. Returns each key's new revision; raises
    ``BatchRefused`` if nothing was stored.

    ``lead``: one more ``(key, value, headers)`` written first in the same batch, with its
    own expectations in ``headers`` (fence.py's probe: the batch stands only while the
    leader's fence does).

    Written against nats-py 2.16.0, which has the batch headers (``nats.js.api.Header``) but
    no call that publishes a batch: the messages go out on the core connection to the keys'
    subjects, and only the commit waits for JetStream's acknowledgement (ADR-50).
    """
    if not items or len(items) + (lead is not None) > BATCH_MAX:
        raise ValueError(f"an atomic batch holds 1 to {BATCH_MAX} writes, not {len(items)}")
    pre = KV_PRE_TEMPLATE.format(bucket=bucket)
    batch_id = secrets.token_hex(11)
    messages = [
        (
            key,
            value,
            {}
            if revision is None
            else {Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(revision)},
        )
        for key, value, revision in items
    ]
    if lead is not None:
        messages.insert(0, lead)
    last = len(messages)
    for n, (key, value, expects) in enumerate(messages, 1):
        headers = {
            **expects,
            Header.BATCH_ID.value: batch_id,
            Header.BATCH_SEQUENCE.value: str(n),
        }
        if n < last:
            await nc.publish(pre + key, value, headers=headers)
            continue
        headers[Header.BATCH_COMMIT.value] = "1"
        reply = await nc.request(pre + key, value, headers=headers, timeout=timeout)
    ack = json.loads(reply.data)
    error = ack.get("error")
    if error is not None:
        raise BatchRefused(error.get("err_code"), str(error.get("description", error)), error)
    # the batch is stored contiguously: the commit's sequence is the last message's
    first = int(ack["seq"]) - len(items) + 1
    return [first + i for i in range(len(items))]
