"""Daemon logs: JSON lines when stderr is not a terminal, `--log-level`, and the scheduler's
one line per cycle (debug when idle, so an idle scheduler is quiet at info)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sortie.bus.broker import BrokerProcess
from tests.e2e.conftest import SORTIE


def scheduler_log(
    broker: BrokerProcess, tmp_path: Path, level: str, *, cycles: int
) -> list[dict[str, Any]]:
    """Run `sortie scheduler` until it is ready and has had a few idle cycles; its stderr (a
    pipe), line by line. ``cycles``: how many cycle lines to wait for after "scheduler ready"
    (at info there are none to see: then it waits that many tick intervals instead)."""
    env = {**os.environ, "SORTIE_PROFILE": str(tmp_path / "none.json")}
    env.pop("SORTIE_CREDS", None)
    args = ["--url", broker.url, "--log-level", level, "scheduler", "--data-dir", str(tmp_path)]
    proc = subprocess.Popen(
        [*SORTIE, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
    reader.start()

    def events() -> list[str]:
        return [json.loads(line)["event"] for line in list(lines) if line.strip()]

    def wait_for(done: Callable[[list[str]], bool]) -> None:
        for _ in range(600):  # bounded: 60 s, however slow the machine
            if done(events()) or proc.poll() is not None:
                return
            time.sleep(0.1)

    wait_for(lambda ev: "scheduler ready" in ev)
    if level == "debug":
        wait_for(lambda ev: ev[ev.index("scheduler ready") :].count("cycle") >= cycles)
    else:
        time.sleep(cycles)  # the scheduler ticks once a second: that many idle cycles pass
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    reader.join(timeout=30)
    assert proc.returncode == 0, "".join(lines)
    return [json.loads(line) for line in lines if line.strip()]  # every line is one object


def test_json_lines_and_quiet_idle_cycles(broker: BrokerProcess, tmp_path: Path) -> None:
    debug = scheduler_log(broker, tmp_path, "debug", cycles=3)
    assert all({"event", "level", "timestamp"} <= set(e) for e in debug)
    assert any(e["event"] == "scheduler ready" for e in debug)
    idle = [e for e in debug if e["event"] == "cycle"]
    assert idle, "idle cycles are logged at debug"
    assert all(e["level"] == "debug" and e["changed"] == 0 for e in idle)
    assert all(isinstance(e["ms"], float) and e["events"] >= 1 for e in idle)

    info = scheduler_log(broker, tmp_path, "info", cycles=3)
    assert any(e["event"] == "scheduler ready" for e in info)
    assert not [e for e in info if e["event"] == "cycle" or e["level"] == "debug"]
