"""Filling a broker's runs bucket for a benchmark, fast: atomic batches of up to 1,000 writes
(one pass and one fsync each), a bounded number in flight, where the server allows; puts
otherwise. Tasks are made as the writes go (a million gathered at once starved the event
loop: nothing was written for minutes)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

from sortie.bus.connection import Bus
from sortie.proto import subjects
from sortie.scheduler import kvbatch

Item = tuple[str, bytes, int]  # key, value, the revision expected (0: none)


async def write_batches(
    bus: Bus, batches: Iterable[list[Item]], *, atomic: bool, in_flight: int
) -> None:
    """Write every batch (``atomic``: as one atomic batch each; else as puts)."""
    sem = asyncio.Semaphore(in_flight)
    pending: set[asyncio.Task[Any]] = set()

    async def one(items: list[Item]) -> None:
        try:
            if atomic:
                await kvbatch.write_batch(bus.nc, subjects.KV_RUNS, items, timeout=60)
            else:
                await asyncio.gather(*(bus.runs.put(k, v) for k, v, _ in items))
        finally:
            sem.release()

    for items in batches:
        await sem.acquire()
        task = asyncio.create_task(one(items))
        pending.add(task)
        task.add_done_callback(pending.discard)
        for done in [d for d in pending if d.done()]:
            done.result()  # a refused batch ends the benchmark
    await asyncio.gather(*pending)


def chunked(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def fill_runs(bus: Bus, items: Iterable[Item], in_flight: int = 8) -> bool:
    """Every item into the runs bucket; whether atomic batches were used."""
    atomic = await kvbatch.enable_atomic(bus.js, subjects.KV_RUNS)
    size = kvbatch.BATCH_MAX if atomic else 64
    await write_batches(
        bus, chunked(items, size), atomic=atomic, in_flight=in_flight if atomic else 64
    )
    return atomic
