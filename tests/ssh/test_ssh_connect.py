"""Connecting to a real sshd: authentication, host-key checks and the errors a person sees."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncssh
import pytest

from sortie.scheduler.ssh import SshCredentials, SshError, SshTarget, connect
from tests.ssh.conftest import (
    KEY_PASSPHRASE,
    SSH_TEST_PASSWORD,
    SSH_TEST_USER,
    ClientKey,
    Sshd,
    _free_port,
)


async def whoami(conn: asyncssh.SSHClientConnection) -> str:
    result = await conn.run("id -un", check=True)
    conn.close()
    await conn.wait_closed()
    return str(result.stdout).strip()


async def test_key_auth(sshd: Sshd, known_hosts: Path, key_creds: SshCredentials) -> None:
    conn = await connect(sshd.target(), key_creds, known_hosts=known_hosts)
    assert await whoami(conn) == SSH_TEST_USER


async def test_passphrase_protected_key(
    sshd: Sshd, known_hosts: Path, protected_key: ClientKey
) -> None:
    creds = SshCredentials(private_key=protected_key.text, passphrase=KEY_PASSPHRASE)
    conn = await connect(sshd.target(), creds, known_hosts=known_hosts)
    assert await whoami(conn) == SSH_TEST_USER


async def test_wrong_passphrase_is_bad_key(
    sshd: Sshd, known_hosts: Path, protected_key: ClientKey
) -> None:
    creds = SshCredentials(private_key=protected_key.text, passphrase="not-the-passphrase")
    with pytest.raises(SshError) as err:
        await connect(sshd.target(), creds, known_hosts=known_hosts)
    assert err.value.code == "bad_key"
    assert "passphrase is wrong" in err.value.message
    assert "not-the-passphrase" not in str(err.value)


async def test_missing_passphrase_is_bad_key(
    sshd: Sshd, known_hosts: Path, protected_key: ClientKey
) -> None:
    with pytest.raises(SshError) as err:
        await connect(
            sshd.target(), SshCredentials(private_key=protected_key.text), known_hosts=known_hosts
        )
    assert err.value.code == "bad_key"
    assert "--passphrase-env" in err.value.message


async def test_garbage_key_text_is_bad_key(sshd: Sshd, known_hosts: Path) -> None:
    with pytest.raises(SshError) as err:
        await connect(
            sshd.target(), SshCredentials(private_key="not a key\n"), known_hosts=known_hosts
        )
    assert err.value.code == "bad_key"
    assert "could not be read as an SSH private key" in err.value.message


async def test_openssh_format_encrypted_key(
    known_hosts: Path, sshd: Sshd, authorized: list[asyncssh.SSHKey], tmp_path: Path
) -> None:
    # A key as `ssh-keygen -N PASSPHRASE` writes it (OpenSSH format, bcrypt KDF).
    path = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", KEY_PASSPHRASE, "-f", str(path)], check=True
    )
    authorized.append(asyncssh.read_public_key(str(path) + ".pub"))
    creds = SshCredentials(private_key=path.read_text(), passphrase=KEY_PASSPHRASE)
    conn = await connect(sshd.target(), creds, known_hosts=known_hosts)
    assert await whoami(conn) == SSH_TEST_USER


async def test_password_auth(sshd: Sshd, known_hosts: Path) -> None:
    conn = await connect(
        sshd.target(), SshCredentials(password=SSH_TEST_PASSWORD), known_hosts=known_hosts
    )
    assert await whoami(conn) == SSH_TEST_USER


async def test_wrong_password_is_auth_failed_without_the_password(
    sshd: Sshd, known_hosts: Path
) -> None:
    wrong = "wrong-password-7781"
    with pytest.raises(SshError) as err:
        await connect(sshd.target(), SshCredentials(password=wrong), known_hosts=known_hosts)
    assert err.value.code == "auth_failed"
    assert SSH_TEST_USER in err.value.message and "password" in err.value.message
    assert wrong not in str(err.value) and wrong not in repr(err.value)


async def test_rejected_key_is_auth_failed(sshd: Sshd, known_hosts: Path) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519")  # not in authorized_keys
    creds = SshCredentials(private_key=stranger.export_private_key("openssh").decode())
    with pytest.raises(SshError) as err:
        await connect(sshd.target(), creds, known_hosts=known_hosts)
    assert err.value.code == "auth_failed"
    assert "private key" in err.value.message


async def test_unreachable_host(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there
    with pytest.raises(SshError) as err:
        await connect(
            SshTarget("127.0.0.1", SSH_TEST_USER, port),
            SshCredentials(password="x"),
            known_hosts=tmp_path / "known_hosts",
            timeout=5,
        )
    assert err.value.code == "unreachable"
    assert f"127.0.0.1:{port}" in err.value.message


async def test_unknown_host_refused_then_trusted_and_recorded(
    sshd: Sshd, tmp_path: Path, key_creds: SshCredentials
) -> None:
    kh = tmp_path / "fresh" / "known_hosts"  # neither the file nor its directory exist
    fingerprint = sshd.host_key.get_fingerprint("sha256")
    with pytest.raises(SshError) as err:
        await connect(sshd.target(), key_creds, known_hosts=kh)
    assert err.value.code == "host_key_unknown"
    msg = err.value.message
    assert f"127.0.0.1:{sshd.port}" in msg and "ssh-ed25519" in msg and fingerprint in msg
    assert "--trust-new-host-key" in msg
    assert not kh.exists()  # refusing records nothing

    conn = await connect(sshd.target(), key_creds, known_hosts=kh, trust_new_host_key=True)
    assert await whoami(conn) == SSH_TEST_USER
    assert kh.read_text() == sshd.known_hosts_line()
    assert kh.stat().st_mode & 0o777 == 0o600
    assert kh.parent.stat().st_mode & 0o777 == 0o700

    # Now known: no trust flag needed, and nothing is appended again.
    conn = await connect(sshd.target(), key_creds, known_hosts=kh)
    assert await whoami(conn) == SSH_TEST_USER
    assert kh.read_text() == sshd.known_hosts_line()


async def test_changed_host_key_refused_with_both_fingerprints(
    sshd: Sshd, known_hosts: Path, key_creds: SshCredentials
) -> None:
    old = sshd.host_key.get_fingerprint("sha256")
    old_line = sshd.known_hosts_line()
    sshd.restart(new_host_key=True)
    new = sshd.host_key.get_fingerprint("sha256")
    assert old != new
    for trust in (False, True):  # trusting new hosts never overrides a changed key
        with pytest.raises(SshError) as err:
            await connect(
                sshd.target(), key_creds, known_hosts=known_hosts, trust_new_host_key=trust
            )
        assert err.value.code == "host_key_changed"
        msg = err.value.message
        assert old in msg and new in msg
        assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {known_hosts}" in msg
        assert "--trust-new-host-key" in msg
    assert known_hosts.read_text() == old_line  # unchanged: the old key, nothing added


def test_credentials_repr_redacts_secrets() -> None:
    creds = SshCredentials(password="pw-123", private_key="KEYTEXT-abc", passphrase="pp-456")
    for shown in (repr(creds), str(creds), f"{creds}", repr([creds])):
        for secret in ("pw-123", "KEYTEXT-abc", "pp-456"):
            assert secret not in shown
    assert "password=<redacted>" in repr(creds)
    assert repr(SshCredentials(password="x")) == "SshCredentials(password=<redacted>)"
