"""The Spark executor: hands each run to Spark as one client-mode application (see the module
docstring of proto.engines, and agents.executors.spark_submit for what it decides).

The agent runs on the cluster's head node. ``prepare`` makes the run's Python environment as
the process executor does and zips the snapshot for ``--py-files``; ``start`` runs
``spark-submit`` as the process executor starts a script (as the agent's run user, without
Landlock): the driver (the run's script) runs here, so its output streams back, the metrics
pipe works for ``Run.get_context().log``, and ``outputs/`` it writes is uploaded as any run's.
The engine job is reported at once (RUNNING, the driver's pid), then again with the
application's id once the driver's output or its UI names it. Stopping is the process
executor's stop: the driver's end ends the application. spark-submit's exit code is the run's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from sortie.agents.envcache import EnvCache
from sortie.agents.executors import (
    ExecutorError,
    Job,
    Launch,
    OnOutput,
    Outcome,
    OutputStream,
    Prepared,
    RunView,
    Say,
    StopWord,
)
from sortie.agents.executors.process import PreparedProcess, ProcessExecution, ProcessExecutor
from sortie.agents.executors.sandbox import NO_ISOLATION, Isolation
from sortie.agents.executors.spark_submit import (
    app_id_in,
    app_id_of_driver,
    driver_apps_url,
    driver_ui_port,
    largest_worker,
    master_json_url,
    not_python,
    script_of,
    submit_argv,
    submit_env,
)
from sortie.bus.broker import free_port
from sortie.proto.engines import EngineJob, SparkEngine
from sortie.proto.run_errors import ErrorKind

ASK_EVERY_S = 1.0  # how often the driver's UI is asked for the application's id
HTTP_TIMEOUT_S = 5.0


class SparkExecutor:
    def __init__(
        self, envs: EnvCache, engine: SparkEngine, isolation: Isolation = NO_ISOLATION
    ) -> None:
        self.envs = envs
        self.engine = engine
        # the driver runs as the agent's run user, but without Landlock: the JVM, Spark's
        # home and its configuration lie outside the sandbox's rules for a Python run
        self.process = ProcessExecutor(envs, dataclasses.replace(isolation, landlock_abi=0))

    async def prepare(self, job: Job, say: Say) -> Prepared:
        why = not_python(job.spec.script)
        if why is not None:
            raise ExecutorError(why, ErrorKind.START)
        process = await self.process.prepare(job, say)
        try:
            py_files = await asyncio.to_thread(zip_snapshot, job.files.workdir, job.attempt)
        except OSError as exc:
            process.release()
            raise ExecutorError(f"cannot zip the snapshot for --py-files: {exc}") from exc
        return PreparedSpark(process=process, engine=self.engine, py_files=py_files)


def zip_snapshot(workdir: Path, attempt: int) -> Path:
    """The materialised snapshot as a zip beside it, as the attempt's other files (its
    outputs/ left out): the executors import the run's own modules from it."""
    target = workdir.parent / f"{attempt}.py-files.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(workdir.rglob("*")):
            rel = path.relative_to(workdir)
            if rel.parts[0] == "outputs" or not path.is_file() or path.is_symlink():
                continue
            zf.write(path, rel.as_posix())
    return target


@dataclass(frozen=True, kw_only=True)
class PreparedSpark:
    process: PreparedProcess
    engine: SparkEngine
    py_files: Path
    noun: str = "spark-submit"
    image_id: str | None = None  # no container

    @property
    def python(self) -> str:
        return self.process.python

    @property
    def where(self) -> str:
        return f" on Spark {self.engine.master}"

    def view(self, gpus: list[int] | None) -> RunView:
        return self.process.view(None)  # the workers' GPUs are Spark's to give

    async def start(
        self, launch: Launch, gpus: list[int] | None, on_output: OnOutput
    ) -> SparkExecution:
        found = script_of(launch.argv)
        if found is None:
            self.process.release()
            raise ExecutorError(f"{launch.argv[:2]} is not a Python script's command line")
        script, arguments = found
        ui_port = driver_ui_port(self.engine, free_port())
        argv = submit_argv(
            self.engine,
            run_id=self.process.job.run_id,
            py_files=self.py_files,
            script=script,
            arguments=arguments,
            driver_ui_port=ui_port,
        )
        submit = Launch(
            argv=argv,
            cwd=launch.cwd,
            env={**launch.env, **submit_env(self.python)},
            max_duration_s=launch.max_duration_s,
            kill_grace_s=launch.kill_grace_s,
            stop_reason_file=launch.stop_reason_file,
            output_room=launch.output_room,
        )
        app_ids: asyncio.Queue[str] = asyncio.Queue()

        def seen(stream: OutputStream, line: str) -> None:
            app_id = app_id_in(line)
            if app_id is not None:
                app_ids.put_nowait(app_id)
            on_output(stream, line)

        execution = await self.process.start(submit, None, seen)
        job = EngineJob(
            engine="spark", job_id=str(execution.pid), state="RUNNING", since=time.time()
        )
        report = launch.on_engine_job
        if report is not None:
            try:
                await report(job)  # here, not in the task below: a quick end cannot skip it
            except BaseException:
                await execution.stop("canceled", 0)
                await execution.wait()
                raise
        follow = asyncio.create_task(_follow(report, job, app_ids, ui_port))
        return SparkExecution(execution, follow)


async def _follow(
    report: Callable[[EngineJob], Awaitable[None]] | None,
    job: EngineJob,
    app_ids: asyncio.Queue[str],
    ui_port: int | None,
) -> None:
    """Report the engine job again once its application's id is known, from the driver's
    output or its UI, whichever names it first."""
    if report is None:
        return
    asking = asyncio.create_task(_ask_driver(ui_port, app_ids)) if ui_port else None
    try:
        app_id = await app_ids.get()
    finally:
        if asking is not None:
            asking.cancel()
    await report(EngineJob(engine="spark", job_id=app_id, state=job.state, since=job.since))


async def _ask_driver(port: int, app_ids: asyncio.Queue[str]) -> None:
    url = driver_apps_url(port)
    while True:
        app_id = app_id_of_driver(await get_json(url))
        if app_id is not None:
            app_ids.put_nowait(app_id)
            return
        await asyncio.sleep(ASK_EVERY_S)


async def get_json(url: str) -> object | None:
    """``url``'s JSON, or None when it does not answer (yet) or answers something else."""
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as resp:
            if resp.status != 200:
                return None
            return await resp.json(content_type=None)  # type: ignore[no-any-return]
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None


class SparkExecution:
    """A started application: the driver's process, and the task that reports its job."""

    def __init__(self, process: ProcessExecution, follow: asyncio.Task[None]) -> None:
        self.process = process
        self.pid = process.pid
        self._follow = follow

    async def wait(self) -> Outcome:
        try:
            outcome = await self.process.wait()
        finally:
            if not self._follow.done():
                self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        return outcome

    async def stop(self, reason: StopWord = "canceled", grace_s: float | None = None) -> None:
        await self.process.stop(reason, grace_s)


async def capacity(engine: SparkEngine) -> tuple[float, int] | None:
    """The cores and memory (MB) of the cluster's largest worker, from a standalone master's
    ``/json``; None for other masters or when the master does not answer."""
    url = master_json_url(engine)
    if url is None:
        return None
    return largest_worker(await get_json(url))
