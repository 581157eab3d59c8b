"""What one run may put into the store: log bytes, metric points, artifact bytes (pure).

A run that passes a limit keeps running. Its log says once that it was cut; past the log
limit the agent keeps only a bounded ring of the latest lines (the *tail*) and publishes it
when the run ends, so the end of a long log is never lost. Past the metric limit the last
point of each metric name is kept (bounded too) and published at the end. The artifact limit
decides which files of ``outputs/`` are uploaded: in order, while the total fits; the rest
are named in the log and not uploaded (the run's outcome does not change).

Nothing here reads a clock or does I/O: the publisher and the attempt feed it and act on
what it returns.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sortie.proto import messages as m

MB = 1_000_000


@dataclass(frozen=True, kw_only=True)
class RunLimits:
    """Per-run bounds on an agent (``sortie agent`` / ``sortie up`` flags)."""

    log_bytes: int = 100 * MB  # log text published per attempt; past it only the tail is kept
    tail_lines: int = 1000  # lines of the tail ring published at the end
    tail_bytes: int = 4 * MB  # and at most this much text in it
    metric_points: int = 100_000  # metric points published per attempt
    metric_names_kept: int = 1000  # past the limit: the last point of at most this many names
    artifact_bytes: int = 10_000 * MB  # outputs/ uploaded per attempt
    # log text waiting for the broker before the script's output pipe is no longer read (the
    # script then blocks on write): the agent's memory while the broker is away
    queue_bytes: int = 8 * MB


def human_bytes(n: float) -> str:
    """``412 MB``, ``1.0 GB``: decimal units, as disks are sold."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit in ("B", "kB", "MB") else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class LogBudget:
    """Which log lines are published now, and the tail kept past the limit."""

    def __init__(self, limits: RunLimits) -> None:
        self._limits = limits
        self.used = 0
        self.cut = False
        self.dropped_lines = 0
        self.dropped_bytes = 0
        self._tail: deque[m.LogLine] = deque()
        self._tail_bytes = 0

    def take(self, line: m.LogLine) -> bool:
        """True: publish ``line`` now. False: it went to the tail (see :meth:`cut_notice`
        for the line to publish when this first happens)."""
        size = len(line.text.encode("utf-8", errors="replace"))
        if not self.cut and self.used + size <= self._limits.log_bytes:
            self.used += size
            return True
        self.cut = True
        self._tail.append(line)
        self._tail_bytes += size
        while self._tail and (
            len(self._tail) > self._limits.tail_lines or self._tail_bytes > self._limits.tail_bytes
        ):
            old = self._tail.popleft()
            old_size = len(old.text.encode("utf-8", errors="replace"))
            self._tail_bytes -= old_size
            self.dropped_lines += 1
            self.dropped_bytes += old_size
        return False

    def cut_notice(self) -> str:
        return (
            f"log limit {human_bytes(self._limits.log_bytes)} reached; further lines "
            f"dropped, the last {self._limits.tail_lines} lines are kept"
        )

    def tail(self) -> tuple[str | None, list[m.LogLine]]:
        """At the end: the line that introduces the kept tail (None: nothing was cut), and
        the tail itself, oldest first. Empties the ring; (None, []) when nothing was kept."""
        if not self._tail:
            return None, []
        lines = list(self._tail)
        self._tail.clear()
        self._tail_bytes = 0
        head = (
            f"{self.dropped_lines} lines ({human_bytes(self.dropped_bytes)}) were "
            f"dropped past the log limit; the last {len(lines)} lines follow"
        )
        return head, lines


class MetricBudget:
    """Which metric points are published now; past the limit, the last point of each name."""

    def __init__(self, limits: RunLimits) -> None:
        self._limits = limits
        self.used = 0
        self.cut = False
        self.dropped = 0
        self._last: dict[str, m.MetricPoint] = {}

    def take(self, point: m.MetricPoint) -> bool:
        if not self.cut and self.used < self._limits.metric_points:
            self.used += 1
            return True
        self.cut = True
        self.dropped += 1
        if point.name in self._last or len(self._last) < self._limits.metric_names_kept:
            self._last.pop(point.name, None)
            self._last[point.name] = point
        return False

    def cut_notice(self) -> str:
        return (
            f"metric limit {self._limits.metric_points} points reached; further "
            "points dropped, the last point of each metric is kept"
        )

    def tail(self) -> tuple[str | None, list[m.MetricPoint]]:
        """As :meth:`LogBudget.tail`, for the last point of each metric."""
        if not self._last:
            return None, []
        points = list(self._last.values())
        self._last.clear()
        head = (
            f"{self.dropped} metric points were past the limit; the last point of "
            f"{len(points)} metrics was published"
        )
        return head, points


@dataclass(frozen=True)
class UploadPlan:
    """Which files of outputs/ go up (in order) and which are left out by the limit."""

    upload: list[tuple[str, int]]  # (artifact path, size)
    left_out: list[tuple[str, int]]

    @property
    def total(self) -> int:
        return sum(size for _, size in self.upload)

    def notice(self, limit: int) -> str | None:
        if not self.left_out:
            return None
        size = sum(s for _, s in self.left_out)
        names = ", ".join(p for p, _ in self.left_out[:5])
        more = f" and {len(self.left_out) - 5} more" if len(self.left_out) > 5 else ""
        return (
            f"artifact limit {human_bytes(limit)} reached: {len(self.left_out)} files "
            f"({human_bytes(size)}) not uploaded: {names}{more}"
        )


def plan_upload(files: list[tuple[str, int]], limit: int) -> UploadPlan:
    """Files in the order given, each taken while the running total fits ``limit``."""
    upload: list[tuple[str, int]] = []
    left_out: list[tuple[str, int]] = []
    total = 0
    for path, size in files:
        if total + size <= limit:
            upload.append((path, size))
            total += size
        else:
            left_out.append((path, size))
    return UploadPlan(upload=upload, left_out=left_out)
