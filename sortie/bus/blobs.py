"""Content-addressed blobs: hashing, and checking, uploading and fetching them.

Blobs live in the JetStream object store ``sortie_blobs`` in nats-py's layout (chunks on
``$O.<bucket>.C.<nuid>``, one JSON ``ObjectInfo`` per object on ``$O.<bucket>.M.<name>``), named
by their sha256. A blob is written once and only after it was verified:

- an uploader (client, agent) publishes the chunks, then asks a scheduler to commit them
  (:func:`put_blob`, ``subjects.BLOB_COMMIT``);
- the scheduler reads them back, checks the hash, and writes the meta entry with the
  ``Sortie-Verified`` header, expecting no earlier one (``sortie.bus.blobcommit``). Clients
  and agents may not publish meta entries at all, and the stream refuses rollups, so nobody
  else can overwrite or delete a blob;
- "already stored" means stored *and* verified (:func:`has_blob`): a meta entry without the
  header (written before this version) is uploaded again, and the commit verifies it.

Readers read exactly the committed number of chunks and check the hash again.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import ObjectInfo

from sortie.bus.pause import retry_pause
from sortie.proto import codec, subjects
from sortie.proto import messages as m

HASH_CHUNK = 1 << 20
CHUNK_SIZE = 128 * 1024  # nats-py's default chunk size
COMMIT_WAIT_S = 120.0  # a scheduler reads a blob back before it answers
CHUNK_WAIT_S = 5.0  # how long a streamed read waits for a chunk that should be there
STREAM_ABOVE_CHUNKS = 8  # blobs of more chunks (1 MiB) are read by a consumer, not chunkwise
VERIFIED = "Sortie-Verified"  # header in a meta entry a scheduler wrote after checking the hash

# Called after each chunk the stream has taken, with this upload's bytes sent so far; when it
# has said the whole size, the scheduler is verifying (what progress lines and bars show).
ChunkSent = Callable[[int], None]


class BlobError(Exception):
    """A blob could not be stored or read; the message says which and what to do."""


class BlobMissing(BlobError):
    pass


class BlobCorrupt(BlobError, ValueError):
    pass


@dataclass(frozen=True)
class BlobStore:
    """Sortie's object store, as the connection that reads it and asks for commits."""

    nc: NATS
    js: JetStreamContext
    bucket: str = subjects.OBJ_BLOBS

    @property
    def stream(self) -> str:
        return subjects.obj_stream(self.bucket)

    def meta_subject(self, sha: str) -> str:
        return subjects.obj_meta_subject(self.bucket, sha)

    def chunk_subject(self, nuid: str) -> str:
        return subjects.obj_chunk_subject(self.bucket, nuid)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_manifest(manifest: m.Manifest) -> tuple[str, bytes]:
    """The manifest blob and its name: ``(sha256 of the bytes, bytes)`` (a snapshot's, which
    the client stores, or a pipeline step's output data, which its agent stores)."""
    data = codec.encode(manifest)
    return sha256_bytes(data), data


# --- meta entries --------------------------------------------------------------------------


async def meta_message(blobs: BlobStore, sha: str) -> tuple[ObjectInfo | None, int] | None:
    """The last message on the blob's meta subject: its entry (None when it is not a usable
    one: a deletion marker, unreadable, or naming chunks no subject can hold) and its stream
    sequence; None when there is no message at all."""
    try:
        msg = await blobs.js.get_last_msg(blobs.stream, blobs.meta_subject(sha))
    except nats.js.errors.NotFoundError:
        return None
    seq = msg.seq or 0
    try:
        info = ObjectInfo.from_response(json.loads(msg.data or b""))
        subjects.check_token("object nuid", info.nuid)
    except (ValueError, TypeError, KeyError):
        return None, seq
    if info.deleted or info.name != sha:
        return None, seq
    return info, seq


async def blob_entry(blobs: BlobStore, sha: str) -> tuple[ObjectInfo, int] | None:
    """The blob's usable meta entry and its stream sequence, or None."""
    found = await meta_message(blobs, sha)
    if found is None or found[0] is None:
        return None
    return found[0], found[1]


def is_verified(info: ObjectInfo) -> bool:
    return bool(info.headers and info.headers.get(VERIFIED))


async def has_blob(blobs: BlobStore, sha: str) -> bool:
    """Is ``sha`` stored and verified? (An unverified one is uploaded again: see module doc.)"""
    entry = await blob_entry(blobs, sha)
    return entry is not None and is_verified(entry[0])


