"""`sortie gc`: what the installation can let go of, and (without --dry-run) letting it go.

* Blobs nothing references: the mark and sweep of :mod:`scheduler.blob_sweep` over the runs
  bucket and the object store. Deleting blobs is the scheduler's right, so this connects
  with the scheduler's credentials (``DATA_DIR/auth/scheduler.creds`` under `sortie up`, or
  ``--creds``).
* On this host, each agent directory under DATA_DIR (`sortie up`'s ``agent/``, standalone
  agents' ``agents/<id>/``): run directories of runs that ended more than
  ``--run-dir-keep-hours`` ago and cached environments beyond ``--env-cache-gb``, least
  recently used first (:mod:`agents.disk_gc`; agents also do this themselves).

A blob is swept only when it is older than ``--blob-grace-hours``: a snapshot uploaded for a
submission not yet recorded, or outputs before their run's report, are never taken. Before
deleting, the runs are read again and anything a run now names is kept.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import msgspec
import nats.errors
import nats.js.errors

from sortie.agents.disk_gc import collect_envs, collect_run_dirs
from sortie.agents.limits import human_bytes
from sortie.bus.blobs import get_blob
from sortie.bus.connection import Bus, open_bus
from sortie.bus.kv import kv_items
from sortie.bus.profile import default_data_dir, resolve_auth, resolve_url
from sortie.cli.bounds_flags import non_negative
from sortie.proto import codec
from sortie.proto import messages as m
from sortie.proto.states import TERMINAL, RunState
from sortie.scheduler.blob_sweep import BlobInfo, manifest_ids, referenced, sweep

HOUR_S = 3600.0
GB = 1_000_000_000


def add_gc(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gc = sub.add_parser(
        "gc",
        help="delete what nothing needs: unreferenced blobs, old run dirs, unused environments",
    )
    gc.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    gc.add_argument("--data-dir", type=Path, default=None, help="the installation (sortie up's)")
    gc.add_argument(
        "--blob-grace-hours",
        type=non_negative,
        default=24.0,
        metavar="HOURS",
        help="only blobs stored longer ago than this (default 24): uploads whose run is not "
        "recorded yet stay",
    )
    gc.add_argument(
        "--run-dir-keep-hours",
        type=non_negative,
        default=24.0,
        metavar="HOURS",
        help="run directories of ended runs unchanged this long (default 24)",
    )
    gc.add_argument(
        "--env-cache-gb",
        type=non_negative,
        default=20.0,
        metavar="GB",
        help="cached environments beyond this size, least recently used first (default 20)",
    )


class GcRefused(Exception):
    """The broker refused a deletion; the message says what to do."""


@dataclass(frozen=True)
class Found:
    kind: str  # blob, run-dir, env
    name: str
    size: int
    why: str


def _stored_at(info: object, now: float) -> float:
    """When a blob was stored (its ``mtime``); unknown counts as now (never swept)."""
    mtime = getattr(info, "mtime", None)
    if not mtime:
        return now
    try:
        return datetime.fromisoformat(str(mtime)).timestamp()
    except ValueError:
        return now


async def _records(bus: Bus) -> list[m.RunRecord]:
    return [codec.decode(m.RunRecord, e.value) for e in await kv_items(bus.runs) if e.value]


async def _manifests(bus: Bus, ids: set[str]) -> dict[str, m.Manifest | None]:
    out: dict[str, m.Manifest | None] = {}
    for sha in sorted(ids):
        try:
            out[sha] = codec.decode(m.Manifest, await get_blob(bus.blobs, sha))
        except (nats.js.errors.ObjectNotFoundError, ValueError, msgspec.DecodeError):
            out[sha] = None
    return out


async def _marked(bus: Bus) -> tuple[set[str], list[m.RunRecord]]:
    records = await _records(bus)
    return referenced(records, await _manifests(bus, manifest_ids(records))), records


async def _blobs(bus: Bus, now: float) -> list[BlobInfo]:
    try:
        infos = await bus.blobs.list(ignore_deletes=True)
    except nats.js.errors.NotFoundError:
        return []
    return [
        BlobInfo(sha=i.name, size=i.size or 0, stored_at=_stored_at(i, now))
        for i in infos
        if not i.deleted
    ]


async def _sweep_blobs(bus: Bus, args: argparse.Namespace, now: float) -> list[Found]:
    marked, _ = await _marked(bus)
    victims = sweep(await _blobs(bus, now), marked, now, args.blob_grace_hours * HOUR_S)
    if victims and not args.dry_run:
        marked, _ = await _marked(bus)  # again: a run submitted meanwhile keeps its blobs
        victims = [v for v in victims if v.sha not in marked]
        for v in victims:
            try:
                await bus.blobs.delete(v.sha)
            except (nats.errors.Error, TimeoutError) as exc:
                raise GcRefused(
                    f"the broker did not delete blob {v.sha} ({exc!r}): deleting blobs needs "
                    "the scheduler's credentials; give its .creds file with --creds (`sortie "
                    "up` keeps it in DATA_DIR/auth/scheduler.creds)"
                ) from None
    return [
        Found("blob", v.sha, v.size, f"unreferenced, stored {_hours(now - v.stored_at)} ago")
        for v in victims
    ]


def _hours(seconds: float) -> str:
    return f"{seconds / HOUR_S:.1f} h"


def _agent_dirs(data_dir: Path) -> list[Path]:
    dirs = [data_dir / "agent"]
    if (data_dir / "agents").is_dir():
        dirs += sorted(p for p in (data_dir / "agents").iterdir() if p.is_dir())
    return [d for d in dirs if d.is_dir()]


def _local(data_dir: Path, records: list[m.RunRecord], args: argparse.Namespace) -> list[Found]:
    """Run directories and environments of this host's agents."""
    states = {r.run_id: r.state for r in records}
    now = time.time()
    found: list[Found] = []
    for agent_dir in _agent_dirs(data_dir):
        runs = collect_run_dirs(
            agent_dir / "runs",
            now,
            args.run_dir_keep_hours * HOUR_S,
            lambda run_id: states.get(run_id) in TERMINAL or run_id not in states,
            dry_run=args.dry_run,
        )
        found += [
            Found("run-dir", str(agent_dir / "runs" / d.run_id), d.size, _run_why(states, d.run_id))
            for d in runs
        ]
        envs = collect_envs(agent_dir / "envs", int(args.env_cache_gb * GB), dry_run=args.dry_run)
        found += [
            Found("env", str(agent_dir / "envs" / e.key), e.size, "least recently used")
            for e in envs
        ]
    return found


