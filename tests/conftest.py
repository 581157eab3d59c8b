"""Shared fixtures: a real nats-server with JetStream on a free port and a temporary store."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sortie.bus.blobcommit import BlobCommits
from sortie.bus.broker import BrokerProcess, free_port, start_broker
from sortie.bus.connection import Bus, open_bus

# As root, agents start runs as an unprivileged user (agents.isolation), who must pass (o+x:
# enter, not list) every directory above a run in an agent's data dir. pytest keeps its
# temporary directories under /tmp/pytest-of-root, which every pytest session (of anyone
# testing as root on this machine) sets back to 0700: so, as root, this session's base is a
# directory of its own under /tmp instead (removed when the session passes).
_OWN_BASE: list[Path] = []


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if os.geteuid() == 0 and config.option.basetemp is None:
        base = Path(tempfile.mkdtemp(prefix="pytest-sortie-"))
        base.chmod(0o711)
        _OWN_BASE.append(base)
        config.option.basetemp = str(base / "t")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if exitstatus == 0:
        for base in _OWN_BASE:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _run_users_pass_temp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every temporary directory of the session is passable by run users (see above)."""
    if os.geteuid() != 0:
        return
    _passable(tmp_path_factory.getbasetemp())
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
