"""Runs left behind by an agent that died without stopping them (SIGKILL, OOM, power).

Each process run's group leader is recorded in a pid file beside its working directory as
``PID START`` (START: the process's start time from /proc, so a reused pid is never taken for
it). A starting agent kills every recorded group still alive: the scheduler gives those runs
to new attempts, and the old ones must not run beside them.

Each run's leader is also started with ``bus.children.die_with_parent`` as its pre-exec
hook: the kernel SIGKILLs it the moment the agent dies (``PR_SET_PDEATHSIG``), so a SIGKILLed
agent that is never restarted leaves no run going on beside the next attempt. What the leader
started (its group) is killed by the next agent to start on the same data directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

# how long a starting agent waits for the groups it killed to be gone before it takes runs
GONE_WAIT_S = 10.0


def live_groups() -> dict[int, list[int]]:
    """Pids of every live (not zombie) process by process group, from one scan of /proc."""
    groups: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # the command name (field 2) may hold spaces and parentheses: split after its last ')'
        fields = text[text.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z":
            with contextlib.suppress(ValueError):
                groups.setdefault(int(fields[2]), []).append(int(stat.parent.name))
    return groups


def group_members(pgid: int) -> list[int]:
    """Pids of live processes in process group ``pgid``."""
    return live_groups().get(pgid, [])


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


# --- exits not yet reported -------------------------------------------------------------------
# The moment a run's leader exits, its code is written beside the pid file (``<attempt>.exit``)
# and removed once the attempt's last report is acked. An agent killed in between (the script
# ended, its report was not sent) leaves the file; the next agent on the data directory reports
# the outcome, so a script that ran to its end is not run again.


def exit_file(pid_file: Path) -> Path:
    return pid_file.with_suffix(".exit")


def record_exit(pid_file: Path | None, code: int) -> None:
    if pid_file is not None:
        with contextlib.suppress(OSError):
            exit_file(pid_file).write_text(f"{code}\n")


def forget_exit(pid_file: Path) -> None:
    exit_file(pid_file).unlink(missing_ok=True)


def unreported_exits(runs_dir: Path) -> list[tuple[str, int, int]]:
    """(run id, attempt, exit code) of every exit recorded and never reported; the files are
    left in place (``forget_exit`` once reported)."""
    found = []
    for path in sorted(runs_dir.glob("*/*.exit")):
        try:
            found.append((path.parent.name, int(path.stem), int(path.read_text().strip())))
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
    return found


@dataclass(frozen=True)
class Leftovers:
    """What :func:`kill_leftovers` did: the groups it killed (by leader pid), and those of
    them still with live members when it stopped waiting (a process in an uninterruptible
    wait, say: the host needs looking at)."""

    killed: list[int]
    alive: list[int]


def kill_leftovers(runs_dir: Path, *, keep_records: bool = False) -> Leftovers:
    """Kill the process group of every recorded run still alive and wait (up to
    ``GONE_WAIT_S``) until they are gone: a SIGKILL takes effect later, and a new attempt
    started meanwhile would run beside the dying one (found by the chaos harness: a third
    live run on a two-slot agent). ``keep_records``: leave the pid files (the agent that
    wrote them is still there)."""
    killed: list[int] = []
    pid_files = sorted(runs_dir.glob("*/*.pid"))
    live = live_groups() if pid_files else {}
    for pid_file in pid_files:
        try:
            pid_text, started = pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            forget(pid_file)
            continue
        # The leader alive (the same process: same start time), or gone with members of its
        # group left: Linux does not reuse a pid while a group of that id has members, so
        # those are the run's own children.
        leader = start_time(pid)
        if leader == started or (leader is None and pid in live):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                killed.append(pid)
        if not keep_records:
            forget(pid_file)
    return Leftovers(killed=killed, alive=wait_gone(killed, GONE_WAIT_S))


def wait_gone(groups: list[int], timeout_s: float) -> list[int]:
    """Wait until no live (not zombie) process is left in ``groups``, for at most
    ``timeout_s``; returns the groups still with members then."""
    deadline = time.monotonic() + timeout_s
    left = list(groups)
    while left:
        live = live_groups()
        left = [g for g in left if g in live]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return left
