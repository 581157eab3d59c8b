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
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from sortie.bus.blobs import HASH_CHUNK
from sortie.proto.paths import check_relpath
from sortie.proto.runenv import UPLOADS_DIR

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO never blocks


class UnsafeOutput(OSError):
    """An output that is not the run's own regular file (any more); the message says why."""


Found = tuple[str, str, int, str]  # artifact path, path under outputs/, size, sha256


def open_output(outputs: Path, rel: str, owner: int) -> BinaryIO:
    """``outputs/rel`` opened for reading without following any link, checked to be a
    regular file owned by ``owner`` (the outputs dir's owner; when that is root, as for a
    container's outputs the agent made, by anyone); :class:`UnsafeOutput` otherwise."""
    parts = rel.split("/")
    try:
        fd = os.open(outputs, _DIR_FLAGS)
    except OSError as exc:
        raise UnsafeOutput(f"outputs/ cannot be opened ({exc.strerror})") from None
    try:
        for part in parts[:-1]:
            inner = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
        file_fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    except OSError as exc:
        raise UnsafeOutput(
            f"outputs/{rel} changed into a link or went away ({exc.strerror})"
        ) from None
    finally:
        os.close(fd)
    st = os.fstat(file_fd)
    if not stat.S_ISREG(st.st_mode) or owner not in {0, st.st_uid}:
        os.close(file_fd)
        why = "not a regular file" if not stat.S_ISREG(st.st_mode) else "not the run's own file"
        raise UnsafeOutput(f"outputs/{rel} is {why}")
    os.set_blocking(file_fd, True)
    return os.fdopen(file_fd, "rb")


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


def scan_outputs(workdir: Path) -> tuple[list[Found], list[str]]:
    """Files under outputs/ as (artifact path, path under outputs/, size, sha256), each read
    as :func:`open_output` reads it; and what was skipped, with why."""
    outputs = workdir / "outputs"
    if outputs.is_symlink() or not outputs.is_dir():
        return [], ([] if not outputs.is_symlink() else ["outputs/ (a link)"])
    base = outputs.resolve()
    owner = base.stat().st_uid
    found: list[Found] = []
    skipped: list[str] = []
    for path in _candidates(outputs):
        rel = path.relative_to(outputs).as_posix()
        real = path.resolve()
        if not real.is_relative_to(base):
            skipped.append(f"outputs/{rel} (a link leaving outputs/)")
            continue
        if real.is_dir():
            continue  # a link to a directory inside outputs/: its files are found there
        artifact = artifact_name(rel)
        if check_relpath(artifact) is not None:
            skipped.append(f"{artifact!r} (bad name)")
            continue
        try:
            with open_output(base, real.relative_to(base).as_posix(), owner) as fh:
                sha, size = _hash_and_size(fh)
        except UnsafeOutput as exc:
            skipped.append(f"{artifact} ({exc})")
            continue
        found.append((artifact, real.relative_to(base).as_posix(), size, sha))
    return found, skipped
