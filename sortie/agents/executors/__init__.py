"""Executors: how a prepared run's command is started, watched and stopped.

An executor is small on purpose: ``start(launch, on_output)`` returns an :class:`Execution`
with ``wait()`` and ``stop(reason, grace_s)``. A container executor is a new module beside
``process``; ``container`` runs the same command in a container (``Launch.container``).

Before an executor sends the run its first SIGTERM (a stop, or the max duration running out)
it writes one :data:`StopWord` to ``launch.stop_reason_file`` with :func:`write_stop_reason`,
so the script's handler can tell a preemption from a cancel (``Run.stop_reason()``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

OutputStream = Literal["stdout", "stderr"]
OnOutput = Callable[[OutputStream, str], None]
StopWord = Literal["preempted", "canceled", "timeout", "shutdown"]


def write_stop_reason(path: Path | None, word: StopWord) -> None:
    """Write ``word`` to the run's stop-reason file, atomically; best effort (never raises)."""
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(word + "\n")
        tmp.replace(path)


@dataclass(frozen=True)
class Mount:
    """A host path bound into a container (a directory, a file or a named pipe)."""

    source: Path
    target: str
    read_only: bool


@dataclass(frozen=True, kw_only=True)
class ContainerSpec:
    """How a launch runs in a container; ``Launch.argv`` and ``Launch.env`` are as seen
    inside it (no agent environment leaks in: only the run's variables)."""

    image: str
    mounts: list[Mount]
    workdir: str
    gpus: list[int] | None = None  # host GPU indices, passed as device requests
    shm_size: str | None = None  # e.g. "2g"
    arguments: list[str] = field(default_factory=list)  # DockerSection.arguments
    labels: dict[str, str] = field(default_factory=dict)
    docker_host: str = "unix:///var/run/docker.sock"


@dataclass(frozen=True, kw_only=True)
class Launch:
    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(repr=False)  # values may be secrets: never logged
    max_duration_s: float | None = None
    kill_grace_s: float = 10.0
    stop_reason_file: Path | None = None  # where the reason goes before the first SIGTERM
    pid_file: Path | None = None  # process runs: recorded so a restarted agent can reap it
    container: ContainerSpec | None = None  # None: a local process


@dataclass(frozen=True, kw_only=True)
class Outcome:
    exit_code: int | None  # negative: killed by that signal
    timed_out: bool = False
    stopped: bool = False  # stop() was asked for while the command was still running
    duration_s: float = 0.0


class Execution(Protocol):
    async def wait(self) -> Outcome:
        """Until the command has ended and its output is drained (handles max duration)."""
        ...

    async def stop(self, reason: StopWord = "canceled", grace_s: float | None = None) -> None:
        """Write ``reason``, SIGTERM (or equivalent), wait ``grace_s`` (default: the launch's
        ``kill_grace_s``), then kill. Idempotent: the first stop's reason and grace win."""
        ...


class Executor(Protocol):
    async def start(self, launch: Launch, on_output: OnOutput) -> Execution:
        """Start the command; raise OSError if it cannot be started."""
        ...
