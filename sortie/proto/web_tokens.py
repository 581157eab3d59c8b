"""Dashboard tokens: what `sortie auth web-token` stores, and the rules every reader applies.

A token is ``sortie_web_`` and 32 random bytes (URL-safe base64). It is shown once, to whoever
minted it, and kept nowhere: the bucket ``subjects.KV_WEB_TOKENS`` holds, under the token's
SHA-256 (hex), a :class:`WebToken` saying whose it is and until when it works. Revoking deletes
that entry; a dashboard watching the bucket refuses the token from its next request.

Pure: no clock (``now`` is passed in), no randomness, no I/O.
"""

from __future__ import annotations

import hashlib

from sortie.proto.messages import Message

PREFIX = "sortie_web_"
DEFAULT_TTL_S = 30 * 86400  # a month: a browser's login lasts this long without a new token
SHOWN_HASH = 12  # hex digits of the hash that name a token in listings (`--revoke` takes them)


class WebToken(Message, frozen=True, kw_only=True):
    """One dashboard token (stored under its hash; the token itself is kept nowhere)."""

    label: str  # who or what it is for: shown in the dashboard's header and in listings
    read_only: bool = False  # True: it may look, not act (cancel, create, attach, ...)
    issued_at: float
    expires_at: float | None = None  # None: never


def token_hash(token: str) -> str:
    """How a token is stored and named: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def is_valid(record: WebToken, now: float) -> bool:
    """Whether the token of ``record`` lets someone in at ``now``."""
    return record.expires_at is None or now < record.expires_at


def matching(tokens: dict[str, WebToken], name: str) -> list[str]:
    """The hashes ``name`` designates: every token with that label, or the one token whose
    hash starts with ``name`` (at least ``SHOWN_HASH`` // 2 hex digits, so a short typo never
    matches by chance). Sorted; empty when none."""
    by_label = [h for h, t in tokens.items() if t.label == name]
    if by_label:
        return sorted(by_label)
    prefix = name.lower()
    if len(prefix) < SHOWN_HASH // 2:
        return []
    return sorted(h for h in tokens if h.startswith(prefix))


def check_label(label: str) -> str | None:
    """Why ``label`` cannot name a token, or None: 1 to 64 printable characters."""
    if not 1 <= len(label) <= 64 or not label.isprintable():
        return f"a token's label is 1 to 64 printable characters (got {label!r})"
    return None
