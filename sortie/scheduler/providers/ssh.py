"""The ``ssh`` node provider: a cluster's nodes are agents started over SSH on a pool of hosts.

One node per host. Creating a node takes a free host of the pool, installs Sortie there the
same way ``sortie compute attach`` does (no root, offline, under the user's home), opens a
reverse port forward to the broker and starts the agent with the node's id and the shape's
capacity. Stopping a node stops its agent, removes the install and closes the link.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from asyncssh import SSHClientConnection

from sortie.bus.connection import split_urls
from sortie.proto import messages as m
from sortie.scheduler.machines import install_access
from sortie.scheduler.providers.base import (
    NodeRequest,
    ProviderContext,
    ProviderError,
    ProviderNode,
)
from sortie.scheduler.ssh import (
    SshCredentials,
    SshError,
    SshLink,
    SshTarget,
    build_wheelhouse,
    connect,
    install_agent,
    load_credentials,
    remove_install,
    start_agent,
    stop_agent,
)


@dataclass
class _Node:
    host: str
    cluster: str
    remote_dir: str  # the node's own install (two pool hosts may be one machine)
    link: SshLink | None = None  # set once the forward is up


@dataclass
class SshPoolProvider:
    """Nodes on ``hosts`` (one each), logged in to with ``login`` and the credentials kept
    under the cluster's name in the scheduler's secret store."""

    data_dir: Path
    cluster: str
    hosts: list[str]
    login: m.SshLogin
    name: str = "ssh"
    nodes: dict[str, _Node] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def _known_hosts(self) -> Path:
        if self.login.known_hosts:
            return Path(self.login.known_hosts)
        return Path.home() / ".ssh" / "known_hosts"

    def _target(self, host: str) -> SshTarget:
        return SshTarget(address=host, username=self.login.username, port=self.login.ssh_port)

    async def create_node(self, request: NodeRequest) -> None:
        async with self._lock:
            if request.node_id in self.nodes:
                raise ProviderError("exists", f"node {request.node_id} exists")
            used = {n.host for n in self.nodes.values()}
            free = [h for h in self.hosts if h not in used]
            if not free:
                raise ProviderError(
                    "pool_exhausted",
                    f"all {len(self.hosts)} host(s) of {self.cluster} already run a node: "
                    "add hosts to the pool or lower max_nodes",
                )
            host = free[0]
            self.nodes[request.node_id] = _Node(
                host=host, cluster=request.cluster, remote_dir=f".sortie-{request.node_id}"
            )
        try:
            await self._start(request, host)
        except BaseException:
            self.nodes.pop(request.node_id, None)
            raise

    async def _start(self, request: NodeRequest, host: str) -> None:
        try:
            creds = load_credentials(self.data_dir, self.cluster)
        except OSError as exc:
            raise ProviderError(
                "no_credentials",
                f"no stored credentials for {self.cluster}: create the cluster again with a "
                f"key or password ({exc})",
            ) from None
        target = self._target(host)
        try:
            conn = await connect(
                target,
                creds,
                known_hosts=self._known_hosts(),
                trust_new_host_key=self.login.trust_new_host_key,
            )
            try:
                await self._install_and_start(conn, request, target, creds)
            finally:
                conn.close()
        except SshError as exc:
            node = self.nodes.get(request.node_id)
            if node is not None and node.link is not None:
                await node.link.close()
            detail = exc.message + (f"\n{exc.output}" if exc.output else "")
            raise ProviderError(exc.code, f"{host}: {detail}") from None

    async def _install_and_start(
        self,
        conn: SSHClientConnection,
        request: NodeRequest,
        target: SshTarget,
        creds: SshCredentials,
    ) -> None:
        """Install Sortie on the node's host, open the link to the broker, start the agent."""
        node = self.nodes[request.node_id]
        wheelhouse = await build_wheelhouse(self.data_dir / "wheelhouse")
        sortie_bin = await install_agent(
            conn, wheelhouse, remote_dir=node.remote_dir, progress=lambda _: None
        )
        # an SSH link forwards to one broker: the first of a cluster's URLs
        u = urlparse(split_urls(request.broker_url)[0])
        link = SshLink(
            target,
            creds,
            known_hosts=self._known_hosts(),
            local_host=u.hostname or "127.0.0.1",
            local_port=u.port or 4222,
        )
        await link.start()
        node.link = link
        access = await install_access(
            conn, node.remote_dir, request.creds, request.tls_ca, u.hostname
        )
        scheme = "tls" if access.tls_ca_path else "nats"
        await start_agent(
            conn,
            sortie_bin=sortie_bin,
            remote_dir=node.remote_dir,
            broker_url=f"{scheme}://127.0.0.1:{link.remote_port}",
            target=request.cluster,
            agent_id=request.node_id,
            extra_args=_capacity_args(request),
            access=access,
        )

    async def stop_node(self, node_id: str, grace_s: float = 10.0) -> None:
        node = self.nodes.pop(node_id, None)
        if node is None:
            return
        try:
            creds = load_credentials(self.data_dir, self.cluster)
            conn = await connect(self._target(node.host), creds, known_hosts=self._known_hosts())
            try:
                await stop_agent(conn, remote_dir=node.remote_dir, grace_s=grace_s)
                await remove_install(conn, remote_dir=node.remote_dir)
            finally:
                conn.close()
        except (SshError, OSError):
            pass  # the host may be gone; the node is given up either way
        finally:
            if node.link is not None:
                await node.link.close()

    async def list_nodes(self) -> list[ProviderNode]:
        return [
            ProviderNode(node_id=nid, cluster=n.cluster, alive=True, detail=n.host)
            for nid, n in sorted(self.nodes.items())
        ]

    async def close(self) -> None:
        await asyncio.gather(*(self.stop_node(nid) for nid in list(self.nodes)))


def _capacity_args(request: NodeRequest) -> list[str]:
    """The agent's options for the node's shape, priority and labels."""
    shape = request.shape
    labels = sorted(request.labels.items())
    return [
        "--cpus",
        f"{shape.cpus:g}",
        "--memory-mb",
        str(shape.memory_mb),
        "--priority",
        request.priority,
        *(a for k, v in labels for a in ("--label", f"{k}={v}")),
    ]


def from_config(ctx: ProviderContext, cluster: str, cfg: m.SshPoolCluster) -> SshPoolProvider:
    """The provider of one ssh pool: its hosts, its login, its stored credentials."""
    if not cfg.hosts:
        raise ProviderError("bad_request", f"{cluster} has no ssh hosts")
    return SshPoolProvider(
        data_dir=ctx.data_dir, cluster=cluster, hosts=list(cfg.hosts), login=cfg.ssh
    )
