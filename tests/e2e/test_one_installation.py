"""One installation per data directory: a second `sortie up` (or daemon) on it is refused, and
a SIGKILLed `sortie up` leaves no broker behind on its store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sortie.bus.broker import free_port, pid_file, port_in_use, start_broker
from tests.e2e.conftest import (
    REPO,
    SORTIE,
    Installation,
    isolated_env,
    start_up,
    stop_up,
    wait_until,
)


@pytest.fixture
def first(tmp_path: Path) -> Iterator[Installation]:
    port = free_port()
    env = isolated_env(tmp_path)
    log = tmp_path / "up.log"
    proc = start_up(tmp_path / "data", port, env, log)
    try:
        yield Installation(
            url=f"nats://127.0.0.1:{port}",
            data_dir=tmp_path / "data",
            env=env,
            process=proc,
            log=log,
        )
    finally:
        stop_up(proc)


def _sortie(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SORTIE, *args], env=env, capture_output=True, text=True, timeout=60, cwd=REPO, input=""
    )


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_second_up_on_the_same_data_dir_is_refused_naming_the_holder(
    first: Installation, tmp_path: Path
) -> None:
    profile = Path(first.env["SORTIE_PROFILE"])
    before = json.loads(profile.read_text())
    second = _sortie(
        first.env,
        "up",
        "--data-dir",
        str(first.data_dir),
        "--port",
        str(free_port()),
        "--no-fsync",
    )
    assert second.returncode == 2
    out = second.stdout + second.stderr
    assert f"in use by pid {first.process.pid} (sortie up)" in out
    assert "another --data-dir" in out
    # the daemons are refused on the dirs `sortie up` holds, as well
    for daemon, sub in (("scheduler", "scheduler"), ("agent", "agent")):
        args = [daemon, "--data-dir", str(first.data_dir / sub)]
        refused = _sortie(first.env, *args, *(["--target", "local"] if daemon == "agent" else []))
        assert refused.returncode == 2, refused.stderr
        assert f"in use by pid {first.process.pid} (sortie up)" in refused.stderr
    # the first is untouched: its profile, and a run completes on it
    assert json.loads(profile.read_text()) == before
    assert first.process.poll() is None
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.py").write_text("print('still here', flush=True)\n")
    run = first.cli("run", "submit", str(src), "--script", "hello.py", "--wait")
    assert run.returncode == 0, run.stderr
    assert "still here" in run.stdout


def test_killed_up_leaves_no_broker_and_the_next_up_starts(tmp_path: Path) -> None:
    port = free_port()
    env = isolated_env(tmp_path)
    data = tmp_path / "data"
    proc = start_up(data, port, env, tmp_path / "up.log")
    broker_pid = int(pid_file(data / "nats").read_text())
    assert _alive(broker_pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:
        # the leader shows as a zombie while its other threads are still exiting with the
        # listening socket open: gone means the port is closed as well
        wait_until(
            lambda: not _alive(broker_pid) and not port_in_use("127.0.0.1", port), timeout=30
        )
    finally:
        if _alive(broker_pid):  # the failure left it: leave no nats-server behind
            os.kill(broker_pid, signal.SIGKILL)
    again = start_up(data, port, env, tmp_path / "up2.log")
    try:
        assert again.poll() is None
    finally:
        assert stop_up(again) == 0


@pytest.fixture
def orphan(tmp_path: Path) -> Iterator[tuple[Path, int, int]]:
    """A broker an older `sortie up` left on its data dir (it did not take nats-server along
    when killed): nats-server on ``data/nats``'s config and store, its pid in the pid file.
    Yields (data dir, its port, its pid)."""
    data = tmp_path / "data"
    left = start_broker(data / "nats", port=free_port(), sync_always=False)
    try:
        yield data, int(left.url.rsplit(":", 1)[1]), left.process.pid
    finally:
        left.stop()


def test_port_in_use_names_the_broker_left_on_the_data_dir(
    orphan: tuple[Path, int, int], tmp_path: Path
) -> None:
    data, port, pid = orphan
    up = _sortie(isolated_env(tmp_path), "up", "--data-dir", str(data), "--port", str(port))
    assert up.returncode == 2, up.stdout + up.stderr
    out = up.stdout + up.stderr
    assert f"port {port} on 127.0.0.1 is already in use, maybe by nats-server pid {pid}" in out
    assert f"kill -TERM {pid}" in out and "Traceback" not in out
    assert _alive(pid)  # left as it was


def test_a_broker_left_on_the_data_dir_on_another_port_is_refused(
    orphan: tuple[Path, int, int], tmp_path: Path
) -> None:
    data, _, pid = orphan
    other = free_port()
    env = isolated_env(tmp_path)
    up = _sortie(env, "up", "--data-dir", str(data), "--port", str(other), "--no-fsync")
    assert up.returncode == 2, up.stdout + up.stderr
    out = up.stdout + up.stderr
    assert f"nats-server pid {pid}, started earlier on this data directory" in out
    assert f"kill -TERM {pid}" in out and "Traceback" not in out
    # no second broker started on the store, no profile written; the first one is untouched
    assert not port_in_use("127.0.0.1", other)
    assert not Path(env["SORTIE_PROFILE"]).exists()
    assert _alive(pid) and int(pid_file(data / "nats").read_text()) == pid


def test_a_stale_pid_file_does_not_block_a_start(tmp_path: Path) -> None:
    """The pid file names a process that is not a nats-server on this store (this test's own
    pid): `sortie up` starts."""
    data = tmp_path / "data"
    (data / "nats").mkdir(parents=True)
    pid_file(data / "nats").write_text(f"{os.getpid()}\n")
    proc = start_up(data, free_port(), isolated_env(tmp_path), tmp_path / "up.log")
    assert stop_up(proc) == 0