async def missing_blobs(
    blobs: BlobStore, hashes: Iterable[str], *, concurrency: int = 64
) -> set[str]:
    """Which of ``hashes`` the object store lacks (or holds unverified)."""
    sem = asyncio.Semaphore(concurrency)
    wanted = sorted(set(hashes))

    async def check(sha: str) -> str | None:
        async with sem:
            return None if await has_blob(blobs, sha) else sha

    found = await asyncio.gather(*(check(s) for s in wanted))
    return {s for s in found if s is not None}


def meta_for(commit: m.BlobCommit, mtime: str) -> bytes:
    """The verified meta entry of a committed blob, as nats-py's ``ObjectInfo`` JSON (so any
    nats client reads it as an ordinary object)."""
    digest = base64.urlsafe_b64encode(bytes.fromhex(commit.sha256)).decode()
    info = ObjectInfo(
        name=commit.sha256,
        bucket=subjects.OBJ_BLOBS,
        nuid=commit.nuid,
        size=commit.size,
        chunks=commit.chunks,
        mtime=mtime,
        digest=f"SHA-256={digest}",
        headers={VERIFIED: "sha256"},
    )
    return json.dumps(info.as_dict()).encode()


# --- writing -------------------------------------------------------------------------------


def staging_nuid(sha: str, unique: str) -> str:
    """The chunk subject token of one upload of ``sha``. It starts with the hash, so a commit
    can name only chunks staged for its own blob (never another blob's, to have them purged)."""
    return f"{sha}-{unique}"


async def _stage(blobs: BlobStore, sha: str, fh: IO[bytes], sent: ChunkSent | None) -> m.BlobCommit:
    """Publish ``fh``'s bytes as chunks on a new chunk subject; the commit that names them."""
    # nats-py's own id generator (the one ObjectStore.put uses)
    nuid = staging_nuid(sha, blobs.nc._nuid.next().decode())
    subject = blobs.chunk_subject(nuid)
    h = hashlib.sha256()
    size = chunks = 0
    while chunk := await asyncio.to_thread(fh.read, CHUNK_SIZE):
        h.update(chunk)
        await blobs.js.publish(subject, chunk)
        size += len(chunk)
        chunks += 1
        if sent is not None:
            sent(size)
    return m.BlobCommit(sha256=h.hexdigest(), nuid=nuid, size=size, chunks=chunks)


