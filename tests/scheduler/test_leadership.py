"""Who leads: the pure decision on a lease just read (scheduler/leadership.py)."""

from __future__ import annotations

import msgspec
import pytest

from sortie.proto.leadership import Leadership
from sortie.scheduler.leadership import (
    Deposed,
    Me,
    Seen,
    Standby,
    Standing,
    Write,
    decide,
    standing,
)

ME = Me(holder="me", host="b", pid=2, lease_s=10.0, seat="b:/data/scheduler")


def lease(holder: str = "other", epoch: int = 4, **changes: object) -> Leadership:
    rec = Leadership(
        holder=holder,
        epoch=epoch,
        host="a",
        pid=1,
        acquired_at=100.0,
        renewed_at=150.0,
        lease_s=10.0,
        seat="a:/data/scheduler",
    )
    return msgspec.structs.replace(rec, **changes)


# (case, what was read, first read at (monotonic), the lease held, now) -> what is decided
CASES = [
    ("free: nobody ever led", Seen(None, 0, 50.0), None, 50.0, ("acquire", 1, 0)),
    ("held by another, renewed lately", Seen(lease(), 7, 50.0), None, 59.9, ("standby", 4, 7)),
    (
        "held by another, unrenewed for its lease",
        Seen(lease(), 7, 50.0),
        None,
        60.0,
        ("acquire", 5, 7),
    ),
    (
        "its lease is the holder's, not mine",
        Seen(lease(lease_s=30.0), 7, 50.0),
        None,
        60.0,
        ("standby", 4, 7),
    ),
    (
        "released by a clean stop",
        Seen(lease(released=True), 8, 50.0),
        None,
        50.0,
        ("acquire", 5, 8),
    ),
    (
        "the holder sat in my seat: it is dead",
        Seen(lease(seat=ME.seat), 7, 50.0),
        None,
        50.0,
        ("acquire", 5, 7),
    ),
    ("held by me: renewed", Seen(lease("me"), 9, 50.0), lease("me"), 55.0, ("renew", 4, 9)),
    (
        "another took it from me",
        Seen(lease(epoch=5), 10, 50.0),
        lease("me"),
        51.0,
        ("deposed", 5, 10),
    ),
    ("my key was lost by the store", Seen(None, 0, 50.0), lease("me"), 51.0, ("renew", 4, 0)),
    (
        "an unreadable lease is taken at its revision",
        Seen(None, 3, 50.0),
        None,
        50.0,
        ("acquire", 1, 3),
    ),
]


@pytest.mark.parametrize(
    ("case", "seen", "held", "now", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_decide(
    case: str, seen: Seen, held: Leadership | None, now: float, expected: tuple[str, int, int]
) -> None:
    decision = decide(seen, ME, held, now, wall=200.0)
    match decision:
        case Write(record=rec, last=last, acquired=acquired):
            got = ("acquire" if acquired else "renew", rec.epoch, last)
            assert (rec.holder, rec.renewed_at) == ("me", 200.0)
            if acquired:
                assert (rec.host, rec.pid, rec.seat, rec.acquired_at) == ("b", 2, ME.seat, 200.0)
        case Standby(leader=rec):
            got = ("standby", rec.epoch, seen.revision)
        case Deposed(leader=rec):
            got = ("deposed", rec.epoch, seen.revision)
    assert got == expected, case


def test_the_epoch_only_grows_through_takeovers() -> None:
    """Three schedulers take the lease from each other in turn: each take is one higher."""
    record: Leadership | None = None
    revision = 0
    epochs = []
    for i, who in enumerate(["a", "b", "c", "a", "b"]):
        me = Me(holder=who, host=who, pid=i, lease_s=10.0)
        since = 100.0 * i
        decision = decide(Seen(record, revision, since), me, None, since + 10.0, wall=since)
        assert isinstance(decision, Write) and decision.acquired
        record, revision = decision.record, revision + 1
        epochs.append(record.epoch)
    assert epochs == [1, 2, 3, 4, 5]


def test_a_renewal_keeps_the_epoch_and_when_it_was_taken() -> None:
    held = lease("me", epoch=6)
    decision = decide(Seen(held, 12, 0.0), ME, held, 1000.0, wall=300.0)
    assert decision == Write(msgspec.structs.replace(held, renewed_at=300.0), 12, acquired=False)


def test_only_a_lease_no_live_holder_can_have_is_free() -> None:
    """A full store refuses the lease's write: only a free lease (no key, released, or its
    holder in this seat) may be led without it; a lapsed one's holder may be alive."""
    free = [
        Seen(None, 0, 0.0),
        Seen(lease(released=True), 8, 0.0),
        Seen(lease(seat=ME.seat), 7, 0.0),
    ]
    for seen in free:
        decision = decide(seen, ME, None, 0.0, wall=1.0)
        assert isinstance(decision, Write) and decision.acquired and decision.free, seen
    lapsed = decide(Seen(lease(), 7, 0.0), ME, None, 10.0, wall=1.0)
    assert isinstance(lapsed, Write) and lapsed.acquired and not lapsed.free


def test_leading_without_a_stored_lease_until_another_writes_one() -> None:
    taken = lease("me", epoch=5)
    # the store still holds what was taken over (revision 7): write it again
    again = decide(Seen(lease(), 7, 0.0), ME, taken, 100.0, wall=2.0, unleased=7)
    assert again == Write(msgspec.structs.replace(taken, renewed_at=2.0), 7, True, free=True)
    # someone else wrote the key meanwhile: deposed
    other = lease(epoch=5)
    assert decide(Seen(other, 8, 0.0), ME, taken, 100.0, wall=2.0, unleased=7) == Deposed(other)


@pytest.mark.parametrize(
    ("case", "seen", "held", "renewed", "now", "expected"),
    [
        ("leading: its own renewal's age", Seen(lease(), 7, 50.0), lease("me", 5), 58.0, 60.5,
         Standing(True, 5, 2.5)),
        ("leading on a full store: never stored", Seen(None, 0, 0.0), lease("me", 1), None, 9.0,
         Standing(True, 1, 0.0)),
        ("standby: the leader's epoch, the lease unchanged since", Seen(lease(), 7, 50.0), None,
         None, 54.0, Standing(False, 4, 4.0)),
        ("standby before any read", Seen(None, -1, 0.0), None, None, 99.0,
         Standing(False, 0, 0.0)),
    ],
)  # fmt: skip
def test_standing_for_the_metrics(  # noqa: PLR0917  # pytest passes parameters by name
    case: str,
    seen: Seen,
    held: Leadership | None,
    renewed: float | None,
    now: float,
    expected: Standing,
) -> None:
    assert standing(seen, held, renewed, now) == expected, case
