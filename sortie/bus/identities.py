"""The registry of minted credentials: who holds which user key, until when, and whether it
was revoked. Public facts only (names, roles, public keys, times), never a JWT or a seed.

It is ``identities.json`` beside the account key (``<authority dir>``, owner-only), written by
whoever mints there (``sortie up``, the scheduler for the agents it starts, ``sortie auth
creds``) under an ``flock``, so the writers never lose each other's entries. ``sortie auth
list`` shows it; ``sortie auth revoke`` marks entries revoked, and the account JWT the broker
trusts lists every revoked key (``revocations``), so the broker refuses it at once.

An entry is dropped once its credential has been expired for ``KEEP_EXPIRED_S`` (the broker
refuses an expired JWT by itself), unless it was revoked: a revoked key is refused for good
(``revocations`` names a time far ahead, so no JWT for it, renewed anywhere, is let in).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec

REGISTRY_FILE = "identities.json"
LOCK_FILE = ".identities.lock"
KEEP_EXPIRED_S = 24 * 3600
# a revoked key's JWTs are refused if issued up to this long after the revocation: for good
REVOKED_FOR_S = 100 * 365 * 24 * 3600


class UnknownIdentity(LookupError):
    """No credential of that name; the message lists the names there are."""


@dataclass(frozen=True)
class Identity:
    label: str  # what a person calls it: "client", "alice", "agent.box1", "scheduler"
    name: str  # the identity in its JWT (``permissions.Role.identity``)
    public_key: str
    issued_at: float
    expires_at: float | None  # None: issued before credentials expired (never)
    revoked_at: float | None = None

    def matches(self, who: str) -> bool:
        """``who`` names this entry: its label, or an agent's id alone."""
        return who in (self.label, self.name) or self.name == f"agent.{who}"


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(list[Identity])


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held for one read-modify-write: microseconds
        yield
    finally:
        os.close(fd)


def load(directory: Path) -> list[Identity]:
    """Every entry (none if there is no registry yet)."""
    try:
        return _DECODER.decode((directory / REGISTRY_FILE).read_bytes())
    except FileNotFoundError:
        return []
    except msgspec.DecodeError as exc:
        raise ValueError(
            f"{directory / REGISTRY_FILE} is damaged ({exc}); remove it to start a new registry "
            "(credentials it listed keep working until they expire, but cannot be revoked)"
        ) from None


def _save(directory: Path, entries: list[Identity]) -> None:
    path = directory / REGISTRY_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(_ENCODER.encode(entries))
    tmp.replace(path)


def _live(entries: list[Identity], now: float) -> list[Identity]:
    """The entries kept: revoked ones, and the others until a day after they expired."""
    return [
        e
        for e in entries
        if e.revoked_at is not None or e.expires_at is None or e.expires_at > now - KEEP_EXPIRED_S
    ]


def record(directory: Path, entry: Identity, now: float) -> None:
    """Add ``entry``, or update the one with its public key (a renewal: new expiry)."""
    with _locked(directory):
        current = load(directory)
        old = next((e for e in current if e.public_key == entry.public_key), None)
        if old is not None:
            entry = replace(entry, revoked_at=old.revoked_at)
        others = [e for e in current if e.public_key != entry.public_key]
        _save(directory, [*_live(others, now), entry])


def find(directory: Path, public_key: str) -> Identity | None:
    return next((e for e in load(directory) if e.public_key == public_key), None)


def revoke(directory: Path, who: str, now: float) -> list[Identity]:
    """Mark every valid credential ``who`` names revoked at ``now``; those entries.

    Raises :class:`UnknownIdentity` when nothing live has that name."""
    with _locked(directory):
        entries = _live(load(directory), now)
        hit = [
            e
            for e in entries
            if e.matches(who)
            and e.revoked_at is None
            and (e.expires_at is None or e.expires_at > now)
        ]
        if not hit:
            names = sorted({e.label for e in entries if e.revoked_at is None})
            raise UnknownIdentity(
                f"no credential named {who!r} that is valid (not expired, not revoked); "
                f"`sortie auth list` shows them ({', '.join(names) or 'none'})"
            )
        keys = {e.public_key for e in hit}
        _save(
            directory, [replace(e, revoked_at=now) if e.public_key in keys else e for e in entries]
        )
        return [replace(e, revoked_at=now) for e in hit]


def revocations(entries: list[Identity]) -> dict[str, int]:
    """The account JWT's ``revocations``: public key -> the time up to which the broker refuses
    JWTs issued for it. Far ahead: a revoked key stays refused even if some scheduler that does
    not know of the revocation renews it."""
    return {
        e.public_key: int(e.revoked_at) + REVOKED_FOR_S for e in entries if e.revoked_at is not None
    }
