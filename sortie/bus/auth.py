"""Broker authentication: NATS decentralized (JWT) auth, minted by Sortie itself.

An *authority* is three ed25519 identities (NATS "nkeys"): an operator, the account every
Sortie connection lives in (JetStream on, no limits) and the system account the server needs.
The broker's configuration trusts the operator and preloads the two account JWTs
(``resolver: MEMORY``), so no reload is needed when a new identity appears: whoever holds the
account seed (the scheduler) mints a user JWT for a new agent and the server accepts it.

A user's permissions come from its role (``proto.permissions``): ``scheduler``, ``client`` or
``agent`` (one per agent id). A user's JWT and seed travel together in a ``.creds`` file,
written owner-only. Connecting (``sortie.bus.connection.connect``) reads it and signs the
server's nonce; the seed never leaves this host and nothing here logs a seed, a JWT or a creds
file.

Files of an authority directory (``sortie up`` keeps one under ``<data>/auth``; ``sortie auth
init DIR`` makes one for a multi-machine install):

- ``operator.nk``, ``account.nk``, ``system.nk``: the seeds (0600; ``account.nk`` is what the
  scheduler needs to mint agent credentials);
- ``broker.conf``: the block to include in nats-server's configuration (JWTs only);
- ``scheduler.creds``, ``client.creds``: the two fixed identities (0600).

The nkey and JWT formats are NATS's (github.com/nats-io/nkeys and nats-io/jwt v2); they are
built here with the ``cryptography`` package, so no other dependency is needed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from sortie.proto import permissions

if TYPE_CHECKING:  # imported where used: loading cryptography is not free
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# --- nkeys ----------------------------------------------------------------------------------

PREFIX_SEED = 18 << 3  # "S"
PREFIX_OPERATOR = 14 << 3  # "O"
PREFIX_ACCOUNT = 0  # "A"
PREFIX_USER = 20 << 3  # "U"

SEED_KIND = {"O": PREFIX_OPERATOR, "A": PREFIX_ACCOUNT, "U": PREFIX_USER}


class AuthError(RuntimeError):
    """Credentials that cannot be used; the message says which file and what to do."""


def _crc16(data: bytes) -> int:
    """CRC-16/XMODEM, the checksum nkeys append (little-endian)."""
    return binascii.crc_hqx(data, 0)


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=")


def _unb32(text: str) -> bytes:
    return base64.b32decode(text + "=" * (-len(text) % 8))


def _with_crc(raw: bytes) -> bytes:
    return raw + _crc16(raw).to_bytes(2, "little")


@dataclass(frozen=True)
class KeyPair:
    """An nkey: a 32-byte ed25519 seed and the prefix byte of its kind."""

    prefix: int
    raw_seed: bytes = field(repr=False)

    @classmethod
    def create(cls, prefix: int) -> KeyPair:
        return cls(prefix=prefix, raw_seed=os.urandom(32))

    @classmethod
    def from_seed(cls, seed: str) -> KeyPair:
        """Decode an ``S...`` seed string; raise ``ValueError`` if it is not one."""
        try:
            raw = _unb32(seed.strip())
        except (binascii.Error, ValueError):
            raise ValueError("not an nkey seed (bad base32)") from None
        if len(raw) != 36 or _crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
            raise ValueError("not an nkey seed (bad length or checksum)")
        if raw[0] & 0xF8 != PREFIX_SEED:
            raise ValueError("not an nkey seed")
        prefix = ((raw[0] & 0x07) << 5) | ((raw[1] & 0xF8) >> 3)
        return cls(prefix=prefix, raw_seed=raw[2:34])

    def _private(self) -> Ed25519PrivateKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(self.raw_seed)

    @property
    def seed(self) -> str:
        b1 = PREFIX_SEED | (self.prefix >> 5)
        b2 = (self.prefix & 31) << 3
        return _b32(_with_crc(bytes([b1, b2]) + self.raw_seed))

    @property
    def public_key(self) -> str:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        key = self._private().public_key()
        pub: bytes = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return _b32(_with_crc(bytes([self.prefix]) + pub))

    def sign(self, data: bytes) -> bytes:
        return self._private().sign(data)


# --- JWTs -----------------------------------------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_HEADER = _b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())


def encode_jwt(issuer: KeyPair, subject: str, name: str, nats: dict[str, object]) -> str:
    """A NATS v2 JWT: ``subject`` (a public key) with ``nats`` claims, signed by ``issuer``."""
    claims: dict[str, object] = {
        "jti": "",
        "iat": int(time.time()),
        "iss": issuer.public_key,
        "name": name,
        "sub": subject,
        "nats": nats,
    }
    # jti: the hash of the claims without it, as nats-io/jwt does
    claims["jti"] = _b32(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{_HEADER}.{payload}".encode()
    return f"{_HEADER}.{payload}.{_b64url(issuer.sign(signing_input))}"


def jwt_claims(token: str) -> dict[str, object]:
    """The (unverified) claims of a JWT: for reading a name, never for trusting it."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(_unb64url(payload))
    except (IndexError, ValueError):
        raise ValueError("not a JWT") from None
    if not isinstance(claims, dict):
        raise ValueError("not a JWT")
    return claims


