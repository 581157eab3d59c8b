"""Shared fixtures: a real nats-server with JetStream on a free port and a temporary store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sortie.bus.blobcommit import BlobCommits
from sortie.bus.broker import BrokerProcess, free_port, start_broker
from sortie.bus.connection import Bus, open_bus


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = start_broker(tmp_path / "nats", port=free_port(), sync_always=False)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
async def bus(broker: BrokerProcess) -> AsyncIterator[Bus]:
    """A scheduler's connection, and what a scheduler serves on it for uploaders: blob
    commits (every blob is stored through one)."""
    b = await open_bus(broker.url, "test", create=True)
    commits = BlobCommits(b.blobs)
    await commits.start()
    try:
        yield b
    finally:
        await commits.stop()
        await b.close()
