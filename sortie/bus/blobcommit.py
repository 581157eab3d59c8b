"""The scheduler's side of blob writes: verify an upload, then write its meta entry once.

An uploader publishes a blob's chunks and sends a ``BlobCommit`` (``sortie.bus.blobs``). The
scheduler (any of them: a queue group) reads those chunks back and hashes them:

- right: it writes the object's meta entry, marked verified, expecting no entry before it, so
  the broker refuses a second write (two uploads of one blob: the loser's chunks are purged);
- wrong: the chunks are purged and the blob is quarantined: a ``QuarantinedBlob`` in KV
  ``sortie_quarantine`` (who sent it, when, why) and a warning in the log. The uploader is told
  to upload it again;
- stored before blobs were verified (no mark): the stored copy is checked first and kept if it
  is right, quarantined and replaced by the upload if it is not.

Only the scheduler purges, so only it deletes blobs. Each commit is answered in its own task,
bounded, outside the scheduler's event loop and API subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ObjectInfo
from nats.js.kv import KeyValue

from sortie.bus.blobs import (
    BlobCorrupt,
    BlobStore,
    is_verified,
    meta_for,
    meta_message,
    read_chunks,
    staging_nuid,
)
from sortie.proto import codec, subjects
from sortie.proto import messages as m

log = structlog.get_logger("sortie.blobs")

SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_WAITING = 10_000  # commits queued or in progress; past it, uploaders are told to retry
WRONG_LAST_SEQUENCE = 10071  # JetStream's error code for a failed expected-sequence check
FAILURES = (
    nats.errors.Error,
    nats.js.errors.Error,
    TimeoutError,
    OSError,
)


def uploader(reply: str | None) -> str:
    """Who sent a request, from its reply inbox (each identity has its own prefix)."""
    reply = reply or ""
    agents = f"{subjects.INBOX}.agent."
    if reply.startswith(agents):
        return "agent." + reply.removeprefix(agents).split(".", 1)[0]
    for prefix, who in ((subjects.CLIENT_INBOX, "client"), (subjects.SCHEDULER_INBOX, "scheduler")):
        if reply.startswith(f"{prefix}."):
            return who
    return "unknown"


def check_commit(req: m.BlobCommit) -> str | None:
    """Why a commit request cannot be right, before reading anything; None if it can be."""
    if not SHA256.match(req.sha256):
        return f"blob name {req.sha256[:80]!r} is not a sha256 (64 lowercase hex digits)"
    try:
        subjects.check_token("object nuid", req.nuid)
    except ValueError as exc:
        return str(exc)
    if not req.nuid.startswith(staging_nuid(req.sha256, "")):
        return "the chunks of a blob are staged under its own hash (see blobs.staging_nuid)"
    if (
        req.size < 0
        or req.chunks < 0
        or req.chunks > req.size
        or (req.size > 0) != (req.chunks > 0)
    ):
        return f"{req.chunks} chunks cannot hold {req.size} bytes"
    return None


def _as_info(req: m.BlobCommit) -> ObjectInfo:
    return ObjectInfo(
        name=req.sha256, bucket=subjects.OBJ_BLOBS, nuid=req.nuid, size=req.size, chunks=req.chunks
    )


def _as_commit(info: ObjectInfo) -> m.BlobCommit:
    return m.BlobCommit(
        sha256=info.name, nuid=info.nuid, size=info.size or 0, chunks=info.chunks or 0
    )


async def verify(blobs: BlobStore, info: ObjectInfo) -> str | None:
    """Why the object's chunks are not its name's bytes; None when they are."""
    h = hashlib.sha256()
    size = 0
    try:
        async for chunk in read_chunks(blobs, info):
            h.update(chunk)
            size += len(chunk)
    except BlobCorrupt as exc:
        return str(exc)
    if size != (info.size or 0):
        return f"{size} bytes where {info.size} were announced"
    if h.hexdigest() != info.name:
        return f"its bytes hash to {h.hexdigest()}"
    return None


class BlobCommits:
    """Answers ``subjects.BLOB_COMMIT``: one per scheduler (and test broker fixtures)."""

    def __init__(self, blobs: BlobStore, *, concurrency: int = 32) -> None:
        self.blobs = blobs
        self._sem = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sub: Subscription | None = None
        self._quarantine: KeyValue | None = None

    async def start(self) -> None:
        self._quarantine = await self.blobs.js.key_value(subjects.KV_QUARANTINE)
        self._sub = await self.blobs.nc.subscribe(
            subjects.BLOB_COMMIT, queue=subjects.SCHEDULER_QUEUE, cb=self._on_msg
        )

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _on_msg(self, msg: Msg) -> None:
        if len(self._tasks) >= MAX_WAITING:
            busy = m.ErrorReply(
                code="internal",
                message="the scheduler is busy verifying uploads: upload again in a moment",
            )
            with contextlib.suppress(*FAILURES):
                await self.blobs.nc.publish(msg.reply, codec.encode(busy))
            return
        task = asyncio.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg) -> None:
        reply: m.BlobCommitReply
        try:
            req = codec.decode(m.BlobCommit, msg.data)
        except codec.BadMessage as exc:
            reply = m.ErrorReply(code="bad_request", message=str(exc))
        else:
            why = check_commit(req)
            if why is not None:
                reply = m.ErrorReply(code="bad_request", message=why)
            else:
                async with self._sem:
                    reply = await self._commit_safely(req, uploader(msg.reply))
        if msg.reply:
            with contextlib.suppress(*FAILURES):
                await self.blobs.nc.publish(msg.reply, codec.encode(reply))

    async def _commit_safely(self, req: m.BlobCommit, who: str) -> m.BlobCommitReply:
        try:
            return await self.commit(req, who)
        except FAILURES as exc:
            why = getattr(exc, "description", None) or repr(exc)  # nats-py's repr omits it
            log.warning("blob commit failed", sha256=req.sha256, error=why)
        except Exception:  # a bug must not leave the uploader waiting, or stop the commits
            log.exception("blob commit failed", sha256=req.sha256)
            why = "see the scheduler's log"
        return m.ErrorReply(
            code="internal",
            message=f"the scheduler could not store blob {req.sha256[:12]} ({why}); "
            "upload it again",
        )

    async def commit(self, req: m.BlobCommit, who: str) -> m.BlobCommitReply:
        """Verify ``req``'s chunks and store them as the blob, once."""
        found = await meta_message(self.blobs, req.sha256)
        old, seq = found if found is not None else (None, 0)
        if old is not None and is_verified(old):
            await self._drop(req.nuid, old.nuid)
            return m.BlobCommitted(sha256=req.sha256, new=False)
        bad = await verify(self.blobs, _as_info(req))
        if bad is not None:
            await self._drop(req.nuid)
            await self._record(req.sha256, bad, who, req.size)
            return m.ErrorReply(
                code="blob_corrupt",
                message=f"blob {req.sha256[:12]} was refused and quarantined: {bad}. "
                "Upload it again (if it keeps failing, another uploader is interfering)",
            )
        # an entry written before blobs were verified (or one that is no entry: a deletion
        # marker, unreadable): kept if right, else quarantined and replaced
        if seq and await self._kept(old, seq, req.sha256):
            await self._drop(req.nuid, old.nuid if old is not None else None)
            return m.BlobCommitted(sha256=req.sha256, new=False)
        return await self._write(req, seq)

    async def _kept(self, old: ObjectInfo | None, seq: int, sha: str) -> bool:
        """Mark an unverified stored blob verified if it is right, else quarantine it."""
        bad = "its meta entry is unusable" if old is None else await verify(self.blobs, old)
        if bad is None and old is not None:
            await self._publish_meta(_as_commit(old), seq)
            return True
        size = (old.size or 0) if old is not None else 0
        await self._record(sha, bad or "", "unknown (stored unverified)", size)
        if old is not None:
            await self._drop(old.nuid)
        return False

    async def _write(self, req: m.BlobCommit, seq: int) -> m.BlobCommitReply:
        try:
            await self._publish_meta(req, seq)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            # another commit of the same blob came first: fine if it stored a verified one
            again = await meta_message(self.blobs, req.sha256)
            if again is None or again[0] is None or not is_verified(again[0]):
                return m.ErrorReply(
                    code="conflict",
                    message=f"blob {req.sha256[:12]} changed while it was stored: upload it again",
                )
            await self._drop(req.nuid, again[0].nuid)
            return m.BlobCommitted(sha256=req.sha256, new=False)
        return m.BlobCommitted(sha256=req.sha256, new=True)

    async def _publish_meta(self, commit: m.BlobCommit, seq: int) -> None:
        """Write the verified entry, expecting the subject's last sequence to be ``seq`` (0: no
        entry yet), then drop the entries it replaces."""
        subject = self.blobs.meta_subject(commit.sha256)
        mtime = datetime.now(UTC).isoformat()
        headers = {"Nats-Expected-Last-Subject-Sequence": str(seq)}
        await self.blobs.js.publish(subject, meta_for(commit, mtime), headers=headers)
        if seq:
            await self.blobs.js.purge_stream(self.blobs.stream, subject=subject, keep=1)

    async def _drop(self, nuid: str, kept: str | None = None) -> None:
        """Purge the chunks published on ``nuid`` (unless they are the stored blob's)."""
        if nuid != kept:
            await self.blobs.js.purge_stream(
                self.blobs.stream, subject=self.blobs.chunk_subject(nuid)
            )

    async def _record(self, sha: str, reason: str, who: str, size: int) -> None:
        log.warning("blob quarantined", sha256=sha, reason=reason, by=who, size=size)
        assert self._quarantine is not None
        record = m.QuarantinedBlob(sha256=sha, reason=reason, by=who, at=time.time(), size=size)
        await self._quarantine.put(sha, codec.encode(record))
