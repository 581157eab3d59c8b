"""The snapshot cache against a real broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from agent_builders import upload_manifest, upload_snapshot

from sortie.agents.snapshot_cache import SnapshotCache, SnapshotError
from sortie.bus.blobs import put_blob, sha256_bytes
from sortie.bus.connection import Bus
from sortie.proto import messages as m


async def test_fetches_only_missing_and_sets_modes(bus: Bus, tmp_path: Path) -> None:
    files = {
        "train.py": (b"print('hi')\n", 0o644),
        "bin/run.sh": (b"#!/bin/sh\necho run\n", 0o755),
        "data/same.txt": (b"same", 0o644),
        "data/again.txt": (b"same", 0o600),  # one blob, two files
    }
    snap = await upload_snapshot(bus, files)
    cache = SnapshotCache(tmp_path / "blobs", bus.blobs)
    lines: list[str] = []
    got = await cache.materialise(snap, tmp_path / "run1", lines.append)
    assert (got.files, got.fetched, got.from_cache) == (4, 3, 0)
    assert cache.stats.blobs_fetched == 3
    assert cache.stats.bytes_fetched == sum(len(d) for d, _ in list(files.values())[:3])
    for path, (data, mode) in files.items():
        dest = tmp_path / "run1" / path
        assert dest.read_bytes() == data
        assert dest.stat().st_mode & 0o777 == mode
    assert (tmp_path / "run1" / "outputs").is_dir()
    assert any(f"snapshot {snap[:12]}: 4 files, 3 fetched" in line for line in lines)

    # a second snapshot sharing two files fetches only the new one
    files2 = {
        "train.py": files["train.py"],
        "data/same.txt": files["data/same.txt"],
        "new.py": (b"new", 0o644),
    }
    snap2 = await upload_snapshot(bus, files2)
    got2 = await cache.materialise(snap2, tmp_path / "run2", lines.append)
    assert (got2.fetched, got2.from_cache, got2.fetched_bytes) == (1, 2, 3)
    assert cache.stats.blobs_fetched == 4

    # the run's copy is not a link into the cache: writing to it leaves the cache intact
    (tmp_path / "run2" / "train.py").write_bytes(b"changed")
    assert cache.path(sha256_bytes(files["train.py"][0])).read_bytes() == files["train.py"][0]

    # materialising again (same snapshot) fetches nothing and replaces the old tree
    (tmp_path / "run2" / "stray").write_text("x")
    got3 = await cache.materialise(snap2, tmp_path / "run2", lines.append)
    assert got3.fetched == 0
    assert not (tmp_path / "run2" / "stray").exists()
    assert (tmp_path / "run2" / "train.py").read_bytes() == files["train.py"][0]


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", "a/../../x"])
async def test_refuses_paths_leaving_the_tree(bus: Bus, tmp_path: Path, bad: str) -> None:
    data = b"evil"
    sha = sha256_bytes(data)
    await put_blob(bus.blobs, sha, data)
    snap = await upload_manifest(
        bus, m.Manifest(files=[m.FileEntry(path=bad, size=4, mode=0o644, sha256=sha)])
    )
    cache = SnapshotCache(tmp_path / "blobs", bus.blobs)
    with pytest.raises(SnapshotError, match="refused"):
        await cache.materialise(snap, tmp_path / "run" / "1", lambda _: None)
    assert not (tmp_path / "x").exists()
    assert cache.stats.blobs_fetched == 0


async def test_missing_blob_and_missing_manifest(bus: Bus, tmp_path: Path) -> None:
    cache = SnapshotCache(tmp_path / "blobs", bus.blobs)
    with pytest.raises(SnapshotError, match="manifest"):
        await cache.materialise("f" * 64, tmp_path / "r", lambda _: None)
    snap = await upload_manifest(
        bus, m.Manifest(files=[m.FileEntry(path="a", size=1, mode=0o644, sha256="e" * 64)])
    )
    with pytest.raises(SnapshotError, match="cannot fetch 1 of 1 blobs"):
        await cache.materialise(snap, tmp_path / "r", lambda _: None)


@pytest.mark.parametrize("claimed", [10**12, 3, 0])
async def test_refuses_an_entry_whose_size_is_not_its_blobs(
    bus: Bus, tmp_path: Path, claimed: int
) -> None:
    data = b"four"
    sha = sha256_bytes(data)
    await put_blob(bus.blobs, sha, data)
    snap = await upload_manifest(
        bus,
        m.Manifest(
            files=[
                m.FileEntry(path="ok.py", size=4, mode=0o644, sha256=sha),
                m.FileEntry(path="big.bin", size=claimed, mode=0o644, sha256=sha),
            ]
        ),
    )
    cache = SnapshotCache(tmp_path / "blobs", bus.blobs)
    with pytest.raises(SnapshotError) as err:
        await cache.materialise(snap, tmp_path / "run", lambda _: None)
    assert f"'big.bin' claims {claimed} bytes but its blob {sha[:12]} has 4" in str(err.value)
    assert "ok.py" not in str(err.value)
    assert not (tmp_path / "run").exists()


async def test_refuses_a_negative_size_before_fetching(bus: Bus, tmp_path: Path) -> None:
    snap = await upload_manifest(
        bus, m.Manifest(files=[m.FileEntry(path="a", size=-1, mode=0o644, sha256="e" * 64)])
    )
    cache = SnapshotCache(tmp_path / "blobs", bus.blobs)
    with pytest.raises(SnapshotError, match="claims a negative size"):
        await cache.materialise(snap, tmp_path / "r", lambda _: None)
    assert cache.stats.blobs_fetched == 0
