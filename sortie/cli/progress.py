"""Progress for people at a terminal: snapshot hashing and upload while submitting, and the
run's state as one live line while waiting for it.

Shown only when :func:`interactive` says so: text output, and both stdout and stderr are
terminals. Otherwise everything here does nothing, so scripts, pipes and ``--output json``
see exactly what they saw before. What is drawn goes to stderr; while the live line is up,
rich prints the run's output above it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sortie.proto import messages as m
from sortie.proto.gang import agent_ids
from sortie.proto.states import TERMINAL, RunState
from sortie.proto.waiting import engine_wait, shown_state

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.status import Status

    from sortie.client.client import Client

WHY_EVERY_S = 5.0  # while queued, ask the scheduler why this often


def interactive(output: str = "text") -> bool:
    return output == "text" and sys.stdout.isatty() and sys.stderr.isatty()


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


@dataclass
class SubmitProgress:
    """Bars for hashing and uploading a snapshot; give :meth:`hashing` and :meth:`uploading`
    to ``Client.submit`` as ``hash_progress`` and ``progress``."""

    enabled: bool
    console: Console | None = None
    _progress: Progress | None = None
    _tasks: dict[str, TaskID] = field(default_factory=dict)

    def __enter__(self) -> SubmitProgress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description:<9}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self.console or _console(),
                transient=True,  # the "Submitted ..." line says what was sent
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _update(self, name: str, done: int, total: int) -> None:
        if self._progress is None:
            return
        task = self._tasks.get(name)
        if task is None:
            task = self._tasks[name] = self._progress.add_task(name, total=total)
        self._progress.update(task, completed=done, total=total)

    def hashing(self, done: int, total: int) -> None:
        self._update("hashing", done, total)

    def uploading(self, done: int, total: int) -> None:
        self._update("uploading", done, total)


# --- the run's state while waiting -----------------------------------------------------------

DETAIL = {
    RunState.STARTING: "starting the script",
    RunState.FINALIZING: "uploading outputs",
}


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _detail(rec: m.RunRecord, why: str | None) -> str | None:
    if rec.state is RunState.QUEUED:
        return why
    if rec.state is RunState.PREPARING:
        env = rec.spec.environment
        if not env.python.user_managed or env.docker.enabled:
            return "building environment"
        return "fetching snapshot"
    if (queued := engine_wait(rec)) is not None:
        return queued  # Starting: "waiting in slurm's queue: Resources"
    if rec.state is RunState.RUNNING:
        where = agent_ids(rec)
        return f"on {', '.join(where)}" if where else None
    return DETAIL.get(rec.state)


def status_line(rec: m.RunRecord, now: float, why: str | None = None) -> str:
    """``RUN: Queued 2s → Preparing (building environment) 14s``: this attempt's states, the
    current one last, with how long each took."""
    steps = []
    # a requeue writes the new attempt's Queued entry with the new attempt number
    changes = [c for c in rec.history if c.attempt == rec.attempt] or list(rec.history[-1:])
    for i, change in enumerate(changes):
        end = changes[i + 1].at if i + 1 < len(changes) else now
        label = str(change.state)
        if i + 1 == len(changes):
            label = str(shown_state(rec))  # Queued while its engine holds it
            detail = _detail(rec, why)
            if detail:
                label += f" ({detail})"
        steps.append(f"{label} {_duration(end - change.at)}")
    attempt = f" (attempt {rec.attempt})" if rec.attempt > 1 else ""
    return f"{rec.run_id}{attempt}: " + " → ".join(steps or [str(rec.state)])


@contextlib.asynccontextmanager
async def run_state_line(
    client: Client, run_id: str, *, enabled: bool, console: Console | None = None
) -> AsyncIterator[None]:
    """While the body runs, keep a live line on stderr with the run's state (if enabled)."""
    if not enabled:
        yield
        return
    rec = await client.get_run(run_id)
    with (console or _console()).status(status_line(rec, time.time())) as status:
        task = asyncio.create_task(_follow(client, rec, status))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def _follow(client: Client, rec: m.RunRecord, status: Status) -> None:
    """Update the line from the run's record (a KV watch) and once a second for the clock."""
    import nats.errors

    from sortie.proto import codec

    why: str | None = None
    asked = 0.0
    watcher = await client.bus.runs.watch(rec.run_id)
    try:
        while rec.state not in TERMINAL:
            if rec.state is RunState.QUEUED and time.monotonic() - asked > WHY_EVERY_S:
                asked = time.monotonic()
                why = await _why(client, rec.run_id)
            status.update(status_line(rec, time.time(), why))
            try:
                entry = await watcher.updates(timeout=1.0)  # type: ignore[no-untyped-call]  # nats-py leaves KeyWatcher unannotated
            except nats.errors.TimeoutError:
                continue
            if entry is not None and entry.value:
                rec = codec.decode(m.RunRecord, entry.value)
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves KeyWatcher unannotated


async def _why(client: Client, run_id: str) -> str | None:
    try:
        reply = await client.why(run_id)
    except Exception:  # noqa: BLE001  # the line is a courtesy: no error in it may stop the wait
        return None
    if reply.state is not RunState.QUEUED:
        return None
    return reply.summary.removeprefix("queued: ")
