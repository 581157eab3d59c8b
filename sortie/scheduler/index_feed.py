"""The run index kept current from the runs stream (shell: I/O only).

From the stream sequence after the last one the index's file holds (``RunIndex.applied``),
every run record as stored, in order, for as long as the scheduler runs: a standby's index is
current when it takes over, and a restart reads only what was stored since its last commit.
A fresh data directory (or a file that is a copy of another stream: the broker's store was
replaced) reads the whole stream once, beside the loop, into the file: memory does not grow
with history. While the scheduler is busy placing (``busy``), that catch-up takes at most
``CATCH_UP_SHARE`` of the time; lists wait for it ("still reading the run history").

Read by a pull consumer of its own (no acknowledgements, in memory, gone a minute after this
stops asking), in batches of ``FETCH_BATCH``, each applied in slices of ``SLICE_S`` between
which the event loop runs, then committed (that makes it visible to queries).

A leader does not read its own writes back: once its fence is raised in the runs bucket
(``lead_from``: no other scheduler's write is stored after it), the feed reads the stream up
to the fence, then applies the records the leader hands it as it stores them (``own``). Reading
back a million placements cost the leader a fifth of its time (decoding, headers, fetches).
If the file cannot be written meanwhile, it goes back to reading the stream from its last
commit, as a standby does.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import KV_PRE_TEMPLATE

from sortie.bus.kv import FETCH_BATCH, READER_IDLE_S, kv_change
from sortie.bus.pause import TRANSIENT, retry_pause
from sortie.bus.resources import kv_stream
from sortie.bus.tasks import stop_task
from sortie.proto import codec, subjects
from sortie.proto.run_index import IndexedRun
from sortie.scheduler.run_index import SCHEMA_VERSION, Record, RunIndex

log = structlog.get_logger("sortie.scheduler")

FILE_NAME = "run-index.sqlite3"
WAIT_S = 1.0  # the longest one fetch waits for a new record
DISK_RETRY_S = 10.0  # after the file could not be written
SLICE_S = 0.05  # applying runs this long between two turns of the event loop
# reading the history while the scheduler is busy placing: at most this share of the time
# (placement first; the index catches up in the gaps, and at full speed once it is idle)
CATCH_UP_SHARE = 0.1
STREAM = kv_stream(subjects.KV_RUNS)
PREFIX = KV_PRE_TEMPLATE.format(bucket=subjects.KV_RUNS)


def index_path(data_dir: Path | None) -> Path | None:
    """Where a scheduler keeps its run index (None: no data directory, kept in memory)."""
    return None if data_dir is None else data_dir / FILE_NAME


def open_index(data_dir: Path | None) -> RunIndex:
    """The scheduler's run index; a file SQLite cannot read is replaced by a new one (it is
    only a copy: the feed reads the runs again)."""
    path = index_path(data_dir)
    try:
        return RunIndex(path)
    except sqlite3.DatabaseError as exc:
        assert path is not None  # an index in memory cannot be damaged
        log.warning("run index file unreadable; starting a new one", file=str(path), error=str(exc))
        for old in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            old.unlink(missing_ok=True)
        return RunIndex(path)


class IndexFeed:
    """Keeps ``index`` current from the runs stream while it runs; ``caught_up`` is set once
    it holds every record stored before it started."""

    def __init__(self, js: JetStreamContext, index: RunIndex) -> None:
        self.js = js
        self.index = index
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._may_read = asyncio.Event()  # cleared while a start loads (:meth:`paused`)
        self._may_read.set()
        self._committed = asyncio.Event()  # set (then cleared) at each commit
        # leading: the stream sequence of its fence; later records come through ``own``
        self._lead_seq: int | None = None
        # handed in, not yet applied: each run's newest only (while the feed still reads up
        # to its fence, a run placed and ended meanwhile kept every record it had alive)
        self._own: dict[str, tuple[Record, int]] = {}
        self._own_ready = asyncio.Event()
        # whether the scheduler is busy placing (set by the daemon; a standby never is)
        self.busy: Callable[[], bool] = lambda: False

    def lead_from(self, seq: int) -> None:
        """This scheduler leads, its fence stored at stream sequence ``seq``: every run record
        stored after it is one it stores and hands to :meth:`own`."""
        self._lead_seq = seq

    def own(self, records: Iterable[tuple[Record, int]]) -> None:
        """Records this leader stored, with their stream sequences (ignored while the feed
        reads every record from the stream)."""
        if self._lead_seq is not None:
            own = self._own
            for rec, seq in records:
                held = own.get(rec.run_id)
                if held is None or held[1] < seq:
                    own[rec.run_id] = (rec, seq)
            self._own_ready.set()

    async def applied_to(self, seq: int, timeout_s: float) -> bool:
        """Wait until the index holds every record up to stream sequence ``seq`` (what
        this scheduler just stored); False if it did not within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.index.applied < seq:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._committed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._committed.wait(), left)
        return True

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No reading meanwhile: a start's load comes first (the two reading at once made a
        first start over a million records take 94 s to its first placement, not 62)."""
        self._may_read.clear()
        try:
            yield
        finally:
            self._may_read.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="run-index-feed")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None
        self.index.commit()

    async def close(self) -> None:
        await self.stop()
        self.index.close()

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()  # returns once a leader's feed reached its fence
                await self._apply_own()
            except (*TRANSIENT, nats.js.errors.NotFoundError) as exc:
                log.warning("run index feed interrupted; resuming", error=repr(exc))
                await retry_pause(1.0)
            except sqlite3.Error as exc:  # its disk is full, say: read again from the file's place
                log.error(
                    "run index not written; retrying", file=str(self.index.path), error=str(exc)
                )
                self.index.rollback()
                # what was handed in since the last commit is lost: read the stream instead
                self._lead_seq = None
                self._own = {}
                await retry_pause(DISK_RETRY_S)

    def _leading_reached(self) -> bool:
        return self._lead_seq is not None and self.index.applied >= self._lead_seq

    async def _check(self) -> int:
        """The stream's last sequence now; the file is emptied first if it is a copy of
        another stream, or ahead of this one."""
        info = await self.js.stream_info(STREAM)
        stream_id = info.created.isoformat() if info.created is not None else ""
        last = info.state.last_seq
        held = self.index.meta("stream")
        layout = self.index.meta("schema")
        if held != stream_id or layout != SCHEMA_VERSION or self.index.applied > last:
            if held is not None:
                log.warning(
                    "run index file is not a copy of this store's runs; reading them again",
                    file=str(self.index.path),
                )
            self.caught_up.clear()  # read again before any list is answered from it
            self.index.clear()
            self.index.set_meta("stream", stream_id)
            self.index.commit()
        return last

    async def _follow(self) -> None:
        end = await self._check()
        start = self.index.applied + 1
        t0, applied0 = time.monotonic(), self.index.applied

        def caught_up() -> None:
            if not self.caught_up.is_set():
                self.caught_up.set()
                log.info(
                    "run index caught up",
                    sequences=self.index.applied - applied0,
                    seconds=round(time.monotonic() - t0, 2),
                )

        if self.index.applied >= end:
            caught_up()
        if self._leading_reached():
            caught_up()
            return
        sub = await self.js.pull_subscribe(
            f"{PREFIX}>",
            stream=STREAM,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=READER_IDLE_S,
                mem_storage=True,
            ),
        )
        try:
            while True:
                await self._may_read.wait()
                began = time.monotonic()
                try:
                    msgs = await sub.fetch(batch=FETCH_BATCH, timeout=WAIT_S)
                except TimeoutError:  # nats-py's, or asyncio's from a fetch that found none
                    msgs = []
                    await sub.consumer_info()  # raises NotFoundError if the broker lost it
                await self._apply(msgs)
                if not msgs or self.index.applied >= end or msgs[-1].metadata.num_pending == 0:
                    caught_up()
                if self._leading_reached():
                    caught_up()
                    return
                if not self.caught_up.is_set() and self.busy():
                    spent = time.monotonic() - began
                    await asyncio.sleep(spent * (1 - CATCH_UP_SHARE) / CATCH_UP_SHARE)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _apply_own(self) -> None:
        """A leader's own records, as it hands them in, each batch committed. Records arrive
        in the order their writes were answered, not always by sequence: only a run's newest
        is kept, whatever the order."""
        while True:
            await self._own_ready.wait()
            self._own_ready.clear()
            records, self._own = list(self._own.values()), {}
            turn = time.monotonic()
            for rec, seq in records:
                self.index.update(rec, seq)
                if time.monotonic() - turn >= SLICE_S:
                    await asyncio.sleep(0)
                    turn = time.monotonic()
            if records:
                self.index.reached(max(self.index.applied, *(seq for _, seq in records)))
                self.index.commit()
                self._committed.set()

    async def _apply(self, msgs: list[Msg]) -> None:
        turn = time.monotonic()
        for msg in msgs:
            change = kv_change(msg, PREFIX)
            if change is not None:
                key, seq, data = change
                if data is None:
                    self.index.remove(key, seq)
                else:
                    with contextlib.suppress(codec.BadMessage):  # the start said so
                        self.index.update(codec.decode(IndexedRun, data), seq)
            if time.monotonic() - turn >= SLICE_S:
                await asyncio.sleep(0)
                turn = time.monotonic()
        if msgs:
            self.index.reached(msgs[-1].metadata.sequence.stream)
            self.index.commit()
            self._committed.set()
