"""The scheduler's look at a submitted snapshot (shell): its manifest is stored and verified,
holds no more bytes than the scheduler's limit, and, for a small tree, names blobs of the
sizes it claims (``validate.check_manifest`` decides).

A snapshot that passed is remembered (manifests never change: they are named by their hash), so
submitting the same tree again costs one existence check, as before this check existed.
"""

from __future__ import annotations

import asyncio
import os
from collections import OrderedDict

import structlog

from sortie.bus.blobs import BlobError, BlobStore, blob_entry, get_blob, is_verified
from sortie.proto import codec
from sortie.proto import messages as m
from sortie.scheduler.validate import SNAPSHOT_LIMIT_ENV, check_manifest, unstored_file

log = structlog.get_logger("sortie.scheduler")

DEFAULT_SNAPSHOT_LIMIT_MB = 10 * 1024
SIZE_CHECK_ENTRIES = 256  # up to this many files, every entry's size is checked here
REMEMBERED = 4096  # snapshots that passed, kept so that a re-submit costs one check


def snapshot_limit_bytes() -> int:
    """The limit from ``SORTIE_SNAPSHOT_LIMIT_MB`` (default 10 GiB); a bad value is logged
    and the default kept."""
    raw = os.environ.get(SNAPSHOT_LIMIT_ENV, "").strip()
    if raw:
        try:
            mb = int(raw)
            if mb > 0:
                return mb * 1024 * 1024
        except ValueError:
            pass
        log.warning(
            f"{SNAPSHOT_LIMIT_ENV} must be a positive whole number of MB; using the default",
            value=raw[:40],
            default_mb=DEFAULT_SNAPSHOT_LIMIT_MB,
        )
    return DEFAULT_SNAPSHOT_LIMIT_MB * 1024 * 1024


class SnapshotCheck:
    def __init__(self, blobs: BlobStore, limit_bytes: int) -> None:
        self.blobs = blobs
        self.limit_bytes = limit_bytes
        self._passed: OrderedDict[str, None] = OrderedDict()

    async def problem(self, snapshot_id: str) -> m.ErrorReply | None:
        """Why the snapshot cannot be run, or None. ``snapshot_id`` is a sha256."""
        if snapshot_id in self._passed:
            self._passed.move_to_end(snapshot_id)
            return None
        entry = await blob_entry(self.blobs, snapshot_id)
        if entry is None or not is_verified(entry[0]):
            return m.ErrorReply(
                code="snapshot_missing",
                message=f"snapshot {snapshot_id[:12]} is not in the store: upload the "
                "manifest and its files before submitting",
            )
        try:
            manifest = codec.decode(m.Manifest, await get_blob(self.blobs, snapshot_id))
        except (BlobError, codec.BadMessage) as exc:
            return m.ErrorReply(
                code="bad_request", message=f"snapshot {snapshot_id[:12]} cannot be read: {exc}"
            )
        stored = await self._stored_sizes(manifest)
        why = check_manifest(manifest, self.limit_bytes, stored)
        if why is not None:
            return m.ErrorReply(code="bad_request", message=why)
        if (why := unstored_file(manifest, stored)) is not None:
            return m.ErrorReply(code="snapshot_missing", message=why)
        self._passed[snapshot_id] = None
        if len(self._passed) > REMEMBERED:
            self._passed.popitem(last=False)
        return None

    async def _stored_sizes(self, manifest: m.Manifest) -> dict[str, int | None]:
        """The stored size of each blob of a small manifest (None: not stored); nothing for a
        large one (its agent checks every entry)."""
        hashes = sorted({e.sha256 for e in manifest.files})
        if len(hashes) > SIZE_CHECK_ENTRIES:
            return {}
        entries = await asyncio.gather(*(blob_entry(self.blobs, h) for h in hashes))
        return {
            h: (e[0].size or 0) if e is not None and is_verified(e[0]) else None
            for h, e in zip(hashes, entries, strict=True)
        }
