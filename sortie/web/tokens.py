"""The dashboard's token book: the tokens `sortie auth web-token` minted, kept in memory.

One watch of ``subjects.KV_WEB_TOKENS`` (its current entries, then every change) keeps a map
of token hash to ``WebToken``, so a lookup costs no broker round trip and a revoked token (its
entry deleted) or an expired one is refused from the next request on. When the watch ends
(the broker went away) the last map stays in force and a new watch replaces it as a whole
once it has read the bucket again, so a token revoked meanwhile is dropped then.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats.errors
import structlog
from nats.js.kv import KeyValue

from sortie.bus.pause import retry_pause
from sortie.client.client import Client
from sortie.proto import codec, subjects
from sortie.proto import web_tokens as wt
from sortie.web.access import Viewer

log = structlog.get_logger("sortie.web")

LOAD_WAIT_S = 10.0  # how long starting waits for the first read of the bucket
REWATCH_S = 1.0  # after the watch failed, watch again after this (doubling up to REWATCH_MAX_S)
REWATCH_MAX_S = 15.0
_DELETED = ("DEL", "PURGE")


class TokenBook:
    """The tokens `sortie auth web-token` minted, looked up by hash."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._tokens: dict[str, wt.WebToken] = {}
        self._loaded = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Watch the bucket; return once it was read (or after ``LOAD_WAIT_S``: until then
        every token is refused, and the watch keeps trying)."""
        self._task = asyncio.create_task(self._watch())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._loaded.wait(), LOAD_WAIT_S)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def lookup(self, token: str) -> Viewer | None:
        if not token.startswith(wt.PREFIX):
            return None
        key = wt.token_hash(token)
        record = self._tokens.get(key)
        if record is None or not wt.is_valid(record, time.time()):
            return None
        return Viewer(can_act=not record.read_only, session=key, label=record.label)

    async def _watch(self) -> None:
        delay = REWATCH_S
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker went away or has no bucket yet: watch again
                log.info("dashboard tokens watch ended, watching again", error=str(exc))
            await retry_pause(delay)
            delay = min(delay * 2, REWATCH_MAX_S)

    async def _follow(self) -> None:
        kv = await self.client.bus.js.key_value(subjects.KV_WEB_TOKENS)
        # an empty bucket sends no entry to say it was read; otherwise the last one pending
        # says so (its delta is 0: nats-py's own marker can come before the last value)
        fresh: dict[str, wt.WebToken] = {}
        if not (await kv.status()).values:
            self._swap(fresh)
        watcher = await kv.watchall()
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=60)  # type: ignore[no-untyped-call]  # nats-py leaves KeyWatcher unannotated
                except nats.errors.TimeoutError:
                    continue
                if entry is None:
                    continue
                _apply(fresh, entry)
                if entry.delta == 0 and fresh is not self._tokens:
                    self._swap(fresh)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves KeyWatcher unannotated

    def _swap(self, tokens: dict[str, wt.WebToken]) -> None:
        self._tokens = tokens
        self._loaded.set()


def _apply(tokens: dict[str, wt.WebToken], entry: KeyValue.Entry) -> None:
    if entry.operation in _DELETED or not entry.value:
        tokens.pop(entry.key, None)
        return
    try:
        tokens[entry.key] = codec.decode(wt.WebToken, entry.value)
    except codec.BadMessage:
        tokens.pop(entry.key, None)  # not one this version can read: it lets nobody in
