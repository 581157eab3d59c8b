"""The runs that are over, kept out of a start's way (shell: I/O only).

A scheduler holds in memory only the runs in flight (run_snapshot.py says how a start finds
them). What still needs the runs that are over:

- **a retried submission** of a run that ended: each new run's submission id gets a key in
  ``KV_SUBMISSIONS`` (:func:`keep_submissions`) once its record is stored, and a submission
  id the scheduler does not hold is looked up there (:func:`submitted_as`);
- **run lists** (``RunIndex``): after a start from a snapshot the index holds only the runs
  loaded, and :func:`build_index` reads every record once, beside the loop, while the
  scheduler already places (queries wait for it, bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

import nats.js.errors
import structlog
from nats.js.kv import KeyValue

from sortie.bus.kv import REMOVED, kv_entries
from sortie.bus.pause import TRANSIENT
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.run_index import IndexedRun
from sortie.scheduler import kvbatch
from sortie.scheduler.fence import FencedBucket
from sortie.scheduler.run_index import RunIndex

log = structlog.get_logger("sortie.scheduler")

INDEX_SLICE_S = 0.05  # the index's read runs this long between two turns of the event loop
BATCHES_IN_FLIGHT = 4  # batches of submission keys written at once
# how a key is written: the daemon's ``_put`` (retried until stored)
PutKey = Callable[[FencedBucket, str, bytes | None], Awaitable[None]]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a start decodes many records (it scanned every
    object again and again: decoding 20,000 runs took 8 times as long); what was made is then
    frozen out of later collections (it lives as long as the process, or is freed by
    reference counting)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
        gc.freeze()


async def submitted_as(kv: KeyValue, submission_id: str) -> str | None:
    """The run a stored submission id created, or None."""
    try:
        entry = await kv.get(subjects.submission_key(submission_id))
    except nats.js.errors.KeyNotFoundError:
        return None
    return (entry.value or b"").decode() or None


async def keep_submissions(kv: FencedBucket, pairs: Sequence[tuple[str, str]], put: PutKey) -> None:
    """Store each ``(submission id, run id)`` (its run's record is stored already): in
    atomic batches (one pass and one fsync each), or one by one where a batch is refused."""
    sem = asyncio.Semaphore(BATCHES_IN_FLIGHT)

    async def part(chunk: Sequence[tuple[str, str]]) -> None:
        items = [(subjects.submission_key(s), r.encode(), None) for s, r in chunk]
        async with sem:
            try:
                await kv.write_batch(items)
                return
            except (kvbatch.BatchRefused, *TRANSIENT) as exc:
                log.info("submission ids written singly", ids=len(items), error=repr(exc))
            for key, value, _ in items:
                await put(kv, key, value)

    size = kvbatch.BATCH_MAX - 1  # and the fence's probe
    await asyncio.gather(*(part(pairs[i : i + size]) for i in range(0, len(pairs), size)))


async def build_index(runs: KeyValue, changed: dict[str, m.RunRecord]) -> RunIndex:
    """An index of every stored run, read whole; ``changed`` (filled by the caller while
    this reads: the runs it stored meanwhile) is applied last, so nothing read is older."""
    t0 = time.monotonic()
    with gc_paused():
        index = await _read_index(runs)
    for rec in changed.values():
        index.update(rec)
    log.info("run index built", runs=len(index), seconds=round(time.monotonic() - t0, 3))
    return index


async def _read_index(runs: KeyValue) -> RunIndex:
    """Every stored run into a new index, in slices of ``INDEX_SLICE_S`` between which the
    loop runs (a whole cycle may run in each turn: slices of a few hundred records made a
    busy scheduler's read take minutes)."""
    index = RunIndex()
    turn = time.monotonic()
    async for entry in kv_entries(runs):
        if entry.operation in REMOVED:
            continue
        try:
            index.update(codec.decode(IndexedRun, entry.value or b""))
        except codec.BadMessage:
            continue  # said once already, when the start skipped it
        if time.monotonic() - turn >= INDEX_SLICE_S:
            await asyncio.sleep(0)
            turn = time.monotonic()
    return index
