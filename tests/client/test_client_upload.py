"""upload_snapshot against a real nats-server's JetStream object store (no mocks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sortie.bus.blobs import CHUNK_SIZE, get_blob, missing_blobs
from sortie.bus.connection import Bus
from sortie.client.snapshot import SnapshotError, build_manifest, upload_snapshot
from sortie.proto import codec
from sortie.proto.messages import Manifest


def write(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


async def test_upload_then_dedup_then_one_edit(bus: Bus, tmp_path: Path) -> None:
    root = write(
        tmp_path / "src",
        {
            "train.py": b"print('hi')\n",
            "lib/a.py": b"A" * 5000,
            "lib/b.py": b"B" * 3000,
            "copy.py": b"A" * 5000,  # same content as lib/a.py: one blob
            ".gitignore": b"data/\n",
            "data/huge.bin": b"Z" * 100_000,
        },
    )
    plan = build_manifest(root)
    assert plan.files == 5
    progress: list[tuple[int, int]] = []

    first = await upload_snapshot(bus, plan, progress=lambda d, t: progress.append((d, t)))
    assert first.snapshot_id == plan.snapshot_id
    assert first.files == 5
    assert first.total_bytes == 12 + 5000 + 3000 + 5000 + 6
    assert first.uploaded_files == 4  # distinct contents
    assert first.uploaded_bytes == 12 + 5000 + 3000 + 6
    assert first.manifest_bytes == len(plan.encoded[1]) > 0
    assert progress[0] == (0, first.uploaded_bytes)
    assert progress[-1] == (first.uploaded_bytes, first.uploaded_bytes)
    assert await missing_blobs(bus.blobs, [*plan.blobs, plan.snapshot_id]) == set()

    # The stored manifest decodes to what was planned and its blobs are all there.
    stored: Manifest = codec.decode(Manifest, await get_blob(bus.blobs, plan.snapshot_id))
    assert stored == plan.manifest
    assert await get_blob(bus.blobs, plan.manifest.files[0].sha256)

    again = await upload_snapshot(bus, build_manifest(root))
    assert again.snapshot_id == first.snapshot_id
    assert (again.uploaded_files, again.uploaded_bytes, again.manifest_bytes) == (0, 0, 0)

    (root / "lib/b.py").write_bytes(b"edited" * 10)
    edited_plan = build_manifest(root)
    edited = await upload_snapshot(bus, edited_plan)
    assert edited.snapshot_id != first.snapshot_id
    assert edited.uploaded_files == 1
    assert edited.uploaded_bytes == 60 == (root / "lib/b.py").stat().st_size
    assert edited.manifest_bytes == len(edited_plan.encoded[1])


async def test_progress_moves_within_a_large_file(bus: Bus, tmp_path: Path) -> None:
    """The upload bar (``progress``) counts chunks, not whole files: a single file of three
    chunks and a bit reports four growing totals after the start."""
    size = 3 * CHUNK_SIZE + 10
    root = write(tmp_path / "src", {"model.bin": os.urandom(size), "train.py": b"pass\n"})
    plan = build_manifest(root)
    progress: list[tuple[int, int]] = []
    result = await upload_snapshot(
        bus, plan, progress=lambda d, t: progress.append((d, t)), concurrency=1
    )
    total = size + len(b"pass\n")
    assert result.uploaded_bytes == total
    assert {t for _, t in progress} == {total}
    done = [d for d, _ in progress]
    assert done == sorted(done)
    assert done[0] == 0 and done[-1] == total
    assert len([d for d in done if 0 < d < total]) >= 3  # inside model.bin, chunk by chunk


async def test_empty_tree_uploads_only_manifest(bus: Bus, tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    result = await upload_snapshot(bus, build_manifest(root))
    assert (result.files, result.uploaded_files, result.uploaded_bytes) == (0, 0, 0)
    assert result.manifest_bytes > 0
    assert codec.decode(Manifest, await get_blob(bus.blobs, result.snapshot_id)).files == []


async def test_file_changed_after_hashing_is_refused(bus: Bus, tmp_path: Path) -> None:
    root = write(tmp_path / "src", {"train.py": b"v1"})
    plan = build_manifest(root)
    (root / "train.py").write_bytes(b"version two")
    with pytest.raises(SnapshotError, match="changed while the snapshot was being taken"):
        await upload_snapshot(bus, plan)
    # Nothing wrong was stored under the old name, and no manifest points at it.
    assert await missing_blobs(bus.blobs, [*plan.blobs, plan.snapshot_id]) == {
        *plan.blobs,
        plan.snapshot_id,
    }
