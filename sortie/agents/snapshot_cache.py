"""A content-addressed local cache of snapshot blobs, and materialising a run's source tree.

Layout: ``<data_dir>/blobs/<sha[:2]>/<sha>``. A run's tree is *copied* out of the cache
(never hard-linked: a script writing to its own files must not corrupt the cache).

A pipeline step's input data is a ``Manifest`` blob like a snapshot's, laid out the same way
(:meth:`SnapshotCache.lay_out`, ``what="data"``): its blobs share the cache.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nats.errors

from sortie.bus.blobs import BlobError, BlobStore, fetch_blob_to, get_blob
from sortie.proto import codec
from sortie.proto import messages as m
from sortie.proto.paths import check_relpath


class SnapshotError(Exception):
    """The snapshot cannot be materialised; the message says why (for the run's error)."""


@dataclass
class CacheStats:
    blobs_fetched: int = 0
    bytes_fetched: int = 0
    blobs_from_cache: int = 0
    snapshots: int = 0


@dataclass(frozen=True)
class Materialised:
    workdir: Path
    files: int
    fetched: int
    fetched_bytes: int
    from_cache: int


SHA256 = re.compile(r"^[0-9a-f]{64}$")
OUTPUTS = "outputs"  # the run's artifact directory: made by the agent, never a file


def refused_paths(manifest: m.Manifest, reserved: str | None = OUTPUTS) -> list[str]:
    """Why each bad manifest entry is refused (pure): bad paths, duplicates, file-vs-dir, a
    blob name that is not a sha256 (it names a file in the cache), a file named ``reserved``
    (a snapshot's outputs; None for data, where no name is the agent's)."""
    reasons: list[str] = []
    seen: set[str] = set()
    for entry in manifest.files:
        why = check_relpath(entry.path)
        if why is not None:
            reasons.append(why)
        elif not SHA256.match(entry.sha256):
            reasons.append(f"{entry.path!r} names blob {entry.sha256[:80]!r}, not a sha256")
        elif entry.size < 0:
            reasons.append(f"{entry.path!r} claims a negative size ({entry.size})")
        elif reserved is not None and entry.path == reserved:
            reasons.append(f"{OUTPUTS!r} is a file, but outputs/ is where the run's artifacts go")
        elif entry.path in seen:
            reasons.append(f"{entry.path!r} appears twice")
        seen.add(entry.path)
    for path in seen:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in seen:
                reasons.append(f"{path!r} lies under {'/'.join(parts[:i])!r}, which is a file")
    return reasons


def size_mismatches(manifest: m.Manifest, size_of: Callable[[str], int]) -> list[str]:
    """Each entry whose claimed size is not its blob's real size (``size_of(sha)``: the size
    of the fetched, hash-verified blob, asked once per blob)."""
    real = {sha: size_of(sha) for sha in {e.sha256 for e in manifest.files}}
    return [
        f"{e.path!r} claims {e.size} bytes but its blob {e.sha256[:12]} has {real[e.sha256]}"
        for e in manifest.files
        if e.size != real[e.sha256]
    ]


class SnapshotCache:
    def __init__(self, root: Path, store: BlobStore, *, concurrency: int = 16) -> None:
        self.root = root
        self.store = store
        self.stats = CacheStats()
        self._sem = asyncio.Semaphore(concurrency)
        self._inflight: dict[str, asyncio.Future[None]] = {}
        root.mkdir(parents=True, exist_ok=True)

    def path(self, sha: str) -> Path:
        return self.root / sha[:2] / sha

    def has(self, sha: str) -> bool:
        return self.path(sha).is_file()

    async def manifest(self, snapshot_id: str, what: str = "snapshot") -> m.Manifest:
        if not SHA256.match(snapshot_id):
            raise SnapshotError(f"{what} id {snapshot_id[:80]!r} is not a sha256")
        local = self.path(snapshot_id)
        if local.is_file():
            data = local.read_bytes()
        else:
            try:
                data = await get_blob(self.store, snapshot_id)
            except (nats.errors.Error, TimeoutError, BlobError) as exc:
                raise SnapshotError(
                    f"cannot fetch the manifest of {what} {snapshot_id}: {exc}"
                ) from None
            self._write_atomic(local, data)
        try:
            return codec.decode(m.Manifest, data)
        except codec.BadMessage as exc:
            raise SnapshotError(f"{what} {snapshot_id} has a bad manifest: {exc}") from None

    def _write_atomic(self, dest: Path, data: bytes) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{id(data)}.part")
        tmp.write_bytes(data)
        tmp.replace(dest)

    async def ensure(self, hashes: set[str]) -> tuple[int, int]:
        """Fetch the blobs among ``hashes`` missing locally; return (count, bytes) fetched."""
        missing = sorted(h for h in hashes if not self.has(h))
        results = await asyncio.gather(*(self._fetch(h) for h in missing), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise SnapshotError(
                f"cannot fetch {len(errors)} of {len(missing)} blobs: {errors[0]}; the store's "
                "copy is missing or damaged: submit again (the client uploads the files anew)"
            ) from None
        fetched = sum(1 for r in results if r)
        size = sum(self.path(h).stat().st_size for h, r in zip(missing, results, strict=True) if r)
        return fetched, size

    async def _fetch(self, sha: str) -> bool:
        """Fetch one blob (shared with concurrent callers); True if this call fetched it."""
        pending = self._inflight.get(sha)
        if pending is not None:
            await asyncio.shield(pending)
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[sha] = fut
        try:
            async with self._sem:
                if self.has(sha):
                    fut.set_result(None)
                    return False
                await fetch_blob_to(self.store, sha, self.path(sha))
            size = self.path(sha).stat().st_size
            self.stats.blobs_fetched += 1
            self.stats.bytes_fetched += size
            fut.set_result(None)
            return True
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[sha]

    async def materialise(
        self, snapshot_id: str, workdir: Path, log: Callable[[str], None]
    ) -> Materialised:
        done = await self.lay_out(snapshot_id, workdir, log)
        (workdir / OUTPUTS).mkdir(exist_ok=True)
        self.stats.snapshots += 1
        return done

    async def lay_out(
        self, manifest_id: str, dest: Path, log: Callable[[str], None], what: str = "snapshot"
    ) -> Materialised:
        """The files of manifest ``manifest_id`` copied into ``dest`` (made anew), fetching
        only the blobs the cache lacks; ``what`` names it in messages ("snapshot", or "data"
        and its name, for which no path is reserved)."""
        manifest = await self.manifest(manifest_id, what)
        refused = refused_paths(manifest, OUTPUTS if what == "snapshot" else None)
        if refused:
            more = f" (and {len(refused) - 3} more)" if len(refused) > 3 else ""
            raise SnapshotError(
                f"{what} {manifest_id[:12]} refused: " + "; ".join(refused[:3]) + more
            )
        hashes = {f.sha256 for f in manifest.files}
        log(f"{what} {manifest_id[:12]}: fetching up to {len(hashes)} blobs")
        fetched, size = await self.ensure(hashes)
        wrong = size_mismatches(manifest, lambda sha: self.path(sha).stat().st_size)
        if wrong:
            more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
            raise SnapshotError(
                f"{what} {manifest_id[:12]} refused: its manifest does not match its files: "
                + "; ".join(wrong[:3])
                + more
                + (
                    ". Submit again from the source directory (the client writes sizes itself)"
                    if what == "snapshot"
                    else ": run the step that wrote it again"
                )
            )
        from_cache = len(hashes) - fetched
        self.stats.blobs_from_cache += from_cache
        await asyncio.to_thread(self._copy_tree, manifest, dest)
        log(
            f"{what} {manifest_id[:12]}: {len(manifest.files)} files, {fetched} fetched "
            f"({size} bytes), {from_cache} from cache"
        )
        return Materialised(
            workdir=dest,
            files=len(manifest.files),
            fetched=fetched,
            fetched_bytes=size,
            from_cache=from_cache,
        )

    def _copy_tree(self, manifest: m.Manifest, workdir: Path) -> None:
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        base = workdir.resolve()
        for entry in manifest.files:
            dest = base / entry.path
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.parent.resolve().is_relative_to(base) or dest.is_symlink():
                raise SnapshotError(f"{entry.path!r} would be written outside the run directory")
            shutil.copyfile(self.path(entry.sha256), dest)
            dest.chmod(entry.mode & 0o777)