async def commit_blob(
    blobs: BlobStore, commit: m.BlobCommit, *, wait_s: float = 0.0
) -> m.BlobCommitted:
    """Ask a scheduler to verify and store staged chunks; raise :class:`BlobError` if refused.

    ``wait_s``: how long to keep asking while no scheduler answers (an agent's outputs
    outlive a scheduler restart; a client is told at once)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            msg = await blobs.nc.request(
                subjects.BLOB_COMMIT, codec.encode(commit), timeout=COMMIT_WAIT_S
            )
            break
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            if loop.time() >= deadline:
                raise BlobError(
                    f"cannot store blob {commit.sha256[:12]}: no scheduler answered (blobs are "
                    "stored through it); start one with `sortie up` (or `sortie scheduler`)"
                ) from None
            await retry_pause(1.0)
    try:
        reply: m.BlobCommitReply = codec.decode(m.BlobCommitReply, msg.data)
    except codec.BadMessage as exc:
        raise BlobError(f"the scheduler's answer to a blob commit is unreadable: {exc}") from None
    if isinstance(reply, m.ErrorReply):
        raise BlobError(reply.message)
    return reply


async def put_blob(
    blobs: BlobStore,
    sha: str,
    source: Path | bytes | BinaryIO,
    *,
    wait_s: float = 0.0,
    sent: ChunkSent | None = None,
) -> m.BlobCommitted:
    """Upload one blob under its sha256 name (bytes, a file streamed from disk, or a file
    the caller opened and closes); ``wait_s`` as in :func:`commit_blob`; ``sent`` is told the
    bytes sent after each chunk (:data:`ChunkSent`).

    Raises :class:`BlobError` when the bytes sent are not ``sha`` (the file changed) or the
    scheduler refused them.
    """
    if isinstance(source, bytes):
        commit = await _stage(blobs, sha, io.BytesIO(source), sent)
    elif isinstance(source, Path):
        with open(source, "rb") as fh:
            commit = await _stage(blobs, sha, fh, sent)
    else:
        commit = await _stage(blobs, sha, source, sent)
    if commit.sha256 != sha:
        raise BlobError(
            f"the bytes uploaded as {sha[:12]} hash to {commit.sha256[:12]}: the file changed "
            "after it was hashed; upload it again once it is no longer being written"
        )
    return await commit_blob(blobs, commit, wait_s=wait_s)


# --- reading -------------------------------------------------------------------------------


class _ChunkMissing(Exception):
    pass


async def read_chunks(blobs: BlobStore, info: ObjectInfo) -> AsyncIterator[bytes]:
    """The object's first ``info.chunks`` chunks, in order (anything published after them on
    the same subject is not part of it). Raises :class:`BlobCorrupt` when some are missing.

    Both ways read from the stream's leader (a *direct* get may be answered by a replica that
    has not yet caught up with chunks just published)."""
    chunks = info.chunks or 0
    reader = _streamed if chunks > STREAM_ABOVE_CHUNKS else _one_by_one
    got = 0
    try:
        async for chunk in reader(blobs, blobs.chunk_subject(info.nuid), chunks):
            got += 1
            yield chunk
    except _ChunkMissing:
        raise BlobCorrupt(
            f"blob {info.name} is incomplete in the object store: chunk {got + 1} of {chunks} "
            "is missing"
        ) from None


async def _one_by_one(blobs: BlobStore, subject: str, chunks: int) -> AsyncIterator[bytes]:
    """One message get per chunk: no consumer, so a scheduler verifying thousands of small
    uploads at once does not exhaust the server's consumers, and one chunk is one round
    trip."""
    seq = 1
    for _ in range(chunks):
        try:
            msg = await blobs.js.get_msg(blobs.stream, seq=seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            raise _ChunkMissing from None
        yield msg.data or b""
        seq = (msg.seq or seq) + 1


async def _streamed(blobs: BlobStore, subject: str, chunks: int) -> AsyncIterator[bytes]:
    """An ordered consumer: the chunks of a large blob pushed as raw bytes (a message get
    carries them base64 in JSON, at a third of the speed)."""
    sub = await blobs.js.subscribe(subject, ordered_consumer=True)
    try:
        for _ in range(chunks):
            try:
                msg = await sub.next_msg(timeout=CHUNK_WAIT_S)
            except nats.errors.TimeoutError:  # all there are were pushed at once
                raise _ChunkMissing from None
            yield msg.data
    finally:
        await sub.unsubscribe()


async def _entry(blobs: BlobStore, sha: str) -> ObjectInfo:
    entry = await blob_entry(blobs, sha)
    if entry is None:
        raise BlobMissing(f"blob {sha} is not in the object store")
    return entry[0]


async def list_blobs(blobs: BlobStore) -> list[ObjectInfo]:
    """Every stored blob's meta entry (what a sweep looks at; deleted ones left out)."""
    store = await blobs.js.object_store(blobs.bucket)
    try:
        infos = await store.list(ignore_deletes=True)
    except nats.js.errors.NotFoundError:  # an empty store
        return []
    return [i for i in infos if not i.deleted]


async def delete_blob(blobs: BlobStore, info: ObjectInfo) -> None:
    """Remove one blob: its meta entry first (readers then find it missing, never half
    there), then its chunks. Purging is the scheduler's permission alone."""
    await blobs.js.purge_stream(blobs.stream, subject=blobs.meta_subject(info.name))
    if info.nuid:
        await blobs.js.purge_stream(blobs.stream, subject=blobs.chunk_subject(info.nuid))


def corrupt(sha: str) -> BlobCorrupt:
    return BlobCorrupt(
        f"blob {sha} is corrupt in the object store (its bytes do not match its sha256)"
    )


async def get_blob(blobs: BlobStore, sha: str) -> bytes:
    info = await _entry(blobs, sha)
    data = b"".join([c async for c in read_chunks(blobs, info)])
    if sha256_bytes(data) != sha:
        raise corrupt(sha)
    return data


async def stream_blob(blobs: BlobStore, sha: str) -> AsyncIterator[bytes]:
    """One blob's bytes as they are read (for a download that does not hold them all);
    ``BlobMissing`` before the first chunk, ``BlobCorrupt`` after the last one if they do not
    match the hash (a reader that sends them on must then abandon what it sent)."""
    info = await _entry(blobs, sha)
    h = hashlib.sha256()
    async for chunk in read_chunks(blobs, info):
        h.update(chunk)
        yield chunk
    if h.hexdigest() != sha:
        raise corrupt(sha)


async def fetch_blob_to(blobs: BlobStore, sha: str, dest: Path) -> None:
    """Download one blob into ``dest`` atomically, verifying its hash."""
    info = await _entry(blobs, sha)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as fh:
            async for chunk in read_chunks(blobs, info):
                h.update(chunk)
                await asyncio.to_thread(fh.write, chunk)
        if h.hexdigest() != sha:
            raise corrupt(sha)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dest)
