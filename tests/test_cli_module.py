"""`python -m sortie.cli` exits with the code the `sortie` command would (it used to exit 0
whatever `main` returned)."""

from __future__ import annotations

import subprocess
import sys

from sortie.bus.broker import free_port


def test_python_dash_m_exits_with_mains_code() -> None:
    unreachable = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    proc = subprocess.run(
        [sys.executable, "-m", "sortie.cli", "--url", unreachable, "run", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "sortie:" in proc.stderr and "Traceback" not in proc.stderr
