"""A real nats-server with authentication on: an authority made in a temporary directory, the
broker trusting it, and helpers to connect as each role.

Test modules import the fixtures by name (``from tests.security.auth_fixtures import
connections as connections``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from sortie.bus.auth import Authority, init_authority, write_private
from sortie.bus.blobcommit import BlobCommits
from sortie.bus.broker import BrokerProcess, free_port, start_broker
from sortie.bus.connection import Bus, BusAuth, connect, open_bus
from sortie.proto.permissions import Role


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return init_authority(tmp_path / "auth")


@pytest.fixture
def secure_broker(tmp_path: Path, authority: Authority) -> Iterator[BrokerProcess]:
    proc = start_broker(
        tmp_path / "nats", port=free_port(), sync_always=False, auth_conf=authority.broker_conf
    )
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def scheduler_bus(secure_broker: BrokerProcess, authority: Authority) -> AsyncIterator[Bus]:
    """The scheduler's connection: it creates Sortie's streams and buckets, and verifies and
    stores uploaded blobs."""
    bus = await open_bus(
        secure_broker.url, "scheduler", create=True, auth=BusAuth(creds=authority.scheduler_creds)
    )
    commits = BlobCommits(bus.blobs)
    await commits.start()
    try:
        yield bus
    finally:
        await commits.stop()
        await bus.close()


def mint(authority: Authority, tmp_path: Path, role: Role) -> Path:
    """Credentials for ``role`` written where a daemon would read them (0600)."""
    creds = authority.signer.mint(role)
    return write_private(tmp_path / "creds" / f"{role.identity}.creds", creds.text())


class Connections:
    """Real connections as each role, closed at the end of the test."""

    def __init__(self, url: str, authority: Authority, tmp_path: Path) -> None:
        self.url = url
        self.authority = authority
        self.tmp_path = tmp_path
        self.open: list[NATS | Bus] = []

    async def agent(self, agent_id: str) -> Bus:
        creds = mint(self.authority, self.tmp_path, Role("agent", agent_id))
        bus = await open_bus(self.url, f"agent-{agent_id}", auth=BusAuth(creds=creds))
        self.open.append(bus)
        return bus

    async def client(self) -> Bus:
        auth = BusAuth(creds=self.authority.client_creds)
        bus = await open_bus(self.url, "client", auth=auth)
        self.open.append(bus)
        return bus

    async def raw(self, creds: Path, name: str = "raw") -> NATS:
        nc = await connect(self.url, name, auth=BusAuth(creds=creds))
        self.open.append(nc)
        return nc

    async def close(self) -> None:
        for c in self.open:
            await c.close()


@pytest.fixture
async def connections(
    secure_broker: BrokerProcess, authority: Authority, scheduler_bus: Bus, tmp_path: Path
) -> AsyncIterator[Connections]:
    conns = Connections(secure_broker.url, authority, tmp_path)
    try:
        yield conns
    finally:
        await conns.close()
