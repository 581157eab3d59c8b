"""The metrics channel: a named pipe per attempt, read as JSON lines of metric points and
notes (see sortie/client/run_context.py).

The read end is opened non-blocking before the script starts, and the agent also holds a
write end, so the reader never sees end-of-file while scripts open and close the pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import msgspec

from sortie.proto import messages as m
from sortie.proto import notes

MAX_PENDING = 64 * 1024


def parse_line(line: bytes) -> m.MetricPoint | notes.ScriptNote | str:
    """One line of the pipe -> a metric point or a note (it has a ``kind``), or the reason it
    is refused (pure)."""
    if b'"kind"' in line:
        try:
            note: notes.ScriptNote = msgspec.json.decode(line, type=notes.ScriptNote)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            point = parse_metric(line)  # a metric may be named "kind"
            if isinstance(point, m.MetricPoint):
                return point
            text = line[:200].decode("utf-8", errors="replace")
            return f"bad line {text!r}: {exc}"
        return note
    return parse_metric(line)


def parse_metric(line: bytes) -> m.MetricPoint | str:
    """One metric line -> a point, or the reason it is refused (pure)."""
    try:
        point = msgspec.json.decode(line, type=m.MetricPoint)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # invalid UTF-8 is not a DecodeError
        text = line[:200].decode("utf-8", errors="replace")
        return f"bad metric line {text!r}: {exc}"
    if not point.name:
        return "bad metric line: empty name"
    return point


class MetricsFifo:
    def __init__(self, path: Path, on_line: Callable[[bytes], None]) -> None:
        self.path = path
        self._on_line = on_line
        self._buf = b""
        self._rfd: int | None = None
        self._wfd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.mkfifo(self.path, 0o600)
        self._rfd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._wfd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._rfd, self._readable)

    def _readable(self) -> None:
        assert self._rfd is not None
        while True:
            try:
                data = os.read(self._rfd, 65536)
            except BlockingIOError:
                return
            except OSError:
                return
            if not data:
                return
            self._buf += data
            *lines, self._buf = self._buf.split(b"\n")
            for line in lines:
                if line.strip():
                    self._on_line(line)
            if len(self._buf) > MAX_PENDING:  # no newline in sight: not our protocol
                self._on_line(self._buf)
                self._buf = b""

    def close(self) -> None:
        """Read what is left, then close both ends and remove the pipe."""
        if self._rfd is None:
            return
        self._readable()
        if self._buf.strip():
            self._on_line(self._buf)
        self._buf = b""
        if self._loop is not None:
            self._loop.remove_reader(self._rfd)
        os.close(self._rfd)
        if self._wfd is not None:
            os.close(self._wfd)
        self._rfd = self._wfd = None
        with contextlib.suppress(OSError):
            self.path.unlink()
