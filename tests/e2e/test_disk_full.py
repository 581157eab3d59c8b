"""Disk full is survivable (issue I, item 7): a real `sortie up` whose data dir is a small
tmpfs (where mounting is permitted) and whose store limit is smaller still. A run whose
outputs, or whose logs, the store cannot take ends Failed with kind disk_full after a bounded
retry; a later submit says the store is full and how full (exit 2, no traceback); SIGTERM
stops `sortie up` by its own handling."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sortie import Experiment, ScriptRunConfig, Workspace
from sortie.bus.broker import free_port
from sortie.client.client import StoreFullError
from tests.e2e.conftest import SORTIE, Installation, isolated_env, start_up, stop_up, wait_until

STORE_LIMIT = "24MB"  # logs get a quarter: 6 MB; blobs 55%: 13.2 MB
LOG_BYTES = 12 * 1024 * 1024  # printed by the loud run: twice its logs' share
OUTPUT_BYTES = 16 * 1024 * 1024  # written to outputs/: more than the blobs' share


@contextlib.contextmanager
def small_disk(path: Path) -> Iterator[bool]:
    """A 64 MiB tmpfs at ``path`` (True), or a plain directory where mounting is not
    permitted (False: the store limit alone bounds the store)."""
    path.mkdir()
    mounted = (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(path)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def full_up(tmp_path: Path) -> Iterator[Installation]:
    with small_disk(tmp_path / "disk"):
        port = free_port()
        env = isolated_env(tmp_path)
        log = tmp_path / "up.log"
        data = tmp_path / "disk" / "data"
        proc = start_up(data, port, env, log, "--store-limit", STORE_LIMIT)
        try:
            yield Installation(
                url=f"nats://127.0.0.1:{port}", data_dir=data, env=env, process=proc, log=log
            )
        finally:
            stop_up(proc)


def _submit(inst: Installation, src: Path, script: str) -> str:
    sub = inst.json("run", "submit", str(src), "--script", script)
    assert isinstance(sub, dict)
    return str(sub["run_id"])


def _shown(inst: Installation, run_id: str) -> dict[str, object]:
    run = inst.json("run", "show", run_id)
    assert isinstance(run, dict)
    return run


def _ended(inst: Installation, run_id: str) -> dict[str, object]:
    def ended() -> dict[str, object] | None:
        run = _shown(inst, run_id)
        return run if run["state"] in ("Completed", "Failed", "Canceled") else None

    return wait_until(ended, 120, 0.5)  # type: ignore[no-any-return]


def test_a_full_store_fails_runs_with_disk_full_refuses_submits_and_stops_on_sigterm(
    full_up: Installation, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "big_outputs.py").write_text(
        "import os\n"
        "os.makedirs('outputs', exist_ok=True)\n"
        f"open('outputs/big.bin', 'wb').write(os.urandom({OUTPUT_BYTES}))\n"
        "print('wrote outputs')\n"
    )
    (src / "ticking.py").write_text(
        "import time\n"
        "while True:\n"
        "    print('tick', 'x' * 4000, flush=True)\n"
        "    time.sleep(0.05)\n"
    )
    (src / "loud.py").write_text(
        f"for i in range({LOG_BYTES // 400}):\n    print(i, 'x' * 400)\nprint('the end')\n"
    )

    # outputs the blob store cannot take: Failed (disk_full), not stuck in Finalizing
    outputs_run = _ended(full_up, _submit(full_up, src, "big_outputs.py"))
    assert outputs_run["state"] == "Failed", outputs_run
    error = outputs_run["error"]
    assert isinstance(error, dict), outputs_run
    assert error["kind"] == "disk_full", error
    assert "outputs not stored: the Sortie store has no room for outputs/big.bin (16.0 MB)" in str(
        error["message"]
    ), error

    # logs the store cannot take: a run that prints on when the logs are full is stopped,
    # and it fails (disk_full) as the run that filled them does
    ticking = _submit(full_up, src, "ticking.py")
    wait_until(lambda: _shown(full_up, ticking)["state"] == "Running", 60, 0.3)
    loud_run = _ended(full_up, _submit(full_up, src, "loud.py"))
    assert loud_run["state"] == "Failed", loud_run
    error = loud_run["error"]
    assert isinstance(error, dict), loud_run
    assert error["kind"] == "disk_full", error
    assert "run logs use" in str(error["message"]), error
    ticking_run = _ended(full_up, ticking)
    assert ticking_run["state"] == "Failed", ticking_run
    error = ticking_run["error"]
    assert isinstance(error, dict) and error["kind"] == "disk_full", ticking_run
    daemon_log = full_up.log.read_text()
    assert "the store is full: stopping the run" in daemon_log
    assert "the store is full; giving up" in daemon_log  # the bounded retry said why

    # a later submit is refused, saying how full the store is
    again = full_up.cli("run", "submit", str(src), "--script", "loud.py")
    assert again.returncode == 2, (again.stdout, again.stderr)
    assert "sortie: the Sortie store is full: run logs use" in again.stderr, again.stderr
    assert "of 6.0 MB (JetStream max_bytes)" in again.stderr, again.stderr
    assert "`sortie up --store-limit`" in again.stderr, again.stderr
    assert "Traceback" not in again.stderr
    listed = full_up.json("run", "list")
    assert isinstance(listed, list) and len(listed) == 3, listed  # nothing was submitted

    # SIGTERM: `sortie up` stops by its own handling
    assert stop_up(full_up.process, timeout=45) == 0
    assert full_up.process.stdout is not None
    assert "Sortie stopped" in full_up.process.stdout.read()
    assert "Traceback" not in full_up.log.read_text()


def test_store_limit_must_be_a_size(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    proc = subprocess.run(
        [*SORTIE, "up", "--store-limit", "lots"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "'lots' is not a size" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_snapshot_the_store_cannot_take_is_refused_saying_so_by_cli_and_sdk(
    full_up: Installation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "big-src"
    src.mkdir()
    (src / "t.py").write_text("print('hi')\n")
    (src / "weights.bin").write_bytes(os.urandom(OUTPUT_BYTES))  # more than the blobs' share
    refused = full_up.cli("run", "submit", str(src), "--script", "t.py")
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert refused.stderr.startswith(
        "sortie: the Sortie store has no room for the snapshot (16.0 MB): blobs (snapshots "
        "and outputs) use "
    ), refused.stderr
    assert "of 13.2 MB (JetStream max_bytes)" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    message = refused.stderr.removeprefix("sortie: ").strip()

    monkeypatch.setenv("SORTIE_PROFILE", full_up.env["SORTIE_PROFILE"])
    monkeypatch.delenv("SORTIE_URL", raising=False)
    ws = Workspace.connect()
    try:
        with pytest.raises(StoreFullError) as raised:
            Experiment(ws, "big").submit(ScriptRunConfig(source_directory=str(src), script="t.py"))
    finally:
        ws.close()
    assert str(raised.value) == message
    assert full_up.json("run", "list") == []  # nothing was submitted

    # nothing was half-sent either: a snapshot that fits still goes in, and its run completes
    (src / "weights.bin").unlink()
    run = _ended(full_up, _submit(full_up, src, "t.py"))
    assert run["state"] == "Completed", run
