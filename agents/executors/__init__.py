"""Executors: how a prepared run's command is started, watched and stopped.

An executor is small on purpose: ``start(launch, on_output)`` returns an :class:`Execution`
with ``wait()`` and ``stop()``. A container executor is a new module beside ``process``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

OutputStream = Literal["stdout", "stderr"]
OnOutput = Callable[[OutputStream, str], None]


@dataclass(frozen=True, kw_only=True)
class Launch:
    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(repr=False)  # values may be secrets: never logged
    max_duration_s: float | None = None
    kill_grace_s: float = 10.0


@dataclass(frozen=True, kw_only=True)
class Outcome:
    exit_code: int | None  # negative: killed by that signal
    timed_out: bool = False
    stopped: bool = False  # stop() was asked for
    duration_s: float = 0.0


class Execution(Protocol):
    async def wait(self) -> Outcome:
        """Until the command has ended and its output is drained (handles max duration)."""
        ...

    async def stop(self) -> None:
        """SIGTERM (or equivalent), wait the grace period, then kill. Idempotent."""
        ...


class Executor(Protocol):
    async def start(self, launch: Launch, on_output: OnOutput) -> Execution:
        """Start the command; raise OSError if it cannot be started."""
        ...
