"""Runs left behind by an agent that died without stopping them (SIGKILL, OOM, power).

Each process run's group leader is recorded in a pid file beside its working directory as
``PID START`` (START: the process's start time from /proc, so a reused pid is never taken for
it). A starting agent kills every recorded group still alive: the scheduler gives those runs
to new attempts, and the old ones must not run beside them.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None  # field 22 of the whole line


def record(pid_file: Path, pid: int) -> None:
    started = start_time(pid)
    if started is not None:
        pid_file.write_text(f"{pid} {started}\n")


def forget(pid_file: Path | None) -> None:
    if pid_file is not None:
        pid_file.unlink(missing_ok=True)


def kill_leftovers(runs_dir: Path) -> list[int]:
    """Kill the process group of every recorded run still alive; return their pids."""
    killed: list[int] = []
    for pid_file in sorted(runs_dir.glob("*/*.pid")):
        try:
            pid_text, started = pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            forget(pid_file)
            continue
        if start_time(pid) == started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                killed.append(pid)
        forget(pid_file)
    return killed