def _run_why(states: dict[str, RunState], run_id: str) -> str:
    state = states.get(run_id)
    return f"run {state}" if state is not None else "run no longer recorded"


def _creds(data_dir: Path, args: argparse.Namespace) -> Path | None:
    if args.creds is not None:
        return Path(args.creds)
    sched = data_dir / "auth" / "scheduler.creds"
    return sched if sched.is_file() else None


async def run_gc(args: argparse.Namespace) -> int:
    data_dir = (args.data_dir or default_data_dir()).expanduser().resolve()
    url = resolve_url(args.url)
    auth = resolve_auth(url, creds=_creds(data_dir, args), tls_ca=args.tls_ca)
    bus = await open_bus(url, "sortie-gc", auth=auth)
    try:
        now = time.time()
        found = await _sweep_blobs(bus, args, now)
        found += _local(data_dir, await _records(bus), args)
    except GcRefused as exc:
        print(f"sortie gc: {exc}", file=sys.stderr)
        return 2
    finally:
        await bus.close()
    for f in found:
        print(f"{f.kind:8} {human_bytes(f.size):>8}  {f.name}  ({f.why})")
    total = human_bytes(sum(f.size for f in found))
    if args.dry_run:
        print(f"would free {total} ({len(found)} items); nothing was deleted (--dry-run)")
    else:
        print(f"freed {total} ({len(found)} items)")
    return 0
