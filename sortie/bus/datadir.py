"""One installation per data directory: an exclusive lock its owner holds while it lives.

`sortie up`, `sortie scheduler` and `sortie agent` each take ``<data dir>/sortie.lock``
(``fcntl.flock``) before they touch anything there, and write their pid into it. A second
process on the same directory is refused, told which pid holds it. The kernel drops the lock
when its holder dies, however it dies (SIGKILL included), so a stale lock cannot strand a
directory; the file itself stays.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "sortie.lock"
_HELD: set[Path] = set()  # the directories this process holds locked (resolved)


class DataDirLocked(RuntimeError):
    """Another live process holds the data directory."""

    def __init__(self, data_dir: Path, pid: int | None, holder: str, command: str) -> None:
        self.data_dir = data_dir
        self.pid = pid  # None: the holder has not written its pid yet
        who = f"pid {pid} ({holder})" if pid is not None else "another process"
        stop = f"kill -TERM {pid}" if pid is not None else "kill -TERM"
        super().__init__(
            f"data directory {data_dir} is in use by {who}: one installation per data "
            f"directory. Stop that one first ({stop}, or Ctrl-C where it runs), or give "
            f"`{command}` another --data-dir"
        )


@dataclass
class DataDirLock:
    """The held lock; ``release`` (or the process's end) gives it up."""

    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = -1
            _HELD.discard(self.path.parent.resolve())


def lock_data_dir(data_dir: Path, command: str) -> DataDirLock:
    """Take ``data_dir``'s lock for this process (``command`` names it, e.g. "sortie up"),
    making the directory if needed; raise DataDirLocked while another process holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    # not truncated on open: the holder's pid stays readable until this process holds it;
    # O_CLOEXEC (Python's default) keeps children from inheriting (and so keeping) the lock
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid, holder = _holder(fd)
        os.close(fd)
        raise DataDirLocked(data_dir, pid, holder, command) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
    _HELD.add(data_dir.resolve())
    return DataDirLock(path=path, fd=fd)


def holds_data_dir(data_dir: Path) -> bool:
    """Whether this process holds ``data_dir`` locked (so no other live process uses it)."""
    return data_dir.expanduser().resolve() in _HELD


def _holder(fd: int) -> tuple[int | None, str]:
    """The pid and command the holder wrote into the lock file."""
    text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    pid, _, command = text.partition(" ")
    return (int(pid) if pid.isdigit() else None), command or "sortie"
