"""An agent's disk garbage collection: the shell around :mod:`agents.gc_plan`.

Run directories (``<data>/runs/<run id>``) and cached environments (``<data>/envs``) are
read into plain values, the pure plan says what goes, and this removes it. Used by the agent
itself (periodically, for run directories, and after each environment build) and by
``sortie gc`` on this host's agent directories. The agent's environment images go the same
way (:mod:`agents.image_cache`), once it has used one (``<data>/images`` exists).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sortie.agents.envcache import READY, lock_held
from sortie.agents.gc_plan import EnvEntry, RunDir, envs_to_evict, run_dirs_to_remove

GB = 1_000_000_000
IMAGES = "images"  # under an agent's data dir: its uses of environment images (image_cache)


@dataclass(frozen=True, kw_only=True)
class DiskGcSettings:
    run_dir_keep_s: float = 24 * 3600.0  # a finished run's directory stays this long
    env_cache_bytes: int = 20 * GB  # cached environments beyond this go, least recently used
    image_cache_bytes: int = 20 * GB  # environment images beyond this go, least recently used


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / name).lstat().st_size
    return total


def _changed_at(run_dir: Path) -> float:
    stamps = [run_dir.stat().st_mtime]
    for child in run_dir.iterdir():
        with contextlib.suppress(OSError):
            stamps.append(child.lstat().st_mtime)
    return max(stamps)


def scan_run_dirs(
    runs_dir: Path, ended: Callable[[str], bool], held: Callable[[str], bool] = lambda _r: False
) -> list[RunDir]:
    """Every run directory: ``held`` if the agent runs it or its exit is unreported (a
    ``.pid`` or ``.exit`` file beside its attempts), ``ended`` as the caller decides."""
    if not runs_dir.is_dir():
        return []
    out: list[RunDir] = []
    for run_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()):
        run_id = run_dir.name
        unreported = any(run_dir.glob("*.pid")) or any(run_dir.glob("*.exit"))
        try:
            changed = _changed_at(run_dir)
        except OSError:
            continue
        out.append(
            RunDir(
                run_id=run_id,
                changed_at=changed,
                held=held(run_id) or unreported,
                ended=ended(run_id),
                size=tree_size(run_dir),
            )
        )
    return out


def collect_run_dirs(
    runs_dir: Path,
    now: float,
    keep_s: float,
    ended: Callable[[str], bool],
    *,
    held: Callable[[str], bool] = lambda _r: False,
    dry_run: bool = False,
) -> list[RunDir]:
    """Remove (unless ``dry_run``) the run directories the plan lets go; what went."""
    victims = run_dirs_to_remove(scan_run_dirs(runs_dir, ended, held), now, keep_s)
    if not dry_run:
        for d in victims:
            shutil.rmtree(runs_dir / d.run_id, ignore_errors=True)
    return victims


def _lock_path(envs_dir: Path, key: str) -> Path:
    return envs_dir / f"{key}.lock"


def scan_envs(envs_dir: Path) -> list[EnvEntry]:
    """Ready environments: size, last use (their marker's mtime) and whether one is held."""
    if not envs_dir.is_dir():
        return []
    out: list[EnvEntry] = []
    for env in sorted(p for p in envs_dir.iterdir() if p.is_dir()):
        marker = env / READY
        try:
            last_used = marker.stat().st_mtime
        except OSError:
            continue  # being built (or a failed build the builder removes)
        out.append(
            EnvEntry(
                key=env.name,
                size=tree_size(env),
                last_used=last_used,
                in_use=lock_held(_lock_path(envs_dir, env.name)),
            )
        )
    return out


def _evict(envs_dir: Path, key: str) -> bool:
    """Remove one environment under its exclusive lock; False if a run took it meanwhile."""
    fd = os.open(_lock_path(envs_dir, key), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        (envs_dir / key / READY).unlink(missing_ok=True)  # first: no one starts using it
        shutil.rmtree(envs_dir / key, ignore_errors=True)
        return True
    finally:
        os.close(fd)


def collect_envs(envs_dir: Path, max_bytes: int, *, dry_run: bool = False) -> list[EnvEntry]:
    """Evict (unless ``dry_run``) least recently used environments until the cache fits
    ``max_bytes``; what went."""
    victims = envs_to_evict(scan_envs(envs_dir), max_bytes)
    if dry_run:
        return victims
    return [v for v in victims if _evict(envs_dir, v.key)]


def _not_in(held: frozenset[str]) -> Callable[[str], bool]:
    return lambda run_id: run_id not in held


async def collect_agent_images(
    data_dir: Path, engine_url: str, max_bytes: int, log: Any
) -> list[tuple[str, EnvEntry]]:
    """The agent's environment images beyond ``max_bytes``, removed; none before it has used
    one (agents that never run containers never talk to an engine for this)."""
    images_dir = data_dir / IMAGES
    if not images_dir.is_dir():
        return []
    # imported here: agents that never run containers never load the image builder
    import aiohttp
    from aiodocker.exceptions import DockerError

    from sortie.agents.engine import open_docker
    from sortie.agents.image_cache import collect_images

    docker = open_docker(engine_url)
    try:
        return await collect_images(docker, [images_dir], max_bytes)
    except (DockerError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning("environment images not collected", error=repr(exc))
        return []
    finally:
        await docker.close()


async def agent_gc_loop(
    data_dir: Path,
    settings: DiskGcSettings,
    held_runs: Callable[[], set[str]],
    log: Any,
    *,
    engine_url: str | None = None,
    every_s: float = 600.0,
) -> None:
    """The agent's own collection, now and every ``every_s``: its run directories (a run it
    does not hold is over for this host once its outcome is reported), its environment cache
    and (with ``engine_url``) its environment images. The disk is read in a thread: the loop
    never waits on it."""
    while True:
        held = frozenset(held_runs())
        try:
            runs = await asyncio.to_thread(
                collect_run_dirs,
                data_dir / "runs",
                time.time(),
                settings.run_dir_keep_s,
                _not_in(held),  # not held here: its outcome is reported
                held=held.__contains__,
            )
            envs = await asyncio.to_thread(
                collect_envs, data_dir / "envs", settings.env_cache_bytes
            )
        except OSError as exc:
            log.warning("disk garbage collection failed", error=repr(exc))
        else:
            if runs or envs:
                log.info(
                    "disk garbage collected",
                    run_dirs=len(runs),
                    run_dir_bytes=sum(d.size for d in runs),
                    envs=len(envs),
                    env_bytes=sum(e.size for e in envs),
                )
        if engine_url is not None:
            images = await collect_agent_images(
                data_dir, engine_url, settings.image_cache_bytes, log
            )
            if images:
                log.info(
                    "environment images collected",
                    images=[tag for tag, _e in images],
                    bytes=sum(e.size for _t, e in images),
                )
        await asyncio.sleep(every_s)
