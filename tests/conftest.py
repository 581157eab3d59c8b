"""Shared fixtures: a real nats-server with JetStream on a free port and a temporary store."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sortie.bus.broker import BrokerProcess, free_port, start_broker
from sortie.bus.connection import Bus, open_bus


@pytest.fixture(autouse=True, scope="session")
def _run_users_pass_temp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """As root, agents start runs as an unprivileged user (agents.isolation), who must pass
    (o+x: enter, not list) pytest's temporary directories (made 0700) to reach a run in an
    agent's data dir there. Every temporary directory made from here on is passable."""
    if os.geteuid() != 0:
        return
    base = tmp_path_factory.getbasetemp()
    for d in (base.parent, base):
        _passable(d)
    mktemp = tmp_path_factory.mktemp

    def passable_mktemp(basename: str, numbered: bool = True) -> Path:
        return _passable(mktemp(basename, numbered))

    tmp_path_factory.mktemp = passable_mktemp  # type: ignore[method-assign]


def _passable(d: Path) -> Path:
    d.chmod(d.stat().st_mode | stat.S_IXOTH)
    return d


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = start_broker(tmp_path / "nats", port=free_port(), sync_always=False)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def bus(broker: BrokerProcess) -> AsyncIterator[Bus]:
    b = await open_bus(broker.url, "test", create=True)
    try:
        yield b
    finally:
        await b.close()
