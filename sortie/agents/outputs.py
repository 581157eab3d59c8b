"""What a run leaves in ``outputs/``, read without trusting it.

The run may still be racing the agent (a process that left its group, or a root agent
reading what an unprivileged run wrote), so the agent never follows a link while it reads
outputs: every file is opened one path component at a time with ``O_NOFOLLOW`` beneath the
outputs dir, must be a regular file, and must belong to whoever owns the outputs dir (the run's
user; a hard link to someone else's file is refused). A link swapped in after the scan is
refused, not followed, so a run cannot get the agent to upload a file it could not read itself
(a credential, another run's secrets).

Links *inside* ``outputs/`` are kept as what they point to, when that stays inside it.
Files under ``outputs/.sortie-uploads/`` are kept under the names the script gave them
(``artifact_name``).

:func:`scan_dir` is the same reading for any directory a run writes (a pipeline step's output
data, ``agents.data_upload``); :func:`scan_outputs` is it for ``outputs/``.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from sortie.bus.blobs import HASH_CHUNK, BlobStore, ChunkSent, put_blob
from sortie.proto.paths import check_relpath
from sortie.proto.runenv import UPLOADS_DIR

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO never blocks


class UnsafeOutput(OSError):
    """An output that is not the run's own regular file (any more); the message says why."""


# outputs are stored through the scheduler (bus/blobcommit.py): wait out its restart
OUTPUT_COMMIT_WAIT_S = 60.0
Found = tuple[str, str, int, str]  # artifact path, path under outputs/, size, sha256


def open_output(outputs: Path, rel: str, owner: int, *, shown: str = "outputs") -> BinaryIO:
    """``outputs/rel`` opened for reading without following any link, checked to be a
    regular file owned by ``owner`` (the outputs dir's owner; when that is root, as for a
    container's outputs the agent made, by anyone); :class:`UnsafeOutput` otherwise.
    ``shown``: the directory's name in messages."""
    parts = rel.split("/")
    try:
        fd = os.open(outputs, _DIR_FLAGS)
    except OSError as exc:
        raise UnsafeOutput(f"{shown}/ cannot be opened ({exc.strerror})") from None
    try:
        for part in parts[:-1]:
            inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
        file_fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    except OSError as exc:
        raise UnsafeOutput(
            f"{shown}/{rel} changed into a link, went away or cannot be read ({exc.strerror})"
        ) from None
    finally:
        os.close(fd)
    st = os.fstat(file_fd)
    if not stat.S_ISREG(st.st_mode) or owner not in {0, st.st_uid}:
        os.close(file_fd)
        why = "not a regular file" if not stat.S_ISREG(st.st_mode) else "not the run's own file"
        raise UnsafeOutput(f"{shown}/{rel} is {why}")
    os.set_blocking(file_fd, True)
    return os.fdopen(file_fd, "rb")


async def put_output(  # noqa: PLR0917 - one blob, where it lies, and how far it got
    store: BlobStore,
    sha: str,
    outputs: Path,
    rel: str,
    owner: int,
    sent: ChunkSent,
    *,
    shown: str = "outputs",
) -> None:
    """Upload ``outputs/rel`` as read by :func:`open_output` (never through a link;
    :class:`UnsafeOutput`, an OSError, if it is no longer the run's own regular file), telling
    ``sent`` how far it got."""
    with open_output(outputs, rel, owner, shown=shown) as fh:
        await put_blob(store, sha, fh, wait_s=OUTPUT_COMMIT_WAIT_S, sent=sent)


def _hash_and_size(fh: BinaryIO) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    while chunk := fh.read(HASH_CHUNK):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def _candidates(outputs: Path) -> list[Path]:
    paths: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(outputs, followlinks=False):
        here = Path(dirpath)
        paths += [here / n for n in sorted(filenames)]
        paths += [here / d for d in sorted(dirnames) if (here / d).is_symlink()]
    return paths


def artifact_name(rel: str) -> str:
    """The artifact a file at ``outputs/rel`` is kept as: itself, or for a file the script
    uploaded under another name (``Run.upload_file``), that name."""
    staged = f"{UPLOADS_DIR}/"
    return rel[len(staged) :] if rel.startswith(staged) else f"outputs/{rel}"


@dataclass(frozen=True)
class Entry:
    """A regular file found under a scanned directory (a link inside it: as its target)."""

    rel: str  # the path found, under the directory
    real: str  # the file read (rel, or the target of a link inside the directory)
    size: int
    sha256: str
    mode: int  # permission bits


@dataclass
class Scan:
    """What :func:`scan_dir` found: files, links that leave the directory (never followed),
    and what could not be read as the run's own regular file (with why)."""

    found: list[Entry] = field(default_factory=list)
    leaving: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def scan_dir(root: Path, shown: str) -> Scan:
    """Every file under ``root``, each read as :func:`open_output` reads it (``shown``: the
    directory's name in messages). ``root`` itself must be a directory, not a link."""
    scan = Scan()
    if root.is_symlink() or not root.is_dir():
        if root.is_symlink():
            scan.leaving.append(f"{shown}/ (a link)")
        return scan
    base = root.resolve()
    owner = base.stat().st_uid
    for path in _candidates(root):
        rel = path.relative_to(root).as_posix()
        real = path.resolve()
        if not real.is_relative_to(base):
            scan.leaving.append(f"{shown}/{rel} (a link leaving {shown}/)")
            continue
        if real.is_dir():
            continue  # a link to a directory inside: its files are found there
        real_rel = real.relative_to(base).as_posix()
        try:
            with open_output(base, real_rel, owner, shown=shown) as fh:
                mode = os.fstat(fh.fileno()).st_mode & 0o777
                sha, size = _hash_and_size(fh)
        except UnsafeOutput as exc:
            scan.refused.append(f"{shown}/{rel} ({exc})")
            continue
        scan.found.append(Entry(rel=rel, real=real_rel, size=size, sha256=sha, mode=mode))
    return scan


def scan_outputs(workdir: Path) -> tuple[list[Found], list[str]]:
    """Files under outputs/ as (artifact path, path under outputs/, size, sha256), each read
    as :func:`open_output` reads it; and what was skipped, with why."""
    scan = scan_dir(workdir / "outputs", "outputs")
    skipped = [*scan.leaving]
    found: list[Found] = []
    for entry in scan.found:
        artifact = artifact_name(entry.rel)
        if check_relpath(artifact) is not None:
            skipped.append(f"{artifact!r} (bad name)")
            continue
        found.append((artifact, entry.real, entry.size, entry.sha256))
    skipped += scan.refused
    return found, skipped
