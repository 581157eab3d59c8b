"""The scheduler's sweep of unreferenced blobs (scheduler.blob_gc) on a real broker: what
runs name stays, an old orphan goes, a young one stays until its grace has passed; staged
chunks no blob names go the same way, a stored blob's chunks stay."""

from __future__ import annotations

import asyncio
import contextlib

from sortie.bus.blobs import (
    CHUNK_SIZE,
    get_blob,
    has_blob,
    put_blob,
    sha256_bytes,
    staging_nuid,
)
from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.pipelines import CACHED_PREFIX, CachedStep
from sortie.proto.states import RunState
from sortie.scheduler.blob_gc import BlobGc, blob_gc_loop, sweep_blobs, sweep_staged


async def _blob(bus: Bus, data: bytes) -> str:
    sha = sha256_bytes(data)
    await put_blob(bus.blobs, sha, data)
    return sha


async def test_the_scheduler_sweeps_what_no_run_references(bus: Bus) -> None:
    source = await _blob(bus, b"print('hi')\n")
    manifest = codec.encode(
        m.Manifest(files=[m.FileEntry(path="t.py", size=12, mode=0o644, sha256=source)])
    )
    snapshot = await _blob(bus, manifest)
    artifact = await _blob(bus, b"weights")
    orphan = await _blob(bus, b"nobody's")
    record = m.RunRecord(
        run_id="r1",
        spec=m.RunSpec(experiment="e", script="t.py", snapshot_id=snapshot),
        state=RunState.COMPLETED,
        attempt=1,
        created_at=0.0,
        artifacts=[m.Artifact(path="outputs/w", size=7, sha256=artifact)],
    )
    await bus.runs.put("r1", codec.encode(record))

    # within the grace nothing goes, even unreferenced
    assert await sweep_blobs(bus, 3600.0) == []
    # a dry run names the orphan and deletes nothing
    assert [b.sha for b in await sweep_blobs(bus, 0.0, dry_run=True)] == [orphan]
    assert await has_blob(bus.blobs, orphan)

    loop = asyncio.create_task(blob_gc_loop(bus, BlobGc(grace_s=0.0, every_s=0.1)))
    try:
        for _ in range(100):
            if not await has_blob(bus.blobs, orphan):
                break
            await asyncio.sleep(0.1)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert not await has_blob(bus.blobs, orphan)
    for kept in (source, snapshot, artifact):
        assert await has_blob(bus.blobs, kept)


async def _stage(bus: Bus, data: bytes, unique: str) -> str:
    """Publish ``data``'s chunks as an upload would, and never ask for the commit."""
    nuid = staging_nuid(sha256_bytes(data), unique)
    for i in range(0, len(data), CHUNK_SIZE):
        await bus.blobs.js.publish(bus.blobs.chunk_subject(nuid), data[i : i + CHUNK_SIZE])
    return nuid


async def _chunks_left(bus: Bus, nuid: str) -> int:
    info = await bus.blobs.js.stream_info(
        bus.blobs.stream, subjects_filter=bus.blobs.chunk_subject(nuid)
    )
    return (info.state.subjects or {}).get(bus.blobs.chunk_subject(nuid), 0)


async def test_the_sweep_purges_staged_chunks_no_blob_names(bus: Bus) -> None:
    stored = await _blob(bus, b"a blob that was committed")
    crashed = await _stage(bus, b"x" * (CHUNK_SIZE + 5), "crashed")
    # within the grace an upload may still be on its way: nothing goes
    assert await sweep_staged(bus, 3600.0) == []
    # a dry run names the crashed upload (its size from its chunks) and purges nothing
    dry = await sweep_staged(bus, 0.0, dry_run=True)
    assert [(c.nuid, c.chunks, c.size) for c in dry] == [(crashed, 2, CHUNK_SIZE + 5)]
    assert await _chunks_left(bus, crashed) == 2

    gone = await sweep_staged(bus, 0.0)
    assert [c.nuid for c in gone] == [crashed]
    assert await _chunks_left(bus, crashed) == 0
    # the committed blob's chunks are named by its meta entry: kept, and it still reads whole
    assert await get_blob(bus.blobs, stored) == b"a blob that was committed"
    assert await sweep_staged(bus, 0.0) == []


async def test_the_scheduler_loop_purges_staged_chunks_too(bus: Bus) -> None:
    crashed = await _stage(bus, b"half an upload", "crashed")
    loop = asyncio.create_task(blob_gc_loop(bus, BlobGc(grace_s=0.0, every_s=0.1)))
    try:
        for _ in range(100):
            if await _chunks_left(bus, crashed) == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert await _chunks_left(bus, crashed) == 0


async def test_a_registered_model_keeps_its_blobs_after_its_run_is_gone(bus: Bus) -> None:
    weights = await _blob(bus, b"model weights")
    orphan = await _blob(bus, b"nobody's either")
    model = m.ModelRecord(
        name="digits",
        version=1,
        files=[m.ModelFile(path="model.pkl", sha256=weights, size=13)],
        created_at=0.0,
    )
    models = await bus.js.key_value(subjects.KV_MODELS)
    await models.create(subjects.model_key("digits", 1), codec.encode(model))

    swept = {b.sha for b in await sweep_blobs(bus, 0.0)}
    assert orphan in swept and weights not in swept
    assert await has_blob(bus.blobs, weights)
    assert not await has_blob(bus.blobs, orphan)


async def _data_output(bus: Bus, content: bytes, path: str) -> tuple[str, str]:
    """A pipeline data output as an agent stores it: the file's blob and a manifest."""
    file_sha = await _blob(bus, content)
    entry = m.FileEntry(path=path, size=len(content), mode=0o644, sha256=file_sha)
    return await _blob(bus, codec.encode(m.Manifest(files=[entry]))), file_sha


async def test_pipeline_data_outputs_of_runs_and_of_the_step_cache_are_kept(bus: Bus) -> None:
    """A step run's data outputs (RunRecord.data_outputs) and a cached step's (CachedStep in
    the step cache: a later pipeline may reuse them, even once the run is gone) are marked,
    with the files they list; an unnamed manifest and its file go."""
    snapshot = await _blob(bus, codec.encode(m.Manifest(files=[])))
    run_manifest, run_file = await _data_output(bus, b"dataset rows", "data.csv")
    cached_manifest, cached_file = await _data_output(bus, b"model weights", "model.bin")
    orphan_manifest, orphan_file = await _data_output(bus, b"nobody's output", "x.bin")
    record = m.RunRecord(
        run_id="p1_prep",
        spec=m.RunSpec(experiment="e", script="prep.py", snapshot_id=snapshot),
        state=RunState.COMPLETED,
        attempt=1,
        created_at=0.0,
        parent_id="p1",
        step="prep",
        data_outputs={"dataset": run_manifest},
    )
    await bus.runs.put(record.run_id, codec.encode(record))
    cache = await bus.js.key_value(subjects.KV_STEP_CACHE)
    cached = CachedStep(run_id="p0_train", outputs={"model": cached_manifest}, completed_at=0.0)
    await cache.put(CACHED_PREFIX + "0" * 64, codec.encode(cached))

    gone = {b.sha for b in await sweep_blobs(bus, 0.0)}

    assert gone == {orphan_manifest, orphan_file}
    for kept in (snapshot, run_manifest, run_file, cached_manifest, cached_file):
        assert await has_blob(bus.blobs, kept)
