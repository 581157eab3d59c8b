"""The leader's snapshot of the runs it holds, so that a start does not read all history.

A scheduler keeps in memory only the runs that are not over (and the ended trials and steps of
sweeps and pipelines that are not over). Every so often the leader stores them, as one
``RunsSnapshot`` object in ``subjects.OBJ_STATE``, and points at it from
``subjects.RUNS_SNAPSHOT_KEY`` in ``KV_RUNS`` (a fenced write: a deposed leader's pointer is
refused). A scheduler that starts, or takes over, loads that snapshot and then only the records
``KV_RUNS`` stored after ``RunsSnapshotRef.seq``: its start grows with the runs in flight, not
with every run ever written. A retried submission of a run that ended is found by its
submission id's key in ``KV_SUBMISSIONS`` (``subjects.submission_key``), not in memory.
"""

from __future__ import annotations

from sortie.proto.base import Message
from sortie.proto.messages import RunRecord

LAYOUT = 2  # JSON lines: a RunsSnapshotHead, then one SnapshotRun per run (1: one JSON doc)


class RunsSnapshot(Message, frozen=True, kw_only=True):
    """What the leader held of the runs when ``KV_RUNS``' stream was at ``seq``. Stored as
    JSON lines, zlib-compressed: its ``RunsSnapshotHead``, then a ``SnapshotRun`` per run (so
    that a million runs are written and read a slice at a time, never as one document)."""

    seq: int  # every record stored at or below this stream sequence is reflected here
    epoch: int  # the leader epoch that took it
    taken_at: float
    runs: list[RunRecord]  # runs not over, and the ended children of sweeps/pipelines not over
    revisions: list[int]  # each run's KV revision, in the order of ``runs``


class RunsSnapshotHead(Message, frozen=True, kw_only=True):
    """A stored snapshot's first line."""

    seq: int
    epoch: int
    taken_at: float
    runs: int  # how many SnapshotRun lines follow


class SnapshotRun(Message, frozen=True, kw_only=True):
    """One run of a stored snapshot: its record and the record's KV revision."""

    revision: int
    record: RunRecord


class RunsSnapshotRef(Message, frozen=True, kw_only=True):
    """The pointer under ``RUNS_SNAPSHOT_KEY``: which object holds the latest snapshot."""

    name: str  # the object's name in ``OBJ_STATE``
    seq: int
    epoch: int
    taken_at: float
    runs: int  # how many runs it holds
    size: int  # its stored size in bytes (its JSON lines, zlib-compressed)
    layout: int = 1  # how the object is laid out (LAYOUT); another layout is not read
