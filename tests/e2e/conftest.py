"""A real `sortie up` (nats-server + scheduler + local agent) in a temporary directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sortie.agents.isolation import ENV_RUN_WRITABLE
from sortie.bus.broker import free_port

REPO = Path(__file__).resolve().parents[2]
_ENTRY = Path(sys.executable).parent / "sortie"
# The installed console script, as a user runs it (fallback: the module).
SORTIE = [str(_ENTRY)] if _ENTRY.exists() else [sys.executable, "-m", "sortie.cli"]


@dataclass
class Installation:
    url: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[str]
    log: Path

    @property
    def client_creds(self) -> Path:
        """The credentials `sortie up` made for clients (the profile names them)."""
        return self.data_dir / "auth" / "client.creds"

    @property
    def scheduler_creds(self) -> Path:
        """Full rights on the broker (for tests that look at or write anything)."""
        return self.data_dir / "auth" / "scheduler.creds"

    def cli(
        self,
        *args: str,
        timeout: float = 120,
        check: bool = False,
        cwd: Path | None = None,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*SORTIE, *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd or REPO,
            input=input if input is not None else "",
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"sortie {args} failed {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str, timeout: float = 120) -> object:
        proc = self.cli(*args, "--output", "json", timeout=timeout, check=True)
        return json.loads(proc.stdout)


def start_up(
    data_dir: Path, port: int, env: dict[str, str], log: Path, *extra: str
) -> subprocess.Popen[str]:
    """`sortie up` (with ``extra`` options), once it has printed its ready line. No dashboard
    unless ``extra`` asks for one (``--dashboard-port``)."""
    fh = open(log, "a")  # noqa: SIM115 - owned by the child
    if "--dashboard-port" not in extra:
        extra = (*extra, "--dashboard-port", "0")
    proc = subprocess.Popen(
        [*SORTIE, "up", "--data-dir", str(data_dir), "--port", str(port), "--no-fsync", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=fh,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the one ready line
    scheme = "tls" if "--tls-cert" in extra else "nats"
    expected = f"Sortie ready at {scheme}://127.0.0.1:{port} (data {data_dir.resolve()}"
    if not line.startswith(expected):
        try:  # it is stopping: let it finish writing why
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise AssertionError(f"sortie up did not get ready: {line!r}\n{log.read_text()[-3000:]}")
    return proc


def isolated_env(root: Path, *drop: str) -> dict[str, str]:
    """``os.environ`` for the CLI and daemons of an installation of their own under ``root``:
    its own client profile, no broker URL or credentials from outside (nor the variables in
    ``drop``), and this checkout importable."""
    env = dict(os.environ)
    for name in ("SORTIE_URL", "SORTIE_CREDS", *drop):
        env.pop(name, None)
    env["SORTIE_PROFILE"] = str(root / "profile.json")
    env["PYTHONPATH"] = str(REPO)
    env[ENV_RUN_WRITABLE] = str(shared_dir(root))
    return env


def shared_dir(root: Path) -> Path:
    """A directory every run of the installation under ``root`` may write (like /tmp: 1777),
    named to its agents by SORTIE_RUN_WRITABLE: where a test's scripts keep ledgers and
    checkpoints that outlive an attempt. Runs may write nothing else outside their own."""
    shared = root / "shared"
    shared.mkdir(parents=True, exist_ok=True)
    shared.chmod(0o1777)
    return shared


def stop_up(proc: subprocess.Popen[str], timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture(scope="module")
def installation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    root = tmp_path_factory.mktemp("sortie")
    port = free_port()
    env = isolated_env(root)
    log = root / "up.log"
    proc = start_up(root / "data", port, env, log)
    inst = Installation(
        url=f"nats://127.0.0.1:{port}", data_dir=root / "data", env=env, process=proc, log=log
    )
    try:
        yield inst
    finally:
        stop_up(proc)
        # keep the daemon log visible when something failed
        if os.environ.get("SORTIE_TEST_SHOW_LOG"):
            print(log.read_text()[-5000:])


def wait_until(pred, timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
