"""The leader's snapshots of the runs it holds, and reading them back (shell: I/O only).

A start reads the latest snapshot (``proto/run_snapshot.py``) and then only the ``KV_RUNS``
messages stored after it (:func:`records_after`), so it costs the runs in flight plus what
was written since the snapshot, never the whole history. The leader stores a new one every
``SNAPSHOT_EVERY_WRITES`` record writes or ``SNAPSHOT_EVERY_S`` seconds that saw a write,
both stretched with the snapshot's size (:func:`due`: a million runs in flight are not
written out every 20,000 placements; ``Daemon._maybe_snapshot``): the object first, under a
name of its own, then the pointer
(a fenced write: a deposed leader's pointer is refused and its object is removed), then the
previous object is deleted. A snapshot or pointer that cannot be read is logged and the start
reads every record instead, as before snapshots existed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
import zlib
from collections.abc import Iterable, Iterator

import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import KV_PRE_TEMPLATE
from nats.js.kv import KeyValue

from sortie.bus.kv import KvChange, kv_change, read_all
from sortie.bus.resources import kv_stream, obj_stream
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.run_snapshot import (
    LAYOUT,
    RunsSnapshot,
    RunsSnapshotHead,
    RunsSnapshotRef,
    SnapshotRun,
)
from sortie.scheduler.compact import Compactor
from sortie.scheduler.fence import FencedBucket

log = structlog.get_logger("sortie.scheduler")

SNAPSHOT_EVERY_WRITES = 20_000  # record writes between two snapshots, at most
SNAPSHOT_EVERY_S = 30.0  # and seconds, when anything was written meanwhile
SNAPSHOT_TIME_SHARE = 0.1  # at most this share of the time goes to storing snapshots
TAIL_WAIT_S = 10.0  # the longest wait for the next message of the records after a snapshot

# a record stored after the snapshot: its key, stream sequence and value (None: deleted)
Written = KvChange


def object_name(snapshot: RunsSnapshot) -> str:
    return f"runs-{snapshot.epoch}-{snapshot.seq}"


async def store(
    js: JetStreamContext, runs: FencedBucket, snapshot: RunsSnapshot, previous: str | None
) -> RunsSnapshotRef:
    """Store ``snapshot`` and point at it; the object ``previous`` named is deleted once the
    pointer moved. Raises ``lease.Deposed`` (from the pointer's fenced write) when another
    scheduler leads: this one's object is removed then."""
    data = await asyncio.to_thread(pack, snapshot)
    name = object_name(snapshot)
    obs = await js.object_store(subjects.OBJ_STATE)
    await obs.put(name, data)
    ref = RunsSnapshotRef(
        name=name,
        seq=snapshot.seq,
        epoch=snapshot.epoch,
        taken_at=snapshot.taken_at,
        runs=len(snapshot.runs),
        size=len(data),
        layout=LAYOUT,
    )
    try:
        await runs.put(subjects.RUNS_SNAPSHOT_KEY, codec.encode(ref))
    except BaseException:
        await _delete(obs, name)
        raise
    if previous is not None and previous != name:
        await _delete(obs, previous)
    return ref


SLICE = 2000  # runs encoded, or bytes decompressed (x 1 KiB), at a time


def pack(snapshot: RunsSnapshot) -> bytes:
    """The snapshot as stored (``LAYOUT``): JSON lines, compressed (zlib, fast setting: runs
    repeat much), a slice at a time: a million runs never make one document in memory."""
    z = zlib.compressobj(1)
    head = RunsSnapshotHead(
        seq=snapshot.seq, epoch=snapshot.epoch, taken_at=snapshot.taken_at, runs=len(snapshot.runs)
    )
    parts = [z.compress(codec.encode(head) + b"\n")]
    pairs = list(zip(snapshot.revisions, snapshot.runs, strict=True))
    for i in range(0, len(pairs), SLICE):
        lines = [SnapshotRun(revision=rev, record=rec) for rev, rec in pairs[i : i + SLICE]]
        parts.append(z.compress(_LINES.encode_lines(lines)))
    parts.append(z.flush())
    return b"".join(parts)


_LINES = msgspec.json.Encoder()


async def sweep(js: JetStreamContext, runs: KeyValue, epoch: int) -> list[str]:
    """Delete the snapshot objects of earlier leaders that the pointer does not name (a
    leader that died between storing its object and moving the pointer left one behind).
    This leader's own objects are its own to delete. Returns the names deleted."""
    try:
        entry = await runs.get(subjects.RUNS_SNAPSHOT_KEY)
        named: str | None = codec.decode(RunsSnapshotRef, entry.value or b"").name
    except nats.js.errors.KeyNotFoundError:
        named = None
    except codec.BadMessage:
        return []  # unsure what is in use: keep everything
    obs = await js.object_store(subjects.OBJ_STATE)
    try:
        infos = await obs.list()
    except nats.js.errors.NotFoundError:  # nats-py's word for an empty store
        return []
    gone = [
        info.name
        for info in infos
        if info.name and info.name != named and not info.deleted and _epoch_of(info.name) < epoch
    ]
    for name in gone:
        await _delete(obs, name)
    return gone


def _epoch_of(name: str) -> int:
    """The leader epoch a snapshot object's name carries (``object_name``); a name of
    another shape counts as this leader's (kept)."""
    parts = name.split("-")
    if len(parts) == 3 and parts[0] == "runs" and parts[1].isdigit():
        return int(parts[1])
    return 1 << 62


def unpack(data: bytes) -> RunsSnapshot:
    """A stored snapshot, read a slice at a time; its records share what repeats
    (``compact.Compactor``): a million runs are held, never their JSON at once."""
    compactor = Compactor()
    head: RunsSnapshotHead | None = None
    runs: list[m.RunRecord] = []
    revisions: list[int] = []
    rest = b""
    for chunk in _inflated(data):
        buf = rest + chunk
        end = buf.rfind(b"\n") + 1
        rest = buf[end:]
        if not end:
            continue
        if head is None:
            first = buf.index(b"\n") + 1
            head = codec.decode(RunsSnapshotHead, buf[:first])
            buf = buf[first:end]
        else:
            buf = buf[:end]
        try:
            lines = _RUN_LINES.decode_lines(buf)
        except msgspec.DecodeError as exc:
            raise codec.BadMessage(f"could not decode SnapshotRun: {exc}") from None
        for line in lines:
            runs.append(compactor.record(line.record))
            revisions.append(line.revision)
    if head is None or rest.strip() or head.runs != len(runs):
        raise Unreadable("snapshot object is cut short or has more than its head says")
    return RunsSnapshot(
        seq=head.seq, epoch=head.epoch, taken_at=head.taken_at, runs=runs, revisions=revisions
    )


_RUN_LINES = msgspec.json.Decoder(SnapshotRun)


def _inflated(data: bytes) -> Iterator[bytes]:
    """``data`` decompressed, a slice of its input at a time."""
    z = zlib.decompressobj()
    step = SLICE * 1024
    for i in range(0, len(data), step):
        yield z.decompress(data[i : i + step])
    yield z.flush()


async def _delete(obs: object, name: str) -> None:
    with contextlib.suppress(nats.js.errors.NotFoundError, nats.errors.Error, TimeoutError):
        await obs.delete(name)  # type: ignore[attr-defined]


async def latest(
    js: JetStreamContext, runs: KeyValue
) -> tuple[RunsSnapshotRef, RunsSnapshot] | None:
    """The pointer and the snapshot it names, or None (none stored yet, or unreadable: said
    why)."""
    try:
        entry = await runs.get(subjects.RUNS_SNAPSHOT_KEY)
    except nats.js.errors.KeyNotFoundError:
        return None
    try:
        ref = codec.decode(RunsSnapshotRef, entry.value or b"")
        if ref.layout != LAYOUT:
            log.warning(
                "runs snapshot of an older layout; reading every record instead (once)",
                layout=ref.layout,
            )
            return None
        data = await _read_object(js, ref.name)
        snapshot = await asyncio.to_thread(unpack, data)
    except (codec.BadMessage, nats.js.errors.NotFoundError, Unreadable, zlib.error) as exc:
        log.warning("runs snapshot unreadable; reading every record instead", error=str(exc))
        return None
    if len(snapshot.revisions) != len(snapshot.runs):
        log.warning("runs snapshot inconsistent; reading every record instead")
        return None
    return ref, snapshot


class Unreadable(Exception):
    """The object's chunks do not add up to what its info says."""


async def _read_object(js: JetStreamContext, name: str) -> bytes:
    """An object's bytes, its chunks fetched in large batches by a pull consumer (nats-py's
    ``ObjectStore.get`` pushes them through flow control: some 25 times slower), checked
    against its size and SHA-256 digest."""
    obs = await js.object_store(subjects.OBJ_STATE)
    info = await obs.get_info(name)
    parts: list[bytes] = []
    if info.chunks:
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        chunks = subjects.obj_chunks_of(subjects.OBJ_STATE, info.nuid or "")
        async for msg in read_all(js, obj_stream(subjects.OBJ_STATE), chunks, config):
            parts.append(msg.data)
    data = b"".join(parts)
    sha = await asyncio.to_thread(hashlib.sha256, data)  # it lets go of the GIL
    digest = "SHA-256=" + base64.urlsafe_b64encode(sha.digest()).decode()
    if len(data) != (info.size or 0) or (info.digest and info.digest != digest):
        raise Unreadable(f"snapshot object {name} does not match its size or digest")
    return data


async def records_after(js: JetStreamContext, seq: int) -> tuple[list[Written], int]:
    """Every ``KV_RUNS`` record stored after stream sequence ``seq`` (the last write of each
    key, Sortie's own keys left out), and the stream's last sequence read up to."""
    stream = kv_stream(subjects.KV_RUNS)
    last = (await js.stream_info(stream)).state.last_seq
    if last <= seq:
        return [], seq
    pre = KV_PRE_TEMPLATE.format(bucket=subjects.KV_RUNS)
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq + 1)
    found: dict[str, tuple[int, bytes | None]] = {}
    async for msg in read_all(js, stream, f"{pre}>", config, timeout=TAIL_WAIT_S):
        change = kv_change(msg, pre)
        if change is None:
            continue
        key, rev, data = change
        found[key] = (rev, data)
        if len(found) % 1000 == 0:
            await asyncio.sleep(0)
    return [(key, rev, data) for key, (rev, data) in found.items()], last


