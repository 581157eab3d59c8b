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
- ``broker.conf``: the block to include in nats-server's configuration (JWTs only; the
  account JWT lists the revoked user keys);
- ``scheduler.creds``, ``client.creds``: the two fixed identities (0600);
- ``identities.json``: what was minted here (``sortie.bus.identities``; no secrets).

Every user JWT expires (``DEFAULT_TTL_S``); its holder renews it for the same key
(``Signer.renew``, ``sortie.bus.renewal``), and ``sortie auth revoke`` refuses a key at once
(``sortie.bus.revocation``).

The nkey and JWT formats are NATS's (github.com/nats-io/nkeys and nats-io/jwt v2); they are
built here with the ``cryptography`` package, so no other dependency is needed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from sortie.bus import expiry, identities
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
        # public_bytes_raw: no need for the serialization package (20 ms of imports: SSH, PEM)
        pub: bytes = self._private().public_key().public_bytes_raw()
        return _b32(_with_crc(bytes([self.prefix]) + pub))

    def sign(self, data: bytes) -> bytes:
        return self._private().sign(data)


# --- JWTs -----------------------------------------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_HEADER = _b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())


def encode_jwt(
    issuer: KeyPair,
    subject: str,
    name: str,
    nats: dict[str, object],
    *,
    expires_at: int | None = None,
) -> str:
    """A NATS v2 JWT: ``subject`` (a public key) with ``nats`` claims, signed by ``issuer``;
    the broker refuses it from ``expires_at`` (unix seconds; ``None``: never)."""
    claims: dict[str, object] = {
        "jti": "",
        "iat": int(time.time()),
        "iss": issuer.public_key,
        "name": name,
        "sub": subject,
        "nats": nats,
    }
    if expires_at is not None:
        claims["exp"] = expires_at
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


def verify_jwt(token: str, issuer_public_key: str) -> dict[str, object]:
    """The claims of a JWT that ``issuer_public_key`` signed; ``ValueError`` otherwise."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    claims = jwt_claims(token)
    try:
        raw = _unb32(issuer_public_key)
        header, payload, signature = token.split(".")
        Ed25519PublicKey.from_public_bytes(raw[1:33]).verify(
            _unb64url(signature), f"{header}.{payload}".encode()
        )
    except (ValueError, binascii.Error, InvalidSignature):
        raise ValueError("not signed by this authority") from None
    if claims.get("iss") != issuer_public_key:
        raise ValueError("not issued by this authority")
    return claims


def _account_claims(revocations: dict[str, int] | None = None) -> dict[str, object]:
    unlimited = -1
    claims: dict[str, object] = {
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
    if revocations:
        claims["revocations"] = revocations  # user key -> JWTs issued up to then are refused
    return claims


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

# How long a minted credential is valid: a day bounds what a leaked one is worth without a
# revocation, while its holder renews from two thirds of it on (``expiry.renew_at``), so it
# rides out hours without the scheduler (``sortie up --creds-ttl`` / ``sortie scheduler
# --creds-ttl``; ``sortie auth creds --ttl``).
DEFAULT_TTL_S = 24 * 3600


@dataclass(frozen=True)
class Signer:
    """The account key: what the scheduler needs to mint and renew credentials. ``registry``:
    the directory whose ``identities.json`` lists what was minted (the account key's)."""

    account: KeyPair = field(repr=False)
    ttl_s: int = DEFAULT_TTL_S
    registry: Path | None = None

    @classmethod
    def load(cls, path: Path, ttl_s: int = DEFAULT_TTL_S) -> Signer:
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
        return cls(kp, ttl_s=ttl_s, registry=path.parent)

    def mint(self, role: permissions.Role, label: str | None = None) -> Creds:
        """Fresh credentials (a new user key) for ``role``, listed in the registry under
        ``label`` (default: the role's identity)."""
        user = KeyPair.create(PREFIX_USER)
        token = self._sign(user.public_key, role, label or role.identity)
        return Creds(name=role.identity, jwt=token, seed=user.seed)

    def renew(self, token: str) -> str:
        """A fresh JWT for the same user key as ``token`` (which this account signed, has not
        expired and was not revoked); ``AuthError`` saying why not. The seed never travels:
        a JWT is worth nothing without its key's seed."""
        try:
            claims = verify_jwt(token, self.account.public_key)
        except ValueError as exc:
            raise AuthError(f"cannot renew: the credential is {exc}") from None
        exp, subject = claims.get("exp"), str(claims.get("sub", ""))
        if not isinstance(exp, int) or exp <= time.time():
            raise AuthError("cannot renew: the credential has expired or never expires")
        role = permissions.role_of(str(claims.get("name", "")))
        if role is None:
            raise AuthError("cannot renew: the credential names no role of this version")
        # minted elsewhere (`sortie auth creds` on another machine): renewed, and listed here
        entry = identities.find(self.registry, subject) if self.registry else None
        if entry is not None and entry.revoked_at is not None:
            raise AuthError("cannot renew: the credential was revoked")
        return self._sign(subject, role, entry.label if entry else role.identity)

    def _sign(self, public_key: str, role: permissions.Role, label: str) -> str:
        now = time.time()
        expires = int(now) + self.ttl_s
        perms = _user_claims(permissions.of(role))
        token = encode_jwt(self.account, public_key, role.identity, perms, expires_at=expires)
        if self.registry is not None:
            entry = identities.Identity(
                label=label,
                name=role.identity,
                public_key=public_key,
                issued_at=now,
                expires_at=float(expires),
            )
            try:
                identities.record(self.registry, entry, now)
            except OSError as exc:  # a read-only authority: the credential works, unlisted
                structlog.get_logger("sortie.bus").warning(
                    "minted credential not listed (`sortie auth revoke` cannot name it)",
                    registry=str(self.registry),
                    error=exc.strerror or str(exc),
                )
        return token


@dataclass(frozen=True)
class Authority:
    directory: Path
    operator: KeyPair = field(repr=False)
    account: KeyPair = field(repr=False)
    system: KeyPair = field(repr=False)
    ttl_s: int = DEFAULT_TTL_S

    @property
    def signer(self) -> Signer:
        return Signer(self.account, ttl_s=self.ttl_s, registry=self.directory)

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

    def account_jwt(self) -> str:
        """The account's JWT, listing every revoked user key of the registry."""
        revoked = identities.revocations(identities.load(self.directory))
        return encode_jwt(
            self.operator, self.account.public_key, "SORTIE", _account_claims(revoked)
        )

    def system_creds(self) -> Creds:
        """A short-lived user of the system account (kept in memory, never written): what
        pushes an updated account JWT to a running broker (``revocation.push``)."""
        user = KeyPair.create(PREFIX_USER)
        unlimited = -1  # absent limits are zero: not even the reply's inbox could be read
        claims: dict[str, object] = {
            "pub": {},
            "sub": {},
            "subs": unlimited,
            "data": unlimited,
            "payload": unlimited,
            "type": "user",
            "version": 2,
        }
        token = encode_jwt(
            self.system, user.public_key, "system", claims, expires_at=int(time.time()) + 300
        )
        return Creds(name="system", jwt=token, seed=user.seed)

    def server_config(self) -> str:
        """The nats-server configuration block that trusts this authority (no secrets)."""
        op = encode_jwt(
            self.operator,
            self.operator.public_key,
            "sortie",
            {"system_account": self.system.public_key, "type": "operator", "version": 2},
        )
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
            f'  {self.account.public_key}: "{self.account_jwt()}"\n'
            f'  {self.system.public_key}: "{sys}"\n'
            "}\n"
        )


