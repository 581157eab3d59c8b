"""The process executor: a run's script as a local process of the agent's host.

It prepares the run's Python environment (:class:`agents.envcache.EnvCache`) and starts the
command in its own session (process group). Stopping signals the whole group, so a script's
children go too. After the leader exits, whatever it left behind in its group is killed: a
run leaves no processes running. The leader's pid and exit code are recorded beside the run
(``agents.orphans``) so a restarted agent can reap it or report its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from sortie.agents import orphans
from sortie.agents.envcache import EnvCache, EnvError, EnvHold
from sortie.agents.executors import (
    ExecutorError,
    Job,
    Launch,
    OnOutput,
    Outcome,
    OutputStream,
    RunView,
    Say,
    StopWord,
    write_stop_reason,
)
from sortie.agents.executors.sandbox import (
    NO_ISOLATION,
    Isolation,
    Spawn,
    prepare_spawn,
    run_base_env,
)
from sortie.agents.publisher import LineSplitter
from sortie.bus.children import die_with_parent

READ_CHUNK = 64 * 1024
DRAIN_AFTER_EXIT_S = 2.0


@dataclass(frozen=True)
class ProcessExecutor:
    """Runs scripts in the agent's cached Python environments."""

    envs: EnvCache
    isolation: Isolation = NO_ISOLATION  # the agent's (agents.executors.sandbox)

    async def prepare(self, job: Job, say: Say) -> PreparedProcess:
        try:
            env, hold = await self.envs.prepare_held(job.spec.environment.python, say)
        except EnvError as exc:
            raise ExecutorError(str(exc)) from exc
        return PreparedProcess(job=job, python=env.python, env_hold=hold, isolation=self.isolation)


@dataclass(frozen=True, kw_only=True)
class PreparedProcess:
    job: Job
    python: str
    noun: str = "process"
    where: str = ""
    image_id: str | None = None  # no container
    env_hold: EnvHold | None = None  # the environment's shared lock (EnvCache.prepare_held)
    isolation: Isolation = NO_ISOLATION

    def view(self, gpus: list[int] | None) -> RunView:
        files = self.job.files
        return RunView(
            base_env=run_base_env(self.isolation, files),
            workdir=files.workdir,
            outputs_dir=(files.workdir / "outputs").resolve(),
            runtime_dir=files.runtime_dir,
            metrics_file=files.metrics,
            stop_reason_file=files.stop_reason,
            hostfile=files.hostfile,
            gpus=gpus,
            data_dir=files.data,
        )

    async def start(
        self, launch: Launch, gpus: list[int] | None, on_output: OnOutput
    ) -> ProcessExecution:
        spawn = prepare_spawn(self.isolation, self.job.files, self.python)
        return await start_process(
            launch, on_output, self.job.files.pid_file, spawn, at_end=self.release
        )

    def release(self) -> None:
        """Let go of the environment (its cache may evict it again)."""
        if self.env_hold is not None:
            self.env_hold.close()


async def start_process(
    launch: Launch,
    on_output: OnOutput,
    pid_file: Path | None = None,
    spawn: Spawn | None = None,
    *,
    at_end: Callable[[], None] | None = None,
) -> ProcessExecution:
    """Start ``launch`` as a process group leader; its pid (then its exit code) goes to
    ``pid_file`` when given; ``spawn`` says as whom and in which sandbox; ``at_end`` is called
    once the run has ended (or did not start). Raises OSError when it cannot be started."""
    releases = [r for r in (spawn.release if spawn is not None else None, at_end) if r]

    def release() -> None:
        for r in releases:
            r()

    try:
        proc = await asyncio.create_subprocess_exec(
            *launch.argv,
            cwd=launch.cwd,
            env=launch.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            # the agent forks from its loop's (main) thread
            preexec_fn=spawn.preexec if spawn is not None else die_with_parent,
        )
    except BaseException:
        release()
        raise
    if pid_file is not None:
        orphans.record(pid_file, proc.pid)
    return ProcessExecution(proc, launch, on_output, pid_file, release)


class ProcessExecution:
    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        launch: Launch,
        on_output: OnOutput,
        pid_file: Path | None = None,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.proc = proc
        self._release = release
        self._pid_file = pid_file
        self.pid = proc.pid
        self._launch = launch
        self._started = time.monotonic()
        self._stopped = False
        self._timed_out = False
        self._terminating: asyncio.Task[None] | None = None
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            asyncio.create_task(_pump(proc.stdout, "stdout", on_output, self._room)),
            asyncio.create_task(_pump(proc.stderr, "stderr", on_output, self._room)),
        ]

    async def _room(self) -> None:
        """Back-pressure while the script runs; once its leader has exited, what is left in
        the pipes is read at once (the drain below is bounded in time, not by the broker)."""
        room = self._launch.output_room
        if room is None or self.proc.returncode is not None:
            return
        waiting = asyncio.ensure_future(room())
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            exited.cancel()

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def _terminate(self, grace_s: float) -> None:
        self._signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace_s)
        except TimeoutError:
            self._signal_group(signal.SIGKILL)
            await self.proc.wait()

    def _begin_terminate(self, reason: StopWord, grace_s: float | None) -> asyncio.Task[None]:
        if self._terminating is None:
            write_stop_reason(self._launch.stop_reason_file, reason)  # before the SIGTERM
            grace = self._launch.kill_grace_s if grace_s is None else grace_s
            self._terminating = asyncio.create_task(self._terminate(grace))
        return self._terminating

    async def stop(self, reason: StopWord = "canceled", grace_s: float | None = None) -> None:
        if self.proc.returncode is None:
            self._stopped = True
            await asyncio.shield(self._begin_terminate(reason, grace_s))

    async def wait(self) -> Outcome:
        limit = self._launch.max_duration_s
        try:
            if limit is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self.proc.wait()), limit)
                except TimeoutError:
                    if not self._stopped:
                        self._timed_out = True
                    await self._begin_terminate("timeout", None)
            code = await self.proc.wait()
            orphans.record_exit(self._pid_file, code)  # before anything can go wrong
            if self._terminating is not None:
                await self._terminating
            # the leader is gone: give any leftovers in its group a grace period, then kill
            self._signal_group(signal.SIGTERM)
            _done, pending = await asyncio.wait(self._readers, timeout=DRAIN_AFTER_EXIT_S)
            if pending:
                self._signal_group(signal.SIGKILL)
                await asyncio.wait(pending, timeout=DRAIN_AFTER_EXIT_S)
        finally:
            for task in self._readers:
                task.cancel()
            if self.proc.returncode is None:
                self._signal_group(signal.SIGKILL)
            orphans.forget(self._pid_file)
            if self._release is not None:
                self._release()
        return Outcome(
            exit_code=code,
            timed_out=self._timed_out,
            stopped=self._stopped,
            duration_s=time.monotonic() - self._started,
        )


async def _pump(
    reader: asyncio.StreamReader,
    stream: OutputStream,
    on_output: OnOutput,
    room: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Hand the stream on line by line; between reads, wait for ``room`` (back-pressure: the
    pipe fills and the script blocks on write)."""
    splitter = LineSplitter()
    while True:
        if room is not None:
            await room()
        data = await reader.read(READ_CHUNK)
        if not data:
            break
        for line in splitter.feed(data):
            on_output(stream, line)
    for line in splitter.finish():
        on_output(stream, line)
