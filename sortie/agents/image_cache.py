"""Environment images (:mod:`agents.container_images`) as a cache: when each was last used,
which a run holds, and collecting them least recently used first once their total passes a
size. The choice is :func:`agents.gc_plan.envs_to_evict`, the same as for environment
directories; this is its shell against the container engine.

An agent records its uses under ``<data>/images``: one ``<key>.lock`` per image (``key``: the
tag's hash part). Its mtime is the image's last use, and a run holds a shared ``flock`` on it
from preparing its image until its container exists (:func:`ensure_held`); from then on the
container (in any state) marks the image in use, and the engine refuses to remove an image a
container uses anyway. The collector takes the lock exclusively to remove an image, so a run
never prepares one that is going. An image no agent recorded a use of counts as used when it
was built. ``sortie gc`` merges the records of every agent directory under its data dir; an
agent elsewhere sharing the engine is not seen (its containers still are).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiodocker
from aiodocker.exceptions import DockerError

from sortie.agents import container_images as ci
from sortie.agents.envcache import EnvHold, lock_held
from sortie.agents.gc_plan import EnvEntry, envs_to_evict
from sortie.proto import messages as m

HOLD_TRIES = 3
IN_USE = 409  # the engine's answer to removing an image a container uses


class ImageEvicted(Exception):
    """The image was removed by garbage collection each time this run prepared it."""


def image_key(tag: str) -> str:
    return tag.rpartition(":")[2]


def _lock_path(images_dir: Path, key: str) -> Path:
    return images_dir / f"{key}.lock"


def hold_image(images_dir: Path, tag: str) -> EnvHold | None:
    """A shared lock on ``tag``'s record, its use stamped; None while it is being removed."""
    images_dir.mkdir(parents=True, exist_ok=True)
    path = _lock_path(images_dir, image_key(tag))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # last used: the LRU order of collection
    return EnvHold(fd)


async def ensure_held(
    docker: aiodocker.Docker,
    images_dir: Path,
    base_image: str,
    py: m.PythonEnvironment,
    log: Any,
) -> tuple[ci.EnvImage, EnvHold]:
    """:func:`container_images.ensure_env_image`, then a hold on it (close it once the run's
    container exists). An image collected between the two is prepared again."""
    for _ in range(HOLD_TRIES):
        image = await ci.ensure_env_image(docker, base_image, py, log=log)
        hold = hold_image(images_dir, image.tag)
        if hold is not None:
            if await _present(docker, image.tag):
                return image, hold
            hold.close()
    raise ImageEvicted(
        "the environment image was removed by garbage collection again and again while this "
        "run prepared it: run `sortie gc` less often, or give the image cache more room"
    )


async def _present(docker: aiodocker.Docker, tag: str) -> bool:
    try:
        return await ci.image_present(docker, tag)
    except DockerError as err:
        raise ci.ImageError(
            f"the container engine failed while preparing the environment image {tag}: "
            f"{err.message}"
        ) from None


def _plain_id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")


def _created(info: dict[str, Any]) -> float:
    created = info.get("Created")
    if isinstance(created, int | float):
        return float(created)
    with contextlib.suppress(TypeError, ValueError):
        return datetime.fromisoformat(str(created)).timestamp()
    return 0.0


def _last_used(images_dirs: Sequence[Path], key: str, built_at: float) -> float:
    stamps = [built_at]
    for d in images_dirs:
        with contextlib.suppress(OSError):
            stamps.append(_lock_path(d, key).stat().st_mtime)
    return max(stamps)


def _tags(info: dict[str, Any], repository: str) -> list[str]:
    return [t for t in info.get("RepoTags") or [] if t.startswith(f"{repository}:")]


async def scan_images(
    docker: aiodocker.Docker, images_dirs: Sequence[Path], repository: str = ci.REPOSITORY
) -> dict[str, EnvEntry]:
    """Sortie's environment images (by tag): size, last use, and whether one is in use."""
    used = {_plain_id(str(c["ImageID"])) for c in await docker.containers.list(all=True)}
    images = await docker.images.list(filters={"label": [ci.LABEL_HASH]})
    out: dict[str, EnvEntry] = {}
    for info in images:
        for tag in _tags(info, repository):
            key = image_key(tag)
            held = any(lock_held(_lock_path(d, key)) for d in images_dirs)
            out[tag] = EnvEntry(
                key=key,
                size=int(info.get("Size") or 0),
                last_used=_last_used(images_dirs, key, _created(info)),
                in_use=held or _plain_id(str(info.get("Id"))) in used,
            )
    return out


@contextlib.contextmanager
def _exclusive(images_dirs: Sequence[Path], key: str) -> Iterator[bool]:
    """Every record of ``key`` locked exclusively (True), or False when a run holds one."""
    fds: list[int] = []
    try:
        for d in images_dirs:
            fds.append(os.open(_lock_path(d, key), os.O_RDWR | os.O_CREAT, 0o644))
            try:
                fcntl.flock(fds[-1], fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
        yield True
    finally:
        for fd in fds:
            os.close(fd)


async def _remove(docker: aiodocker.Docker, images_dirs: Sequence[Path], tag: str) -> bool:
    """Remove one image unless a run holds it or a container uses it; was it removed?"""
    with _exclusive(images_dirs, image_key(tag)) as free:
        if not free:
            return False
        try:
            await docker.images.delete(tag)
        except DockerError as err:
            if err.status == IN_USE:
                return False
            raise
        return True


async def collect_images(
    docker: aiodocker.Docker,
    images_dirs: Sequence[Path],
    max_bytes: int,
    *,
    dry_run: bool = False,
    repository: str = ci.REPOSITORY,
) -> list[tuple[str, EnvEntry]]:
    """Remove (unless ``dry_run``) environment images, least recently used first, until what
    stays fits ``max_bytes`` (as the engine sizes each image); what went, by tag.
    ``images_dirs``: the records of uses (those that exist are read)."""
    dirs = [d for d in images_dirs if d.is_dir()]
    found = await scan_images(docker, dirs, repository)
    by_key = {e.key: tag for tag, e in found.items()}
    victims = [(by_key[e.key], e) for e in envs_to_evict(list(found.values()), max_bytes)]
    if dry_run:
        return victims
    return [(tag, e) for tag, e in victims if await _remove(docker, dirs, tag)]
