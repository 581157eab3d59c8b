"""Finding the remote Python, and the pure checks around an install."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest

from sortie.scheduler.ssh import SshCredentials, SshError, connect
from sortie.scheduler.ssh.install import (
    check_remote_dir,
    choose_python,
    parse_version,
    remote_python,
    stop_agent,
)
from tests.ssh.conftest import Sshd, get_test_user


@pytest.fixture
async def conn(
    sshd: Sshd, known_hosts: Path, key_creds: SshCredentials
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    c = await connect(sshd.target(), key_creds, known_hosts=known_hosts)
    try:
        yield c
    finally:
        c.close()
        await c.wait_closed()


@pytest.fixture
def fake_python(tmp_path: Path) -> Iterator[str]:
    """An executable the test user can run that claims to be Python 3.9.2."""
    user = get_test_user()
    path = Path(user.pw_dir) / f"fake-python-{os.getpid()}"
    path.write_text("#!/bin/sh\necho 3.9.2\n")
    path.chmod(0o755)
    try:
        yield str(path)
    finally:
        path.unlink(missing_ok=True)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.11.2", (3, 11, 2)),
        ("Python 3.9.2", (3, 9, 2)),
        ("3.13.0rc1", (3, 13, 0)),
        ("3.12", (3, 12)),
        ("garbage", None),
    ],
)
def test_parse_version(text: str, expected: tuple[int, ...] | None) -> None:
    assert parse_version(text) == expected


def test_choose_python() -> None:
    assert choose_python([("/a/py", "3.9.2"), ("/b/py", "3.11.2")]) == ("/b/py", "3.11.2")
    with pytest.raises(SshError) as err:
        choose_python([("/usr/bin/python3", "3.9.2")])
    assert err.value.code == "python_too_old"
    assert err.value.message == (
        "found Python 3.9.2 at /usr/bin/python3; Sortie needs Python 3.11 or newer on the "
        "remote host: install it, then attach again"
    )
    with pytest.raises(SshError) as err:
        choose_python([])
    assert err.value.code == "python_missing"


@pytest.mark.parametrize("bad", ["/abs", "../up", "a/../b", "", ".", "a b", "$(x)", "a;b"])
def test_remote_dir_must_stay_under_home(bad: str) -> None:
    with pytest.raises(ValueError, match="relative path under the remote home"):
        check_remote_dir(bad)


def test_remote_dir_accepts_plain_relative_paths() -> None:
    assert check_remote_dir(".sortie") == ".sortie"
    assert check_remote_dir("opt/sortie-1") == "opt/sortie-1"


async def test_remote_python_finds_311(conn: asyncssh.SSHClientConnection) -> None:
    path, version = await remote_python(conn)
    assert path.startswith("/")
    assert parse_version(version)[:2] >= (3, 11)


async def test_remote_python_too_old_and_missing(
    conn: asyncssh.SSHClientConnection, fake_python: str
) -> None:
    with pytest.raises(SshError) as err:
        await remote_python(conn, candidates=(fake_python,))
    assert err.value.code == "python_too_old"
    assert f"found Python 3.9.2 at {fake_python}" in err.value.message

    with pytest.raises(SshError) as err:
        await remote_python(conn, candidates=("python2.99-none", "no-such-python"))
    assert err.value.code == "python_missing"


async def test_stop_agent_without_an_agent_is_fine(
    conn: asyncssh.SSHClientConnection, remote_dir: str
) -> None:
    await stop_agent(conn, remote_dir=remote_dir)
