"""Bounds end to end (issue I, item 6) with a real `sortie up` started with small limits: a run
past its log limit keeps running and completes, and `run logs` shows the cut and the tail;
outputs over the artifact limit are left out and named, with the upload's progress line;
`sortie gc --dry-run` lists an unreferenced blob, an upload never committed and a finished
run's directory and deletes nothing, `sortie gc` deletes them and the blobs runs reference
stay."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sortie.bus.blobs import has_blob, put_blob, sha256_bytes, staging_nuid
from sortie.bus.broker import free_port
from sortie.bus.connection import BusAuth, open_bus
from tests.e2e.conftest import SORTIE, Installation, isolated_env, start_up, stop_up

LIMITS = ("--log-limit-mb", "0.02", "--log-tail-lines", "20", "--artifact-limit-mb", "0.5")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installation]:
    root = tmp_path_factory.mktemp("bounds")
    port = free_port()
    env = isolated_env(root)
    log = root / "up.log"
    proc = start_up(root / "data", port, env, log, *LIMITS)
    try:
        yield Installation(
            url=f"nats://127.0.0.1:{port}", data_dir=root / "data", env=env, process=proc, log=log
        )
    finally:
        stop_up(proc)


def _submit(inst: Installation, src: Path, script: str) -> str:
    proc = inst.cli("run", "submit", str(src), "--script", script, "--wait", "--output", "json")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return str(json.loads(proc.stdout.splitlines()[0])["run_id"])


def test_a_run_past_its_log_limit_completes_and_its_log_keeps_the_tail(
    small: Installation, tmp_path: Path
) -> None:
    src = tmp_path / "chatty"
    src.mkdir()
    (src / "chatty.py").write_text(
        "for i in range(5000):\n    print(f'line {i:05d} ' + 'x' * 40)\nprint('the very end')\n"
    )
    run_id = _submit(small, src, "chatty.py")
    show = small.json("run", "show", run_id)
    assert isinstance(show, dict) and show["state"] == "Completed"
    logs = small.cli("run", "logs", run_id, check=True).stdout.splitlines()
    assert "line 00000 " + "x" * 40 in logs
    assert (
        "[sortie] log limit 20 kB reached; further lines dropped, the last 20 lines are kept"
        in logs
    )
    assert any(
        "lines follow" in line and "were dropped past the log limit" in line for line in logs
    )
    assert logs.index("line 04981 " + "x" * 40) < logs.index("the very end")
    assert "line 02500 " + "x" * 40 not in logs  # cut
    assert "line 04980 " + "x" * 40 not in logs  # before the tail of 20


def test_outputs_over_the_artifact_limit_are_named_and_left_out(
    small: Installation, tmp_path: Path
) -> None:
    src = tmp_path / "outs"
    src.mkdir()
    (src / "outs.py").write_text(
        "import os\nos.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/a.bin', 'wb').write(os.urandom(300_000))\n"
        "open('outputs/b.bin', 'wb').write(os.urandom(400_000))\n"
    )
    run_id = _submit(small, src, "outs.py")
    show = small.json("run", "show", run_id)
    assert isinstance(show, dict) and show["state"] == "Completed"
    assert show["artifacts"] == ["outputs/a.bin"]
    logs = small.cli("run", "logs", run_id, check=True).stdout.splitlines()
    assert (
        "[sortie] artifact limit 500 kB reached: 1 files (400 kB) not uploaded: outputs/b.bin"
        in logs
    )
    assert "[sortie] uploading outputs: 300 kB" in logs


async def _store(inst: Installation, data: bytes | None, sha: str) -> bool:
    """Put ``data`` as a blob (with the scheduler's rights) or, with None, say if ``sha`` is
    stored."""
    bus = await open_bus(inst.url, "test", auth=BusAuth(creds=inst.scheduler_creds))
    try:
        if data is not None:
            await put_blob(bus.blobs, sha, data)
        return await has_blob(bus.blobs, sha)
    finally:
        await bus.close()


async def _staged_chunks(inst: Installation, nuid: str, data: bytes | None) -> int:
    """Publish ``data`` as an upload's chunk and never commit it (a client that crashed) or,
    with None, count the chunks left on ``nuid``."""
    bus = await open_bus(inst.url, "test", auth=BusAuth(creds=inst.scheduler_creds))
    try:
        subject = bus.blobs.chunk_subject(nuid)
        if data is not None:
            await bus.blobs.js.publish(subject, data)
        info = await bus.blobs.js.stream_info(bus.blobs.stream, subjects_filter=subject)
        return (info.state.subjects or {}).get(subject, 0)
    finally:
        await bus.close()


def test_gc_lists_then_deletes_unreferenced_blobs_and_old_run_dirs(
    small: Installation, tmp_path: Path
) -> None:
    src = tmp_path / "keep"
    src.mkdir()
    (src / "keep.py").write_text(
        "import os\nos.makedirs('outputs', exist_ok=True)\n"
        "open('outputs/model.txt', 'w').write('weights of a kept run')\n"
    )
    run_id = _submit(small, src, "keep.py")
    artifact = sha256_bytes(b"weights of a kept run")
    orphan = b"nothing refers to me"
    orphan_sha = sha256_bytes(orphan)
    assert asyncio.run(_store(small, orphan, orphan_sha))
    crashed = staging_nuid(sha256_bytes(b"a whole file"), "crashed")
    assert asyncio.run(_staged_chunks(small, crashed, b"half a fi")) == 1
    run_dir = small.data_dir / "agent" / "runs" / run_id
    assert run_dir.is_dir()
    gc = ("gc", "--data-dir", str(small.data_dir), "--blob-grace-hours", "0")
    gc += ("--run-dir-keep-hours", "0")

    dry = small.cli(*gc, "--dry-run", check=True).stdout
    assert orphan_sha in dry and str(run_dir) in dry
    assert f"upload        9 B  {crashed}  (1 chunks never committed" in dry
    assert "nothing was deleted (--dry-run)" in dry
    assert artifact not in dry
    assert asyncio.run(_store(small, None, orphan_sha)) and run_dir.is_dir()
    assert asyncio.run(_staged_chunks(small, crashed, None)) == 1

    done = small.cli(*gc, check=True).stdout
    assert orphan_sha in done and str(run_dir) in done and "freed" in done
    assert not asyncio.run(_store(small, None, orphan_sha))
    assert asyncio.run(_staged_chunks(small, crashed, None)) == 0
    assert not run_dir.exists()
    # what runs reference stays: the artifact downloads, and the run's snapshot still runs
    assert asyncio.run(_store(small, None, artifact))
    dest = tmp_path / "dl"
    small.cli("run", "download", run_id, str(dest), "--flat", check=True)
    assert (dest / "outputs" / "model.txt").read_text() == "weights of a kept run"
    again = _submit(small, src, "keep.py")
    assert small.json("run", "show", again)["state"] == "Completed"  # type: ignore[index]


@pytest.mark.parametrize(
    ("command", "flag", "value", "says"),
    [
        ("up", "--logs-max-age-days", "0.0001", "at least 120 seconds"),
        ("up", "--log-limit-mb", "-1", "0 or more"),
        ("up", "--metric-limit", "1.5", "whole number"),
        ("scheduler", "--metrics-max-gb", "lots", "not a number"),
        ("gc", "--blob-grace-hours", "-1", "0 or more"),
        ("gc", "--image-cache-gb", "lots", "not a number"),
    ],
)
def test_bad_bound_settings_are_refused(
    tmp_path: Path, command: str, flag: str, value: str, says: str
) -> None:
    proc = subprocess.run(
        [*SORTIE, command, "--data-dir", str(tmp_path / "d"), flag, value],
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert flag in proc.stderr and says in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "d").exists()  # nothing started, nothing made