def _account_claims() -> dict[str, object]:
    unlimited = -1
    return {
        "limits": {
            "subs": unlimited,
            "data": unlimited,
            "payload": unlimited,
            "imports": unlimited,
            "exports": unlimited,
            "wildcards": True,
            "conn": unlimited,
            "leaf": unlimited,
            # JetStream is on for an account whose storage limits are set (-1: unlimited)
            "mem_storage": unlimited,
            "disk_storage": unlimited,
            "streams": unlimited,
            "consumer": unlimited,
        },
        "default_permissions": {"pub": {}, "sub": {}},
        "type": "account",
        "version": 2,
    }


def _user_claims(perms: permissions.Permissions) -> dict[str, object]:
    return {
        "pub": {"allow": list(perms.publish)},
        "sub": {"allow": list(perms.subscribe)},
        "subs": -1,
        "data": -1,
        "payload": -1,
        "type": "user",
        "version": 2,
    }


# --- credentials ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Creds:
    """A user's JWT and seed, as a ``.creds`` file holds them. The repr shows the name only."""

    name: str
    jwt: str = field(repr=False)
    seed: str = field(repr=False)

    def text(self) -> str:
        return (
            "-----BEGIN NATS USER JWT-----\n"
            f"{self.jwt}\n"
            "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n"
            "NKEYs are sensitive and should be treated as secrets.\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{self.seed}\n"
            "------END USER NKEY SEED------\n\n"
            "*************************************************************\n"
        )

    @property
    def inbox_prefix(self) -> str:
        return permissions.inbox_prefix(self.name)

    def sign_nonce(self, nonce: str) -> bytes:
        return base64.b64encode(KeyPair.from_seed(self.seed).sign(nonce.encode()))


def parse_creds(text: str, source: str = "the credentials") -> Creds:
    """Read a ``.creds`` file's text; raise ``AuthError`` saying what is wrong with it."""
    blocks: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("-----BEGIN ") and i + 1 < len(lines):
            blocks.append(lines[i + 1].strip())
    if len(blocks) != 2:
        raise AuthError(
            f"{source} is not a NATS credentials file (expected a user JWT and a seed): "
            "give the .creds file `sortie up` or `sortie auth creds` wrote"
        )
    token, seed = blocks
    try:
        claims = jwt_claims(token)
        kp = KeyPair.from_seed(seed)
    except ValueError as exc:
        raise AuthError(
            f"{source} is damaged ({exc}): write it again with `sortie auth creds`"
        ) from None
    if kp.prefix != PREFIX_USER or claims.get("sub") != kp.public_key:
        raise AuthError(
            f"{source} is damaged (its seed does not match its JWT): write it again with "
            "`sortie auth creds`"
        )
    return Creds(name=str(claims.get("name", "")), jwt=token, seed=seed)


def load_creds(path: Path) -> Creds:
    try:
        text = path.read_text()
    except OSError as exc:
        raise AuthError(
            f"cannot read the credentials file {path} ({exc.strerror or exc}): check the path "
            "(--creds, SORTIE_CREDS or the profile `sortie up` wrote) and that you may read it"
        ) from None
    return parse_creds(text, f"the credentials file {path}")


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def connect_callbacks(path: Path) -> tuple[Callable[[], bytearray], Callable[[str], bytes]]:
    """nats-py's ``user_jwt_cb`` and ``signature_cb`` for a creds file, read at each connect
    (so a rewritten file is picked up on reconnect)."""

    def user_jwt() -> bytearray:
        return bytearray(load_creds(path).jwt.encode())

    def sign(nonce: str) -> bytes:
        return load_creds(path).sign_nonce(nonce)

    return user_jwt, sign


# --- the authority --------------------------------------------------------------------------

OPERATOR_FILE = "operator.nk"
ACCOUNT_FILE = "account.nk"
SYSTEM_FILE = "system.nk"
BROKER_CONF = "broker.conf"
SCHEDULER_CREDS = "scheduler.creds"
CLIENT_CREDS = "client.creds"


