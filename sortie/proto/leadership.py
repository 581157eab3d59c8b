"""Which scheduler leads: the lease record in ``subjects.KV_LEADERSHIP``.

The leader keeps ``subjects.LEADER_KEY`` renewed by compare-and-set; a standby takes it (with
the epoch one higher) once it has seen no renewal for ``lease_s``. Each standby keeps its own
record under ``subjects.standby_key(holder)`` so that `sortie status` can list it.
"""

from __future__ import annotations

from sortie.proto.base import Message


class Leadership(Message, frozen=True, kw_only=True):
    """One scheduler's lease (under ``leader``) or presence (under ``standby.<holder>``)."""

    holder: str  # this scheduler process's id (random, new at each start)
    epoch: int  # the leader's epoch (only grows); a standby's: the epoch it last saw
    host: str
    pid: int
    acquired_at: float  # the leader: when it took the lease; a standby: when it started
    renewed_at: float  # unix seconds of the last renewal (for display: expiry is local)
    lease_s: float  # how long a standby waits on an unrenewed lease before taking it
    # host and data directory, when the holder keeps that directory locked (bus.datadir): a
    # scheduler starting in the same seat knows the holder is dead and need not wait
    seat: str | None = None
    released: bool = False  # its holder stopped and gave the lease up
