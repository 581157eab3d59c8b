"""The Slurm executor: hands a run to Slurm (see the module docstring of proto.engines).

The agent runs on a Slurm login node and submits every attempt with ``sbatch`` (as the
agent's own user: there is no isolation user here); Slurm decides where it runs. Preparing
builds the run's Python environment as the process executor does (:class:`EnvCache`, in the
agent's data directory) and the attempt's files lie in the agent's data directory too: on a
real cluster that directory must be on a filesystem the compute nodes share with the login
node (the job runs the environment's interpreter, in the snapshot, and writes its output,
metrics and ``outputs/`` there).

The run's environment goes in a file only the agent's user can read (0600), which the batch
script (:mod:`agents.executors.sbatch`) sources: no value goes on a command line or into the
copy of the script slurmctld keeps. The execution polls the job with
``squeue`` about every second and reports each change of state or reason through
``launch.on_engine_job``; meanwhile it tails the job's output file to the run's log and
follows the metrics file (the run's ``SORTIE_METRICS_FILE`` is a plain file here, not the
agent's pipe). A stop writes the stop reason, cancels the job (``scancel``: SIGTERM to its
batch shell and tasks, state CANCELLED), waits the grace period, then kills what is left
(``scancel --signal=KILL --full``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sortie.agents.envcache import EnvCache, EnvError, EnvHold
from sortie.agents.executors import (
    ExecutorError,
    Job,
    Launch,
    OnOutput,
    Outcome,
    RunView,
    Say,
    StopWord,
    write_stop_reason,
)
from sortie.agents.executors.sandbox import NO_ISOLATION, run_base_env
from sortie.agents.executors.sbatch import (
    ENDED,
    JobEnd,
    JobFiles,
    batch_script,
    environment_file,
    job_end,
    job_gone_end,
    parse_exit_code,
    parse_job_id,
    parse_sinfo,
    parse_squeue,
    sbatch_argv,
)
from sortie.agents.metrics_fifo import MAX_PENDING
from sortie.agents.publisher import LineSplitter
from sortie.proto import messages as m
from sortie.proto.engines import EngineJob, SlurmEngine
from sortie.proto.run_errors import ErrorKind

POLL_S = 1.0
COMMAND_TIMEOUT_S = 30.0
MAX_POLL_FAILURES = 30  # squeue errors in a row before the job is given up as unreachable
MAX_MISSING = 3  # polls in a row that do not list the job before it counts as gone
READ_CHUNK = 64 * 1024
JOB_RECORD = "slurm-job"  # runs/RUN/ATTEMPT.slurm-job: a submitted job's id until it ends


async def slurm_command(*argv: str) -> tuple[int, str, str]:
    """Run a Slurm client command: (exit status, stdout, stderr); 127 when it is missing."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        return 127, "", f"{argv[0]}: {exc}"
    try:
        out, err = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return 124, "", f"{argv[0]} did not answer in {COMMAND_TIMEOUT_S:g}s"
    code = proc.returncode if proc.returncode is not None else 1
    return code, out.decode(errors="replace"), err.decode(errors="replace").strip()


async def capacity(engine: SlurmEngine) -> tuple[int, int, int] | None:
    """The largest node of the engine's partition (or of the cluster): (CPUs, memory MB,
    GPUs); None when ``sinfo`` cannot tell."""
    argv = ["sinfo", "-h", "-N", "-o", "%c|%m|%G"]
    if engine.partition is not None:
        argv.append(f"--partition={engine.partition}")
    code, out, _err = await slurm_command(*argv)
    return parse_sinfo(out) if code == 0 else None


class SlurmExecutor:
    def __init__(self, envs: EnvCache, engine: SlurmEngine) -> None:
        self.envs = envs
        self.engine = engine

    async def prepare(self, job: Job, say: Say) -> PreparedSlurm:
        if job.spec.processes_per_node < 1:
            raise ExecutorError(
                f"processes_per_node={job.spec.processes_per_node}: a run needs at least one "
                "process per node",
                ErrorKind.START,
            )
        try:
            env, hold = await self.envs.prepare_held(job.spec.environment.python, say)
        except EnvError as exc:
            raise ExecutorError(str(exc)) from exc
        return PreparedSlurm(job=job, python=env.python, env_hold=hold, engine=self.engine)


def job_files(job: Job) -> JobFiles:
    """The attempt's Slurm files, beside its other files (``runs/RUN/ATTEMPT.*``)."""
    here, n = job.files.workdir.parent, job.attempt
    return JobFiles(
        script=here / f"{n}.sbatch",
        env=here / f"{n}.sbatch-env",
        job_id=here / f"{n}.{JOB_RECORD}",
        output=here / f"{n}.slurm-out",
        metrics=here / f"{n}.slurm-metrics",
    )


