"""`sortie gc`: what the installation can let go of, and (without --dry-run) letting it go.

* Blobs nothing references: the mark and sweep of :mod:`scheduler.blob_sweep` over the runs
  bucket and the object store. Deleting blobs is the scheduler's right, so this connects
  with the scheduler's credentials (``DATA_DIR/auth/scheduler.creds`` under `sortie up`, or
  ``--creds``).
* On this host, each agent directory under DATA_DIR (`sortie up`'s ``agent/``, standalone
  agents' ``agents/<id>/``): run directories of runs that ended more than
  ``--run-dir-keep-hours`` ago and cached environments beyond ``--env-cache-gb``, least
  recently used first (:mod:`agents.disk_gc`; agents also do this themselves); and the
  environment images those agents recorded using, beyond ``--image-cache-gb``, least
  recently used first, never one a run holds or a container uses (:mod:`agents.image_cache`,
  on the engine at ``DOCKER_HOST``).

A blob is swept only when it is older than ``--blob-grace-hours``: a snapshot uploaded for a
submission not yet recorded, or outputs before their run's report, are never taken. Staged
chunks no blob names (an upload that crashed or was refused) go after the same grace. Before
deleting, the runs are read again and anything a run now names is kept.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import msgspec
from aiodocker.exceptions import DockerError

from sortie.agents.disk_gc import IMAGES, collect_envs, collect_run_dirs
from sortie.agents.engine import docker_host, open_docker, unreachable_message
from sortie.agents.image_cache import collect_images
from sortie.agents.limits import human_bytes
from sortie.bus.connection import Bus, open_bus
from sortie.bus.profile import default_data_dir, resolve_auth, resolve_url
from sortie.cli.bounds_flags import non_negative
from sortie.cli.output import add_output, emit, error
from sortie.proto import messages as m
from sortie.proto.states import TERMINAL, RunState
from sortie.scheduler.blob_gc import (
    HOUR_S,
    BlobDeleteRefused,
    run_records,
    sweep_blobs,
    sweep_staged,
)

GB = 1_000_000_000


def add_gc(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gc = sub.add_parser("gc")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    add_output(gc)
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
    gc.add_argument(
        "--image-cache-gb",
        type=non_negative,
        default=20.0,
        metavar="GB",
        help="environment images (container runs) beyond this size, least recently used first "
        "(default 20; the engine at DOCKER_HOST)",
    )


@dataclass(frozen=True)
class Found:
    kind: str  # blob, upload (staged chunks), run-dir, env, image
    name: str
    size: int
    why: str


class GcReport(msgspec.Struct, frozen=True, kw_only=True):
    """`sortie gc --output json`: what was (or, with dry_run, would be) deleted."""

    dry_run: bool
    bytes: int
    items: list[Found]


async def _sweep_blobs(bus: Bus, args: argparse.Namespace) -> list[Found]:
    now = time.time()
    grace_s = args.blob_grace_hours * HOUR_S
    victims = await sweep_blobs(bus, grace_s, dry_run=args.dry_run)
    staged = await sweep_staged(bus, grace_s, dry_run=args.dry_run)
    return [
        Found("blob", v.sha, v.size, f"unreferenced, stored {_hours(now - v.stored_at)} ago")
        for v in victims
    ] + [
        Found(
            "upload",
            c.nuid,
            c.size,
            f"{c.chunks} chunks never committed, the last {_hours(now - c.last_at)} ago",
        )
        for c in staged
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


async def _images(data_dir: Path, args: argparse.Namespace) -> list[Found]:
    """Environment images of this host's agents (those that recorded using one)."""
    dirs = [d / IMAGES for d in _agent_dirs(data_dir) if (d / IMAGES).is_dir()]
    if not dirs:
        return []
    docker = open_docker(docker_host())
    try:
        gone = await collect_images(
            docker, dirs, int(args.image_cache_gb * GB), dry_run=args.dry_run
        )
    finally:
        await docker.close()
    return [Found("image", tag, e.size, "least recently used") for tag, e in gone]


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
        found = await _sweep_blobs(bus, args)
        found += _local(data_dir, await run_records(bus), args)
    except BlobDeleteRefused as exc:
        error("refused", f"gc: {exc}", args.output)
        return 2
    finally:
        await bus.close()
    code = 0
    try:
        found += await _images(data_dir, args)
    except DockerError as exc:
        error("engine", f"gc: environment images: the engine said {exc.message}", args.output)
        code = 1
    except (aiohttp.ClientError, OSError) as exc:
        why = unreachable_message(docker_host(), repr(exc))
        error("unreachable", f"gc: environment images were not collected: {why}", args.output)
        code = 1
    if args.output != "text":
        total = sum(f.size for f in found)
        emit(GcReport(dry_run=args.dry_run, bytes=total, items=found), args.output)
    else:
        _print(found, dry_run=args.dry_run)
    return code


def _print(found: list[Found], *, dry_run: bool) -> None:
    for f in found:
        print(f"{f.kind:8} {human_bytes(f.size):>8}  {f.name}  ({f.why})")
    total = human_bytes(sum(f.size for f in found))
    if dry_run:
        print(f"would free {total} ({len(found)} items); nothing was deleted (--dry-run)")
    else:
        print(f"freed {total} ({len(found)} items)")
