"""`sortie up --dashboard-port`: the ready line names the dashboard; a taken port is said."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from sortie.bus.broker import free_port
from sortie.client.run_files import portal_url
from tests.e2e.conftest import SORTIE, isolated_env, stop_up


def up_argv(tmp_path: Path, web: int) -> list[str]:
    """`sortie up` under ``tmp_path`` with its dashboard on port ``web``."""
    return [*SORTIE, "up", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()),
            "--no-fsync", "--dashboard-port", str(web)]  # fmt: skip


def _listening(port: int) -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen(1)
    return holder


def test_the_ready_line_and_the_profile_name_the_dashboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = isolated_env(tmp_path)
    web = free_port()
    proc = subprocess.Popen(
        up_argv(tmp_path, web),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert ready.startswith("Sortie ready at "), ready
        assert f"; dashboard: http://127.0.0.1:{web}/; Ctrl-C stops it" in ready
        profile = json.loads(Path(env["SORTIE_PROFILE"]).read_text())
        assert profile["dashboard_url"] == f"http://127.0.0.1:{web}/"
        monkeypatch.setenv("SORTIE_PROFILE", env["SORTIE_PROFILE"])
        # the SDK's Run.get_portal_url() (v1's name) is the run's page there
        assert portal_url("digits_1_ab") == f"http://127.0.0.1:{web}/runs/digits_1_ab"
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/healthz", timeout=10) as reply:
            assert reply.read() == b"ok"
    finally:
        assert stop_up(proc) == 0  # type: ignore[arg-type]  # text-mode Popen


def test_a_dashboard_port_given_and_taken_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    web = free_port()
    holder = _listening(web)
    try:
        proc = subprocess.run(
            up_argv(tmp_path, web),
            env=isolated_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.close()
    assert proc.returncode == 2
    assert f"port {web} on 127.0.0.1 is taken" in proc.stdout
    assert "--dashboard-port N, or 0 for none" in proc.stdout
    assert not (tmp_path / "profile.json").exists()


def test_sortie_web_on_a_taken_port_says_so(tmp_path: Path) -> None:
    web = free_port()
    holder = _listening(web)
    try:
        proc = subprocess.run(
            [*SORTIE, "--url", "nats://127.0.0.1:1", "web", "--port", str(web)],
            env=isolated_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        holder.close()
    assert proc.returncode == 2, proc.stderr
    assert f"port {web} on 127.0.0.1 is taken" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sortie_web_without_a_broker_says_so(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*SORTIE, "--url", f"nats://127.0.0.1:{free_port()}", "web", "--port", str(free_port())],
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "nats://127.0.0.1:" in proc.stderr
