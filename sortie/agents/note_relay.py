"""Relay what a script says about its run (tags, properties, child runs) to the scheduler.

The script writes notes on its metrics pipe (``proto/notes.py``); the agent publishes each,
in order, as a :class:`RunNote` on its own report subject (durable, deduplicated by
``(agent, incarnation, run, attempt, seq)``). The scheduler, the only writer of run records,
applies a note only while this agent holds the attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from nats.js import JetStreamContext

from sortie.agents.publisher import publish_acked
from sortie.bus.store_limits import StoreFull
from sortie.proto import codec, notes, subjects

MAX_NOTES = 10_000  # per attempt: past it, notes are dropped (the run's log says so once)


class NoteRelay:
    def __init__(
        self,
        js: JetStreamContext,
        *,
        agent_id: str,
        incarnation: str,
        run_id: str,
        attempt: int,
        say: Callable[[str], None],
    ) -> None:
        self._js = js
        self._ids = (agent_id, incarnation, run_id, attempt)
        self._say = say
        self._queue: asyncio.Queue[notes.RunNote | None] = asyncio.Queue()
        self._seq = 0
        self._task: asyncio.Task[None] | None = None

    def add(self, note: notes.ScriptNote) -> None:
        """Queue one note (called from the pipe's reader)."""
        if self._seq >= MAX_NOTES:
            if self._seq == MAX_NOTES:
                self._say(f"more than {MAX_NOTES} tag, property or child notes: the rest dropped")
                self._seq += 1
            return
        self._seq += 1
        agent_id, incarnation, run_id, attempt = self._ids
        wrapped = notes.RunNote(
            agent_id=agent_id,
            incarnation=incarnation,
            run_id=run_id,
            attempt=attempt,
            at=time.time(),
            seq=self._seq,
            note=note,
        )
        if self._task is None:
            self._task = asyncio.create_task(self._send(), name=f"notes-{run_id}-{attempt}")
        self._queue.put_nowait(wrapped)

    async def _send(self) -> None:
        agent_id, incarnation, run_id, attempt = self._ids
        subject = subjects.report(agent_id)
        while (note := await self._queue.get()) is not None:
            try:
                await publish_acked(
                    self._js,
                    subject,
                    codec.encode(note),
                    msg_id=f"note-{agent_id}-{incarnation}-{run_id}-{attempt}-{note.seq}",
                )
            except StoreFull as exc:
                self._say(f"a note on the run was not stored: {exc}")

    async def close(self) -> None:
        """Send what is queued, then stop (before the attempt's terminal report)."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        await self._task
