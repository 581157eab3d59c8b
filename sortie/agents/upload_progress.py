"""A progress line in the run's log while its outputs upload.

One line when the upload starts ("uploading outputs: 1.2 GB"), then every ``every_s``
seconds while it goes on ("uploading outputs: 412 MB of 1.2 GB; now outputs/model.bin,
800 MB"). The bytes count what the broker has taken, chunk by chunk (``bus.blobs.put_blob``
tells :meth:`UploadProgress.file`'s callback, ``ChunkSent``), so the line moves within a
large file; once a file's last chunk is in, the line says "verifying outputs/model.bin"
until the scheduler has checked its hash and stored it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from sortie.agents.limits import human_bytes
from sortie.bus.blobs import ChunkSent

PROGRESS_EVERY_S = 5.0


class UploadProgress:
    def __init__(
        self,
        total_bytes: int,
        say: Callable[[str], None],
        *,
        every_s: float = PROGRESS_EVERY_S,
        what: str = "outputs",  # what uploads, in the lines ("output data d": a step's data)
    ) -> None:
        self._total = total_bytes
        self._what = what
        self._say = say
        self._every = every_s
        self._done = 0  # bytes of the files finished
        self._started = False
        self._current = ""
        self._size = 0
        self._sent = 0  # bytes of the current file the broker has taken

    def _chunk_sent(self, sent: int) -> None:
        # a retried upload starts again from 0; a file that grew is refused by put_blob
        self._sent = min(sent, self._size)

    def line(self) -> str:
        doing = "verifying" if self._sent >= self._size else "now"
        return (
            f"uploading {self._what}: {human_bytes(self._done + self._sent)} of "
            f"{human_bytes(self._total)}; {doing} {self._current}, {human_bytes(self._size)}"
        )

    @contextlib.asynccontextmanager
    async def file(self, name: str, size: int) -> AsyncIterator[ChunkSent]:
        """Upload one file inside this, giving ``put_blob`` the callback it yields; a line
        every ``every_s`` seconds while it lasts."""
        if not self._started:
            self._started = True
            self._say(f"uploading {self._what}: {human_bytes(self._total)}")
        self._current, self._size, self._sent = name, size, 0

        async def tick() -> None:
            while True:
                await asyncio.sleep(self._every)
                self._say(self.line())

        ticker = asyncio.create_task(tick())
        try:
            yield self._chunk_sent
            self._done += size
        finally:
            ticker.cancel()
            self._sent = 0
