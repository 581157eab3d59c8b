"""A reconnecting SSH link that carries a remote agent's way to the broker.

The remote side listens on 127.0.0.1:`remote_port` and forwards to `local_host:local_port`
(the broker, as the scheduler reaches it), so a host behind NAT or a firewall needs nothing
but inbound SSH. When the connection drops, the link reconnects in the background with
exponential backoff until `close()`, and asks for the same remote port again, so the agent's
broker URL stays valid and its own NATS reconnects find the broker once the link is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from pathlib import Path

import asyncssh
import structlog

from sortie.bus.pause import retry_pause
from sortie.scheduler.ssh import SshCredentials, SshError, SshTarget, open_connection

log = structlog.get_logger(__name__)

KEEPALIVE_S = 5.0  # a silent peer is declared gone after 3 missed keepalives
CONNECT_TIMEOUT_S = 10.0  # the limit on each (re)connect's handshake and login


class SshLink:
    def __init__(
        self,
        target: SshTarget,
        creds: SshCredentials,
        *,
        known_hosts: Path,
        local_host: str,
        local_port: int,
        remote_port: int = 0,
        on_state: Callable[[str, str], None] | None = None,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        self._target = target
        self._creds = creds
        self._known_hosts = known_hosts
        self._local_host = local_host
        self._local_port = local_port
        self._remote_port = remote_port
        self._on_state = on_state
        self._backoff = backoff
        self._conn: asyncssh.SSHClientConnection | None = None
        self._listener: asyncssh.SSHListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._log = log.bind(
            host=target.address, port=target.port, user=target.username
        )  # never the credentials

    @property
    def remote_port(self) -> int:
        return self._remote_port

    @property
    def conn(self) -> asyncssh.SSHClientConnection | None:
        return self._conn

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._closed

    async def start(self) -> None:
        """Connect and forward once; raise SshError if that fails. Then keep it up."""
        if self._task is not None:
            raise RuntimeError("SshLink.start() called twice")
        client = await self._establish()
        self._emit("connected", "")
        self._task = asyncio.create_task(self._keep_up(client), name=f"ssh-link {self._target}")

    async def _establish(self) -> asyncssh.SSHClient:
        conn, client = await open_connection(
            self._target,
            self._creds,
            known_hosts=self._known_hosts,
            timeout=CONNECT_TIMEOUT_S,
            keepalive_s=KEEPALIVE_S,
        )
        try:
            listener = await conn.forward_remote_port(
                "127.0.0.1", self._remote_port, self._local_host, self._local_port
            )
        except asyncssh.Error as exc:
            conn.close()
            raise SshError(
                "unreachable",
                f"{self._target.address}:{self._target.port} refused to forward remote port "
                f"127.0.0.1:{self._remote_port or '(any)'} to the broker ({exc.reason}); "
                "sshd needs AllowTcpForwarding yes (or remote), and the port must be free",
            ) from None
        self._remote_port = listener.get_port()
        self._conn, self._listener = conn, listener
        self._log.info(
            "ssh link up",
            remote_port=self._remote_port,
            local=f"{self._local_host}:{self._local_port}",
        )
        return client

    def _emit(self, state: str, reason: str) -> None:
        if self._on_state is None:
            return
        try:
            self._on_state(state, reason)
        except Exception:  # noqa: BLE001 (the caller's callback must not stop the reconnects)
            self._log.exception("ssh link on_state callback failed", state=state)

    async def _keep_up(self, client: asyncssh.SSHClient) -> None:
        low, high = self._backoff
        while not self._closed:
            conn = self._conn
            assert conn is not None
            await conn.wait_closed()
            if self._closed:
                return
            reason = getattr(client, "closed_reason", "") or "connection closed"
            self._conn, self._listener = None, None
            self._log.warning("ssh link down", reason=reason)
            self._emit("disconnected", reason)
            delay = low
            while not self._closed:
                await retry_pause(delay * random.uniform(0.8, 1.0))
                if self._closed:
                    return
                try:
                    client = await self._establish()
                except SshError as exc:
                    self._log.warning(
                        "ssh link reconnect failed",
                        code=exc.code,
                        error=exc.message,
                        retry_in_s=min(delay * 2, high),
                    )
                    delay = min(delay * 2, high)
                    continue
                except (OSError, asyncssh.Error) as exc:
                    self._log.warning("ssh link reconnect failed", error=str(exc))
                    delay = min(delay * 2, high)
                    continue
                if self._closed:
                    self._close_conn()
                    return
                self._emit("connected", "")
                break

    def _close_conn(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._conn is not None:
            self._conn.close()

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        conn = self._conn
        self._close_conn()
        if conn is not None:
            # closing: a connection that fails to close cleanly is closed all the same
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5.0)
        self._conn, self._listener = None, None
