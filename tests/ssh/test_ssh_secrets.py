"""Stored credentials: on the scheduler's host only, readable by its user only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sortie.scheduler.ssh import SshCredentials
from sortie.scheduler.ssh.secrets import delete_credentials, load_credentials, save_credentials


def test_save_load_delete_with_private_modes(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask must not widen the modes
    try:
        creds = SshCredentials(private_key="KEY TEXT\n", passphrase="pp")
        save_credentials(tmp_path, "vm-1", creds)
    finally:
        os.umask(old)
    d = tmp_path / "secrets"
    f = d / "vm-1.json"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert [p.name for p in d.iterdir()] == ["vm-1.json"]  # no temporary left behind
    assert load_credentials(tmp_path, "vm-1") == creds

    # Overwrite, and a directory someone loosened is tightened again.
    d.chmod(0o755)
    save_credentials(tmp_path, "vm-1", SshCredentials(password="pw"))
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert load_credentials(tmp_path, "vm-1") == SshCredentials(password="pw")

    delete_credentials(tmp_path, "vm-1")
    assert not f.exists()
    delete_credentials(tmp_path, "vm-1")  # fine when already gone
    with pytest.raises(FileNotFoundError, match="attach it again"):
        load_credentials(tmp_path, "vm-1")


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "x" * 80])
def test_names_cannot_leave_the_secrets_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="bad compute name"):
        save_credentials(tmp_path, name, SshCredentials(password="pw"))
