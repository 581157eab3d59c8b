"""What an attach's login settings must be, checked before anything connects (table)."""

from __future__ import annotations

import pytest

from sortie.proto import messages as m
from sortie.scheduler.vms import check_login

PASSWORD = m.SshSecret(password="pw")
FINGERPRINT = "SHA256:" + "A" * 42 + "/"


def login(**fields: object) -> m.SshLogin:
    return m.SshLogin(**{"username": "me", "auth": "password", **fields})  # type: ignore[arg-type]  # test builder


@pytest.mark.parametrize(
    ("settings", "secret", "problem"),
    [
        ({}, PASSWORD, None),
        ({"host_key_fingerprint": FINGERPRINT}, PASSWORD, None),
        ({"username": " "}, PASSWORD, "a username is required"),
        ({"ssh_port": 0}, PASSWORD, "ssh port 0 is not a port number"),
        ({}, None, "credentials are required"),
        ({"auth": "key"}, PASSWORD, "key authentication needs a private key"),
        ({"host_key_fingerprint": "SHA256:short"}, PASSWORD, "is not a SHA-256 fingerprint"),
        ({"host_key_fingerprint": "MD5:" + "a" * 43}, PASSWORD, "is not a SHA-256 fingerprint"),
    ],
)
def test_check_login(
    settings: dict[str, object], secret: m.SshSecret | None, problem: str | None
) -> None:
    found = check_login(login(**settings), secret)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
