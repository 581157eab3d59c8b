"""The agent's memory under a flood of output, and while the broker is away.

Starts a real ``sortie up`` (broker, scheduler and the local agent; the agent and the
scheduler share the ``sortie up`` process, whose resident memory is sampled from
``/proc/PID/status`` every 0.1 s) in a temporary data directory, and runs through the CLI:

- **print**: a script that prints ``--mb`` MB of 100-byte lines as fast as it can. Reported:
  the process's RSS before the run, its peak while the run went, and after it ended.
- **paused**: a script that prints as fast as it can for ``--seconds``; two seconds in, the
  broker (``nats-server``) is stopped with SIGSTOP for ``--pause`` seconds (less than the
  agent's 10 s lease, so the run is not fenced), then continued. Reported: the same three,
  and how many MB the script got to print.

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
import threading
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


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Sampler:
    """The peak RSS of ``pid`` while running, sampled every ``every_s``."""

    def __init__(self, pid: int, every_s: float = 0.1) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(every_s)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


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

    def wait(self, run_id: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "sortie.cli", "run", "wait", run_id],
            env=self.env, capture_output=True, timeout=900, check=False, cwd=self.code,
        )  # fmt: skip

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def scenario_print(up: Up, src: Path, mb: int) -> dict[str, Any]:
    time.sleep(2)
    before = rss_mb(up.proc.pid)
    t0 = time.monotonic()
    with Sampler(up.proc.pid) as s:
        up.wait(up.submit(src, "print.py", str(mb)))
    time.sleep(1)
    return {"output_mb": mb, "rss_before_mb": before, "rss_peak_mb": s.peak,
            "rss_after_mb": rss_mb(up.proc.pid), "seconds": time.monotonic() - t0}  # fmt: skip


def scenario_paused(up: Up, src: Path, seconds: float, pause: float) -> dict[str, Any]:
    brokers = processes_using(up.root / "data" / "nats")
    if not brokers:
        raise SystemExit("the broker's process was not found")
    before = rss_mb(up.proc.pid)
    with Sampler(up.proc.pid) as s:
        run_id = up.submit(src, "timed.py", str(seconds))
        time.sleep(2)
        for pid in brokers:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(pause)
        for pid in brokers:
            os.kill(pid, signal.SIGCONT)
        up.wait(run_id)
    logs = up.cli("run", "logs", run_id)
    printed = next((ln for ln in logs.splitlines() if ln.startswith("printed ")), "?")
    return {"pause_s": pause, "rss_before_mb": before, "rss_peak_mb": s.peak,
            "rss_after_mb": rss_mb(up.proc.pid), "script": printed}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=int, default=200, help="MB the print scenario prints")
    p.add_argument("--seconds", type=float, default=12.0, help="how long the paused run prints")
    p.add_argument("--pause", type=float, default=8.0, help="seconds the broker is stopped")
    p.add_argument("--code", type=Path, default=REPO, help="the checkout whose sortie runs")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = root / "src"
        src.mkdir()
        (src / "print.py").write_text(PRINT)
        (src / "timed.py").write_text(TIMED)
        results: dict[str, Any] = {"code": str(args.code)}
        for name in ("print", "paused"):
            (root / name).mkdir()
            up = Up(root / name, args.code)
            try:
                if name == "print":
                    results[name] = scenario_print(up, src, args.mb)
                else:
                    results[name] = scenario_paused(up, src, args.seconds, args.pause)
            finally:
                up.stop()
    print(json.dumps(results, indent=2))
    for name in ("print", "paused"):
        r = results[name]
        print(f"{name:7} RSS before {r['rss_before_mb']:6.0f} MB  peak {r['rss_peak_mb']:6.0f} MB"
              f"  after {r['rss_after_mb']:6.0f} MB", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