@dataclass(frozen=True)
class Signer:
    """The account key: what the scheduler needs to mint credentials."""

    account: KeyPair = field(repr=False)

    @classmethod
    def load(cls, path: Path) -> Signer:
        try:
            kp = KeyPair.from_seed(path.read_text())
        except OSError as exc:
            raise AuthError(
                f"cannot read the account key {path} ({exc.strerror or exc}): give the "
                f"{ACCOUNT_FILE} of the directory `sortie auth init` made"
            ) from None
        except ValueError as exc:
            raise AuthError(f"{path} is not an account key ({exc})") from None
        if kp.prefix != PREFIX_ACCOUNT:
            raise AuthError(f"{path} is not an account key: give {ACCOUNT_FILE}")
        return cls(kp)

    def mint(self, role: permissions.Role) -> Creds:
        """Fresh credentials (a new user key) for ``role``."""
        user = KeyPair.create(PREFIX_USER)
        name = role.identity
        token = encode_jwt(self.account, user.public_key, name, _user_claims(permissions.of(role)))
        return Creds(name=name, jwt=token, seed=user.seed)


@dataclass(frozen=True)
class Authority:
    directory: Path
    operator: KeyPair = field(repr=False)
    account: KeyPair = field(repr=False)
    system: KeyPair = field(repr=False)

    @property
    def signer(self) -> Signer:
        return Signer(self.account)

    @property
    def account_key_path(self) -> Path:
        return self.directory / ACCOUNT_FILE

    @property
    def broker_conf(self) -> Path:
        return self.directory / BROKER_CONF

    @property
    def scheduler_creds(self) -> Path:
        return self.directory / SCHEDULER_CREDS

    @property
    def client_creds(self) -> Path:
        return self.directory / CLIENT_CREDS

    def server_config(self) -> str:
        """The nats-server configuration block that trusts this authority (no secrets)."""
        op = encode_jwt(
            self.operator,
            self.operator.public_key,
            "sortie",
            {"system_account": self.system.public_key, "type": "operator", "version": 2},
        )
        acc = encode_jwt(self.operator, self.account.public_key, "SORTIE", _account_claims())
        sys_claims: dict[str, object] = {
            "limits": {"subs": -1, "data": -1, "payload": -1, "conn": -1, "imports": -1},
            "type": "account",
            "version": 2,
        }
        sys = encode_jwt(self.operator, self.system.public_key, "SYS", sys_claims)
        return (
            "# Sortie's broker authentication (written by Sortie; JWTs only, no secrets)\n"
            f'operator: "{op}"\n'
            f'system_account: "{self.system.public_key}"\n'
            "resolver: MEMORY\n"
            # a CONNECT carries the user's JWT, permissions and all: more than the 4 KB default
            "max_control_line: 64KB\n"
            "resolver_preload: {\n"
            f'  {self.account.public_key}: "{acc}"\n'
            f'  {self.system.public_key}: "{sys}"\n'
            "}\n"
        )


def init_authority(directory: Path) -> Authority:
    """Load the authority in ``directory``, creating what is missing (kept across restarts).

    Writes the seeds, ``broker.conf`` and the scheduler and client credentials, all 0600.
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    keys: dict[str, KeyPair] = {}
    for fname, prefix in (
        (OPERATOR_FILE, PREFIX_OPERATOR),
        (ACCOUNT_FILE, PREFIX_ACCOUNT),
        (SYSTEM_FILE, PREFIX_ACCOUNT),
    ):
        path = directory / fname
        if path.exists():
            try:
                kp = KeyPair.from_seed(path.read_text())
            except ValueError as exc:
                raise AuthError(
                    f"{path} is damaged ({exc}); remove the directory {directory} to make a "
                    "new authority (every credentials file it issued stops working)"
                ) from None
        else:
            kp = KeyPair.create(prefix)
            write_private(path, kp.seed + "\n")
        keys[fname] = kp
    authority = Authority(
        directory=directory,
        operator=keys[OPERATOR_FILE],
        account=keys[ACCOUNT_FILE],
        system=keys[SYSTEM_FILE],
    )
    # The JWTs are re-signed at each start (same keys, so issued credentials stay valid).
    write_private(authority.broker_conf, authority.server_config())
    for path, role in (
        (authority.scheduler_creds, permissions.Role("scheduler")),
        (authority.client_creds, permissions.Role("client")),
    ):
        if not _current(path, authority, role):
            write_private(path, authority.signer.mint(role).text())
    return authority


def _current(path: Path, authority: Authority, role: permissions.Role) -> bool:
    """Does ``path`` hold credentials from this authority with the role's permissions of this
    version of Sortie? (If not, they are issued again.)"""
    if not path.exists():
        return False
    try:
        claims = jwt_claims(load_creds(path).jwt)
    except (AuthError, ValueError):
        return False
    wanted = _user_claims(permissions.of(role))
    nats = claims.get("nats")
    return (
        claims.get("iss") == authority.account.public_key
        and isinstance(nats, dict)
        and nats.get("pub") == wanted["pub"]
        and nats.get("sub") == wanted["sub"]
    )
