"""Attached machines: the SSH side effects behind ``AttachVm`` / ``DetachVm`` (shell code).

Everything here talks to the network; results go back to the core as events through
``emit``. Secrets are read from and written to the scheduler host's owner-only store
(``scheduler.ssh.secrets``) and never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import structlog
from asyncssh import SSHClientConnection

from sortie.bus.auth import Creds
from sortie.bus.connection import split_urls
from sortie.bus.pause import retry_pause
from sortie.proto import messages as m
from sortie.proto.agent_env import redacted
from sortie.scheduler import events as ev
from sortie.scheduler import targets
from sortie.scheduler.ssh import (
    AgentAccess,
    SshCredentials,
    SshError,
    SshLink,
    SshTarget,
    build_wheelhouse,
    connect,
    delete_credentials,
    engine_args,
    hostkeys,
    install_agent,
    install_private_file,
    load_credentials,
    remove_install,
    save_credentials,
    start_agent,
    stop_agent,
)

log = structlog.get_logger("sortie.scheduler.machines")

REMOTE_DIR = ".sortie"
Emit = Callable[[ev.Event], None]


def credentials(secret: m.SshSecret) -> SshCredentials:
    return SshCredentials(
        password=secret.password, private_key=secret.private_key, passphrase=secret.passphrase
    )


def known_hosts_of(login: m.SshLogin) -> Path:
    return hostkeys.known_hosts_file(login.known_hosts)


def target_of(address: str, login: m.SshLogin) -> SshTarget:
    return SshTarget(address=address, username=login.username, port=login.ssh_port)


async def install_access(
    conn: SSHClientConnection,
    remote_dir: str,
    creds: Creds | None,
    tls_ca: Path | None,
    broker_host: str | None,
) -> AgentAccess:
    """Put the agent's own credentials (0600) and the broker's CA under ``~/<remote_dir>``;
    with a CA, the agent checks the broker's certificate for ``broker_host``."""
    creds_path = ca_path = None
    if creds is not None:
        creds_path = await install_private_file(
            conn, remote_dir=remote_dir, name="agent.creds", text=creds.text()
        )
    if tls_ca is not None:
        pem = await asyncio.to_thread(tls_ca.read_text)
        ca_path = await install_private_file(
            conn, remote_dir=remote_dir, name="broker-ca.pem", text=pem
        )
    return AgentAccess(
        creds_path=creds_path,
        tls_ca_path=ca_path,
        tls_hostname=broker_host if ca_path is not None else None,
    )


