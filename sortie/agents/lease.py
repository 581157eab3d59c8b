"""The agent's lease on its runs: held while the broker confirms its heartbeats.

The scheduler judges an agent lost ``lease_s`` after its last heartbeat and gives its runs to
new attempts after the kill grace. So the agent must stop its runs once it has gone
``lease_s`` without a heartbeat the broker confirmed (published and flushed). Being
connected is not enough: a paused or starved agent may still think it is connected, and
its heartbeats were not heard meanwhile. A renewal after such a gap does not undo it: the
runs held during the gap are stopped all the same, since the scheduler may already have
given them away.

Pure: the caller passes monotonic times.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Lease:
    lease_s: float
    renewed_at: float  # monotonic time the last confirmed heartbeat was sent
    lapsed: bool = False  # a gap longer than the lease was seen since the last renewal
    lapses: int = 0  # how many gaps were seen, ever: an attempt compares it with its start

    def lapse_seen(self, now: float) -> bool:
        """True the first time ``now`` is past the lease since the last renewal."""
        if self.lapsed or now - self.renewed_at <= self.lease_s:
            return False
        self.lapsed = True
        self.lapses += 1
        return True

    def lapsed_since(self, mark: int, now: float) -> bool:
        """Has the lease lapsed since ``lapses`` was ``mark`` (or is it lapsed now, unseen)?
        Marks nothing: the watcher still sees the gap and fences every run."""
        return self.lapses != mark or now - self.renewed_at > self.lease_s

    def renew(self, sent_at: float) -> bool:
        """A heartbeat sent at ``sent_at`` was confirmed. Returns True if the lease had lapsed
        before it (a gap nobody noticed yet, e.g. the agent was paused): the runs held through
        that gap must be stopped."""
        gap = self.lapse_seen(sent_at)
        self.renewed_at = max(self.renewed_at, sent_at)
        self.lapsed = False
        return gap
