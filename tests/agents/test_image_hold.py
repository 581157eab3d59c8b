"""A run's hold on an environment image (agents.image_cache.hold_image): it records the use
(the lock file's mtime, the order of collection) and is refused while the collector removes
the image, so a run never prepares an image that is going."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sortie.agents.image_cache import hold_image, image_key


def test_a_hold_records_the_use_and_is_refused_while_the_image_is_removed(
    tmp_path: Path,
) -> None:
    images_dir = tmp_path / "images"
    tag = "localhost/sortie-env:0123456789abcdef"
    assert image_key(tag) == "0123456789abcdef"
    hold = hold_image(images_dir, tag)
    assert hold is not None
    lock = images_dir / "0123456789abcdef.lock"
    os.utime(lock, (0, 0))
    second = hold_image(images_dir, tag)  # two runs may hold one image
    assert second is not None
    assert lock.stat().st_mtime > 0  # the use is recorded
    hold.close()
    second.close()

    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the collector, removing it
        assert hold_image(images_dir, tag) is None
    finally:
        os.close(fd)
    again = hold_image(images_dir, tag)
    assert again is not None
    again.close()
