"""The remote file operations an install needs, over SFTP and over exec channels (a host
whose sshd has no sftp subsystem): the same results either way."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sortie.scheduler.ssh import SshCredentials, connect
from sortie.scheduler.ssh.install import install_private_file
from sortie.scheduler.ssh.remote_files import NO_SFTP_NOTE, ExecFiles, SftpFiles, open_files
from tests.ssh.conftest import Sshd, _free_port, get_test_user


@pytest.fixture(params=[True, False], ids=["sftp", "exec"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Sshd]:
    """The tests' sshd, with its sftp subsystem and without."""
    workdir = tmp_path / "sshd"
    workdir.mkdir(mode=0o700)
    srv = Sshd(workdir=workdir, port=_free_port(), sftp=request.param)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def scratch() -> Iterator[str]:
    """A directory name under the test user's home, removed after the test."""
    name = f".sortie-files-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        yield name
    finally:
        import shutil

        shutil.rmtree(Path(get_test_user().pw_dir) / name, ignore_errors=True)


async def test_files_round_trip(
    server: Sshd, key_creds: SshCredentials, scratch: str, tmp_path: Path
) -> None:
    with_sftp = server.sftp
    known = tmp_path / "known"
    known.write_text(server.known_hosts_line())
    conn = await connect(server.target(), key_creds, known_hosts=known)
    said: list[str] = []
    local = tmp_path / "big.whl"
    payload = bytes(range(256)) * 4096 + b"\x00end"  # binary, with every byte value
    local.write_bytes(payload)
    home = Path(get_test_user().pw_dir)
    try:
        async with open_files(conn, said.append) as files:
            assert isinstance(files, SftpFiles if with_sftp else ExecFiles)
            await files.makedirs(f"{scratch}/wheels")
            assert await files.sizes(f"{scratch}/wheels", ".whl") == {}
            assert await files.read_text(f"{scratch}/wheels/.manifest") is None
            await files.put(local, f"{scratch}/wheels/big.whl")
            await files.write_text(f"{scratch}/wheels/.manifest", "big.whl abc\n")
            assert await files.sizes(f"{scratch}/wheels", ".whl") == {"big.whl": len(payload)}
            assert await files.read_text(f"{scratch}/wheels/.manifest") == "big.whl abc\n"
            await files.remove(f"{scratch}/wheels/big.whl")
            assert await files.sizes(f"{scratch}/wheels", ".whl") == {}
        path = await install_private_file(conn, remote_dir=scratch, name="agent.creds", text="s")
    finally:
        conn.close()
    assert said == ([] if with_sftp else [NO_SFTP_NOTE])
    assert path == f"{home}/{scratch}/agent.creds"
    assert (home / scratch / "agent.creds").read_text() == "s"
    assert oct((home / scratch / "agent.creds").stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in (home / scratch).iterdir()) == ["agent.creds", "wheels"]
    assert sorted(p.name for p in (home / scratch / "wheels").iterdir()) == [".manifest"]
