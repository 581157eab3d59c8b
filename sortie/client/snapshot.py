"""Content-addressed snapshots of a run's source directory.

Two halves, kept apart:

* :func:`build_manifest` walks the disk (no network): it applies the ignore rules, follows
  links that stay inside the tree, refuses links that leave it, hashes every file once and
  returns a :class:`SnapshotPlan` — the :class:`proto.messages.Manifest` plus where each
  blob's bytes live locally.
* :func:`upload_snapshot` sends the plan to the JetStream object store: only the blobs the
  store lacks, then the manifest blob (named by its own sha256, the snapshot id).

Ignore rules follow the hosted platform and git: ``.git`` is always left out; when the root
has an ``.amlignore``, ``.amlignore`` files are used and ``.gitignore`` files are not;
otherwise ``.gitignore`` files are used. Ignore files in subdirectories apply relative to
their directory, deeper files win over shallower ones, and an ignored directory is not
entered at all (so ``.venv/`` or ``data/`` costs nothing). Ignore files themselves are part
of the snapshot unless they are ignored.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pathspec

from sortie.bus.blobs import (
    BlobError,
    ChunkSent,
    missing_blobs,
    put_blob,
    sha256_file,
)
from sortie.bus.blobs import encode_manifest as encode_manifest  # moved to bus: agents use it
from sortie.bus.connection import Bus
from sortie.proto.messages import FileEntry, Manifest
from sortie.proto.paths import check_relpath

AMLIGNORE = ".amlignore"
GITIGNORE = ".gitignore"
ALWAYS_EXCLUDED = frozenset({".git"})
DEFAULT_WARN_BYTES = 300 * 1024 * 1024
UPLOAD_CONCURRENCY = 8
# Below this many files, hashing in a thread pool costs more than it saves.
_PARALLEL_HASH_MIN_FILES = 32

ProgressCallback = Callable[[int, int], None]


class SnapshotError(ValueError):
    """The source directory cannot be snapshotted; the message says why and what to do."""


@dataclass(frozen=True)
class SnapshotPlan:
    """What :func:`build_manifest` found: the manifest and where each blob lives locally."""

    source_dir: Path
    manifest: Manifest
    blobs: dict[str, Path]  # sha256 -> a local file with that content
    files: int
    total_bytes: int  # of all files (a blob shared by two paths counts twice)
    warnings: list[str] = field(default_factory=list)
    ignore_file: str | None = None  # ".amlignore" or ".gitignore": which kind was used
    # Each place the walk stopped because of an ignore rule: relative path (directories
    # end with "/") -> "ignored by sub/.gitignore (pattern 'data/')". Used to explain
    # why a script is missing.
    ignored: dict[str, str] = field(default_factory=dict)
    # sha256 -> (size, mtime_ns) when hashed, to notice files edited before upload.
    stamps: dict[str, tuple[int, int]] = field(default_factory=dict)

    @cached_property
    def encoded(self) -> tuple[str, bytes]:
        """(snapshot_id, manifest blob bytes)."""
        return encode_manifest(self.manifest)

    @property
    def snapshot_id(self) -> str:
        return self.encoded[0]


@dataclass(frozen=True)
class UploadResult:
    snapshot_id: str
    files: int  # files in the snapshot
    total_bytes: int  # bytes in the snapshot
    uploaded_files: int  # file blobs sent now (the rest were already stored)
    uploaded_bytes: int  # their bytes
    manifest_bytes: int  # bytes of the manifest blob if it was sent now, else 0


def human_size(n: int) -> str:
    """``412 MB``-style sizes (powers of 1024, as the warning thresholds are)."""
    if n < 1024:
        return f"{n} B"
    size = float(n)
    units = iter(("KB", "MB", "GB", "TB"))
    unit = next(units)
    size /= 1024
    for bigger in units:
        if size < 1024:
            break
        size /= 1024
        unit = bigger
    return f"{size:.0f} {unit}" if size >= 10 else f"{size:.1f} {unit}"


# --- ignore rules ----------------------------------------------------------------------


@dataclass(frozen=True)
class _IgnoreFile:
    base: str  # directory holding it, relative to the root ("" for the root), "/"-terminated
    where: str  # the ignore file's own relative path, for messages
    spec: pathspec.GitIgnoreSpec


def _load_ignore(path: Path, base: str, where: str) -> _IgnoreFile | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SnapshotError(f"cannot read ignore file {where}: {exc}") from None
    spec = pathspec.GitIgnoreSpec.from_lines(text.splitlines())
    if not spec.patterns:
        return None
    return _IgnoreFile(base=base, where=where, spec=spec)


def _ignored_by(rules: list[_IgnoreFile], rel: str, is_dir: bool) -> str | None:
    """Why ``rel`` is ignored (naming the file and pattern), or None if it is kept.

    Like git: every ignore file from the root down is consulted and the deepest one with an
    opinion wins; within a file the last matching pattern wins (``!`` re-includes).
    """
    verdict: str | None = None
    for rule in rules:
        if not rel.startswith(rule.base):
            continue
        sub = rel[len(rule.base) :] + ("/" if is_dir else "")
        result = rule.spec.check_file(sub)
        if result.include is None:
            continue
        if result.include and result.index is not None:
            pattern = getattr(rule.spec.patterns[result.index], "pattern", None)
            verdict = f"ignored by {rule.where}" + (f" (pattern {pattern!r})" if pattern else "")
        else:
            verdict = None
    return verdict


# --- walking ---------------------------------------------------------------------------


@dataclass
class _Found:
    rel: str
    path: Path  # the real file to read
    size: int
    mode: int
    mtime_ns: int


@dataclass
class _Walk:
    root: Path  # resolved
    ignore_name: str
    files: list[_Found] = field(default_factory=list)
    ignored: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def inside(self, real: Path) -> bool:
        return real == self.root or self.root in real.parents

    def walk(
        self, directory: Path, rel_dir: str, rules: list[_IgnoreFile], stack: frozenset[Path]
    ) -> None:
        """Walk ``directory`` (a real, resolved path) that appears in the tree at ``rel_dir``."""
        prefix = f"{rel_dir}/" if rel_dir else ""
        ignore_path = directory / self.ignore_name
        if ignore_path.is_file():
            loaded = _load_ignore(ignore_path, prefix, prefix + self.ignore_name)
            if loaded is not None:
                rules = [*rules, loaded]
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            self.errors.append(f"{rel_dir or '.'}: cannot list directory ({exc.strerror})")
            return
        for entry in entries:
            if entry.name in ALWAYS_EXCLUDED:
                continue
            rel = prefix + entry.name
            why = check_relpath(rel)
            if why is not None:
                self.errors.append(f"{rel!r}: not allowed in a snapshot ({why}); rename it")
                continue
            found = self._look_at(entry, rel, rules)
            if found is None:
                continue
            real, st, is_dir = found
            if not is_dir:
                self._add_file(rel, real, st)
            elif real in stack:
                self.warnings.append(
                    f"{rel}: link loops back to {real}; not followed a second time"
                )
            else:
                self.walk(real, rel, rules, stack | {real})

    def _look_at(
        self, entry: os.DirEntry[str], rel: str, rules: list[_IgnoreFile]
    ) -> tuple[Path, os.stat_result, bool] | None:
        """Where an entry really is, its stat (links followed) and whether it is a directory;
        None when it is ignored or cannot be taken (the reason is recorded)."""
        path = Path(entry.path)
        try:
            st: os.stat_result | None = path.stat()  # follows links
        except OSError:
            st = None
        if entry.is_symlink():
            return self._look_at_link(path, rel, rules, st)
        if st is None:
            self.errors.append(f"{rel}: cannot stat")
            return None
        is_dir = stat.S_ISDIR(st.st_mode)
        if self._ignore(rules, rel, is_dir):
            return None
        return path, st, is_dir

    def _look_at_link(
        self, path: Path, rel: str, rules: list[_IgnoreFile], st: os.stat_result | None
    ) -> tuple[Path, os.stat_result, bool] | None:
        """A link is followed when it points at something inside the source directory."""
        real = Path(os.path.realpath(path))
        # A link pointing at a directory is matched as a directory (git matches the link
        # itself, but we follow it, so directory patterns must prune it).
        is_dir = st is not None and stat.S_ISDIR(st.st_mode)
        if self._ignore(rules, rel, is_dir):
            return None
        target = str(path.readlink())
        if st is None:
            self.errors.append(f"{rel}: link is dangling (points to {target!r})")
            return None
        if not self.inside(real):
            self.errors.append(
                f"{rel}: link leaves the source directory (points to {target!r}, which is {real})"
            )
            return None
        return real, st, is_dir

    def _ignore(self, rules: list[_IgnoreFile], rel: str, is_dir: bool) -> bool:
        """Whether an ignore file leaves ``rel`` out (recorded with the rule that did)."""
        why_ignored = _ignored_by(rules, rel, is_dir)
        if why_ignored is None:
            return False
        self.ignored[rel + ("/" if is_dir else "")] = why_ignored
        return True

    def _add_file(self, rel: str, real: Path, st: os.stat_result) -> None:
        if stat.S_ISREG(st.st_mode):
            self.files.append(
                _Found(
                    rel=rel,
                    path=real,
                    size=st.st_size,
                    mode=st.st_mode & 0o777,
                    mtime_ns=st.st_mtime_ns,
                )
            )
        else:
            self.warnings.append(f"{rel}: skipped (not a regular file: socket, fifo or device)")


def _hash_one(path: Path) -> tuple[str, int, int]:
    """sha256 of a file, with its (size, mtime_ns) taken after reading it."""
    sha = sha256_file(path)
    st = path.stat()
    return sha, st.st_size, st.st_mtime_ns


def _hash_all(
    sizes: dict[Path, int], progress: ProgressCallback | None = None
) -> dict[Path, tuple[str, int, int]]:
    """Hash each distinct file once; in a small thread pool when there are many.

    ``sizes``: each file and its size when walked (for ``progress``: bytes done, in all).
    """
    unique = sorted(sizes)
    total = sum(sizes.values())

    def collect(results: Iterable[tuple[str, int, int]]) -> dict[Path, tuple[str, int, int]]:
        out: dict[Path, tuple[str, int, int]] = {}
        done = 0
        if progress is not None:
            progress(0, total)
        for path, result in zip(unique, results, strict=True):
            out[path] = result
            done += sizes[path]
            if progress is not None:
                progress(done, total)
        return out

    if len(unique) < _PARALLEL_HASH_MIN_FILES:
        return collect(map(_hash_one, unique))
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sortie-hash") as pool:
        return collect(pool.map(_hash_one, unique))


def _exclude_hint(ignore_file: str) -> str:
    return (
        f"exclude them by adding their paths (or a pattern such as 'data/') to "
        f"{ignore_file} in the source directory"
    )


def build_manifest(
    source_dir: Path,
    *,
    warn_bytes: int = DEFAULT_WARN_BYTES,
    limit_bytes: int | None = None,
    progress: ProgressCallback | None = None,
) -> SnapshotPlan:
    """Walk ``source_dir`` and plan its snapshot. Reads the disk only; no network.

    ``progress`` is called with (bytes hashed, bytes to hash) as files are hashed.

    Raises :class:`SnapshotError` for a missing directory, links that leave the tree or
    dangle, paths the manifest may not carry, unreadable files, or a total over
    ``limit_bytes``.
    """
    source_dir = Path(source_dir)
    if not source_dir.exists():
        raise SnapshotError(f"source directory {source_dir} does not exist")
    if not source_dir.is_dir():
        raise SnapshotError(f"source directory {source_dir} is not a directory")
    root = source_dir.resolve()
    ignore_name = AMLIGNORE if (root / AMLIGNORE).is_file() else GITIGNORE
    walk = _Walk(root=root, ignore_name=ignore_name)
    walk.walk(root, "", [], frozenset({root}))
    if walk.errors:
        shown = "\n  ".join(walk.errors[:20])
        more = f"\n  ... and {len(walk.errors) - 20} more" if len(walk.errors) > 20 else ""
        raise SnapshotError(
            f"cannot snapshot {source_dir}:\n  {shown}{more}\n"
            f"Links must point inside the source directory; to leave a path out, add it to "
            f"{ignore_name}."
        )
    total = sum(f.size for f in walk.files)
    warnings = [*walk.warnings, *_check_size(walk, source_dir, total, warn_bytes, limit_bytes)]
    try:
        hashes = _hash_all({f.path: f.size for f in walk.files}, progress)
    except FileNotFoundError as exc:
        raise SnapshotError(
            f"{exc.filename} was deleted (or moved) while the snapshot was being taken; "
            "submit again once the source directory is no longer changing"
        ) from None
    except OSError as exc:
        raise SnapshotError(f"cannot read {exc.filename}: {exc.strerror}") from None
    entries, blobs, stamps = _entries(walk.files, hashes)
    return SnapshotPlan(
        source_dir=root,
        manifest=Manifest(files=entries),
        blobs=blobs,
        files=len(entries),
        total_bytes=total,
        warnings=warnings,
        ignore_file=ignore_name,
        ignored=dict(sorted(walk.ignored.items())),
        stamps=stamps,
    )


def _check_size(
    walk: _Walk, source_dir: Path, total: int, warn_bytes: int, limit_bytes: int | None
) -> list[str]:
    """Refuse a snapshot over ``limit_bytes`` (naming its largest files); warn over
    ``warn_bytes``."""
    if limit_bytes is not None and total > limit_bytes:
        largest = sorted(walk.files, key=lambda f: (-f.size, f.rel))[:5]
        listing = "\n  ".join(f"{human_size(f.size):>9}  {f.rel}" for f in largest)
        raise SnapshotError(
            f"snapshot of {source_dir} is {human_size(total)}, over the limit of "
            f"{human_size(limit_bytes)}. Largest files:\n  {listing}\n"
            f"{_exclude_hint(walk.ignore_name)}, or keep large data outside the source directory."
        )
    if total <= warn_bytes:
        return []
    ignore_hint = ".amlignore" if walk.ignore_name == AMLIGNORE else ".amlignore/.gitignore"
    return [
        f"snapshot is {human_size(total)} (over {human_size(warn_bytes)}): consider "
        f"adding large data to {ignore_hint}"
    ]


def _entries(
    files: list[_Found], hashes: dict[Path, tuple[str, int, int]]
) -> tuple[list[FileEntry], dict[str, Path], dict[str, tuple[int, int]]]:
    """The manifest's entries by path; for each distinct content, one file to upload and the
    (size, mtime_ns) it had. A file that changed while it was hashed is refused."""
    entries: list[FileEntry] = []
    blobs: dict[str, Path] = {}
    stamps: dict[str, tuple[int, int]] = {}
    for f in sorted(files, key=lambda f: f.rel):
        sha, size, mtime_ns = hashes[f.path]
        if (size, mtime_ns) != (f.size, f.mtime_ns):
            raise SnapshotError(
                f"{f.rel} changed while the snapshot was being taken; submit again once "
                f"it is no longer being written"
            )
        entries.append(FileEntry(path=f.rel, size=f.size, mode=f.mode, sha256=sha))
        if sha not in blobs:
            blobs[sha] = f.path
            stamps[sha] = (f.size, f.mtime_ns)
    return entries, blobs, stamps


def normalise_script(script: str) -> str:
    parts = [p for p in script.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def check_script(plan: SnapshotPlan, script: str) -> None:
    """Refuse a ``script`` that is not a file in the snapshot. Call before uploading."""
    rel = normalise_script(script)
    if script.startswith("/") or check_relpath(rel) is not None:
        raise SnapshotError(
            f"script {script!r} must be a relative path to a file inside the source "
            f"directory {plan.source_dir} (e.g. 'train.py' or 'src/train.py')"
        )
    if any(e.path == rel for e in plan.manifest.files):
        return
    # Was it (or a directory above it) left out by an ignore rule?
    parts = rel.split("/")
    candidates = [rel] + ["/".join(parts[:i]) + "/" for i in range(len(parts) - 1, 0, -1)]
    for cand in candidates:
        why = plan.ignored.get(cand)
        if why is not None:
            what = "it" if cand == rel else f"its directory {cand}"
            raise SnapshotError(
                f"script {script!r} is not in the snapshot: {what} is {why}. The script must "
                f"be inside the source directory and not ignored; remove the pattern or add "
                f"a '!' exception for it."
            )
    if any(e.path.startswith(rel + "/") for e in plan.manifest.files):
        raise SnapshotError(f"script {script!r} is a directory in {plan.source_dir}, not a file")
    raise SnapshotError(
        f"script {script!r} was not found in the source directory {plan.source_dir}; it must "
        f"be a file inside the source directory (paths are relative to it) and not ignored"
    )


# --- upload ----------------------------------------------------------------------------


def _shown(plan: SnapshotPlan, path: Path) -> str:
    """``path`` as the user knows it: relative to the source directory when inside it."""
    try:
        return str(path.relative_to(plan.source_dir))
    except ValueError:
        return str(path)


async def _send_blob(bus: Bus, plan: SnapshotPlan, sha: str, sent: ChunkSent) -> None:
    """Upload one file blob, refusing a file deleted or changed since it was hashed."""
    path = plan.blobs[sha]
    name = _shown(plan, path)
    try:
        st = path.stat()
        stamp = plan.stamps.get(sha)
        if stamp is not None and (st.st_size, st.st_mtime_ns) != stamp:
            raise SnapshotError(
                f"{name} changed while the snapshot was being taken; submit again once it "
                "is no longer being written"
            )
        await put_blob(bus.blobs, sha, path, sent=sent)
    except FileNotFoundError:
        raise SnapshotError(
            f"{name} was deleted (or moved) after it was hashed, before it was uploaded; "
            "submit again once the source directory is no longer changing"
        ) from None
    except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        raise SnapshotError(f"cannot read {name} to upload it: {exc.strerror}") from None
    except BlobError as exc:
        raise SnapshotError(f"cannot upload {name}: {exc}") from None


async def upload_snapshot(
    bus: Bus,
    plan: SnapshotPlan,
    *,
    progress: ProgressCallback | None = None,
    concurrency: int = UPLOAD_CONCURRENCY,
    every_file: bool = False,
) -> UploadResult:
    """Upload the blobs the object store lacks, then the manifest blob if it is missing.
    ``progress`` is called with (bytes sent, bytes to send) after each chunk the broker took
    (``bus.blobs.ChunkSent``), so it moves within a large file.

    Raises :class:`SnapshotError` (naming the file) if a file was changed, deleted or made
    unreadable on disk since it was hashed.
    """
    sizes = {e.sha256: e.size for e in plan.manifest.files}
    snapshot_id, manifest_data = plan.encoded
    # A manifest is stored only after every blob it names (below): if the store has it, an
    # unchanged tree costs one check, not one per file. ``every_file``: check them anyway
    # (the scheduler found a file missing: the manifest came from another uploader).
    if not every_file and not await missing_blobs(bus.blobs, [snapshot_id]):
        return UploadResult(
            snapshot_id=snapshot_id,
            files=plan.files,
            total_bytes=plan.total_bytes,
            uploaded_files=0,
            uploaded_bytes=0,
            manifest_bytes=0,
        )
    missing = await missing_blobs(bus.blobs, [*plan.blobs, snapshot_id])
    manifest_missing = snapshot_id in missing
    to_send = sorted(missing - {snapshot_id})
    total = sum(sizes[s] for s in to_send)
    done = 0
    sem = asyncio.Semaphore(concurrency)
    if progress is not None:
        progress(0, total)

    async def send(sha: str) -> None:
        last = 0

        def sent(n: int) -> None:  # per chunk, so the bar moves within a large file
            nonlocal done, last
            done += n - last
            last = n
            if progress is not None:
                progress(done, total)

        async with sem:
            await _send_blob(bus, plan, sha, sent)

    await asyncio.gather(*(send(s) for s in to_send))
    if manifest_missing:
        try:
            await put_blob(bus.blobs, snapshot_id, manifest_data)
        except BlobError as exc:
            raise SnapshotError(f"cannot upload the snapshot's manifest: {exc}") from None
    return UploadResult(
        snapshot_id=snapshot_id,
        files=plan.files,
        total_bytes=plan.total_bytes,
        uploaded_files=len(to_send),
        uploaded_bytes=total,
        manifest_bytes=len(manifest_data) if manifest_missing else 0,
    )
