"""Host-key verification against an OpenSSH known_hosts file.

The server's key is checked during the handshake by `VerifyingClient`: asyncssh trusts the
keys the known_hosts file lists for the host (and prefers their algorithms, as OpenSSH does);
any other key reaches `validate_host_public_key`, which refuses it unless the host has no
entry at all and the caller chose to trust a new host. The refusal is remembered on the
client so `scheduler.ssh.connect` can say exactly what happened.

**Invariant:** there is no way to turn checking off. A new host is accepted only with an
explicit `trust_new_host_key=True`, or with the fingerprint a person confirmed (`pinned`: that
key alone), and its key is then written to the known_hosts file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import asyncssh
from asyncssh.known_hosts import match_known_hosts

DEFAULT_PORT = 22

Verdict = Literal["unknown", "changed", "revoked"]


def known_hosts_file(given: str | None) -> Path:
    """The known_hosts file a login names, or this user's (``~/.ssh/known_hosts``)."""
    return Path(given) if given else Path.home() / ".ssh" / "known_hosts"


def host_pattern(address: str, port: int) -> str:
    """The known_hosts name of a host: `host` on port 22, `[host]:port` otherwise."""
    return address if port == DEFAULT_PORT else f"[{address}]:{port}"


def describe(key: asyncssh.SSHKey) -> str:
    """`ssh-ed25519 key SHA256:...`: what a person compares with `ssh-keygen -lf`."""
    return f"{key.get_algorithm()} key {key.get_fingerprint('sha256')}"


def known_keys(
    known_hosts: Path, address: str, addr: str, port: int
) -> tuple[list[asyncssh.SSHKey], list[asyncssh.SSHKey]]:
    """(trusted keys, revoked keys) the file lists for this host; nothing if no file."""
    if not known_hosts.is_file():
        return [], []
    trusted, _ca, revoked, *_ = match_known_hosts(
        str(known_hosts), address, addr, None if port == DEFAULT_PORT else port
    )
    return list(trusted), list(revoked)


def asyncssh_known_hosts(known_hosts: Path) -> str | tuple[list[str], list[str], list[str]]:
    """What to hand asyncssh's `known_hosts=`: the file, or an empty trust list if none.

    Never None: None would make asyncssh skip the check.
    """
    if known_hosts.is_file():
        return str(known_hosts)
    return ([], [], [])


@dataclass
class Refusal:
    verdict: Verdict
    message: str


def unknown_message(known_hosts: Path, address: str, port: int, key: asyncssh.SSHKey) -> str:
    return (
        f"the host key of {address}:{port} is not known: the server offered a "
        f"{describe(key)}, and {known_hosts} has no entry for {host_pattern(address, port)}. "
        "Check that fingerprint with the host's administrator (ssh-keygen -lf "
        "/etc/ssh/ssh_host_*_key.pub on the host); if it is right, attach again with "
        "--trust-new-host-key to trust it."
    )


def changed_message(
    known_hosts: Path,
    address: str,
    port: int,
    key: asyncssh.SSHKey,
    expected: list[asyncssh.SSHKey],
    *,
    revoked: bool = False,
) -> str:
    pattern = host_pattern(address, port)
    listed = ", ".join(describe(k) for k in expected) or "none"
    what = "is revoked in" if revoked else "does not match"
    return (
        f"the host key of {address}:{port} HAS CHANGED: the server offered a {describe(key)}, "
        f"which {what} {known_hosts} (expected: {listed}). Someone may be intercepting the "
        "connection, or the host was reinstalled. Connection refused. If the change is "
        f"expected, remove the old entry with `ssh-keygen -R '{pattern}' -f {known_hosts}` "
        "and attach again with --trust-new-host-key."
    )


def pinned_message(address: str, port: int, key: asyncssh.SSHKey, pinned: str) -> str:
    return (
        f"the host key of {address}:{port} is not the one confirmed: the server offered a "
        f"{describe(key)}, but {pinned} was confirmed. Someone may be intercepting the "
        "connection, or the host's key changed since: connection refused. Fetch the "
        "fingerprint again and check it with the host's administrator."
    )


class VerifyingClient(asyncssh.SSHClient):
    """An SSH client that verifies the host key and remembers why it refused one.

    Also remembers why the connection closed (`closed_reason`), for the reconnecting link.
    """

    def __init__(
        self,
        known_hosts: Path,
        address: str,
        port: int,
        trust_new: bool,
        pinned: str | None = None,
    ) -> None:
        self.known_hosts = known_hosts
        self.address = address
        self.port = port
        self.trust_new = trust_new
        self.pinned = pinned  # "SHA256:...": a new host's key must be this one
        self.refusal: Refusal | None = None
        self.new_key: asyncssh.SSHKey | None = None  # accepted as new: record after login
        self.closed_reason = ""

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        # Reached only for a key the file does not list as trusted for this host.
        trusted, revoked = known_keys(self.known_hosts, self.address, addr, self.port)
        if key in revoked:
            self.refusal = Refusal(
                "revoked",
                changed_message(
                    self.known_hosts, self.address, self.port, key, trusted, revoked=True
                ),
            )
            return False
        if trusted:
            self.refusal = Refusal(
                "changed",
                changed_message(self.known_hosts, self.address, self.port, key, trusted),
            )
            return False
        if self.pinned is not None:
            if key.get_fingerprint("sha256") == self.pinned:
                self.new_key = key
                return True
            self.refusal = Refusal(
                "changed", pinned_message(self.address, self.port, key, self.pinned)
            )
            return False
        if self.trust_new:
            self.new_key = key
            return True
        self.refusal = Refusal(
            "unknown", unknown_message(self.known_hosts, self.address, self.port, key)
        )
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_reason = str(exc) if exc else "closed"


def record_host_key(known_hosts: Path, address: str, port: int, key: asyncssh.SSHKey) -> None:
    """Append `[host]:port TYPE BASE64` to the known_hosts file.

    A new file is created 0600 (and a new parent directory 0700).
    """
    parent = known_hosts.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True)
    alg, b64 = key.export_public_key("openssh").decode().split()[:2]
    line = f"{host_pattern(address, port)} {alg} {b64}\n"
    fd = os.open(known_hosts, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        # Start on a fresh line if the file does not end with one.
        size = os.fstat(fd).st_size
        if size:
            with open(known_hosts, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    line = "\n" + line
        os.write(fd, line.encode())
    finally:
        os.close(fd)