def merge(
    snapshot: RunsSnapshot, written: Iterable[Written]
) -> tuple[dict[str, tuple[m.RunRecord, int]], int]:
    """The runs as they are now: the snapshot's, each changed by its later write (a deleted
    one dropped). Returns them by run id with their revisions, and how many later records
    could not be read (skipped, as a whole read skips them)."""
    runs = {
        rec.run_id: (rec, rev) for rec, rev in zip(snapshot.runs, snapshot.revisions, strict=True)
    }
    unreadable = 0
    for key, rev, data in written:
        if data is None:
            runs.pop(key, None)
            continue
        try:
            runs[key] = (codec.decode(m.RunRecord, data), rev)
        except codec.BadMessage as exc:
            log.warning("unreadable record skipped", kind="RunRecord", key=key, error=str(exc))
            unreadable += 1
    return runs, unreadable


def due(
    *, writes: int, held: int, since_s: float, cost_s: float, every_writes: int, every_s: float
) -> bool:
    """Whether a new snapshot is due (pure): ``writes`` record writes since the last one,
    ``held`` runs it would hold, ``since_s`` seconds since the last began, which took
    ``cost_s``. At least ``every_writes`` writes and as many as it holds (so a snapshot costs
    a bounded amount per write, whatever the runs in flight), or ``every_s`` seconds and ten
    times what the last took (``SNAPSHOT_TIME_SHARE``), if anything was written."""
    if writes >= max(every_writes, held):
        return True
    return writes > 0 and since_s >= max(every_s, cost_s / SNAPSHOT_TIME_SHARE)


def take(records: Iterable[tuple[m.RunRecord, int]], seq: int, epoch: int) -> RunsSnapshot:
    """A snapshot of ``records`` (with their revisions) as of stream sequence ``seq``."""
    pairs = list(records)
    return RunsSnapshot(
        seq=seq,
        epoch=epoch,
        taken_at=time.time(),
        runs=[rec for rec, _ in pairs],
        revisions=[rev for _, rev in pairs],
    )
