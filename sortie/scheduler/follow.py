"""What a scheduler reads its state from: the buckets the leader writes, followed from its
start (shell).

A standby follows them while it waits (one nats-py watcher per bucket: every key's current
value, then every write as it is stored), so taking over does not mean reading the store
again: the new leader raises its fence (fence.py), waits until each watcher has delivered the
bucket's last stored message (:meth:`Follower.caught_up`, bounded), and loads from what it
holds (``Daemon.load(read=follower.read)``). A leader that never stood by reads the same way:
its watchers catch up at once.

A bucket a watcher has not caught up on within the bound is read whole instead
(``bus.kv.kv_items``). Sortie's own keys (the fence) are not records: left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from sortie.bus.kv import REMOVED, kv_items
from sortie.bus.pause import TRANSIENT, retry_pause
from sortie.bus.resources import kv_stream
from sortie.bus.tasks import stop_task
from sortie.proto import subjects

log = structlog.get_logger("sortie.scheduler")

CATCH_UP_S = 10.0  # the longest a new leader waits for a watcher before reading whole


class Follower:
    """The current entries of ``buckets``, kept by watchers from :meth:`start`."""

    def __init__(self, js: JetStreamContext, buckets: Sequence[str]) -> None:
        self.js = js
        self.entries: dict[str, dict[str, KeyValue.Entry]] = {b: {} for b in buckets}
        self.seen: dict[str, int] = dict.fromkeys(buckets, 0)  # last stream sequence delivered
        self._advanced = asyncio.Event()  # set at each entry delivered
        self._watchers: list[KeyValue.KeyWatcher] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start a watcher on each bucket; a broker that does not answer (away, or its
        cluster electing a meta leader) is asked again until it does."""
        for bucket in self.entries:
            while True:
                try:
                    kv = await self.js.key_value(bucket)
                    watcher = await kv.watchall()
                    break
                except TRANSIENT as exc:
                    log.warning("bucket not followed yet; retrying", bucket=bucket, error=repr(exc))
                    await retry_pause(1.0)
            self._watchers.append(watcher)
            self._tasks.append(asyncio.create_task(self._follow(bucket, watcher)))

    async def _follow(self, bucket: str, watcher: KeyValue.KeyWatcher) -> None:
        entries = self.entries[bucket]
        while True:
            try:
                entry: KeyValue.Entry | None = await watcher.updates(timeout=60)  # type: ignore[no-untyped-call]  # unannotated in nats-py 2.16
            except nats.errors.TimeoutError:
                continue
            if entry is None:  # the end of the initial values
                continue
            self.seen[bucket] = max(self.seen[bucket], entry.revision or 0)
            self._advanced.set()
            if subjects.reserved_key(entry.key):
                continue
            if entry.operation in REMOVED:
                entries.pop(entry.key, None)
            else:
                entries[entry.key] = entry

    async def caught_up(self, timeout_s: float = CATCH_UP_S) -> list[str]:
        """Wait until each watcher has delivered its bucket's last stored message (as it is
        now: call it once this scheduler's fence stands, so nothing older is still to come).
        Returns the buckets that did not catch up in time (read whole by :meth:`read`)."""
        deadline = time.monotonic() + timeout_s
        late = []
        for bucket in self.entries:
            info = await self.js.stream_info(kv_stream(bucket))
            last = info.state.last_seq
            while self.seen[bucket] < last:
                self._advanced.clear()
                left = deadline - time.monotonic()
                if self.seen[bucket] >= last or left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._advanced.wait(), left)
            if self.seen[bucket] < last:
                late.append(bucket)
        if late:
            log.warning("buckets not followed up to their end; reading them whole", buckets=late)
            for bucket in late:
                self.entries.pop(bucket)
        return late

    async def read(self, bucket: str, kv: KeyValue) -> list[KeyValue.Entry]:
        """The bucket's current entries: as followed, or read whole if it was not."""
        if bucket in self.entries:
            return list(self.entries[bucket].values())
        return await kv_items(kv)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await stop_task(task)
        for watcher in self._watchers:
            with contextlib.suppress(nats.errors.Error):
                await watcher.stop()  # type: ignore[no-untyped-call]  # unannotated in nats-py 2.16
        self._tasks.clear()
        self._watchers.clear()
