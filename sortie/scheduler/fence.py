"""Fenced writes: every record the leader writes is stored only while it still leads (shell).

The lease (lease.py) says who leads, but a leader paused past its lease (SIGSTOP, a long GC,
a frozen VM) does not know it was replaced until its next renewal reads the lease. Its writes
in between must fail, so each bucket the leader writes holds a *fence*: the key
``subjects.FENCE_KEY``, whose value is the leadership record of the scheduler that raised it.

- A new leader raises the fence in every bucket it writes (:meth:`Fence.raise_`) before it
  reads anything, and remembers each fence's revision.
- Every write then expects that revision on the fence's subject, so the broker stores it
  only while the fence stands as this leader raised it:
  - a plain put or delete carries the check itself (``Nats-Expected-Last-Subject-Sequence``
    with ``...-Subject`` naming the fence);
  - a compare-and-set, which needs that header for its own key, goes out as an atomic batch
    (kvbatch.py) led by a *probe* message (``subjects.FENCE_PROBE_KEY``) that carries the
    fence's check: the batch is stored whole or not at all.
- A write refused because the fence moved raises :class:`lease.Deposed` naming the leader that
  moved it; a refusal for the record's own revision raises nats-py's
  ``KeyWrongLastSequenceError`` as ``KeyValue.update`` would.

Readers never see the fence: ``subjects.reserved_key`` names it, and ``bus.kv.kv_items`` and
the record watchers skip it. A broker older than 2.12 (no atomic batches) cannot fence a
compare-and-set: there the writes go out unfenced, with a warning, and only the lease's
renewal stops a deposed leader.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import msgspec
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.client import KV_PRE_TEMPLATE
from nats.js.kv import KeyValue

from sortie.bus.pause import TRANSIENT, retry_pause
from sortie.bus.store_limits import is_store_full
from sortie.proto import codec, subjects
from sortie.proto.leadership import Leadership
from sortie.scheduler import kvbatch
from sortie.scheduler.lease import Deposed

log = structlog.get_logger("sortie.scheduler")

# the buckets the leader writes (the lease's own bucket is not fenced: it is the lease)
FENCED_BUCKETS = (
    subjects.KV_RUNS,
    subjects.KV_AGENTS,
    subjects.KV_COMPUTES,
    subjects.KV_NODES,
    subjects.KV_VMS,
    subjects.KV_MODELS,
    subjects.KV_STEP_CACHE,
    subjects.KV_SUBMISSIONS,
)
WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream's err_codes for a failed expectation
EXPECTED_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"


class Fence:
    """This leader's fences, one per bucket it writes (see the module's docstring)."""

    def __init__(self, nc: NATS, js: JetStreamContext, leader: Leadership | None) -> None:
        """``leader``: the lease this scheduler holds (None until it leads: its writes then
        go out unfenced, as where no lease is used at all)."""
        self.nc = nc
        self.js = js
        self.leader = leader
        self.revisions: dict[str, int] = {}  # bucket -> the fence's revision as raised
        self.unfenced: set[str] = set()  # buckets on a broker that cannot fence a batch

    async def raise_(self, buckets: Sequence[str]) -> None:
        """Raise the fence in each bucket: from now on only this leader's writes are stored
        there, and the previous leader's fail."""
        assert self.leader is not None, "a fence is raised by a leader"
        data = codec.encode(self.leader)
        for bucket in buckets:
            while True:
                try:
                    await self._raise_in(bucket, data)
                    break
                except TRANSIENT as exc:
                    log.warning("fence not raised; retrying", bucket=bucket, error=repr(exc))
                    await retry_pause(0.5)
        log.info("fence raised", epoch=self.leader.epoch, buckets=len(self.revisions))

    async def _raise_in(self, bucket: str, data: bytes) -> None:
        if not await kvbatch.enable_atomic(self.js, bucket):
            if not self.unfenced:
                log.warning(
                    "this broker cannot fence writes (atomic batches need nats-server 2.12 "
                    "or later): a deposed leader stops only at its next lease renewal"
                )
            self.unfenced.add(bucket)
            return
        kv = await self.js.key_value(bucket)
        try:
            self.revisions[bucket] = await kv.put(subjects.FENCE_KEY, data)
        except nats.js.errors.APIError as exc:  # a full store answers 503, as if away
            if not is_store_full(exc):
                raise
            log.warning("the store is full: writes to this bucket are not fenced", bucket=bucket)
            self.unfenced.add(bucket)

    def bucket(self, name: str, kv: KeyValue) -> FencedBucket:
        """Bucket ``name`` (read through ``kv``) with its writes fenced."""
        return FencedBucket(self, name, kv)

    async def deposed(self, bucket: str) -> Deposed | None:
        """The deposition a refused write means, if the fence moved (None: it stands)."""
        assert self.leader is not None  # only a raised fence refuses
        kv = await self.js.key_value(bucket)
        try:
            entry = await kv.get(subjects.FENCE_KEY)
        except nats.js.errors.KeyNotFoundError:
            entry = None
        if entry is not None and entry.revision == self.revisions.get(bucket):
            return None
        try:
            theirs = codec.decode(Leadership, entry.value or b"") if entry else None
        except codec.BadMessage:
            theirs = None
        if theirs is None:  # the fence was removed (a purge): whoever did, this one stops
            theirs = msgspec.structs.replace(self.leader, holder="?", host="?", pid=0)
        return Deposed(self.leader, theirs)

    def expects(self, bucket: str) -> dict[str, str]:
        """The headers that make a message conditional on this leader's fence in ``bucket``
        (none where the broker cannot fence)."""
        revision = self.revisions.get(bucket)
        if revision is None:
            return {}
        return {
            Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value: str(revision),
            EXPECTED_SUBJECT: KV_PRE_TEMPLATE.format(bucket=bucket) + subjects.FENCE_KEY,
        }


