"""Environment images collected least recently used first (agents.image_cache) against a real
engine: over the limit the older-used image goes, one a run holds or a container uses stays,
and a dry run lists what would go and removes nothing; preparing an image records its use
and holds it.

The engine's image storage is shared by everything on this machine, so these images live in a
repository of this test's own and the collection is told to look only there.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest

from sortie.agents import container_images as ci
from sortie.agents.envcache import lock_held
from sortie.agents.image_cache import (
    collect_images,
    ensure_held,
    hold_image,
    image_key,
    scan_images,
)
from tests.containers.conftest import Engine
from tests.containers.images import build_python_image
from tests.containers.test_env_images import SIX, derive_image, remove_image

REPOSITORY = f"localhost/sortie-env-gctest-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def images(docker: aiodocker.Docker, busybox_image: str) -> AsyncIterator[dict[str, str]]:
    """Three environment images (by name: old, new, held), as Sortie tags and labels them."""
    tags = {name: f"{REPOSITORY}:{name}{uuid.uuid4().hex[:8]}" for name in ("old", "new", "held")}
    for tag in tags.values():
        await derive_image(
            docker, busybox_image, tag, "true", [f"LABEL {ci.LABEL_HASH}={image_key(tag)}"]
        )
    try:
        yield tags
    finally:
        for tag in tags.values():
            await remove_image(docker, tag)


async def _size(docker: aiodocker.Docker, tag: str) -> int:
    listed = await docker.images.list(filters={"reference": [tag]})
    return int(listed[0]["Size"])


def _used(images_dir: Path, tag: str, ago_s: float) -> None:
    """Record a use of ``tag`` ``ago_s`` seconds before a fixed point an hour from now, as a
    run preparing it does. Later than any image's build (a build counts as a use, and these
    were built moments ago, maybe within one second), so the uses alone set the order."""
    hold = hold_image(images_dir, tag)
    assert hold is not None
    hold.close()
    stamp = time.time() + 3600 - ago_s
    os.utime(images_dir / f"{image_key(tag)}.lock", (stamp, stamp))


async def test_the_least_recently_used_image_goes_first_and_a_held_one_stays(
    docker: aiodocker.Docker, images: dict[str, str], tmp_path: Path
) -> None:
    images_dir = tmp_path / "images"
    _used(images_dir, images["held"], 3000)
    _used(images_dir, images["old"], 2000)
    _used(images_dir, images["new"], 10)
    hold = hold_image(images_dir, images["held"])  # a run preparing it
    assert hold is not None
    os.utime(images_dir / f"{image_key(images['held'])}.lock", (0, 0))  # the oldest use
    # room for two: the held one is the least recently used but stays, so the old one goes
    limit = await _size(docker, images["new"]) + await _size(docker, images["held"])
    dry = await collect_images(docker, [images_dir], limit, dry_run=True, repository=REPOSITORY)
    assert [tag for tag, _e in dry] == [images["old"]]
    for tag in images.values():
        assert await ci.image_present(docker, tag)  # a dry run removes nothing

    gone = await collect_images(docker, [images_dir], limit, repository=REPOSITORY)
    assert [tag for tag, _e in gone] == [images["old"]]
    assert not await ci.image_present(docker, images["old"])
    assert await ci.image_present(docker, images["new"])
    assert await ci.image_present(docker, images["held"])

    # the hold let go, a container of the newer one: with no room, only that one stays
    hold.close()
    container = await docker.containers.create({"Image": images["new"], "Cmd": ["true"]})
    try:
        gone = await collect_images(docker, [images_dir], 0, repository=REPOSITORY)
        assert [tag for tag, _e in gone] == [images["held"]]
        assert await ci.image_present(docker, images["new"])
    finally:
        await container.delete(force=True)
    # its container gone, nothing holds it any more
    gone = await collect_images(docker, [images_dir], 0, repository=REPOSITORY)
    assert [tag for tag, _e in gone] == [images["new"]]


async def test_a_run_preparing_an_environment_image_records_its_use_and_holds_it(
    docker: aiodocker.Docker, podman: Engine, tmp_path: Path
) -> None:
    """What the container executor does before it starts the container (ensure_held)."""
    base = build_python_image(podman, tmp_path)
    images_dir = tmp_path / "images"
    lines: list[str] = []
    image, hold = await ensure_held(docker, images_dir, base, SIX, lines.append)
    lock = images_dir / f"{image_key(image.tag)}.lock"
    try:
        assert await ci.image_present(docker, image.tag)
        assert lock_held(lock)  # the collector passes it over
        assert time.time() - lock.stat().st_mtime < 3600  # its use, recorded now
        found = await scan_images(docker, [images_dir])
        assert found[image.tag].in_use
    finally:
        hold.close()
    assert not lock_held(lock)
