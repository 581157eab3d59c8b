"""The agent's memory under a flood of output, and while the broker is away.

Starts a real ``sortie up`` (broker, scheduler and the local agent; the agent and the
scheduler share the ``sortie up`` process, whose resident memory is read from
``/proc/PID/status``: ``VmRSS`` now, ``VmHWM`` its peak) in a temporary data directory, one per
scenario, and runs through the CLI:

- **print**: a script that prints ``--mb`` MB of 100-byte lines as fast as it can. Reported:
  the process's RSS before the run, its peak while the run went, and after it ended.
- **paused**: a script that prints as fast as it can for ``--seconds``; two seconds in, the
  broker (``nats-server``) is stopped with SIGSTOP for ``--pause`` seconds (less than the
  agent's 10 s lease, so the run is not fenced), then continued. Reported: the same three,
  and how many MB the script got to print.

Each reports how the run ended and how long it took from submit to its end; a run that has
not ended ``--wait`` seconds after its submit is reported as such (the old code could spend
many minutes flushing what it had piled up).

``--code DIR`` runs another checkout's ``sortie`` package (e.g. the one before the bounds:
``git archive 75f1f47 | tar -x -C /tmp/before``) to compare. Prints one JSON document on
stdout and a short table on stderr.

    .venv/bin/python -m benchmarks.agent_memory [--mb 200] [--pause 8] [--code DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sortie.bus.broker import free_port

REPO = Path(__file__).resolve().parents[1]

PRINT = """\
import sys
line = "x" * 99 + "\\n"
n = int(sys.argv[1]) * 10_000
w = sys.stdout.write
for _ in range(n):
    w(line)
"""

TIMED = """\
import sys, time
line = "y" * 99 + "\\n"
end = time.monotonic() + float(sys.argv[1])
sent = 0
while time.monotonic() < end:
    sys.stdout.write(line * 100)
    sent += 10_000
print(f"printed {sent / 1e6:.0f} MB", file=sys.stderr)
"""


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (the peak since the process started), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def processes_using(path: Path) -> list[int]:
    """Processes whose command line names something under ``path`` (the broker: its config)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(path).encode() in arg for arg in argv[1:]) and b"sortie.cli" not in argv:
            found.append(int(cmdline.parent.name))
    return found


class Up:
    def __init__(self, root: Path, code: Path) -> None:
        self.root = root
        self.code = code  # the working directory too: ``-m`` puts it first on sys.path
        self.env = dict(os.environ, PYTHONPATH=str(code), SORTIE_PROFILE=str(root / "p.json"))
        self.env.pop("SORTIE_URL", None)
        log = open(root / "up.log", "wb")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sortie.cli", "up", "--data-dir", str(root / "data"),
             "--port", str(free_port()), "--no-fsync"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
            cwd=code,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while "Sortie ready" not in (root / "up.log").read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("sortie up did not start:\n" + (root / "up.log").read_text())
            time.sleep(0.1)

    def cli(self, *args: str) -> str:
        """stdout, then stderr (``run logs`` writes a run's stderr lines to stderr)."""
        done = subprocess.run(
            [sys.executable, "-m", "sortie.cli", *args],
            env=self.env, capture_output=True, text=True, check=True, timeout=900,
            cwd=self.code,
        )  # fmt: skip
        return done.stdout + done.stderr

    def submit(self, src: Path, script: str, *args: str) -> str:
        out = self.cli("run", "submit", str(src), "--script", script, "--output", "json",
                       "--", *args)  # fmt: skip
        return str(json.loads(out.splitlines()[0])["run_id"])

    def wait(self, run_id: str, limit_s: float) -> str:
        """The run's state once it ended, or ``not ended after N s``."""
        try:
            subprocess.run(
                [sys.executable, "-m", "sortie.cli", "run", "wait", run_id],
                env=self.env, capture_output=True, timeout=limit_s, check=False, cwd=self.code,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return f"not ended after {limit_s:.0f} s"
        return str(json.loads(self.cli("run", "show", run_id, "--output", "json"))["state"])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # its broker and children die with it (bus.children)
            self.proc.wait()


def _memory(up: Up, before: float, t0: float, state: str) -> dict[str, Any]:
    return {"rss_before_mb": round(before), "rss_peak_mb": round(rss_mb(up.proc.pid, "VmHWM")),
            "rss_after_mb": round(rss_mb(up.proc.pid)), "run": state,
            "submit_to_end_s": round(time.monotonic() - t0, 1)}  # fmt: skip


def scenario_print(up: Up, src: Path, args: argparse.Namespace) -> dict[str, Any]:
    before = rss_mb(up.proc.pid)
    t0 = time.monotonic()
    state = up.wait(up.submit(src, "print.py", str(args.mb)), args.wait)
    return {"output_mb": args.mb, **_memory(up, before, t0, state)}


def scenario_paused(up: Up, src: Path, args: argparse.Namespace) -> dict[str, Any]:
    brokers = processes_using(up.root / "data" / "nats")
    if not brokers:
        raise SystemExit("the broker's process was not found")
    before = rss_mb(up.proc.pid)
    t0 = time.monotonic()
    run_id = up.submit(src, "timed.py", str(args.seconds))
    time.sleep(2)
    for pid in brokers:
        os.kill(pid, signal.SIGSTOP)
    time.sleep(args.pause)
    for pid in brokers:
        os.kill(pid, signal.SIGCONT)
    state = up.wait(run_id, args.wait)
    out = {"pause_s": args.pause, **_memory(up, before, t0, state)}
    if not state.startswith("not ended"):
        logs = up.cli("run", "logs", run_id)
        out["script"] = next((ln for ln in logs.splitlines() if ln.startswith("printed ")), "?")
    return out


SCENARIOS = {"print": scenario_print, "paused": scenario_paused}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=200, help="MB the print scenario prints")
    p.add_argument("--seconds", type=float, default=12.0, help="how long the paused run prints")
    p.add_argument("--pause", type=float, default=8.0, help="seconds the broker is stopped")
    p.add_argument("--wait", type=float, default=300.0, help="seconds a run may take to end")
    p.add_argument("--code", type=Path, default=REPO, help="the checkout whose sortie runs")
    p.add_argument("--scenarios", default="print,paused", help="which, comma-separated")
    args = p.parse_args()
    results: dict[str, Any] = {"code": str(args.code)}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = root / "src"
        src.mkdir()
        (src / "print.py").write_text(PRINT)
        (src / "timed.py").write_text(TIMED)
        for name in args.scenarios.split(","):
            (root / name).mkdir()
            up = Up(root / name, args.code)
            try:
                results[name] = SCENARIOS[name](up, src, args)
            finally:
                up.stop()
    print(json.dumps(results, indent=2))
    for name, r in results.items():
        if isinstance(r, dict):
            print(f"{name:7} RSS before {r['rss_before_mb']:5} MB  peak {r['rss_peak_mb']:5} MB  "
                  f"after {r['rss_after_mb']:5} MB  run {r['run']} "
                  f"({r['submit_to_end_s']} s)", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
