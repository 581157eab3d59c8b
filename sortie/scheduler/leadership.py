"""Who leads: what one scheduler does with the lease it has just read (pure; lease.py applies it).

The lease is one KV key, written only by compare-and-set on the revision read, so of two
schedulers deciding at once only one write lands. A standby takes a lease whose revision it
has seen unchanged for the holder's ``lease_s`` of its *own* clock (no comparison of clocks
across hosts), or at once when the holder released it or sat in the same seat (host and data
directory, which only one live process can hold locked). Each take raises the epoch by one.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from sortie.proto.leadership import Leadership


@dataclass(frozen=True)
class Me:
    """This scheduler process."""

    holder: str
    host: str
    pid: int
    lease_s: float
    seat: str | None = None


@dataclass(frozen=True)
class Seen:
    """The lease as last read: ``record`` (None: no key, or unreadable), the key's
    ``revision`` (0: no key) and ``since``, when this revision was first read (monotonic)."""

    record: Leadership | None
    revision: int
    since: float


@dataclass(frozen=True)
class Write:
    """Write ``record`` if the key is still at ``last`` (0: only if there is no key)."""

    record: Leadership
    last: int
    acquired: bool  # a new epoch (True) or a renewal of the one held (False)
    # no holder of the lease taken can be alive (no key, released, or its holder sat in this
    # seat): if a full store refuses the write, this scheduler may lead without it
    free: bool = False


@dataclass(frozen=True)
class Standby:
    """Someone else leads: wait (until ``since + leader.lease_s`` at the latest)."""

    leader: Leadership


@dataclass(frozen=True)
class Deposed:
    """This scheduler led, and another holds the lease now: stop acting at once."""

    leader: Leadership


Decision = Write | Standby | Deposed


def decide(
    seen: Seen,
    me: Me,
    held: Leadership | None,
    now: float,
    wall: float,
    *,
    unleased: int | None = None,
) -> Decision:
    """What ``me`` does next. ``held``: the lease it holds (None: it does not lead);
    ``now``: the monotonic clock ``seen.since`` is on; ``wall``: unix seconds, for stamps;
    ``unleased``: the revision at which it took a free lease that a full store would not
    let it write (it leads, and writes the lease once the store has room)."""
    rec = seen.record
    if rec is not None and rec.holder == me.holder and not rec.released:
        return Write(_stamped(rec, wall), seen.revision, acquired=False)
    if held is not None:
        if unleased is not None and seen.revision == unleased:  # still as it was taken
            return Write(_stamped(held, wall), seen.revision, acquired=True, free=True)
        if rec is None:  # the key is gone (a store that lost it): still ours, put it back
            return Write(_stamped(held, wall), seen.revision, acquired=False)
        return Deposed(rec)
    free = rec is None or rec.released or (me.seat is not None and rec.seat == me.seat)
    if rec is None or free or now - seen.since >= rec.lease_s:
        return Write(_taken(rec, me, wall), seen.revision, acquired=True, free=free)
    return Standby(rec)


def _stamped(rec: Leadership, wall: float) -> Leadership:
    return msgspec.structs.replace(rec, renewed_at=wall)


def _taken(rec: Leadership | None, me: Me, wall: float) -> Leadership:
    return Leadership(
        holder=me.holder,
        epoch=(rec.epoch if rec is not None else 0) + 1,
        host=me.host,
        pid=me.pid,
        acquired_at=wall,
        renewed_at=wall,
        lease_s=me.lease_s,
        seat=me.seat,
    )


def presence(me: Me, leader: Leadership | None, started_at: float, wall: float) -> Leadership:
    """A standby's own record (``subjects.standby_key``): who it is and the epoch it saw."""
    return Leadership(
        holder=me.holder,
        epoch=leader.epoch if leader is not None else 0,
        host=me.host,
        pid=me.pid,
        acquired_at=started_at,
        renewed_at=wall,
        lease_s=me.lease_s,
        seat=me.seat,
    )


@dataclass(frozen=True)
class Standing:
    """What this scheduler exports about leadership (metrics.LeadershipCollector)."""

    leading: bool
    epoch: int  # the epoch it leads at, or the leader's it last read (0: none read yet)
    lease_age_s: float  # since its own last renewal (leader) or the lease last changed


def standing(seen: Seen, held: Leadership | None, renewed: float | None, now: float) -> Standing:
    """This scheduler's standing from its lease state (``renewed``: the monotonic time of
    its last stored renewal while it leads; ``now`` monotonic too)."""
    if held is not None:
        return Standing(True, held.epoch, max(0.0, now - (renewed if renewed is not None else now)))
    epoch = seen.record.epoch if seen.record is not None else 0
    age = max(0.0, now - seen.since) if seen.revision >= 0 else 0.0
    return Standing(False, epoch, age)
