"""Content-addressed blobs: hashing, and checking, uploading and fetching them."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
from nats.js.object_store import ObjectStore

HASH_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def has_blob(store: ObjectStore, sha: str) -> bool:
    try:
        await store.get_info(sha)
    except nats.js.errors.ObjectNotFoundError:
        return False
    return True


async def missing_blobs(
    store: ObjectStore, hashes: Iterable[str], *, concurrency: int = 64
) -> set[str]:
    """Which of ``hashes`` the object store lacks."""
    sem = asyncio.Semaphore(concurrency)
    wanted = sorted(set(hashes))

    async def check(sha: str) -> str | None:
        async with sem:
            return None if await has_blob(store, sha) else sha

    found = await asyncio.gather(*(check(s) for s in wanted))
    return {s for s in found if s is not None}


async def put_blob(store: ObjectStore, sha: str, source: Path | bytes) -> None:
    """Upload one blob under its sha256 name (bytes, or a file streamed from disk)."""
    if isinstance(source, bytes):
        await store.put(sha, source)
        return
    with open(source, "rb") as fh:
        await store.put(sha, fh)


async def get_blob(store: ObjectStore, sha: str) -> bytes:
    result = await store.get(sha)
    data = result.data or b""
    if sha256_bytes(data) != sha:
        raise ValueError(f"blob {sha} is corrupt in the object store (hash mismatch)")
    return data


async def fetch_blob_to(store: ObjectStore, sha: str, dest: Path) -> None:
    """Download one blob into ``dest`` atomically, verifying its hash."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    with open(tmp, "wb") as fh:
        await store.get(sha, writeinto=fh)
    if sha256_file(tmp) != sha:
        tmp.unlink(missing_ok=True)
        raise ValueError(f"blob {sha} is corrupt in the object store (hash mismatch)")
    tmp.replace(dest)
