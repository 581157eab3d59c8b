"""Progress for people at a terminal, and none for scripts: `sortie run submit` under a real
pseudo-terminal against a real `sortie up`, the same with pipes and ``--output json``, and the
pure line (``sortie.progress.status_line``)."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import time
from pathlib import Path

from sortie.cli.progress import SubmitProgress, status_line
from sortie.proto import messages as m
from sortie.proto.states import RunState
from tests import builders as b
from tests.e2e.conftest import REPO, SORTIE
from tests.ops.conftest import Up

SCRIPT = "import time\ntime.sleep(2)\nprint('done sleeping', flush=True)\n"


def in_a_terminal(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str]:
    """Run the CLI with stdin, stdout and stderr on a pseudo-terminal; return all it drew."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*SORTIE, *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**env, "TERM": "xterm-256color", "COLUMNS": "160"},
        cwd=REPO,
    )
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=10), out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "s.py").write_text(SCRIPT)
    (src / "data.bin").write_bytes(os.urandom(256 * 1024))
    return src


def test_a_terminal_gets_bars_and_a_live_state_line(up: Up, tmp_path: Path) -> None:
    src = source(tmp_path)
    code, drawn = in_a_terminal(["run", "submit", str(src), "--script", "s.py", "--wait"], up.env)
    assert code == 0, drawn
    assert "hashing" in drawn and "uploading" in drawn  # the snapshot's bars
    assert "done sleeping" in drawn  # the run's output, printed above the live line
    # the live line: this attempt's states so far, the current one with what it is doing
    assert "Running (on " in drawn
    assert "→" in drawn
    assert "Completed" in drawn  # the outcome line


def test_pipes_and_json_get_no_progress(up: Up, tmp_path: Path) -> None:
    src = source(tmp_path)
    proc = up.cli("run", "submit", str(src), "--script", "s.py", "--wait", check=True)
    for text in (proc.stdout, proc.stderr):
        assert "\x1b[" not in text and "hashing" not in text and "→" not in text
    assert "done sleeping" in proc.stdout
    out = up.cli("run", "submit", str(src), "--script", "s.py", "--output", "json", check=True)
    assert set(json.loads(out.stdout)) == {"run_id", "snapshot"}
    assert "\x1b[" not in out.stderr and "hashing" not in out.stderr
    # --output json on a terminal: still no bars, and stdout is only the JSON
    code, drawn = in_a_terminal(
        ["run", "submit", str(src), "--script", "s.py", "--output", "json"], up.env
    )
    assert code == 0, drawn
    assert "hashing" not in drawn and "\x1b[" not in drawn
    assert set(json.loads(drawn.strip().splitlines()[-1])) == {"run_id", "snapshot"}


# --- pure --------------------------------------------------------------------------------------


def test_status_line_follows_the_current_attempt() -> None:
    history = [
        m.StateChange(state=RunState.QUEUED, at=0.0, attempt=1),
        m.StateChange(state=RunState.PREPARING, at=2.0, attempt=1),
        m.StateChange(state=RunState.PREEMPTED, at=5.0, attempt=1),
        m.StateChange(state=RunState.QUEUED, at=5.0, attempt=2),
        m.StateChange(state=RunState.PREPARING, at=7.0, attempt=2),
    ]
    system = m.Environment(python=m.PythonEnvironment(user_managed=False, pip=["x"]))
    rec = b.record(
        "r", RunState.PREPARING, attempt=2, history=history, spec=b.spec(environment=system)
    )
    assert status_line(rec, now=21.0) == (
        "r (attempt 2): Queued 2s → Preparing (building environment) 14s"
    )
    queued = b.record("q", history=history[:1])
    assert status_line(queued, 3.0, why="no agent of target 'gpu' can take it now") == (
        "q: Queued (no agent of target 'gpu' can take it now) 3s"
    )
    running = b.record(
        "x",
        RunState.RUNNING,
        agent_id="a1",  # a record from before gangs: the scheduler wrote both, never one
        agent_incarnation="i1",
        history=[
            m.StateChange(state=RunState.QUEUED, at=0.0, attempt=1),
            m.StateChange(state=RunState.PREPARING, at=1.0, attempt=1),
            m.StateChange(state=RunState.STARTING, at=2.0, attempt=1),
            m.StateChange(state=RunState.RUNNING, at=3.0, attempt=1),
        ],
    )
    assert status_line(running, 125.0) == (
        "x: Queued 1s → Preparing 1s → Starting 1s → Running (on a1) 2m02s"
    )


def test_submit_bars_render_on_a_terminal_only() -> None:
    from rich.console import Console

    shown = io.StringIO()
    console = Console(file=shown, force_terminal=True, width=100)
    with SubmitProgress(enabled=True, console=console) as bars:
        bars.hashing(0, 2048)
        bars.hashing(2048, 2048)
        bars.uploading(1024, 1024)
    assert "hashing" in shown.getvalue() and "uploading" in shown.getvalue()
    with SubmitProgress(enabled=False) as off:  # does nothing, and draws nothing
        off.hashing(1, 2)
        off.uploading(1, 2)
