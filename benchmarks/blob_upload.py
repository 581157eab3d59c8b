"""What storing a blob through the scheduler's commit costs (``sortie.bus.blobcommit``).

Starts the embedded broker (no fsync) and a scheduler's blob commits on it, and measures from
a client connection:

- **small**: ``--small`` blobs of ``--small-bytes`` each, ``--window`` in flight (the
  client's snapshot upload concurrency): staged, read back and hashed by the scheduler, and
  committed; blobs per second.
- **large**: one blob of ``--large-mb`` MiB: MiB per second, commit included.
- **check**: the existence check of every small blob ("already stored", what an unchanged
  tree's re-submit costs per file).
- **direct** (the baseline): the same small blobs and large blob written with nats-py's own
  ``ObjectStore.put``, which is what uploads were before blobs were verified (on a second
  bucket that allows its rollups).

Prints one JSON document on stdout and a short table on stderr.

    .venv/bin/python -m benchmarks.blob_upload [--small 2000] [--small-bytes 1000] [--large-mb 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nats.js.api import ObjectStoreConfig

from sortie.bus.blobcommit import BlobCommits
from sortie.bus.blobs import missing_blobs, put_blob, sha256_bytes
from sortie.bus.broker import free_port, start_broker
from sortie.bus.connection import open_bus

BASELINE_BUCKET = "bench_direct"


async def _timed(coros: list[Awaitable[Any]], window: int) -> float:
    sem = asyncio.Semaphore(window)

    async def one(c: Awaitable[Any]) -> None:
        async with sem:
            await c

    t0 = time.perf_counter()
    await asyncio.gather(*(one(c) for c in coros))
    return time.perf_counter() - t0


async def bench(url: str, args: argparse.Namespace) -> dict[str, Any]:
    scheduler = await open_bus(url, "bench-scheduler", create=True)
    commits = BlobCommits(scheduler.blobs)
    await commits.start()
    client = await open_bus(url, "bench-client")
    try:
        small = [os.urandom(args.small_bytes) for _ in range(args.small)]
        large = os.urandom(args.large_mb << 20)
        hashes = [sha256_bytes(d) for d in small]
        put: Callable[[bytes], Awaitable[Any]] = lambda d: put_blob(  # noqa: E731
            client.blobs, sha256_bytes(d), d
        )
        t_small = await _timed([put(d) for d in small], args.window)
        t_large = await _timed([put(large)], 1)
        t0 = time.perf_counter()
        assert not await missing_blobs(client.blobs, hashes)
        t_check = time.perf_counter() - t0

        base = await scheduler.js.create_object_store(
            BASELINE_BUCKET, config=ObjectStoreConfig(bucket=BASELINE_BUCKET)
        )
        b_small = await _timed([base.put(sha256_bytes(d), d) for d in small], args.window)
        b_large = await _timed([base.put("large", large)], 1)
    finally:
        await commits.stop()
        await client.close()
        await scheduler.close()
    return {
        "small": {"n": args.small, "bytes": args.small_bytes, "per_s": args.small / t_small},
        "large": {"mib": args.large_mb, "mib_per_s": args.large_mb / t_large},
        "check": {"n": args.small, "per_s": args.small / t_check},
        "direct": {"small_per_s": args.small / b_small, "large_mib_per_s": args.large_mb / b_large},
    }


def table(r: dict[str, Any]) -> str:
    s, lg, c, d = r["small"], r["large"], r["check"], r["direct"]
    return "\n".join(
        [
            f"{'':<32}{'commit':>12}{'direct put':>12}",
            f"{'small blobs/s (' + str(s['bytes']) + ' B)':<32}{s['per_s']:>12.0f}"
            f"{d['small_per_s']:>12.0f}",
            f"{'large MiB/s (' + str(lg['mib']) + ' MiB)':<32}{lg['mib_per_s']:>12.1f}"
            f"{d['large_mib_per_s']:>12.1f}",
            f"{'existence checks/s':<32}{c['per_s']:>12.0f}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=2000)
    p.add_argument("--small-bytes", type=int, default=1000)
    p.add_argument("--large-mb", type=int, default=64)
    p.add_argument("--window", type=int, default=64)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_broker(Path(tmp) / "nats", port=free_port(), sync_always=False)
        try:
            result = asyncio.run(bench(broker.url, args))
        finally:
            broker.stop()
    print(json.dumps(result, indent=2))
    print(table(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
