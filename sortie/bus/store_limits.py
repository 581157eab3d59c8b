"""How big Sortie's JetStream store may grow, and what a full one looks like to its users.

The broker refuses writes rather than filling the disk: `sortie up` starts nats-server with
``jetstream { max_file_store }`` (:func:`derive_store_limit`: the store's size plus the free
disk space at start, less a reserve; or ``--store-limit``). Within that limit the bulk streams
(run logs, run metrics, blobs) get their own ``max_bytes`` with discard ``new``
(:func:`apply_store_limits`, :data:`SHARES`), so when they are full, run reports and the KV
buckets (small, and what lets a run end and a user see why) still have room:
``1 - sum(SHARES)`` of the limit.

A write the store refuses raises an ``APIError`` whose code :func:`is_store_full` knows;
:func:`store_uses` and :func:`full_message` say which part is full and how full, the same
words for the agent's log, the CLI and the SDK.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy

from sortie.bus.pause import retry_pause
from sortie.proto import subjects

MIB = 1024 * 1024
# what JetStream answers when it cannot store a message: account limits exceeded (10002),
# insufficient (storage) resources at the server's max_file_store (10023, 10047), and a
# store failure such as a stream at its max_bytes with discard new (10077)
STORE_FULL_CODES = frozenset({10002, 10023, 10047, 10077})
STREAM_FULL_CODE = 10077
BLOBS_STREAM = subjects.obj_stream(subjects.OBJ_BLOBS)  # the stream behind the blob store
# the bulk streams' shares of the store limit; the rest is for reports, KV and overhead
SHARES: dict[str, float] = {
    BLOBS_STREAM: 0.55,
    subjects.STREAM_LOGS: 0.25,
    subjects.STREAM_METRICS: 0.10,
}
WHAT: dict[str, str] = {
    BLOBS_STREAM: "blobs (snapshots and outputs)",
    subjects.STREAM_LOGS: "run logs",
    subjects.STREAM_METRICS: "run metrics",
}
MIN_STORE_LIMIT = 16 * MIB
SHARE_KEY = "sortie_store_share"  # stream metadata: its max_bytes is its share of the limit
FULL_MARGIN = 64 * 1024  # a stream with less room than this (or 2% of its limit) is full
ADVICE = "free space with `sortie gc` or raise `sortie up --store-limit`"
# how every full-store message begins: a scheduler refusing a submit sends it in an
# ErrorReply (code "internal", no new wire code), and the client knows it by this
FULL_PREFIX = "the Sortie store is full"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B?)\s*$", re.IGNORECASE)


STORE_FULL_TRIES = 5  # a write the full store refuses is tried this many times ...
STORE_FULL_WINDOW_S = 10.0  # ... within at most this long, then StoreFull


class StoreFull(RuntimeError):
    """The store refused a write because it is full; the message says how full."""


@dataclass
class FullBound:
    """Counts a write's refusals by a full store; :meth:`refused` says when to give up
    (``tries`` refusals, or ``window_s`` since the first): a full store stays full until
    someone frees space, so retrying longer only hangs the run."""

    tries: int = STORE_FULL_TRIES
    window_s: float = STORE_FULL_WINDOW_S
    count: int = 0
    since: float | None = None

    def refused(self, now: float) -> bool:
        self.count += 1
        if self.since is None:
            self.since = now
        return self.count >= self.tries or now - self.since >= self.window_s


async def blob_room(js: JetStreamContext) -> int | None:
    """Bytes the blob store may still take (None: it has no limit of its own)."""
    info = await js.stream_info(BLOBS_STREAM)
    limit = info.config.max_bytes or -1
    return None if limit <= 0 else limit - info.state.bytes


async def until_stored(
    js: JetStreamContext, write: Callable[[], Awaitable[object]], what: str, size: int
) -> None:
    """``write()`` one blob of ``size`` bytes, unless the blob store has no room for it;
    retried while it has none (or refuses the write as full) within :class:`FullBound`,
    then :class:`StoreFull` with a log line saying why. Other errors pass through.

    Room is checked first because a refused object leaves the chunks sent before the
    refusal behind (only the scheduler may purge), so a failed try costs space."""
    bound = FullBound()
    delay = 0.1
    while True:
        try:
            if not await _too_big(js, size):
                await write()
                return
        except (nats.errors.Error, TimeoutError) as exc:
            if not (is_store_full(exc) or await _too_big(js, size)):
                raise
        if bound.refused(time.monotonic()):
            message = await describe_full(js, blob=(what, size))
            structlog.get_logger().warning(
                "the store is full; giving up", what=what, tries=bound.count, why=message
            )
            raise StoreFull(message)
        await retry_pause(delay * (0.5 + random.random()))
        delay = min(delay * 2, 2.0)


async def _too_big(js: JetStreamContext, size: int) -> bool:
    room = await blob_room(js)
    return room is not None and room < room_needed(size)


def room_needed(size: int) -> int:
    """Room in the blob store that ``size`` bytes of blobs take: chunks carry subjects and
    headers, so a little more than ``size`` goes in."""
    return size + size // 64 + FULL_MARGIN


def parse_size(text: str) -> int:
    """``"300MB"``, ``"2G"``, ``"512MiB"``, ``"1048576"`` -> bytes (powers of 1024)."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a size: give a number of bytes with an optional unit "
            "(K, M, G, T; e.g. 300MB or 2G)"
        )
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** " KMGT".index(unit or " "))


