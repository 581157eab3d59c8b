"""SSH to attached machines: connecting with verified host keys, installing and starting an
agent without root, and a reconnecting link that carries the agent's way to the broker.

- `connect` (here): one verified, authenticated connection, or an `SshError` a person can act on.
- `hostkeys`: known_hosts verification; a new host only with an explicit trust choice (or the
  fingerprint a person confirmed, pinned); `host_key_scan`: the key a server offers, for that.
- `secrets`: what the scheduler keeps to reconnect, on its own host, readable by its user only.
- `wheelhouse`: wheels of Sortie and its dependencies, built on the scheduler side.
- `install`: remote Python check, offline install into a venv, agent start/stop, removal.
- `link`: `SshLink`, a connection with a reverse port forward that reconnects with backoff.

**Invariant:** no secret (password, key text, passphrase) is ever logged, put in an error
message, or shown by `repr`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from sortie.scheduler.ssh import hostkeys

__all__ = [
    "AgentAccess",
    "SshCredentials",
    "SshError",
    "SshLink",
    "SshTarget",
    "build_wheelhouse",
    "connect",
    "delete_credentials",
    "engine_args",
    "install_agent",
    "install_private_file",
    "load_credentials",
    "remote_python",
    "remove_install",
    "save_credentials",
    "start_agent",
    "stop_agent",
]

ERROR_CODES = frozenset(
    {
        "unreachable",
        "auth_failed",
        "host_key_unknown",
        "host_key_changed",
        "python_missing",
        "python_too_old",
        "install_failed",
        "agent_failed",
        "bad_key",
    }
)


@dataclass(frozen=True)
class SshTarget:
    address: str
    username: str
    port: int = 22

    def __str__(self) -> str:
        return f"{self.username}@{self.address}:{self.port}"


@dataclass(frozen=True)
class SshCredentials:
    """A password, or a private key's text (optionally with its passphrase).

    `repr`/`str` say which secrets are present, never their values.
    """

    password: str | None = field(default=None, repr=False)
    private_key: str | None = field(default=None, repr=False)  # the key file's TEXT
    passphrase: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        shown = [
            f"{name}=<redacted>"
            for name in ("password", "private_key", "passphrase")
            if getattr(self, name) is not None
        ]
        return f"SshCredentials({', '.join(shown)})"

    __str__ = __repr__

    @property
    def method(self) -> str:
        return "private key" if self.private_key is not None else "password"


class SshError(Exception):
    """A failure a person can act on: `code` (see ERROR_CODES), `message`, and `output`
    (the tail of a remote command's output, or "")."""

    def __init__(self, code: str, message: str, output: str = "") -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.output = output

    def __str__(self) -> str:
        return self.message


def load_key(creds: SshCredentials) -> asyncssh.SSHKey | None:
    """Import the private key text, or raise SshError("bad_key")."""
    if creds.private_key is None:
        return None
    try:
        return asyncssh.import_private_key(creds.private_key, creds.passphrase)
    except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
        why = str(exc)
        if "bcrypt" in why:
            hint = (
                "the private key is encrypted in OpenSSH format, which needs the `bcrypt` "
                "package on the scheduler's host (pip install bcrypt), or convert the key to "
                "PEM with `ssh-keygen -p -m PEM -f FILE`"
            )
        elif "must be specified" in why:
            hint = (
                "the private key is encrypted and needs its passphrase "
                "(--passphrase-env VAR or --passphrase-stdin)"
            )
        elif "incorrect passphrase" in why.lower() or (
            "decrypt" in why.lower() and creds.passphrase is not None
        ):
            hint = (
                "cannot decrypt the private key: the passphrase is wrong "
                "(give the right one with --passphrase-env VAR or --passphrase-stdin)"
            )
        else:
            hint = (
                f"the private key file could not be read as an SSH private key ({why}); "
                "give an OpenSSH or PEM private key file"
            )
        raise SshError("bad_key", hint) from None


async def open_connection(
    target: SshTarget,
    creds: SshCredentials,
    *,
    known_hosts: Path,
    trust_new_host_key: bool = False,
    pinned_host_key: str | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 (the handshake limit asyncssh applies)
    keepalive_s: float = 0.0,
) -> tuple[asyncssh.SSHClientConnection, hostkeys.VerifyingClient]:
    """`connect`, also returning the client object (it knows why the connection closed)."""
    key = load_key(creds)
    if key is None and creds.password is None:
        raise SshError(
            "auth_failed",
            f"no credentials for {target.username}@{target.address}: "
            "give a private key file or a password",
        )
    known_hosts = known_hosts.expanduser()  # noqa: ASYNC240 (reads $HOME, no disk I/O)
    client = hostkeys.VerifyingClient(
        known_hosts, target.address, target.port, trust_new_host_key, pinned_host_key
    )
    options = _connect_options(
        target, creds, key, known_hosts=known_hosts, timeout=timeout, keepalive_s=keepalive_s
    )
    try:
        conn, _ = await asyncssh.create_connection(
            lambda: client, target.address, target.port, **options
        )
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        raise _connect_error(exc, client, target, creds, timeout) from None
    if client.new_key is not None:
        hostkeys.record_host_key(known_hosts, target.address, target.port, client.new_key)
    return conn, client


def _connect_options(
    target: SshTarget,
    creds: SshCredentials,
    key: asyncssh.SSHKey | None,
    *,
    known_hosts: Path,
    timeout: float,
    keepalive_s: float,
) -> dict[str, Any]:
    """asyncssh's options for a connection that uses only what it is given."""
    options: dict[str, Any] = {
        "username": target.username,
        # Host keys: the file's keys are trusted; any other key goes to the client's
        # validate_host_public_key, which refuses it unless the caller trusts a new host.
        "known_hosts": hostkeys.asyncssh_known_hosts(known_hosts),
        "x509_trusted_certs": None,
        # Only the credentials given: no ssh-agent, no ~/.ssh keys or config of this user.
        "client_keys": [key] if key is not None else None,
        "password": creds.password,
        "agent_path": None,
        "config": [],
        "preferred_auth": (
            ("publickey",) if key is not None else ("password", "keyboard-interactive")
        ),
        "connect_timeout": timeout,
        "login_timeout": timeout,
    }
    if keepalive_s > 0:
        options["keepalive_interval"] = keepalive_s
        options["keepalive_count_max"] = 3
    return options


def _connect_error(
    exc: asyncssh.Error | OSError | TimeoutError,
    client: hostkeys.VerifyingClient,
    target: SshTarget,
    creds: SshCredentials,
    timeout: float,
) -> SshError:
    """The SshError a person can act on for a failed connect."""
    where = f"{target.address}:{target.port}"
    match exc:
        case asyncssh.HostKeyNotVerifiable() if client.refusal is not None:
            refusal = client.refusal
            code = "host_key_unknown" if refusal.verdict == "unknown" else "host_key_changed"
            return SshError(code, refusal.message)
        case asyncssh.HostKeyNotVerifiable():
            return SshError(
                "host_key_changed",
                f"the host key of {where} could not be verified ({exc.reason}); connection refused",
            )
        case asyncssh.PermissionDenied():
            return SshError(
                "auth_failed",
                f"authentication failed: {where} refused user {target.username!r} with the "
                f"{creds.method} given; check the user name and the {creds.method}",
            )
        case TimeoutError():  # asyncio.TimeoutError is TimeoutError since Python 3.11
            return SshError(
                "unreachable",
                f"cannot reach {where}: no SSH handshake within {timeout:g} s "
                "(tried TCP to that address and port); check the address, the port "
                "(--ssh-port) and that a firewall lets SSH through",
            )
        case OSError():
            return SshError(
                "unreachable",
                f"cannot reach {where}: {exc.strerror or exc} (tried TCP to that address and "
                "port); check the address, the port (--ssh-port) and that sshd runs there",
            )
        case _:
            return SshError("unreachable", f"the SSH connection to {where} failed: {exc.reason}")


async def connect(
    target: SshTarget,
    creds: SshCredentials,
    *,
    known_hosts: Path,
    trust_new_host_key: bool = False,
    pinned_host_key: str | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 (the handshake limit asyncssh applies)
) -> asyncssh.SSHClientConnection:
    """Open an authenticated connection whose host key was verified against `known_hosts`
    (a new host's key: trusted if `trust_new_host_key`, or if its fingerprint is
    `pinned_host_key`).

    Raises SshError: unreachable, auth_failed, host_key_unknown, host_key_changed, bad_key.
    """
    conn, _ = await open_connection(
        target,
        creds,
        known_hosts=known_hosts,
        trust_new_host_key=trust_new_host_key,
        pinned_host_key=pinned_host_key,
        timeout=timeout,
    )
    return conn


# The submodules import the types above from this package, so they are imported last: by
# then the names they need exist. (E402: the order is the point.)
from sortie.scheduler.ssh.install import (  # noqa: E402
    AgentAccess,
    engine_args,
    install_agent,
    install_private_file,
    remote_python,
    remove_install,
    start_agent,
    stop_agent,
)
from sortie.scheduler.ssh.link import SshLink  # noqa: E402
from sortie.scheduler.ssh.secrets import (  # noqa: E402
    delete_credentials,
    load_credentials,
    save_credentials,
)
from sortie.scheduler.ssh.wheelhouse import build_wheelhouse  # noqa: E402
