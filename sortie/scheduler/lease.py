"""The leader lease against the real bucket: read, let leadership.py decide, compare-and-set.

:meth:`Lease.acquire` waits as a standby (keeping its presence key current) until this
scheduler holds the lease; :meth:`Lease.hold` renews it every ``lease_s / 3`` and raises
:class:`Deposed` once another scheduler holds it. A broker that does not answer deposes no
one: both keep retrying, and only a lease read back as someone else's ends the leader. A
standby counts a lease's age from its first read after the broker answers again, so an outage
longer than the lease does not hand leadership over by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.js.kv import KeyValue

from sortie.bus.datadir import holds_data_dir
from sortie.bus.pause import TRANSIENT, retry_pause
from sortie.bus.store_limits import is_store_full
from sortie.proto import codec, subjects
from sortie.proto.leadership import Leadership
from sortie.scheduler.leadership import Deposed as Ousted
from sortie.scheduler.leadership import (
    Me,
    Seen,
    Standby,
    Standing,
    Write,
    decide,
    presence,
    standing,
)

log = structlog.get_logger("sortie.scheduler")

DEFAULT_LEASE_S = 10.0


class Deposed(RuntimeError):
    """Another scheduler holds the lease this one held: it must stop acting at once."""

    def __init__(self, mine: Leadership, leader: Leadership) -> None:
        self.leader = leader
        super().__init__(
            f"deposed: scheduler {leader.host} pid {leader.pid} leads at epoch {leader.epoch} "
            f"(this one led at epoch {mine.epoch}); stopping"
        )


def me(lease_s: float, data_dir: Path | None) -> Me:
    """This process as a lease holder: a new random id, and a seat when it holds its data
    directory locked (then a successor there knows this holder is gone)."""
    host = socket.gethostname()
    seat = None
    if data_dir is not None and holds_data_dir(data_dir):
        seat = f"{host}:{data_dir.expanduser().resolve()}"
    return Me(holder=secrets.token_hex(6), host=host, pid=os.getpid(), lease_s=lease_s, seat=seat)


class Lease:
    def __init__(self, kv: KeyValue, me: Me, reconnects: Callable[[], int] = lambda: 0) -> None:
        """``reconnects``: how many times the connection has reconnected (nats-py's stats):
        a lease read across a reconnect starts its age anew."""
        self.kv = kv
        self.me = me
        self._reconnects = reconnects
        self._links = -1  # ``reconnects`` when the lease was last read as it is
        self.held: Leadership | None = None  # the lease while this scheduler leads
        self.revision = 0  # the key's revision this scheduler last wrote
        # leading on a free lease a full store would not store: the revision it was taken at
        self.unleased: int | None = None
        self._seen = Seen(record=None, revision=-1, since=0.0)
        self._started_at = time.time()
        self._standby_written = False
        self._renewed: float | None = None  # monotonic: the last stored write while leading

    @property
    def interval_s(self) -> float:
        return self.me.lease_s / 3

    async def _read(self) -> tuple[Leadership | None, int]:
        try:
            entry = await self.kv.get(subjects.LEADER_KEY)
        except nats.js.errors.KeyNotFoundError:
            return None, 0
        try:
            return codec.decode(Leadership, entry.value or b""), entry.revision or 0
        except codec.BadMessage:  # taken over like a lapsed one (at its revision)
            return None, entry.revision or 0

    async def step(self) -> Write | Standby | None:
        """Read the lease once, decide, and write if that is the decision (None: another
        scheduler wrote first; read again). Raises :class:`Deposed`, and what the broker
        raised (TRANSIENT)."""
        before = self._reconnects()
        record, revision = await self._read()
        now = time.monotonic()
        links = self._reconnects()
        same = (revision, record) == (self._seen.revision, self._seen.record)
        if not same or links != before or links != self._links:
            # new, or read across a reconnect (a request sent while the broker was away is
            # answered once it is back: the leader could not renew meanwhile)
            self._seen = Seen(record=record, revision=revision, since=now)
            self._links = links
        decision = decide(self._seen, self.me, self.held, now, time.time(), unleased=self.unleased)
        if isinstance(decision, Ousted):
            assert self.held is not None
            mine, self.held = self.held, None  # nothing to give up at the stop
            raise Deposed(mine, decision.leader)
        if isinstance(decision, Write):
            data = codec.encode(decision.record)
            try:
                if decision.last == 0:
                    self.revision = await self.kv.create(subjects.LEADER_KEY, data)
                else:
                    self.revision = await self.kv.update(
                        subjects.LEADER_KEY, data, last=decision.last
                    )
            except nats.js.errors.KeyWrongLastSequenceError:
                # someone wrote first: the next read says who (a leader then finds itself
                # deposed, or its own lease when the store lost its last write)
                return None
            except nats.js.errors.APIError as exc:
                if not (decision.free and is_store_full(exc)):
                    raise
                if self.unleased is None:
                    log.warning(
                        "the store is full: leading without a stored lease until it has room",
                        error=repr(exc),
                    )
                self.held, self.unleased = decision.record, decision.last
                return decision
            self.held, self.unleased = decision.record, None
            self._renewed = now
        return decision

    def standing(self) -> Standing:
        """Leader or standby, the epoch, the lease's age (for the metrics)."""
        return standing(self._seen, self.held, self._renewed, time.monotonic())

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait as a standby until this scheduler leads (True), or ``stop`` is set (False)."""
        said: tuple[str, int, int] | None = None
        try:
            while not stop.is_set():
                try:
                    decision = await self.step()
                except TRANSIENT as exc:
                    log.warning("leader lease not read; retrying", error=repr(exc))
                    # the leader could not renew while the broker did not answer either:
                    # it gets a whole lease from the first read that succeeds again
                    self._seen = Seen(record=None, revision=-1, since=0.0)
                    await retry_pause(1.0)
                    continue
                if decision is None:
                    continue
                if isinstance(decision, Write):
                    assert self.held is not None
                    log.info(
                        f"leader: epoch {self.held.epoch}",
                        epoch=self.held.epoch,
                        holder=self.me.holder,
                    )
                    return True
                leader = decision.leader
                if said != (leader.host, leader.pid, leader.epoch):
                    said = (leader.host, leader.pid, leader.epoch)
                    log.info(
                        f"standby: leader is {leader.host} pid {leader.pid} epoch {leader.epoch}",
                        holder=self.me.holder,
                    )
                await self._present(leader)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)
            return False
        finally:
            await self._absent()

    async def hold(self) -> NoReturn:
        """Renew the lease every ``lease_s / 3``, for ever; raises :class:`Deposed`."""
        while True:
            await retry_pause(self.interval_s)
            try:
                await self.step()
            except TRANSIENT as exc:
                log.warning("leader lease not renewed; retrying", error=repr(exc))

    async def release(self) -> None:
        """Give the lease up (a clean stop), so a standby takes it without waiting."""
        if self.held is None or self.unleased is not None:
            return
        released = msgspec.structs.replace(self.held, released=True, renewed_at=time.time())
        with contextlib.suppress(*TRANSIENT, nats.js.errors.KeyWrongLastSequenceError):
            await asyncio.wait_for(
                self.kv.update(subjects.LEADER_KEY, codec.encode(released), last=self.revision),
                2.0,
            )
        self.held = None

    async def _present(self, leader: Leadership) -> None:
        """This standby's presence key, renewed (best effort: status shows it)."""
        rec = presence(self.me, leader, self._started_at, time.time())
        with contextlib.suppress(*TRANSIENT):
            await self.kv.put(subjects.standby_key(self.me.holder), codec.encode(rec))
            self._standby_written = True

    async def _absent(self) -> None:
        if not self._standby_written:
            return
        with contextlib.suppress(*TRANSIENT):
            await asyncio.wait_for(self.kv.delete(subjects.standby_key(self.me.holder)), 2.0)
            self._standby_written = False