def human(n: int) -> str:
    """Bytes for people: ``298 MB`` (powers of 1024, as ``--store-limit`` reads them)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                continue
    return total


def derive_store_limit(store_dir: Path) -> int:
    """The default limit: what the store holds now plus the free space on its disk, less a
    reserve (a tenth of the disk, 16 MiB to 10 GiB) left to the filesystem, logs and runs."""
    store_dir.mkdir(parents=True, exist_ok=True)
    disk = shutil.disk_usage(store_dir)
    reserve = min(max(disk.total // 10, 16 * MIB), 10 * 1024 * MIB)
    held = _tree_bytes(store_dir)
    if disk.free - reserve < MIN_STORE_LIMIT:
        structlog.get_logger("sortie.bus").warning(
            "little disk space left for the store: free space on its disk, or give --store-limit",
            store_dir=str(store_dir),
            free=human(disk.free),
            store=human(held),
        )
    return max(held + disk.free - reserve, MIN_STORE_LIMIT)


def budget(limit: int) -> dict[str, int]:
    """Each bulk stream's ``max_bytes`` under a store limit of ``limit`` bytes."""
    return {stream: int(limit * share) for stream, share in SHARES.items()}


async def apply_store_limits(
    js: JetStreamContext, limit: int, own_limits: dict[str, int] | None = None
) -> frozenset[str]:
    """Give each bulk stream its share of ``limit`` as ``max_bytes`` with discard ``new``
    (the broker refuses, nothing is dropped), marked as such in its metadata so a later
    start with another limit moves it. ``own_limits``: a stream's own size limit (retention,
    ``bus.retention``, applied after this); one no larger than the share is left to it (the
    oldest go first at it), a larger one gives way to the share. Never below what a stream
    holds: a smaller limit would truncate it. Returns the streams whose size the share
    governs (retention then sets only their age)."""
    own_limits = own_limits or {}
    governed: set[str] = set()
    for stream, share in budget(limit).items():
        own = own_limits.get(stream, 0)
        if 0 < own <= share:
            continue  # retention keeps the stream under its share
        governed.add(stream)
        info = await js.stream_info(stream)
        cfg = info.config
        max_bytes = max(share, info.state.bytes)
        if cfg.max_bytes == max_bytes and cfg.discard == DiscardPolicy.NEW:
            continue
        new = dataclasses.replace(
            cfg,
            max_bytes=max_bytes,
            discard=DiscardPolicy.NEW,
            metadata={**(cfg.metadata or {}), SHARE_KEY: str(share)},
        )
        try:
            await js.update_stream(new)
        except nats.js.errors.APIError as exc:  # the limits reserved exceed the store's
            structlog.get_logger("sortie.bus").warning(
                "stream keeps its size limit: the store limit is smaller than what the "
                "store holds; raise --store-limit",
                stream=stream,
                share=share,
                error=exc.description,
            )
    return frozenset(governed)


def is_store_full(exc: BaseException) -> bool:
    """Did JetStream refuse a write because the store (or a stream's share) is full?"""
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code in STORE_FULL_CODES


@dataclass(frozen=True)
class StreamUse:
    stream: str
    used: int
    limit: int  # max_bytes; -1: none

    @property
    def full(self) -> bool:
        return self.limit > 0 and self.limit - self.used < max(FULL_MARGIN, self.limit // 50)


async def store_uses(js: JetStreamContext) -> list[StreamUse]:
    """How much each bulk stream holds, and its limit."""
    infos = await asyncio.gather(*(js.stream_info(s) for s in SHARES))
    return [
        StreamUse(stream=s, used=i.state.bytes, limit=i.config.max_bytes or -1)
        for s, i in zip(SHARES, infos, strict=True)
    ]


def full_message(
    uses: list[StreamUse], *, blob: tuple[str, int] | None = None, stream_refused: bool = False
) -> str:
    """The one sentence a full store gets, naming what is full and how full; ``blob``:
    (name, size) of a blob the blob store has no room for; ``stream_refused``: a stream at
    its max_bytes refused a write (the fullest is named even with a little room left)."""
    blobs = next((u for u in uses if u.stream == BLOBS_STREAM and u.limit > 0), None)
    if blob is not None and blobs is not None and not blobs.full:
        return (
            f"the Sortie store has no room for {blob[0]} ({human(blob[1])}): "
            f"{WHAT[BLOBS_STREAM]} use {human(blobs.used)} of {human(blobs.limit)} "
            f"(JetStream max_bytes); {ADVICE}"
        )
    full = [u for u in uses if u.full]
    limited = [u for u in uses if u.limit > 0]
    if not full and stream_refused and limited:
        full = [max(limited, key=lambda u: u.used / u.limit)]
    if not full:
        total = sum(u.used for u in uses)
        return (
            f"{FULL_PREFIX}: {human(total)} used and the broker refuses more "
            f"(JetStream max_file_store); {ADVICE}"
        )
    parts = ", ".join(f"{WHAT[u.stream]} use {human(u.used)} of {human(u.limit)}" for u in full)
    return f"{FULL_PREFIX}: {parts} (JetStream max_bytes); {ADVICE}"


async def describe_full(
    js: JetStreamContext,
    *,
    blob: tuple[str, int] | None = None,
    refusal: BaseException | None = None,
) -> str:
    """:func:`full_message` for the store behind ``js``, after ``refusal`` (the error of the
    refused write, if any); a generic one if it cannot say."""
    stream_refused = (
        isinstance(refusal, nats.js.errors.APIError) and refusal.err_code == STREAM_FULL_CODE
    )
    try:
        return full_message(await store_uses(js), blob=blob, stream_refused=stream_refused)
    except (nats.errors.Error, TimeoutError, OSError):
        return f"{FULL_PREFIX} (the broker refuses writes); {ADVICE}"
