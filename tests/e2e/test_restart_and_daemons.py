"""State survives restarts; the daemons also run on their own against an existing broker."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sortie.bus.broker import free_port, start_broker
from tests.e2e.conftest import (
    SORTIE,
    Installation,
    isolated_env,
    start_up,
    stop_up,
    wait_until,
)


def test_history_and_logs_survive_a_restart_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    port = free_port()
    data = tmp_path / "data"
    proc = start_up(data, port, env, tmp_path / "up.log")
    inst = Installation(
        url=f"nats://127.0.0.1:{port}",
        data_dir=data,
        env=env,
        process=proc,
        log=tmp_path / "up.log",
    )
    profile = Path(env["SORTIE_PROFILE"])
    assert oct(profile.stat().st_mode & 0o777) == "0o600"
    assert json.loads(profile.read_text())["url"] == inst.url
    src = tmp_path / "src"
    src.mkdir()
    (src / "t.py").write_text("for i in range(3):\n    print(f'line {i}')\n")
    done = inst.cli("run", "submit", str(src), "--script", "t.py", "--wait", "--output", "json")
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout.splitlines()[0])["run_id"]
    # a queued run for a target nobody serves yet must also survive
    assert stop_up(proc) == 0
    assert not profile.exists(), "the profile of a stopped installation is removed"
    assert not any("nats-server" in p and str(data) in p for p in _processes()), (
        "nats-server outlived sortie up"
    )

    proc2 = start_up(data, port, env, tmp_path / "up2.log")
    try:
        inst.process = proc2
        shown = inst.json("run", "show", run_id)
        assert isinstance(shown, dict) and shown["state"] == "Completed"
        logs = inst.cli("run", "logs", run_id, check=True).stdout.splitlines()
        assert [x for x in logs if x.startswith("line")] == ["line 0", "line 1", "line 2"]
        follow = inst.cli("run", "logs", run_id, "--follow", check=True, timeout=30).stdout
        assert "line 2" in follow
    finally:
        stop_up(proc2)


def _processes() -> list[str]:
    """Command lines of every process (from /proc: no procps needed on a fresh machine)."""
    out = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            out.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return out


def test_scheduler_and_agent_as_separate_daemons(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    broker = start_broker(tmp_path / "nats", port=free_port(), sync_always=False)
    procs: list[subprocess.Popen[str]] = []
    try:
        url = broker.url
        procs.append(
            subprocess.Popen(
                [*SORTIE, "--url", url, "scheduler"], env=env, stderr=subprocess.DEVNULL, text=True
            )
        )
        procs.append(
            subprocess.Popen(
                [
                    *SORTIE,
                    "--url",
                    url,
                    "agent",
                    "--target",
                    "gpu-box",
                    "--name",
                    "box1",
                    "--data-dir",
                    str(tmp_path / "agent"),
                ],
                env=env,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        )
        src = tmp_path / "src"
        src.mkdir()
        (src / "t.py").write_text("import os\nprint('on', os.environ['SORTIE_TARGET'])\n")

        def submit() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    *SORTIE,
                    "--url",
                    url,
                    "run",
                    "submit",
                    str(src),
                    "--script",
                    "t.py",
                    "--target",
                    "gpu-box",
                    "--wait",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )

        # the target is known once the agent's first heartbeat arrives
        result = wait_until(lambda: (r := submit()).returncode == 0 and r, timeout=30, interval=0.5)
        assert "on gpu-box" in result.stdout
        env_url = dict(env, SORTIE_URL=url)
        listed = subprocess.run(
            [*SORTIE, "run", "list", "--output", "json"],
            env=env_url,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert json.loads(listed.stdout)[0]["target"] == "gpu-box"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()
    assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]


def test_up_refuses_a_port_in_use(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    broker = start_broker(tmp_path / "nats", port=free_port(), sync_always=False)
    try:
        port = broker.url.rsplit(":", 1)[1]
        proc = subprocess.run(
            [*SORTIE, "up", "--data-dir", str(tmp_path / "d"), "--port", port],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2
        assert f"port {port}" in proc.stdout and "already in use" in proc.stdout
    finally:
        broker.stop()


def test_ctrl_c_stops_everything_cleanly(tmp_path: Path) -> None:
    import signal

    env = isolated_env(tmp_path)
    data = tmp_path / "data"
    proc = start_up(data, free_port(), env, tmp_path / "up.log")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    assert proc.stdout is not None and "Sortie stopped" in proc.stdout.read()
    assert not Path(env["SORTIE_PROFILE"]).exists()
    assert not any("nats-server" in p and str(data) in p for p in _processes())
