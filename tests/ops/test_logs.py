"""Daemon logs: JSON lines when stderr is not a terminal, `--log-level`, and the scheduler's
one line per cycle (debug when idle, so an idle scheduler is quiet at info)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from sortie.bus.broker import BrokerProcess
from tests.e2e.conftest import SORTIE


def scheduler_log(broker: BrokerProcess, tmp_path: Path, level: str) -> list[dict[str, Any]]:
    """Run `sortie scheduler` for a few idle seconds; its stderr (a pipe), line by line."""
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
    time.sleep(4)  # a few ticks (one a second) with nothing to do
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [line for line in err.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object


def test_json_lines_and_quiet_idle_cycles(broker: BrokerProcess, tmp_path: Path) -> None:
    debug = scheduler_log(broker, tmp_path, "debug")
    assert all({"event", "level", "timestamp"} <= set(e) for e in debug)
    assert any(e["event"] == "scheduler ready" for e in debug)
    idle = [e for e in debug if e["event"] == "cycle"]
    assert idle, "idle cycles are logged at debug"
    assert all(e["level"] == "debug" and e["changed"] == 0 for e in idle)
    assert all(isinstance(e["ms"], float) and e["events"] >= 1 for e in idle)

    info = scheduler_log(broker, tmp_path, "info")
    assert any(e["event"] == "scheduler ready" for e in info)
    assert not [e for e in info if e["event"] == "cycle" or e["level"] == "debug"]
