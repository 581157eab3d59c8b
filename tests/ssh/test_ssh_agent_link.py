"""The whole path against real parts: a real sshd, a real nats-server, a real agent.

The agent is installed offline over SFTP into sortie-test's home, started detached, and
reaches the broker through the link's reverse port forward. Killing the sshd process that
serves the link drops it; the link comes back on the same remote port and the same agent
(same incarnation) heartbeats through it again.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from sortie.bus.broker import BrokerProcess
from sortie.bus.connection import open_bus
from sortie.proto import codec, messages, subjects
from sortie.scheduler.ssh import SshCredentials, SshError
from sortie.scheduler.ssh.install import install_agent, remove_install, start_agent, stop_agent
from sortie.scheduler.ssh.link import SshLink
from tests.ssh.conftest import Sshd, get_test_user

pytestmark = pytest.mark.timeout(180)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def eventually(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def test_install_agent_link_drop_and_restore(  # noqa: PLR0917  # pytest passes fixtures by name
    broker: BrokerProcess,
    sshd: Sshd,
    known_hosts: Path,
    key_creds: SshCredentials,
    wheelhouse: Path,
    remote_dir: str,
) -> None:
    bus = await open_bus(broker.url, "t", create=True)
    url = urlparse(broker.url)
    states: list[tuple[str, str, float]] = []
    link = SshLink(
        sshd.target(),
        key_creds,
        known_hosts=known_hosts,
        local_host=url.hostname or "127.0.0.1",
        local_port=url.port or 4222,
        on_state=lambda s, why: states.append((s, why, time.time())),
        backoff=(0.2, 2.0),
    )
    user = get_test_user()
    home = Path(user.pw_dir)
    agent_id = f"vm-test-{os.getpid()}"
    beats: asyncio.Queue[messages.Heartbeat] = asyncio.Queue()

    async def on_beat(msg: object) -> None:
        beats.put_nowait(codec.decode(messages.Heartbeat, msg.data))

    sub = await bus.nc.subscribe(subjects.heartbeat(agent_id), cb=on_beat)
    try:
        await link.start()
        assert link.connected and link.remote_port > 0
        assert [s for s, _, _ in states] == ["connected"]
        port = link.remote_port
        conn = link.conn
        assert conn is not None

        # Install: everything copied the first time, nothing the second.
        progress: list[str] = []
        t0 = time.monotonic()
        sortie_bin = await install_agent(
            conn, wheelhouse, remote_dir=remote_dir, progress=progress.append
        )
        first_s = time.monotonic() - t0
        assert sortie_bin == f"{home}/{remote_dir}/venv/bin/sortie"
        assert any(line.startswith("copying ") and "wheels" in line for line in progress)
        assert any(line.startswith("found Python 3.") for line in progress)
        progress.clear()
        t0 = time.monotonic()
        assert (
            await install_agent(conn, wheelhouse, remote_dir=remote_dir, progress=progress.append)
            == sortie_bin
        )
        again_s = time.monotonic() - t0
        assert "wheels already on the host" in progress
        print(f"install: first {first_s:.1f} s, again {again_s:.1f} s")
        # Installed as the user, under its home: no root needed.
        venv = home / remote_dir / "venv"
        assert venv.stat().st_uid == user.pw_uid

        # An agent that dies at once is reported with its log.
        with pytest.raises(SshError) as err:
            await start_agent(
                conn,
                sortie_bin=sortie_bin,
                remote_dir=remote_dir,
                broker_url=f"nats://127.0.0.1:{port}",
                target="vm-test",
                agent_id=agent_id,
                extra_args=["--gpus", "not-a-number"],
            )
        assert err.value.code == "agent_failed"
        assert "--gpus" in err.value.output

        # The real agent, through the reverse forward.
        broker_url = f"nats://127.0.0.1:{port}"
        pid = await start_agent(
            conn,
            sortie_bin=sortie_bin,
            remote_dir=remote_dir,
            broker_url=broker_url,
            target="vm-test",
            agent_id=agent_id,
        )
        assert alive(pid)
        assert os.stat(f"/proc/{pid}").st_uid == user.pw_uid  # runs as the SSH user
        hb = await asyncio.wait_for(beats.get(), 60)
        assert hb.agent_id == agent_id and hb.target == "vm-test"

        # Starting again replaces the running agent.
        pid2 = await start_agent(
            conn,
            sortie_bin=sortie_bin,
            remote_dir=remote_dir,
            broker_url=broker_url,
            target="vm-test",
            agent_id=agent_id,
        )
        assert pid2 != pid and not alive(pid) and alive(pid2)
        t_start = time.time()
        hb = await asyncio.wait_for(_beat_after(beats, t_start), 60)
        incarnation = hb.incarnation

        # Kill the sshd processes serving the link: it drops and comes back on the same port.
        assert sshd.kill_sessions() > 0
        await eventually(
            lambda: [s for s, _, _ in states][-2:] == ["disconnected", "connected"],
            30,
            "the link to drop and come back",
        )
        t_back = states[-1][2]
        assert link.connected and link.remote_port == port
        assert alive(pid2)  # the agent survived its SSH session
        hb = await asyncio.wait_for(_beat_after(beats, t_back), 60)
        assert hb.incarnation == incarnation  # the same agent process, reconnected

        # Detach: stop the agent, remove what was installed.
        assert link.conn is not None
        await stop_agent(link.conn, remote_dir=remote_dir, grace_s=10)
        assert not alive(pid2)
        assert not (home / remote_dir / "agent.pid").exists()
        await remove_install(link.conn, remote_dir=remote_dir)
        assert not (home / remote_dir).exists()
    finally:
        await sub.unsubscribe()
        await link.close()
        await bus.close()
    assert not link.connected


async def _beat_after(beats: asyncio.Queue[messages.Heartbeat], t: float) -> messages.Heartbeat:
    while True:
        hb = await beats.get()
        if hb.sent_at > t:
            return hb
