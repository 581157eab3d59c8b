"""The agent's watchdog: a small separate process that stops runs its agent cannot.

An agent stops its runs itself when its lease lapses (agents.lease). A paused (SIGSTOP),
frozen or dead agent cannot: its runs' processes go on, and the scheduler gives them to new
attempts after lease + kill grace. The watchdog watches two things, every ``every_s``:

- the lease file, whose modification time the agent sets at each confirmed heartbeat: when
  it is older than ``limit_s`` (the agent uses lease + half the kill grace), every recorded
  run group is killed (SIGKILL), before the scheduler's requeue;
- the agent process itself: when it is gone, every recorded run group is killed and the
  watchdog exits (a run's leader dies with its agent anyway; this also takes its children).

It reads only files (agents.orphans' pid files), so it needs neither the broker nor the
agent. It is not a sandbox: a script that forks out of its process group escapes it.

    python -m agents.watchdog --runs-dir D --lease-file F --limit S --agent-pid P
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from sortie.agents import orphans


def lease_age(lease_file: Path, now: float) -> float | None:
    try:
        return now - lease_file.stat().st_mtime
    except OSError:
        return None  # not written yet: the agent is starting


def alive(pid: int, started: str | None) -> bool:
    return started is not None and orphans.start_time(pid) == started


def watch(runs_dir: Path, lease_file: Path, limit_s: float, agent_pid: int, every_s: float) -> int:
    started = orphans.start_time(agent_pid)
    fired = False
    while alive(agent_pid, started):
        age = lease_age(lease_file, time.time())
        if age is not None and age > limit_s:
            if not fired:
                reaped = orphans.kill_leftovers(runs_dir, keep_records=True)
                if reaped.killed:
                    say(
                        f"agent {agent_pid} has not renewed its lease for {age:.1f}s; "
                        f"killed runs {reaped.killed}"
                    )
                report_alive(reaped)
                fired = True
        else:
            fired = False
        time.sleep(every_s)
    report_alive(orphans.kill_leftovers(runs_dir, keep_records=True))
    return 0


def say(text: str) -> None:
    print(f"sortie watchdog: {text}", file=sys.stderr, flush=True)


def report_alive(reaped: orphans.Leftovers) -> None:
    if reaped.alive:
        say(
            f"process groups {reaped.alive} are still alive {orphans.GONE_WAIT_S:.0f}s after "
            "SIGKILL; look at them on the host"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agents.watchdog", description=__doc__)
    p.add_argument("--runs-dir", type=Path, required=True)
    p.add_argument("--lease-file", type=Path, required=True)
    p.add_argument("--limit", type=float, required=True, metavar="SECONDS")
    p.add_argument("--agent-pid", type=int, default=os.getppid())
    p.add_argument("--every", type=float, default=0.25, metavar="SECONDS")
    args = p.parse_args(argv)
    return watch(args.runs_dir, args.lease_file, args.limit, args.agent_pid, args.every)


if __name__ == "__main__":
    sys.exit(main())