def init_authority(directory: Path, ttl_s: int = DEFAULT_TTL_S) -> Authority:
    """Load the authority in ``directory``, creating what is missing (kept across restarts).

    Writes the seeds, ``broker.conf`` and the scheduler and client credentials, all 0600.
    Fixed credentials that are revoked or of another version's permissions are minted anew;
    those due for renewal (``expiry.due``) are renewed (same key).
    """
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    keys: dict[str, KeyPair] = {}
    for fname, prefix in (
        (OPERATOR_FILE, PREFIX_OPERATOR),
        (ACCOUNT_FILE, PREFIX_ACCOUNT),
        (SYSTEM_FILE, PREFIX_ACCOUNT),
    ):
        keys[fname] = _key(directory / fname, prefix)
    authority = Authority(
        directory=directory,
        operator=keys[OPERATOR_FILE],
        account=keys[ACCOUNT_FILE],
        system=keys[SYSTEM_FILE],
        ttl_s=ttl_s,
    )
    # The JWTs are re-signed at each start (same keys, so issued credentials stay valid).
    write_private(authority.broker_conf, authority.server_config())
    for path, role in (
        (authority.scheduler_creds, permissions.Role("scheduler")),
        (authority.client_creds, permissions.Role("client")),
    ):
        keep_fixed(authority, path, role)
    return authority


def _key(path: Path, prefix: int) -> KeyPair:
    if not path.exists():
        kp = KeyPair.create(prefix)
        write_private(path, kp.seed + "\n")
        return kp
    try:
        return KeyPair.from_seed(path.read_text())
    except ValueError as exc:
        raise AuthError(
            f"{path} is damaged ({exc}); remove the directory {path.parent} to make a "
            "new authority (every credentials file it issued stops working)"
        ) from None


def keep_fixed(authority: Authority, path: Path, role: permissions.Role) -> bool:
    """Keep a credentials file the authority itself holds (``sortie up``'s scheduler, client
    and local agent) usable: mint it anew if missing, revoked or not current, renew it when
    due. Whether the file changed."""
    creds = _current(path, authority, role)
    if creds is not None:
        life = expiry.lifetime(jwt_claims(creds.jwt))
        if life is not None and not expiry.due(time.time(), *life):
            return False
        with contextlib.suppress(AuthError):
            token = authority.signer.renew(creds.jwt)
            write_private(path, dataclasses.replace(creds, jwt=token).text())
            return True
    write_private(path, authority.signer.mint(role).text())
    return True


def _current(path: Path, authority: Authority, role: permissions.Role) -> Creds | None:
    """``path``'s credentials if they are from this authority, with the role's permissions of
    this version of Sortie, in the registry and not revoked (if not, they are issued again)."""
    if not path.exists():
        return None
    try:
        creds = load_creds(path)
        claims = jwt_claims(creds.jwt)
    except (AuthError, ValueError):
        return None
    wanted = _user_claims(permissions.of(role))
    nats = claims.get("nats")
    entry = identities.find(authority.directory, str(claims.get("sub")))
    current = (
        claims.get("iss") == authority.account.public_key
        and isinstance(nats, dict)
        and nats.get("pub") == wanted["pub"]
        and nats.get("sub") == wanted["sub"]
        and entry is not None
        and entry.revoked_at is None
        and (life := expiry.lifetime(claims)) is not None
        and life[1] > time.time()
    )
    return creds if current else None
