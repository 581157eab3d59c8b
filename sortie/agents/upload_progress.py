"""A progress line in the run's log while its outputs upload.

One line when the upload starts ("uploading outputs: 3 files, 1.2 GB"), then every
``every_s`` seconds while it goes on ("uploading outputs: 412 MB of 1.2 GB; now
outputs/model.bin, 800 MB"). Progress moves per file: a blob goes up whole through
``bus.blobs.put_blob``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from sortie.agents.limits import human_bytes

PROGRESS_EVERY_S = 5.0


class UploadProgress:
    def __init__(
        self, total_bytes: int, say: Callable[[str], None], *, every_s: float = PROGRESS_EVERY_S
    ) -> None:
        self._total = total_bytes
        self._say = say
        self._every = every_s
        self._done = 0
        self._started = False
        self._files = 0

    def line(self, current: str, size: int) -> str:
        return (
            f"uploading outputs: {human_bytes(self._done)} of {human_bytes(self._total)}; "
            f"now {current}, {human_bytes(size)}"
        )

    @contextlib.asynccontextmanager
    async def file(self, name: str, size: int) -> AsyncIterator[None]:
        """Upload one file inside this; a line every ``every_s`` seconds while it lasts."""
        if not self._started:
            self._started = True
            self._say(f"uploading outputs: {human_bytes(self._total)}")

        async def tick() -> None:
            while True:
                await asyncio.sleep(self._every)
                self._say(self.line(name, size))

        ticker = asyncio.create_task(tick())
        try:
            yield
            self._done += size
        finally:
            ticker.cancel()