@dataclass(frozen=True, kw_only=True)
class PreparedSlurm:
    job: Job
    python: str
    engine: SlurmEngine
    noun: str = "Slurm job"
    env_hold: EnvHold | None = None
    image_id: str | None = None  # no container

    @property
    def where(self) -> str:
        part = self.engine.partition
        return f" through Slurm (partition {part})" if part else " through Slurm"

    def view(self, gpus: list[int] | None) -> RunView:
        files = self.job.files
        return RunView(
            base_env=run_base_env(NO_ISOLATION, files),
            workdir=files.workdir,
            outputs_dir=(files.workdir / "outputs").resolve(),
            runtime_dir=files.runtime_dir,
            metrics_file=job_files(self.job).metrics,
            stop_reason_file=files.stop_reason,
            hostfile=files.hostfile,
            gpus=None,  # Slurm gives the job its GPUs (and sets CUDA_VISIBLE_DEVICES)
            data_dir=files.data,
        )

    async def start(
        self, launch: Launch, gpus: list[int] | None, on_output: OnOutput
    ) -> SlurmExecution:
        files = job_files(self.job)
        try:
            for stale in (files.output, files.metrics):
                stale.unlink(missing_ok=True)
            files.metrics.touch()
            _write_private(files.env, environment_file(launch.env))
            _write_private(files.script, batch_script(launch.argv, files.env))
            argv = sbatch_argv(
                run_id=self.job.run_id,
                spec=self.job.spec,
                engine=self.engine,
                files=files,
                workdir=launch.cwd,
            )
            code, out, err = await slurm_command(*argv)
            if code != 0:
                raise ExecutorError(
                    f"sbatch refused the job (exit {code}): {err or out.strip() or 'no reason'}",
                    ErrorKind.START,
                )
            try:
                job_id = parse_job_id(out)
            except ValueError as exc:
                raise ExecutorError(str(exc), ErrorKind.START) from exc
            files.job_id.write_text(job_id + "\n")
        except BaseException:
            self.release()
            raise
        return SlurmExecution(job_id, files, launch, on_output, self.release)

    def release(self) -> None:
        if self.env_hold is not None:
            self.env_hold.close()


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file only its owner can read (created 0600, never wider)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