class FencedBucket:
    """A bucket's reads as they are and its writes fenced: ``get``, ``put``, ``delete``,
    ``create`` and ``update`` behave as nats-py's ``KeyValue`` (same return values and
    errors), and raise :class:`Deposed` once another leader raised the fence."""

    def __init__(self, fence: Fence, name: str, kv: KeyValue) -> None:
        self.fence = fence
        self.name = name
        self.kv = kv

    async def get(self, key: str) -> KeyValue.Entry:
        return await self.kv.get(key)

    async def put(self, key: str, value: bytes) -> int:
        return await self._single(key, value, {})

    async def delete(self, key: str) -> None:
        await self._single(key, b"", {"KV-Operation": "DEL"})

    async def create(self, key: str, value: bytes) -> int:
        try:
            return await self.update(key, value, last=0)
        except nats.js.errors.KeyWrongLastSequenceError:
            # a key that was deleted keeps its delete marker: create over it (as nats-py)
            try:
                await self.kv.get(key)
            except nats.js.errors.KeyDeletedError as gone:
                return await self.update(key, value, last=gone.entry.revision or 0)
            raise

    async def update(self, key: str, value: bytes, last: int) -> int:
        """Compare-and-set one key (``last`` 0: the key must not exist)."""
        if not self.fenced:
            return await self.kv.update(key, value, last=last)
        try:
            return (await self.write_batch([(key, value, last)]))[0]
        except kvbatch.BatchRefused as exc:
            if exc.code in WRONG_LAST_SEQUENCE:
                raise nats.js.errors.KeyWrongLastSequenceError(description=str(exc)) from exc
            nats.js.errors.APIError.from_error(exc.error)  # raises it as nats-py would
            raise

    async def write_batch(self, items: Sequence[tuple[str, bytes, int | None]]) -> list[int]:
        """``kvbatch.write_batch``, led by the fence's probe where the fence is raised."""
        fence = self.fence
        if not self.fenced:
            return await kvbatch.write_batch(fence.nc, self.name, items)
        probe = (subjects.FENCE_PROBE_KEY, b"", fence.expects(self.name))
        try:
            return await kvbatch.write_batch(fence.nc, self.name, items, lead=probe)
        except kvbatch.BatchRefused as exc:
            if exc.code in WRONG_LAST_SEQUENCE:
                await self._check(exc)
            raise

    @property
    def fenced(self) -> bool:
        return self.name in self.fence.revisions

    async def _single(self, key: str, value: bytes, headers: dict[str, str]) -> int:
        """One put (or, with the delete header, delete) conditional on the fence."""
        if not self.fenced:
            if headers:
                await self.kv.delete(key)
                return 0
            return await self.kv.put(key, value)
        subject = KV_PRE_TEMPLATE.format(bucket=self.name) + key
        expects = self.fence.expects(self.name)
        reply = await self.fence.nc.request(
            subject, value, headers={**headers, **expects}, timeout=10.0
        )
        ack = json.loads(reply.data)
        error = ack.get("error")
        if error is None:
            return int(ack["seq"])
        if error.get("err_code") in WRONG_LAST_SEQUENCE:
            await self._check(RuntimeError(str(error)))
        nats.js.errors.APIError.from_error(error)  # raises it as nats-py would
        raise AssertionError("unreachable")

    async def _check(self, exc: Exception) -> None:
        """A write was refused for a sequence: if the fence moved, this leader is deposed."""
        deposed = await self.fence.deposed(self.name)
        if deposed is not None:
            log.error("write refused: the fence was raised by another leader", bucket=self.name)
            raise deposed from exc
