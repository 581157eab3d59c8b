"""The host key a machine's SSH server offers, fetched before it is attached.

`scan` connects from the scheduler's host (where the attach will connect from), stops after
the key exchange (no login, no credentials sent), and records nothing: it only says how the
key compares with known_hosts, so a person can confirm the fingerprint and attach with it
pinned (`SshLogin.host_key_fingerprint`, checked by `hostkeys.VerifyingClient`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncssh

from sortie.proto import messages as m
from sortie.scheduler.ssh import hostkeys

SCAN_TIMEOUT_S = 10.0


async def scan(
    req: m.HostKeyScan,
    timeout: float = SCAN_TIMEOUT_S,  # noqa: ASYNC109 (the limit on the whole exchange)
) -> m.HostKeyReplyOrError:
    """The key ``req``'s server offers and how known_hosts sees it, or why none came."""
    where = f"{req.address}:{req.ssh_port}"
    try:
        async with asyncio.timeout(timeout):
            # config=[]: this user's ~/.ssh/config changes nothing, as for the attach itself
            key = await asyncssh.get_server_host_key(req.address, req.ssh_port, config=[])
    except TimeoutError:
        return _unreachable(f"cannot reach {where}: no SSH key exchange within {timeout:g} s")
    except OSError as exc:
        return _unreachable(f"cannot reach {where}: {exc.strerror or exc}")
    except asyncssh.Error as exc:
        return _unreachable(f"the SSH server at {where} failed the key exchange: {exc.reason}")
    if key is None:
        return _unreachable(f"the SSH server at {where} offered no host key")
    known_hosts = hostkeys.known_hosts_file(req.known_hosts).expanduser()
    verdict, message = _compare(known_hosts, req.address, req.ssh_port, key)
    return m.HostKeyReply(
        address=req.address,
        ssh_port=req.ssh_port,
        algorithm=key.get_algorithm(),
        fingerprint=key.get_fingerprint("sha256"),
        verdict=verdict,
        message=message,
    )


def _compare(
    known_hosts: Path, address: str, port: int, key: asyncssh.SSHKey
) -> tuple[m.HostKeyVerdict, str]:
    trusted, revoked = hostkeys.known_keys(known_hosts, address, address, port)
    if key in revoked:
        return "revoked", hostkeys.changed_message(
            known_hosts, address, port, key, trusted, revoked=True
        )
    if key in trusted:
        return "known", f"{address}:{port} offered a {hostkeys.describe(key)}, which " + (
            f"{known_hosts} already trusts"
        )
    if trusted:
        return "changed", hostkeys.changed_message(known_hosts, address, port, key, trusted)
    return "unknown", (
        f"{address}:{port} offered a {hostkeys.describe(key)}, and {known_hosts} has no entry "
        f"for {hostkeys.host_pattern(address, port)}. Check that fingerprint with the host's "
        "administrator (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on the host) before you "
        "confirm it: the attach then trusts that key alone and records it."
    )


def _unreachable(why: str) -> m.ErrorReply:
    return m.ErrorReply(
        code="bad_request",
        message=f"{why}; check the address and the SSH port, and that sshd runs there",
    )
