"""The scheduler's mark and sweep of blobs, carried out: the shell around
:mod:`scheduler.blob_sweep`.

Reads the runs bucket, the step cache, the manifests they name and the models bucket (the
mark), lists
the object store, and deletes what the pure sweep says, after reading the runs once more (a
run recorded meanwhile keeps its blobs). It then purges staged chunks no blob names once
their last chunk is older than the grace (``sweep_staged``: a bounded number of chunk
subjects looked at per sweep, one message get each). The scheduler runs both every
``BlobGc.every_s`` (``SchedulerConfig.blob_gc``); ``sortie gc`` runs it on demand, with
``--dry-run`` too.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime

import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.js.api import ObjectInfo

from sortie.bus.blobs import CHUNK_SIZE, BlobError, delete_blob, get_blob, list_blobs
from sortie.bus.connection import Bus
from sortie.bus.kv import kv_items
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.pipelines import CACHED_PREFIX, CachedStep
from sortie.scheduler.blob_sweep import (
    BlobInfo,
    StagedChunks,
    manifest_ids,
    orphan_chunks,
    referenced,
    sweep,
)

HOUR_S = 3600.0
STAGED_PER_SWEEP = 1000  # unnamed chunk subjects whose age one sweep looks up (a get each)


@dataclass(frozen=True, kw_only=True)
class BlobGc:
    grace_s: float = 24 * HOUR_S  # only blobs stored longer ago than this are swept
    every_s: float = HOUR_S  # how often the scheduler sweeps; 0: never (sortie gc only)


class BlobDeleteRefused(Exception):
    """The broker refused a deletion; the message says what to do."""


def _stored_at(mtime: str | None, now: float) -> float:
    """When a blob was stored (its ``mtime``); unknown counts as now (never swept)."""
    if not mtime:
        return now
    try:
        return datetime.fromisoformat(mtime).timestamp()
    except ValueError:
        return now


async def run_records(bus: Bus) -> list[m.RunRecord]:
    return [codec.decode(m.RunRecord, e.value) for e in await kv_items(bus.runs) if e.value]


async def _manifests(bus: Bus, ids: set[str]) -> dict[str, m.Manifest | None]:
    out: dict[str, m.Manifest | None] = {}
    for sha in sorted(ids):
        try:
            out[sha] = codec.decode(m.Manifest, await get_blob(bus.blobs, sha))
        except (BlobError, ValueError, msgspec.DecodeError):
            out[sha] = None
    return out


async def model_records(bus: Bus) -> list[m.ModelRecord]:
    kv = await bus.js.key_value(subjects.KV_MODELS)
    return [codec.decode(m.ModelRecord, e.value) for e in await kv_items(kv) if e.value]


async def cached_steps(bus: Bus) -> list[CachedStep]:
    """The step cache's completed steps (its ``LastKey`` entries name no blob)."""
    kv = await bus.js.key_value(subjects.KV_STEP_CACHE)
    return [
        codec.decode(CachedStep, e.value)
        for e in await kv_items(kv)
        if e.value and e.key.startswith(CACHED_PREFIX)
    ]


async def _marked(bus: Bus) -> set[str]:
    records = await run_records(bus)
    manifests = await _manifests(bus, manifest_ids(records, await cached_steps(bus)))
    return referenced(records, manifests, await model_records(bus))


async def _blobs(bus: Bus, now: float) -> dict[str, tuple[BlobInfo, ObjectInfo]]:
    return {
        i.name: (BlobInfo(sha=i.name, size=i.size or 0, stored_at=_stored_at(i.mtime, now)), i)
        for i in await list_blobs(bus.blobs)
    }


def _refused(what: str, exc: BaseException) -> BlobDeleteRefused:
    return BlobDeleteRefused(
        f"the broker did not delete {what} ({exc!r}): deleting blobs needs the scheduler's "
        "credentials; give its .creds file with --creds (`sortie up` keeps it in "
        "DATA_DIR/auth/scheduler.creds)"
    )