class _Follow:
    """Reads what has been appended to a file since the last read (it may not exist yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: BinaryIO | None = None

    def read(self) -> bytes:
        if self._fh is None:
            try:
                self._fh = self.path.open("rb")
            except FileNotFoundError:
                return b""
        return self._fh.read(READ_CHUNK)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


class SlurmExecution:
    def __init__(
        self,
        job_id: str,
        files: JobFiles,
        launch: Launch,
        on_output: OnOutput,
        release: Callable[[], None],
    ) -> None:
        self.job_id = job_id
        self._files = files
        self._launch = launch
        self._on_output = on_output
        self._release = release
        self._started = time.monotonic()
        self._state: tuple[str, str | None] | None = None
        self._stopped = False
        self._timed_out = False
        self._stopping: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        self._output = _Follow(files.output)
        self._splitter = LineSplitter()
        self._metrics = _Follow(files.metrics)
        self._metric_buf = b""
        self._follow: asyncio.Task[JobEnd] = asyncio.create_task(self._poll())

    # following -----------------------------------------------------------------------

    async def _report(self, state: str, reason: str | None) -> None:
        if self._state == (state, reason):
            return
        self._state = (state, reason)
        if self._launch.on_engine_job is not None:
            await self._launch.on_engine_job(
                EngineJob(
                    engine="slurm",
                    job_id=self.job_id,
                    state=state,
                    reason=reason,
                    since=time.time(),
                )
            )

    async def _pass_output(self, room: Callable[[], Awaitable[None]] | None) -> None:
        """Hand on what the job has written since the last look (output, then metrics)."""
        while data := self._output.read():
            for line in self._splitter.feed(data):
                self._on_output("stdout", line)
            if room is not None:
                await room()
        while chunk := self._metrics.read():
            self._metric_buf += chunk
            *complete, self._metric_buf = self._metric_buf.split(b"\n")
            for raw in complete:
                if raw and self._launch.on_metric_line is not None:
                    self._launch.on_metric_line(raw)
            if len(self._metric_buf) > MAX_PENDING:  # no newline in sight: not our protocol
                self._metric_buf = b""

    async def _poll(self) -> JobEnd:
        failures = missing = 0
        last_error = ""
        while True:
            await self._pass_output(self._launch.output_room)
            code, out, err = await slurm_command(
                "squeue", "-h", "-t", "all", "-j", self.job_id, "-o", "%T|%r"
            )
            if code != 0 and "Invalid job id" in err:  # no longer known to slurmctld
                missing += 1
            elif code != 0:
                failures, last_error = failures + 1, err
                if failures >= MAX_POLL_FAILURES:
                    return _unreachable(self.job_id, last_error)
            else:
                failures = 0
                seen = parse_squeue(out)
                missing = missing + 1 if seen is None else 0
                if seen is not None:
                    state, reason = seen
                    await self._report(state, reason)
                    if state in ENDED:
                        exit_code = await self._exit_code()
                        return job_end(
                            state,
                            exit_code,
                            stop_asked=self._stopping is not None,
                            job_id=self.job_id,
                            reason=reason,
                        )
            if missing >= MAX_MISSING:
                return job_gone_end(
                    self.job_id, await self._exit_code(), stop_asked=self._stopping is not None
                )
            await asyncio.sleep(POLL_S)

    async def _exit_code(self) -> int | None:
        code, out, _err = await slurm_command("scontrol", "show", "job", "-o", self.job_id)
        return parse_exit_code(out) if code == 0 else None

    # stopping ------------------------------------------------------------------------

    async def _terminate(self, grace_s: float) -> None:
        # scancel sends SIGTERM to the batch shell and every task and marks the job CANCELLED
        # (``scancel --signal=TERM`` alone leaves the state to how the script exits: FAILED
        # or COMPLETED); Slurm's KillWait may kill it sooner than our grace
        await slurm_command("scancel", self.job_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._follow), grace_s)
        if not self._follow.done():
            await slurm_command("scancel", "--signal=KILL", "--full", self.job_id)

    def _begin_stop(self, reason: StopWord, grace_s: float | None) -> asyncio.Task[None]:
        if self._stopping is None:
            write_stop_reason(self._launch.stop_reason_file, reason)  # before the SIGTERM
            grace = self._launch.kill_grace_s if grace_s is None else grace_s
            self._stopping = asyncio.create_task(self._terminate(grace))
        return self._stopping

    async def stop(self, reason: StopWord = "canceled", grace_s: float | None = None) -> None:
        if not self._follow.done():
            self._stopped = True
            await asyncio.shield(self._begin_stop(reason, grace_s))

    async def wait(self) -> Outcome:
        limit = self._launch.max_duration_s
        try:
            if limit is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._follow), limit)
                except TimeoutError:
                    if not self._stopped:
                        self._timed_out = True
                    await self._begin_stop("timeout", None)
            end = await self._follow
            if self._stopping is not None:
                await self._stopping
            await self._pass_output(None)  # what the job wrote last, at once
            for line in self._splitter.finish():
                self._on_output("stdout", line)
        finally:
            if not self._follow.done():  # the attempt itself was cancelled: leave no job
                self._follow.cancel()
                await slurm_command("scancel", self.job_id)
            self._files.job_id.unlink(missing_ok=True)  # ended (or cancelled): nothing to find
            self._output.close()
            self._metrics.close()
            self._release()
        return Outcome(
            exit_code=end.exit_code,
            timed_out=self._timed_out or end.timed_out,
            stopped=self._stopped,  # a stop asked for (the max duration's is timed_out)
            duration_s=time.monotonic() - self._started,
            engine_error=None if self._stopping is not None else end.error,
        )


async def cancel_leftovers(runs_dir: Path) -> tuple[list[str], list[str]]:
    """Cancel every job a previous agent on this data directory submitted and did not see
    end (its ``*.slurm-job`` records), so a run the scheduler requeues after an agent restart
    never runs twice. Returns (cancelled, failed) job ids: a failed one keeps its record, to
    be tried at the next start. Slurm takes ids of jobs that already ended without a word."""
    cancelled: list[str] = []
    failed: list[str] = []
    for record, job_id in await asyncio.to_thread(_job_records, runs_dir):
        code, _out, err = await slurm_command("scancel", job_id)
        if code == 0 or "Invalid job id" in err:
            cancelled.append(job_id)
            record.unlink(missing_ok=True)
        else:
            failed.append(job_id)
    return cancelled, failed


def _job_records(runs_dir: Path) -> list[tuple[Path, str]]:
    """The job records under ``runs_dir`` with their ids (unreadable ones removed)."""
    found: list[tuple[Path, str]] = []
    for record in sorted(runs_dir.glob(f"*/*.{JOB_RECORD}")):
        try:
            found.append((record, parse_job_id(record.read_text())))
        except (OSError, ValueError):
            record.unlink(missing_ok=True)
    return found


def _unreachable(job_id: str, why: str) -> JobEnd:
    return JobEnd(
        exit_code=None,
        error=m.RunError(
            kind=ErrorKind.ENVIRONMENT,
            message=f"Slurm did not answer about job {job_id} {MAX_POLL_FAILURES} times in a "
            f"row (last: {why[:200]}); the job may still run: check it with squeue",
        ),
    )
