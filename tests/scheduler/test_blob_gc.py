"""The scheduler's sweep of unreferenced blobs (scheduler.blob_gc) on a real broker: what
runs name stays, an old orphan goes, a young one stays until its grace has passed."""

from __future__ import annotations

import asyncio
import contextlib

from sortie.bus.blobs import has_blob, put_blob, sha256_bytes
from sortie.bus.connection import Bus
from sortie.proto import codec
from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.scheduler.blob_gc import BlobGc, blob_gc_loop, sweep_blobs


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
