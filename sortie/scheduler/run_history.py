"""The runs that are over, kept out of a start's way (shell: I/O only).

A scheduler holds in memory only the runs in flight (run_snapshot.py says how a start finds
them). What still needs the runs that are over:

- **a retried submission** of a run that ended: each new run's submission id gets a key in
  ``KV_SUBMISSIONS`` (:func:`keep_submissions`) once its record is stored, and a submission
  id the scheduler does not hold is looked up there (:func:`submitted_as`);
- **run lists**: the run index, on disk (``run_index.py``), kept current from the runs
  stream (``index_feed.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable, Iterator, Sequence

import nats.js.errors
import structlog
from nats.js.kv import KeyValue

from sortie.bus.pause import TRANSIENT
from sortie.proto import subjects
from sortie.scheduler import kvbatch
from sortie.scheduler.fence import FencedBucket

log = structlog.get_logger("sortie.scheduler")

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
