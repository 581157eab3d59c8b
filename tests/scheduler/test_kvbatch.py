"""Atomic batches of compare-and-set writes against a real nats-server."""

from __future__ import annotations

import nats.js.errors
import pytest

from sortie.bus.connection import Bus
from sortie.proto.subjects import KV_RUNS
from sortie.scheduler.kvbatch import BatchRefused, enable_atomic, write_batch


async def test_a_batch_is_stored_whole_with_each_keys_revision(bus: Bus) -> None:
    assert await enable_atomic(bus.js, KV_RUNS)
    assert await enable_atomic(bus.js, KV_RUNS)  # idempotent
    old = await bus.runs.create("a", b"a0")
    revs = await write_batch(bus.nc, KV_RUNS, [("a", b"a1", old), ("b", b"b1", 0), ("c", b"c1", 0)])
    for key, rev in zip("abc", revs, strict=True):
        entry = await bus.runs.get(key)
        assert entry.value == f"{key}1".encode()
        assert entry.revision == rev
    # a single compare-and-set after the batch uses the revision the batch returned
    await bus.runs.update("b", b"b2", last=revs[1])


async def test_one_conflict_refuses_the_whole_batch(bus: Bus) -> None:
    assert await enable_atomic(bus.js, KV_RUNS)
    ra = await bus.runs.create("a", b"a0")
    rb = await bus.runs.create("b", b"b0")
    await bus.runs.update("b", b"someone else", last=rb)
    with pytest.raises(BatchRefused) as err:
        await write_batch(bus.nc, KV_RUNS, [("a", b"a1", ra), ("b", b"b1", rb), ("n", b"n1", 0)])
    assert err.value.code == 10071  # wrong last sequence
    assert (await bus.runs.get("a")).value == b"a0"
    assert (await bus.runs.get("b")).value == b"someone else"
    assert "n" not in set(await bus.runs.keys())


async def test_a_batch_without_atomic_is_refused_and_stores_nothing(bus: Bus) -> None:
    with pytest.raises(BatchRefused):
        await write_batch(bus.nc, KV_RUNS, [("x", b"1", 0), ("y", b"2", 0)])
    with pytest.raises(nats.js.errors.NoKeysError):
        await bus.runs.keys()