class Machines:
    """The scheduler's SSH links to attached machines, and attaching/detaching them."""

    def __init__(
        self,
        data_dir: Path,
        broker_url: str,
        emit: Emit,
        *,
        mint: Callable[[str], Creds | None] = lambda _: None,
        tls_ca: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.broker_url = broker_url
        self.emit = emit
        self.mint = mint  # an agent id -> its own broker credentials (None: none needed)
        self.tls_ca = tls_ca
        self.links: dict[str, SshLink] = {}

    def _broker(self) -> tuple[str, int]:
        # an SSH link forwards to one broker: the first of a cluster's URLs
        u = urlparse(split_urls(self.broker_url)[0])
        return u.hostname or "127.0.0.1", u.port or 4222

    async def _open_link(
        self, name: str, address: str, login: m.SshLogin, creds: SshCredentials, port: int
    ) -> SshLink:
        host, local_port = self._broker()

        def on_state(state: str, why: str) -> None:
            if state == "connected":
                self.emit(ev.VmLink(name=name, link="connected"))
            else:
                self.emit(ev.VmLink(name=name, link="reconnecting"))
                log.warning("ssh link down; reconnecting", compute=name, why=why)

        link = SshLink(
            target_of(address, login),
            creds,
            known_hosts=known_hosts_of(login),
            local_host=host,
            local_port=local_port,
            remote_port=port,
            on_state=on_state,
        )
        await link.start()
        self.links[name] = link
        return link

    async def attach(self, cmd: ev.AttachVm) -> None:
        name = cmd.name
        try:
            remote_port = await self._install_and_start(cmd)
        except SshError as exc:
            detail = exc.message + (f"\n{exc.output}" if exc.output else "")
            await self._drop_link(name)
            self.emit(ev.VmFailed(name=name, code=exc.code, message=detail))
            return
        except Exception as exc:  # a bug must not stop the scheduler; the attach fails
            log.exception("attach failed", compute=name)
            await self._drop_link(name)
            self.emit(
                ev.VmFailed(name=name, code="internal", message=f"{type(exc).__name__}: {exc}")
            )
            return
        self.emit(ev.VmAttached(name=name, remote_port=remote_port))

    async def _install_and_start(self, cmd: ev.AttachVm) -> int | None:
        """Install Sortie on the machine and start its agent; the link's remote port (None
        where the agent reaches an advertised broker URL itself)."""
        name, vm = cmd.name, cmd.vm

        def say(line: str) -> None:
            self.emit(ev.VmProgress(name=name, line=line))

        creds = credentials(cmd.secret)
        save_credentials(self.data_dir, name, creds)
        say(f"connecting to {vm.ssh.username}@{vm.address}:{vm.ssh.ssh_port}")
        conn = await connect(
            target_of(vm.address, vm.ssh),
            creds,
            known_hosts=known_hosts_of(vm.ssh),
            trust_new_host_key=vm.ssh.trust_new_host_key,
            pinned_host_key=vm.ssh.host_key_fingerprint,
        )
        try:
            say("host key verified; preparing Sortie's wheels")
            wheelhouse = await build_wheelhouse(self.data_dir / "wheelhouse")
            sortie_bin = await install_agent(conn, wheelhouse, remote_dir=REMOTE_DIR, progress=say)
            remote_port: int | None = None
            if vm.advertised_url:
                url = vm.advertised_url
            else:
                link = await self._open_link(name, vm.address, vm.ssh, creds, 0)
                remote_port = link.remote_port
                url = f"nats://127.0.0.1:{remote_port}"
                say(f"reverse port forward ready (remote port {remote_port})")
            access = await install_access(
                conn, REMOTE_DIR, self.mint(name), self.tls_ca, self._broker()[0]
            )
            if access.tls_ca_path is not None:
                url = url.replace("nats://", "tls://", 1)
            if vm.agent_env:
                shown = redacted(vm.agent_env)
                say("agent environment: " + " ".join(f"{k}={v}" for k, v in shown.items()))
            say("starting the agent")
            await start_agent(
                conn,
                sortie_bin=sortie_bin,
                remote_dir=REMOTE_DIR,
                broker_url=url,
                target=name,
                agent_id=name,
                access=dataclasses.replace(access, env=vm.agent_env),
                # once the broker drops it for good (its credentials revoked), it gives its runs
                # back and ends instead of running on unheard
                extra_args=("--exit-when-refused", *engine_args(vm.engine)),
            )
        finally:
            conn.close()
        return remote_port

    async def detach(self, cmd: ev.DetachVm, rec: m.VmRecord | None) -> None:
        """Stop the machine's agent and remove its files, then forget the machine. If that
        cannot be done, the machine is Failed with what was left (to detach again), unless
        the detach was forced."""
        name = cmd.name
        problem = None if rec is None else await self._clean_up(cmd, rec)
        if problem is not None and not cmd.force:
            self.emit(ev.VmFailed(name=name, code=targets.DETACH_INCOMPLETE, message=problem))
            return
        if problem is not None:
            self.emit(ev.VmProgress(name=name, line=f"forgotten anyway (--force): {problem}"))
        await self._drop_link(name)
        with contextlib.suppress(OSError):
            delete_credentials(self.data_dir, name)
        self.emit(ev.VmDetached(name=name))

    async def _clean_up(self, cmd: ev.DetachVm, rec: m.VmRecord) -> str | None:
        """Stop the agent and remove the install over SSH; what could not be done, or None."""
        where = f"{rec.vm.ssh.username}@{rec.vm.address}:{rec.vm.ssh.ssh_port}"
        try:
            creds = load_credentials(self.data_dir, cmd.name)
            conn = await connect(
                target_of(rec.vm.address, rec.vm.ssh),
                creds,
                known_hosts=known_hosts_of(rec.vm.ssh),
            )
            try:
                await stop_agent(conn, remote_dir=REMOTE_DIR)
                self.emit(ev.VmProgress(name=cmd.name, line="agent stopped"))
                if not cmd.keep_files:
                    await remove_install(conn, remote_dir=REMOTE_DIR)
                    self.emit(ev.VmProgress(name=cmd.name, line=f"removed ~/{REMOTE_DIR}"))
            finally:
                conn.close()
        except (SshError, OSError) as exc:
            msg = exc.message if isinstance(exc, SshError) else str(exc)
            return (
                f"could not stop the agent and remove ~/{REMOTE_DIR} on {where}: {msg}; "
                f"detach again once it is reachable, or `sortie compute detach {cmd.name} "
                f"--force` to forget it (then remove ~/{REMOTE_DIR} there by hand)"
            )
        return None

    async def restore(self, rec: m.VmRecord) -> None:
        """After a scheduler restart: reopen an attached machine's link on the same remote
        port (its agent's broker URL), retrying with backoff until it connects."""
        if rec.provisioning_state != "Succeeded" or rec.vm.advertised_url:
            return
        delay = 1.0
        while rec.name not in self.links:
            try:
                creds = load_credentials(self.data_dir, rec.name)
                await self._open_link(
                    rec.name, rec.vm.address, rec.vm.ssh, creds, rec.remote_port or 0
                )
                self.emit(ev.VmLink(name=rec.name, link="connected"))
                return
            except (SshError, OSError) as exc:
                msg = exc.message if isinstance(exc, SshError) else str(exc)
                log.warning("ssh link not restored yet", compute=rec.name, error=msg)
                self.emit(ev.VmLink(name=rec.name, link="reconnecting"))
                await retry_pause(delay)
                delay = min(delay * 2, 30.0)

    async def _drop_link(self, name: str) -> None:
        link = self.links.pop(name, None)
        if link is not None:
            await link.close()

    async def close(self) -> None:
        for name in list(self.links):
            await self._drop_link(name)
