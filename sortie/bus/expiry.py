"""When a credential is renewed: pure (times are passed in), so it is tested by table.

A holder renews from two thirds of its credential's life on: with the default day
(``auth.DEFAULT_TTL_S``) that leaves eight hours for a scheduler that is away. After a failed
attempt it tries again after a tenth of what is left (between 1 s and a minute), so it keeps
trying more often as the expiry nears, and never spins.
"""

from __future__ import annotations

from collections.abc import Mapping

RENEW_FRACTION = 2 / 3
RETRY_MAX_S = 60.0
RETRY_MIN_S = 1.0


def lifetime(claims: Mapping[str, object]) -> tuple[int, int] | None:
    """(issued at, expires at) of a JWT's claims; ``None`` for one that never expires."""
    iat, exp = claims.get("iat"), claims.get("exp")
    if isinstance(iat, int) and isinstance(exp, int):
        return iat, exp
    return None


def renew_at(issued_at: float, expires_at: float) -> float:
    return issued_at + (expires_at - issued_at) * RENEW_FRACTION


def due(now: float, issued_at: float, expires_at: float) -> bool:
    return now >= renew_at(issued_at, expires_at)


def wait_s(now: float, issued_at: float, expires_at: float, *, failed: bool) -> float:
    """Seconds until the next renewal attempt: until it is due, or after a failure a tenth of
    what is left of the credential's life, bounded to [1 s, 60 s]."""
    if not failed:
        return max(0.0, renew_at(issued_at, expires_at) - now)
    return min(RETRY_MAX_S, max(RETRY_MIN_S, (expires_at - now) / 10))