async def sweep_blobs(bus: Bus, grace_s: float, *, dry_run: bool = False) -> list[BlobInfo]:
    """Delete (unless ``dry_run``) the blobs nothing references that are older than
    ``grace_s``; what went (or would go). Raises :class:`BlobDeleteRefused`."""
    now = time.time()
    stored = await _blobs(bus, now)
    victims = sweep([b for b, _i in stored.values()], await _marked(bus), now, grace_s)
    if victims and not dry_run:
        marked = await _marked(bus)  # again: a run submitted meanwhile keeps its blobs
        victims = [v for v in victims if v.sha not in marked]
        for v in victims:
            try:
                await delete_blob(bus.blobs, stored[v.sha][1])
            except (nats.errors.Error, TimeoutError) as exc:
                raise _refused(f"blob {v.sha}", exc) from None
    return victims


def _chunks_prefix(bus: Bus) -> str:
    return subjects.obj_chunks(bus.blobs.bucket).removesuffix(">")


async def _named_nuids(bus: Bus) -> set[str]:
    """The chunk subjects (nuids) stored blobs are read from."""
    return {i.nuid for i in await list_blobs(bus.blobs) if i.nuid}


async def _chunk_counts(bus: Bus) -> dict[str, int]:
    """Every chunk subject in the object store and how many chunks it holds."""
    try:
        info = await bus.blobs.js.stream_info(
            bus.blobs.stream, subjects_filter=subjects.obj_chunks(bus.blobs.bucket)
        )
    except nats.js.errors.NotFoundError:
        return {}
    return info.state.subjects or {}


async def _staged(bus: Bus, named: set[str], now: float, cap: int) -> list[StagedChunks]:
    """Up to ``cap`` chunk subjects no stored blob names, with their last chunk's time."""
    prefix = _chunks_prefix(bus)
    counts = await _chunk_counts(bus)
    unnamed = [s for s in sorted(counts) if s.removeprefix(prefix) not in named][:cap]
    out: list[StagedChunks] = []
    for subject in unnamed:
        try:
            last = await bus.blobs.js.get_last_msg(bus.blobs.stream, subject)
        except nats.js.errors.NotFoundError:  # purged meanwhile (a refused commit)
            continue
        out.append(
            StagedChunks(
                nuid=subject.removeprefix(prefix),
                chunks=counts[subject],
                size=(counts[subject] - 1) * CHUNK_SIZE + len(last.data or b""),
                last_at=last.time.timestamp() if last.time else now,  # unknown: never purged
            )
        )
    return out


async def sweep_staged(
    bus: Bus, grace_s: float, *, dry_run: bool = False, cap: int = STAGED_PER_SWEEP
) -> list[StagedChunks]:
    """Purge (unless ``dry_run``) staged chunks no stored blob names whose last chunk is older
    than ``grace_s``; what went (or would go). Raises :class:`BlobDeleteRefused`."""
    now = time.time()
    named = await _named_nuids(bus)
    victims = orphan_chunks(await _staged(bus, named, now, cap), named, now, grace_s)
    if victims and not dry_run:
        named = await _named_nuids(bus)  # again: a commit stored meanwhile keeps its chunks
        victims = [v for v in victims if v.nuid not in named]
        for v in victims:
            try:
                await bus.blobs.js.purge_stream(
                    bus.blobs.stream, subject=_chunks_prefix(bus) + v.nuid
                )
            except (nats.errors.Error, TimeoutError) as exc:
                raise _refused(f"staged chunks {v.nuid}", exc) from None
    return victims


async def blob_gc_loop(bus: Bus, settings: BlobGc) -> None:
    """The scheduler's sweep, every ``settings.every_s`` (the first one after that long)."""
    log = structlog.get_logger("sortie.scheduler")
    while settings.every_s > 0:
        await asyncio.sleep(settings.every_s)
        try:
            gone = await sweep_blobs(bus, settings.grace_s)
            staged = await sweep_staged(bus, settings.grace_s)
        except (BlobDeleteRefused, nats.errors.Error, TimeoutError, OSError) as exc:
            log.warning("blob garbage collection failed", error=repr(exc))
            continue
        if gone or staged:
            log.info(
                "blobs collected",
                blobs=len(gone),
                bytes=sum(b.size for b in gone),
                staged_uploads=len(staged),
                staged_bytes=sum(c.size for c in staged),
            )
