"""Builders shared by the agent tests."""

from __future__ import annotations

from proto import codec
from proto import messages as m
from sortie.bus import Bus, put_blob, sha256_bytes


async def upload_snapshot(bus: Bus, files: dict[str, tuple[bytes, int]]) -> str:
    """Upload file blobs and their manifest; return the snapshot id."""
    entries = []
    for path, (data, mode) in files.items():
        sha = sha256_bytes(data)
        await put_blob(bus.blobs, sha, data)
        entries.append(m.FileEntry(path=path, size=len(data), mode=mode, sha256=sha))
    manifest = codec.encode(m.Manifest(files=entries))
    snapshot_id = sha256_bytes(manifest)
    await put_blob(bus.blobs, snapshot_id, manifest)
    return snapshot_id


async def upload_manifest(bus: Bus, manifest: m.Manifest) -> str:
    data = codec.encode(manifest)
    sha = sha256_bytes(data)
    await put_blob(bus.blobs, sha, data)
    return sha
