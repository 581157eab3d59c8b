"""Executors: the ways an attempt's script can run, each a plugin behind one Protocol.

An :class:`Executor` prepares what one attempt needs (a Python environment, an image) and
answers a :class:`Prepared`: how the run sees its files (:class:`RunView`) and how its
:class:`Launch` is started. The attempt (``agents.attempt``) knows only these shapes; what
running in a container means lives in :mod:`agents.executors.container`, what running as a
local process means in :mod:`agents.executors.process`. Adding an executor is adding a module
and one :class:`ExecutorKind` entry in :mod:`agents.executors.registry`.

A started run is an :class:`Execution` with ``wait()`` and ``stop(reason, grace_s)``. Before
an execution sends the run its first SIGTERM (a stop, or the max duration running out) it
writes one :data:`StopWord` to ``launch.stop_reason_file`` with :func:`write_stop_reason`, so
the script's handler can tell a preemption from a cancel (``Run.stop_reason()``).
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Literal, Protocol

from sortie.proto import messages as m
from sortie.proto.engines import EngineJob
from sortie.proto.run_errors import ErrorKind

OutputStream = Literal["stdout", "stderr"]
OnOutput = Callable[[OutputStream, str], None]
Say = Callable[[str], None]  # a line for the run's log, from the agent
StopWord = Literal["preempted", "canceled", "early_terminated", "timeout", "shutdown"]


class ExecutorKind(enum.StrEnum):
    """The executors an agent has; :func:`agents.executors.registry.make_executor` maps
    each to its module (the type checker finds a kind without one)."""

    PROCESS = "process"
    CONTAINER = "container"
    SLURM = "slurm"  # sbatch on a Slurm login node (an engine: it queues and places)
    SPARK = "spark"  # spark-submit on a Spark head node (an engine)


ENGINE_KINDS = frozenset({ExecutorKind.SLURM, ExecutorKind.SPARK})


class ExecutorError(Exception):
    """The run cannot be prepared or started; ``kind`` is the run error kind it becomes and
    the message says what to do."""

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.ENVIRONMENT) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def write_stop_reason(path: Path | None, word: StopWord) -> None:
    """Write ``word`` to the run's stop-reason file, atomically; best effort (never raises)."""
    if path is None:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):
        tmp.write_text(word + "\n")
        tmp.replace(path)


@dataclass(frozen=True, kw_only=True)
class AttemptFiles:
    """Where one attempt's files lie on the agent's host."""

    workdir: Path  # the materialised snapshot, outputs/ inside it
    runtime_dir: Path  # holds the run-context module (package ``sortie``)
    metrics: Path  # the metrics pipe
    stop_reason: Path  # the stop-reason file
    hostfile: Path  # one host per rank
    pid_file: Path  # the pid, then exit code, a restarted agent recovers (agents.orphans)
    # a pipeline step's data (agents.pipeline_data: in/NAME, out/NAME); None: the run has none
    data: Path | None = None


@dataclass(frozen=True, kw_only=True)
class Job:
    """One attempt, as an executor needs to know it."""

    run_id: str
    attempt: int
    agent_id: str
    incarnation: str
    spec: m.RunSpec
    files: AttemptFiles


@dataclass(frozen=True, kw_only=True)
class RunView:
    """The attempt's files and GPUs as the run sees them, and the environment its variables
    are added to."""

    base_env: dict[str, str] = field(repr=False)  # values may be secrets: never logged
    workdir: PurePath
    outputs_dir: PurePath
    runtime_dir: PurePath
    metrics_file: PurePath
    stop_reason_file: PurePath
    hostfile: PurePath
    gpus: list[int] | None  # None: CUDA variables left as they are
    data_dir: PurePath | None = None  # AttemptFiles.data as the run sees it


@dataclass(frozen=True, kw_only=True)
class Launch:
    """A command to run; ``argv`` and ``env`` as the run sees them (see :class:`RunView`)."""

    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(repr=False)  # values may be secrets: never logged
    max_duration_s: float | None = None
    kill_grace_s: float = 10.0
    stop_reason_file: Path | None = None  # where the reason goes before the first SIGTERM
    # awaited after each piece of output is handed on: returns when there is room for more
    # (the publisher's bound); until then the script's output is not read, so it blocks
    output_room: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)
    # An engine's execution (ENGINE_KINDS) calls this whenever its job's state or reason
    # changes; the attempt reports the run Running only once the job's state is RUNNING
    on_engine_job: Callable[[EngineJob], Awaitable[None]] | None = field(default=None, repr=False)
    # An engine whose job runs on another node cannot use the metrics pipe: its execution
    # has the run write a plain file in the shared job directory, follows it, and hands each
    # complete line here (as the pipe's reader does)
    on_metric_line: Callable[[bytes], None] | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    exit_code: int | None  # negative: killed by that signal
    timed_out: bool = False
    stopped: bool = False  # stop() was asked for while the command was still running
    duration_s: float = 0.0
    # the engine's own verdict (a job cancelled outside Sortie, a failed node, a preemption:
    # kind preempted gives the attempt back): the run's error instead of the exit code's
    engine_error: m.RunError | None = None


class Execution(Protocol):
    async def wait(self) -> Outcome:
        """Until the command has ended and its output is drained (handles max duration)."""
        ...

    async def stop(self, reason: StopWord = "canceled", grace_s: float | None = None) -> None:
        """Write ``reason``, SIGTERM (or equivalent), wait ``grace_s`` (default: the launch's
        ``kill_grace_s``), then kill. Idempotent: the first stop's reason and grace win."""
        ...


class Prepared(Protocol):
    """One attempt an executor has prepared, ready to start."""

    @property
    def python(self) -> str:
        """The interpreter ``.py`` scripts run with (as the run sees it)."""
        ...

    @property
    def noun(self) -> str:
        """What runs, for the run's log: ``process exited with code 3``."""
        ...

    @property
    def where(self) -> str:
        """Appended to ``started ...`` in the run's log ("" or e.g. `` in a container of X``)."""
        ...

    @property
    def image_id(self) -> str | None:
        """A container run: the engine's ID of the image its ``docker.base_image`` named when
        it was prepared (reported with its Completed state); None for any other run."""
        ...

    def view(self, gpus: list[int] | None) -> RunView:
        """How the run sees its files, given the host GPUs it holds (None: no GPUs here)."""
        ...

    async def start(self, launch: Launch, gpus: list[int] | None, on_output: OnOutput) -> Execution:
        """Start the command; raise :class:`ExecutorError` or OSError if it cannot be."""
        ...


class Executor(Protocol):
    async def prepare(self, job: Job, say: Say) -> Prepared:
        """Make ready what the run needs before it can start (an environment, an image);
        raise :class:`ExecutorError` when that cannot be done."""
        ...
