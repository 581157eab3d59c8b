"""One attempt of one run, from assignment to its terminal report.

materialise snapshot -> prepare environment -> report Starting -> spawn -> report Running ->
wait -> report Finalizing -> upload outputs -> flush logs and metrics -> terminal report.

A stop asked for before the spawn cancels the pipeline; after it, the executor writes the
stop reason to the run's stop-reason file and stops the process (SIGTERM, grace, SIGKILL).
``canceled`` ends in a Canceled report; ``preempted`` in a Queued report with error kind
``preempted`` (no Finalizing, no outputs: the run will run again), and ``fenced`` (the agent
lost its lease) and ``disowned`` (a stale cancel) likewise with kind ``lost`` (the scheduler
refuses it if it has moved on, and requeues the run if its record is still on this attempt);
``stale`` (replaced by a newer attempt of the run) and ``shutdown`` end without a report (the
scheduler has moved on, or will requeue the run).

GPUs are taken from the agent's :class:`~agents.gpus.GpuPool` just before the spawn and given
back when the attempt ends; the run sees exactly them in ``CUDA_VISIBLE_DEVICES``.

The run's executor (:mod:`agents.executors`: a local process, or a container with
``environment.docker.enabled``) prepares its environment and starts it; the attempt builds the
run's variables and command from the executor's :class:`~agents.executors.RunView` (where the
run sees its files) and knows nothing else of how it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.resources
import json
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import nats.errors
import structlog
from nats.js import JetStreamContext

from sortie.agents import orphans
from sortie.agents.data_upload import stored_or_error
from sortie.agents.events import StopReason
from sortie.agents.executors import (
    ENGINE_KINDS,
    AttemptFiles,
    Execution,
    Executor,
    ExecutorError,
    ExecutorKind,
    Job,
    Launch,
    Outcome,
    Prepared,
    RunView,
    StopWord,
)
from sortie.agents.executors.registry import executor_kind
from sortie.agents.gpus import GpuPool, cuda_env, gpu_request_error
from sortie.agents.lease import Lease
from sortie.agents.limits import RunLimits, plan_upload
from sortie.agents.metrics_fifo import MetricsFifo, parse_line
from sortie.agents.note_relay import NoteRelay
from sortie.agents.outputs import put_output, scan_outputs
from sortie.agents.pipeline_data import (
    data_dir,
    data_problem,
    has_data,
    lay_out_data,
    run_arguments,
)
from sortie.agents.publisher import RunOutput, send_report
from sortie.agents.snapshot_cache import SnapshotCache, SnapshotError
from sortie.agents.upload_progress import UploadProgress
from sortie.bus.blobs import BlobError, BlobStore, missing_blobs
from sortie.bus.connection import ENV_CREDS
from sortie.bus.store_limits import StoreFull, until_stored
from sortie.proto import messages as m
from sortie.proto import notes
from sortie.proto import runenv as rc
from sortie.proto.engines import Engine, EngineJob
from sortie.proto.paths import check_relpath
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState

MAX_BAD_METRIC_LINES = 20
Refusal = tuple[ErrorKind, str]  # why an attempt fails before its script starts
PREEMPTED_MESSAGE = "node was preempted (low-priority); the run will be requeued"
DISOWNED_MESSAGE = "the scheduler told the agent to stop this attempt as stale; it will be requeued"
FENCED_MESSAGE = (
    "the agent lost its lease (no confirmed heartbeat for too long) and stopped the run; "
    "it will be requeued"
)

# what the run reads in its stop-reason file: a stale attempt is, to the script, canceled
STOP_WORDS: dict[StopReason, StopWord] = {
    "canceled": "canceled",
    "stale": "canceled",
    "disowned": "canceled",
    "shutdown": "shutdown",
    "preempted": "preempted",
    "fenced": "shutdown",
    "early_terminated": "early_terminated",
}

# stop reasons whose stopped attempt ends Canceled (a sweep's early-terminated trial too: the
# scheduler keeps its early_terminated error over the agent's canceled)
CANCELING: frozenset[StopReason] = frozenset({"canceled", "early_terminated"})

# stop reasons whose stopped attempt is given back to the scheduler (reported Queued, with
# this error kind): the run goes on as a new attempt, free of max_retries
GIVE_BACK: dict[StopReason, tuple[ErrorKind, str]] = {
    "preempted": (ErrorKind.PREEMPTED, PREEMPTED_MESSAGE),
    "fenced": (ErrorKind.LOST, FENCED_MESSAGE),
    "disowned": (ErrorKind.LOST, DISOWNED_MESSAGE),
}


@dataclass(frozen=True, kw_only=True)
class AttemptDeps:
    """What every attempt on one agent shares."""

    js: JetStreamContext
    blobs: BlobStore
    agent_id: str
    incarnation: str
    data_dir: Path
    runtime_dir: Path  # holds sortie/__init__.py, prefixed to the run's PYTHONPATH
    kill_grace_s: float
    snapshots: SnapshotCache
    executors: Mapping[ExecutorKind, Executor]  # agents.executors.registry.make_executors
    gpus: GpuPool  # shared by every attempt of the agent (event loop only)
    preempt_grace_s: float = 30.0
    node_priority: m.NodePriority = "dedicated"
    lease: Lease | None = None  # the agent's lease (None in tests that need none)
    limits: RunLimits = field(default_factory=RunLimits)  # log, metric, artifact bounds
    engine: Engine | None = None  # the engine this agent hands every run to (--engine)


# --- pure helpers --------------------------------------------------------------------------


def script_argv(python: str, script_path: PurePath, arguments: list[str]) -> list[str]:
    """How a script is started: python for .py, sh for .sh, directly otherwise."""
    if script_path.suffix == ".py":
        return [python, str(script_path), *arguments]
    if script_path.suffix == ".sh":
        return ["sh", str(script_path), *arguments]
    return [str(script_path), *arguments]


@dataclass(frozen=True)
class RankInfo:
    """One node's place in a (possibly multi-node) run, as torch.distributed and MPI expect."""

    rank: int
    world_size: int
    master_addr: str | None
    master_port: int | None
    hostfile: PurePath

    @classmethod
    def of(cls, assign: m.Assign, hostfile: PurePath) -> RankInfo:
        return cls(
            rank=assign.rank,
            world_size=assign.world_size,
            master_addr=assign.master_addr,
            master_port=assign.master_port,
            hostfile=hostfile,
        )

    def env(self) -> dict[str, str]:
        out = {
            "WORLD_SIZE": str(self.world_size),
            "RANK": str(self.rank),
            "NODE_RANK": str(self.rank),
            "LOCAL_RANK": "0",
            rc.ENV_HOSTFILE: str(self.hostfile),
        }
        if self.master_addr:
            out["MASTER_ADDR"] = self.master_addr
        if self.master_port:
            out["MASTER_PORT"] = str(self.master_port)
        return out


def write_hostfile(path: Path, hosts: list[str]) -> None:
    """One host per line, by rank (``slots=1``: one process per node, as MPI reads it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{h or 'localhost'} slots=1\n" for h in hosts))


@dataclass(frozen=True, kw_only=True)
class ChildEnv:
    """What a run's environment says beyond its spec: which attempt it is, where its files
    are as it sees them, and where it stands (priority, GPUs, rank, secrets)."""

    run_id: str
    attempt: int
    metrics_file: PurePath
    outputs_dir: PurePath
    runtime_dir: PurePath
    stop_reason_file: PurePath | None = None
    node_priority: m.NodePriority = "dedicated"
    # None on an agent without GPUs (CUDA variables left as they are), else exactly the
    # indices given to the run ([]: none visible)
    gpus: list[int] | None = None
    rank: RankInfo | None = None  # where this node stands in the run (WORLD_SIZE, RANK, ...)
    secret_env: m.SecretEnv | None = field(default=None, repr=False)  # from the run's Assign


def child_env(base: dict[str, str], spec: m.RunSpec, ctx: ChildEnv) -> dict[str, str]:
    """The run's environment: ``base``, the spec's variables and secrets, then Sortie's own
    (see :class:`ChildEnv`)."""
    env = dict(base)
    env.pop(ENV_CREDS, None)  # the agent's broker credentials are not the run's
    env.update(spec.env_vars)
    if ctx.secret_env is not None:
        env.update(ctx.secret_env.values)
    env[rc.ENV_RUN_ID] = ctx.run_id
    env[rc.ENV_ATTEMPT] = str(ctx.attempt)
    env[rc.ENV_EXPERIMENT] = spec.experiment
    env[rc.ENV_TARGET] = spec.target
    env[rc.ENV_METRICS_FILE] = str(ctx.metrics_file)
    env[rc.ENV_OUTPUTS_DIR] = str(ctx.outputs_dir)
    env[rc.ENV_NODE_PRIORITY] = ctx.node_priority
    if spec.tags:
        env[rc.ENV_TAGS] = json.dumps(spec.tags)
    if ctx.stop_reason_file is not None:
        env[rc.ENV_STOP_REASON_FILE] = str(ctx.stop_reason_file)
    env.update(cuda_env(ctx.gpus))  # after the user's variables: the agent decides the GPUs
    if ctx.rank is not None:
        env.update(ctx.rank.env())
    env["PYTHONUNBUFFERED"] = "1"
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = f"{ctx.runtime_dir}{os.pathsep}{old}" if old else str(ctx.runtime_dir)
    return env


def failed_by_script(why: str | None) -> m.RunError | None:
    """The error of a run whose script called ``Run.fail()`` and then exited 0."""
    return None if why is None else m.RunError(kind=ErrorKind.EXIT_CODE, message=why)


def missing_secrets(assign: m.Assign) -> str | None:
    """Why the run cannot start without secret values it names (None: it has them all)."""
    given = set(assign.secret_env.values) if assign.secret_env is not None else set()
    missing = sorted(set(assign.spec.secret_env_names) - given)
    if not missing:
        return None
    return (
        f"the values of secret environment variables {', '.join(missing)} did not come with "
        "the assignment (the scheduler no longer holds them, e.g. its data directory was "
        "lost): submit the run again"
    )


def exit_error(outcome: Outcome, max_duration_s: float | None) -> m.RunError | None:
    """The error of a process outcome that was not a stop request (None on success)."""
    if outcome.timed_out:
        return m.RunError(
            kind=ErrorKind.TIMEOUT,
            message=f"the run exceeded its max_duration_s={max_duration_s:g} and was stopped"
            if max_duration_s is not None
            else "the run exceeded its max duration and was stopped",
        )
    code = outcome.exit_code
    if code == 0:
        return None
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return m.RunError(
            kind=ErrorKind.EXIT_CODE, message=f"script was killed by {name} (code {code})"
        )
    return m.RunError(kind=ErrorKind.EXIT_CODE, message=f"script exited with code {code}")


def write_runtime(runtime_dir: Path) -> None:
    """Put the run-context module on disk as package ``sortie``, with ``sortie.azureml.core``
    (and ``.core.run``) re-exporting its ``Run`` (each file atomically)."""
    pkg = runtime_dir / "sortie"
    pkg.mkdir(parents=True, exist_ok=True)
    source = importlib.resources.files("sortie").joinpath(*rc.RUN_CONTEXT_RESOURCE).read_text()
    for rel, text in {"__init__.py": source, **rc.RUNTIME_SHIM}.items():
        dest = pkg / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(dest)


async def upload_outputs(
    store: BlobStore,
    workdir: Path,
    say: Callable[[str], None],
    limit_bytes: int = RunLimits().artifact_bytes,
    *,
    js: JetStreamContext,
) -> list[m.Artifact]:
    """Upload outputs/ (what fits ``limit_bytes``: agents.limits.plan_upload), saying how far
    it got every few seconds (agents.upload_progress); raises :class:`StoreFull` when the
    store refuses it as full past its bounded retry (``store_limits.FullBound``)."""
    found, skipped = await asyncio.to_thread(scan_outputs, workdir)
    for s in skipped:
        say(f"not uploading {s}")
    plan = plan_upload([(f[0], f[2]) for f in found], limit_bytes)
    if (notice := plan.notice(limit_bytes)) is not None:
        say(notice)
        kept = {path for path, _ in plan.upload}
        found = [f for f in found if f[0] in kept]
    if not found:
        return []
    try:
        missing = await missing_blobs(store, [f[3] for f in found])
    except (nats.errors.Error, TimeoutError, OSError) as exc:
        say(f"cannot upload outputs: {exc}")
        return []
    outputs = (workdir / "outputs").resolve()
    owner = outputs.stat().st_uid  # the run's user: only its own files are read (agents.outputs)
    artifacts: list[m.Artifact] = []
    sent = 0
    progress = UploadProgress(sum(f[2] for f in found if f[3] in missing), say)
    for artifact, under, size, sha in found:
        if sha in missing:
            try:
                async with progress.file(artifact, size) as count:
                    await until_stored(
                        js,
                        lambda: put_output(store, sha, outputs, under, owner, count),  # noqa: B023 - awaited at once
                        artifact,
                        size,
                    )
            except (nats.errors.Error, TimeoutError, OSError, BlobError) as exc:
                say(f"cannot upload {artifact}: {exc}")
                continue
            missing.discard(sha)
            sent += 1
        artifacts.append(m.Artifact(path=artifact, size=size, sha256=sha))
    say(f"outputs: {len(artifacts)} files, {sent} uploaded, {len(artifacts) - sent} already stored")
    return artifacts


# --- the pipeline --------------------------------------------------------------------------


class Attempt:
    def __init__(self, deps: AttemptDeps, assign: m.Assign) -> None:
        self.deps = deps
        self.run_id = assign.run_id
        self.attempt = assign.attempt
        self.spec = assign.spec
        self.ref = m.RunRef(run_id=assign.run_id, attempt=assign.attempt)
        self.stop_reason: StopReason | None = None
        self.execution: Execution | None = None
        self.terminal: RunState | None = None
        # a container run: the ID of the image its base_image named (Prepared.image_id)
        self.image_id: str | None = None
        self.task: asyncio.Task[None] | None = None
        self._cancellable = False  # only while materialising / preparing the environment
        self._bad_metrics = 0
        self.script_failed: str | None = None  # Run.fail() on its own run: why (agents.notes)
        self.kind = executor_kind(assign.spec, deps.engine)
        self.engine_job: EngineJob | None = None  # the last state its engine's job reported
        self.engine_running = False  # Running reported (an engine's job started)
        self._log = structlog.get_logger().bind(run_id=self.run_id, attempt=self.attempt)
        self.output = RunOutput(
            deps.js,
            self.run_id,
            self.attempt,
            deps.incarnation,
            agent_id=deps.agent_id,
            rank=assign.rank,
            limits=deps.limits,
        )
        self.notes = NoteRelay(
            deps.js,
            agent_id=deps.agent_id,
            incarnation=deps.incarnation,
            run_id=self.run_id,
            attempt=self.attempt,
            say=self.output.system,
        )
        self.assign = assign
        self.workdir = deps.data_dir / "runs" / self.run_id / str(self.attempt)
        here = self.workdir.parent
        self.files = AttemptFiles(
            workdir=self.workdir,
            runtime_dir=deps.runtime_dir,
            metrics=here / f"{self.attempt}.metrics",
            stop_reason=here / f"{self.attempt}.stop-reason",
            hostfile=here / f"{self.attempt}.hostfile",
            pid_file=here / f"{self.attempt}.pid",
            data=data_dir(self.workdir) if has_data(assign.spec) else None,
        )
        self.stop_reason_file = self.files.stop_reason
        self.lease_mark = deps.lease.lapses if deps.lease is not None else 0
        self.holder = (self.run_id, self.attempt)

    def start(self, previous: Attempt | None = None) -> asyncio.Task[None]:
        self.task = asyncio.create_task(
            self.run(previous), name=f"attempt-{self.run_id}-{self.attempt}"
        )
        return self.task

    async def stop(self, reason: StopReason) -> None:
        """Stop this attempt and wait until it has wound down."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self._log.info("stopping attempt", reason=reason)
        if self.execution is not None:
            await self._stop_execution()
        elif self._cancellable and self.task is not None and not self.task.done():
            self.task.cancel()
        if self.task is not None:
            await asyncio.wait([self.task])

    async def _stop_execution(self) -> None:
        assert self.execution is not None and self.stop_reason is not None
        grace = self.deps.preempt_grace_s if self.stop_reason == "preempted" else None
        await self.execution.stop(STOP_WORDS[self.stop_reason], grace)

    # reports ----------------------------------------------------------------------------

    async def _report(
        self,
        state: RunState,
        *,
        exit_code: int | None = None,
        error: m.RunError | None = None,
        artifacts: list[m.Artifact] | None = None,
        data_outputs: dict[str, str] | None = None,
        engine_job: EngineJob | None = None,
        image_id: str | None = None,
    ) -> None:
        report = m.RunReport(
            agent_id=self.deps.agent_id,
            incarnation=self.deps.incarnation,
            run_id=self.run_id,
            attempt=self.attempt,
            state=state,
            at=time.time(),
            exit_code=exit_code,
            error=error,
            artifacts=artifacts or [],
            metrics=dict(self.output.latest.values),
            data_outputs=data_outputs or {},
            engine_job=engine_job,
            image_id=image_id,
        )
        await send_report(self.deps.js, report)
        self._log.info("attempt state", state=str(state), error=error.kind if error else None)

    async def _terminal(
        self,
        state: RunState,
        *,
        exit_code: int | None = None,
        error: m.RunError | None = None,
        artifacts: list[m.Artifact] | None = None,
        data_outputs: dict[str, str] | None = None,
    ) -> None:
        self._cancellable = False
        if error is not None:
            self.output.system(f"{state}: {error.message}")
        try:
            await self.output.close()  # every log line is acked before the terminal report
        except StoreFull as exc:  # the run's output is not all stored: it did not complete
            if state != RunState.CANCELED:
                state, error = (
                    RunState.FAILED,
                    m.RunError(kind=ErrorKind.DISK_FULL, message=str(exc)),
                )
        self.terminal = state
        await self._report(
            state,
            exit_code=exit_code,
            error=error,
            artifacts=artifacts,
            data_outputs=data_outputs if state == RunState.COMPLETED else None,
            image_id=self.image_id if state == RunState.COMPLETED else None,
        )

    async def _fail(self, kind: ErrorKind, message: str) -> None:
        await self._terminal(RunState.FAILED, error=m.RunError(kind=kind, message=message))

    async def _give_back(self, reason: StopReason) -> None:
        """Report Queued (kind "preempted" or "lost") once every log line is acked."""
        kind, message = GIVE_BACK[reason]
        await self._report_queued(m.RunError(kind=kind, message=message))

    async def _report_queued(self, error: m.RunError) -> None:
        """Give the attempt back: Queued with ``error`` once every log line is acked."""
        self._cancellable = False
        self.output.system(f"{RunState.QUEUED}: {error.message}")
        await self._close_output()
        await self._report(RunState.QUEUED, error=error)

    async def _close_output(self) -> None:
        """Flush the output of an attempt that ends without a verdict of its own."""
        with contextlib.suppress(StoreFull):  # said in the agent's log (publisher)
            await self.output.close()

    async def _wind_down_stopped(self) -> None:
        if self.stop_reason in CANCELING:
            await self._terminal(
                RunState.CANCELED,
                error=m.RunError(
                    kind=ErrorKind.CANCELED, message="canceled before the script started"
                ),
            )
        elif self.stop_reason in GIVE_BACK:
            await self._give_back(self.stop_reason)
        else:
            await self._close_output()

    # pipeline ---------------------------------------------------------------------------

    async def run(self, previous: Attempt | None = None) -> None:
        try:
            if previous is not None:
                await previous.stop("stale")
            await self._pipeline()
        except asyncio.CancelledError:
            if self.stop_reason is None:
                self.output.abort()
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self._cancellable = False
            await self._wind_down_stopped()
        except StoreFull as exc:  # a report the full store refused: said, and nothing more to do
            self._log.error(
                "a report of the attempt was not stored: the store is full", why=str(exc)
            )
            self.output.abort()
        except Exception as exc:  # noqa: BLE001 - a bug must not leave the run hanging in Preparing
            self._log.exception("attempt crashed")
            if self.terminal is None and self.stop_reason is None:
                await self._fail(
                    ErrorKind.INTERNAL, f"the agent failed while running the attempt: {exc!r}"
                )
            else:
                self.output.abort()
        finally:
            self.deps.gpus.release(self.holder)
            # reported (or handed over to a newer attempt): nothing for a next agent to recover
            orphans.forget_exit(self.files.pid_file)

    async def _pipeline(self) -> None:
        out = self.output
        out.system(f"run {self.run_id} attempt {self.attempt} on agent {self.deps.agent_id}")
        if self.stop_reason is not None:  # stopped while an older attempt wound down
            return await self._wind_down_stopped()
        if (refused := self._unrunnable_request()) is not None:
            return await self._fail(*refused)
        prepared = await self._prepare()
        if prepared is None:
            return None  # failed (reported)
        if (refused := self._missing_script()) is not None:
            return await self._fail(*refused)
        if self.stop_reason is not None:
            return await self._wind_down_stopped()
        gpus, refused = self._take_gpus()
        if refused is not None:
            return await self._fail(*refused)
        if gpus is not None:
            out.system(f"GPUs: CUDA_VISIBLE_DEVICES={','.join(map(str, gpus))!r}")
        self.stop_reason_file.unlink(missing_ok=True)
        return await self._run_prepared(prepared, gpus)

    def _unrunnable_request(self) -> Refusal | None:
        """Why this agent cannot run the run at all (secrets, GPUs), before preparing it."""
        deps, spec = self.deps, self.spec
        if (why := missing_secrets(self.assign)) is not None:
            return ErrorKind.SECRETS, why
        if (why := data_problem(spec)) is not None:
            return ErrorKind.START, why
        engine = self.kind in ENGINE_KINDS  # its engine gives the GPUs (e.g. Slurm's --gres)
        if not engine and (deps.gpus.has_gpus or spec.resources.gpus or spec.resources.gpu_type):
            why = gpu_request_error(deps.gpus.devices, spec.resources)
            if why is not None:
                return ErrorKind.START, why
        return None

    def _missing_script(self) -> Refusal | None:
        """Why the script cannot be run from the materialised snapshot (None: it can)."""
        script = self.spec.script
        why = check_relpath(script)
        if why is not None:
            return ErrorKind.START, f"script {why}"
        if not (self.workdir / script).is_file():
            return (
                ErrorKind.START,
                f"script {script!r} is not in the snapshot: check source_directory",
            )
        return None

    def _take_gpus(self) -> tuple[list[int] | None, Refusal | None]:
        """The GPUs the run gets now (None: an agent without GPUs, and none asked for), or
        why they cannot be had."""
        deps, wanted = self.deps, self.spec.resources.gpus
        if self.kind in ENGINE_KINDS or not (deps.gpus.has_gpus or wanted):
            return None, None
        gpus = deps.gpus.acquire(self.holder, wanted)
        if gpus is None:
            free = deps.gpus.free()
            return None, (
                ErrorKind.START,
                f"the run needs {wanted} GPUs but only {len(free)} of this "
                f"agent's {len(deps.gpus.devices)} are free now (free: {free or 'none'}); "
                "it was placed on a full agent",
            )
        return gpus, None

    async def _prepare(self) -> Prepared | None:
        """The snapshot on disk and the run's executor ready (None: failed, reported). A stop
        asked for meanwhile cancels it."""
        deps, spec = self.deps, self.spec
        self._cancellable = True
        try:
            await deps.snapshots.materialise(spec.snapshot_id, self.workdir, self.output.system)
            if self.files.data is not None:  # a pipeline step's data (agents.pipeline_data)
                await lay_out_data(deps.snapshots, spec, self.files.data, self.output.system)
        except SnapshotError as exc:
            await self._fail(ErrorKind.SNAPSHOT, str(exc))
            return None
        job = Job(
            run_id=self.run_id,
            attempt=self.attempt,
            agent_id=deps.agent_id,
            incarnation=deps.incarnation,
            spec=spec,
            files=self.files,
        )
        try:
            prepared = await deps.executors[self.kind].prepare(job, self.output.system)
        except ExecutorError as exc:
            await self._fail(exc.kind, exc.message)
            return None
        self._cancellable = False
        return prepared

    async def _run_prepared(self, prepared: Prepared, gpus: list[int] | None) -> None:
        """Start the run, wait for it to end, and report how it ended."""
        out = self.output
        self.image_id = prepared.image_id
        launch = self._launch(prepared.python, prepared.view(gpus))
        await self._report(RunState.STARTING)
        fifo = MetricsFifo(self.files.metrics, self._on_metric_line)
        try:
            fifo.open()
            self.execution = await prepared.start(launch, gpus, out.line)
        except ExecutorError as exc:
            fifo.close()
            return await self._fail(exc.kind, exc.message)
        except OSError as exc:
            fifo.close()
            return await self._fail(ErrorKind.START, f"cannot start {launch.argv[0]}: {exc}")
        out.system(f"started {' '.join(launch.argv[:2])}{prepared.where}")
        if self.stop_reason is not None:
            await self._stop_execution()
        if self.kind not in ENGINE_KINDS:
            await self._report(RunState.RUNNING)  # an engine's job says so itself (_engine_job)
        outcome = await self._wait(self.execution)
        fifo.close()
        await self.notes.close()  # tags and children are stored before the run's verdict
        out.flush_tails()  # what the log and metric limits kept back, before what follows
        out.system(
            f"{prepared.noun} exited with code {outcome.exit_code} after "
            f"{outcome.duration_s:.1f}s"
            + (f" (stopped: {self.stop_reason})" if self.stop_reason else "")
        )
        return await self._after_exit(outcome)

    async def _wait(self, execution: Execution) -> Outcome:
        """The run's outcome; a run whose output the store refuses as full is stopped (it
        then ends Failed, kind disk_full: ``_terminal``)."""
        waiting = asyncio.ensure_future(execution.wait())
        full = asyncio.ensure_future(self.output.full.wait())
        try:
            done, _ = await asyncio.wait({waiting, full}, return_when=asyncio.FIRST_COMPLETED)
            if waiting not in done:
                self._log.warning("the store is full: stopping the run")
                self.output.system("the store is full: stopping the run")
                await execution.stop("canceled", None)
            return await waiting
        finally:
            full.cancel()
            waiting.cancel()

    def _launch(self, python: str, view: RunView) -> Launch:
        """The run's command and variables, with its files where the run sees them."""
        deps, spec = self.deps, self.spec
        write_hostfile(
            self.files.hostfile, self.assign.hosts or [self.assign.master_addr or "localhost"]
        )
        return Launch(
            argv=script_argv(
                python, view.workdir / spec.script, run_arguments(spec, view.data_dir)
            ),
            cwd=self.workdir,
            env=child_env(
                view.base_env,
                spec,
                ChildEnv(
                    run_id=self.run_id,
                    attempt=self.attempt,
                    metrics_file=view.metrics_file,
                    outputs_dir=view.outputs_dir,
                    runtime_dir=view.runtime_dir,
                    stop_reason_file=view.stop_reason_file,
                    node_priority=deps.node_priority,
                    gpus=view.gpus,
                    rank=RankInfo.of(self.assign, view.hostfile),
                    secret_env=self.assign.secret_env,
                ),
            ),
            max_duration_s=spec.max_duration_s,
            kill_grace_s=deps.kill_grace_s,
            stop_reason_file=self.stop_reason_file,
            output_room=self.output.room,
            on_engine_job=self._engine_job if self.kind in ENGINE_KINDS else None,
            on_metric_line=self._on_metric_line,
        )

    async def _engine_job(self, job: EngineJob) -> None:
        """The engine's job changed state, reason or id: Starting while it waits in the
        engine's queue (with the reason), Running once it runs, and again when its id changes
        (Spark's driver pid, then its application id); the run's log says so once each."""
        running = job.state == "RUNNING"
        previous = self.engine_job
        if job != previous:
            why = f" ({job.reason})" if job.reason else ""
            self.output.system(f"{job.engine} job {job.job_id}: {job.state}{why}")
        self.engine_job = job
        renamed = previous is not None and previous.job_id != job.job_id
        if running and self.engine_running and not renamed:
            return
        self.engine_running = self.engine_running or running
        await self._report(RunState.RUNNING if running else RunState.STARTING, engine_job=job)

    def _killed_while_fenced(self, outcome: Outcome) -> bool:
        """Killed by a signal while the agent's lease had lapsed: the agent's own fence or
        its watchdog (agents.watchdog) stopped it, whichever came first."""
        lease = self.deps.lease
        return (
            outcome.exit_code is not None
            and outcome.exit_code < 0
            and self.stop_reason in (None, "fenced")
            and lease is not None
            and lease.lapsed_since(self.lease_mark, time.monotonic())
        )

    async def _after_exit(self, outcome: Outcome) -> None:
        deps, spec, out = self.deps, self.spec, self.output
        if self._killed_while_fenced(outcome):
            self.stop_reason = "fenced"
            outcome = dataclasses.replace(outcome, stopped=True)
        if self.stop_reason in ("stale", "shutdown") and outcome.stopped:
            # stopped by us: the scheduler has moved on, or requeues it (a script that had
            # already ended on its own is reported as it ended: it must not run again)
            await self._close_output()
            return None
        if self.stop_reason in GIVE_BACK and outcome.stopped:
            # stopped by the preemption or the lost lease (a script that had already ended
            # is reported as it ended)
            return await self._give_back(self.stop_reason)
        engine_error = outcome.engine_error
        if engine_error is not None and engine_error.kind == ErrorKind.PREEMPTED:
            return await self._report_queued(engine_error)  # the engine took it back: requeued
        await self._report(RunState.FINALIZING)
        try:
            artifacts = await upload_outputs(
                deps.blobs, self.workdir, out.system, deps.limits.artifact_bytes, js=deps.js
            )
        except StoreFull as exc:
            return await self._fail(ErrorKind.DISK_FULL, f"outputs not stored: {exc}")
        if self.stop_reason in CANCELING:
            return await self._terminal(
                RunState.CANCELED,
                exit_code=outcome.exit_code,
                error=m.RunError(kind=ErrorKind.CANCELED, message="canceled while running"),
                artifacts=artifacts,
            )
        error = (
            engine_error
            or exit_error(outcome, spec.max_duration_s)
            or failed_by_script(self.script_failed)
        )
        data: dict[str, str] = {}
        if error is None and spec.data_outputs:
            data, error = await self._store_data()
        await self._terminal(
            RunState.COMPLETED if error is None else RunState.FAILED,
            exit_code=outcome.exit_code,
            error=error,
            artifacts=artifacts,
            data_outputs=data,
        )
        return None

    async def _store_data(self) -> tuple[dict[str, str], m.RunError | None]:
        """A completed step's output data stored (agents.data_upload): the manifest ids by
        name, or why the run fails instead."""
        assert self.files.data is not None
        deps, names = self.deps, list(self.spec.data_outputs)
        return await stored_or_error(
            deps.blobs, deps.js, self.files.data, names, self.output.system
        )

    def _on_metric_line(self, line: bytes) -> None:
        parsed = parse_line(line)
        if isinstance(parsed, m.MetricPoint):
            self.output.metric(parsed)
            return
        if isinstance(parsed, notes.ChildEnded) and parsed.run == self.run_id:
            if parsed.state == "Failed":  # Run.fail() on the script's own run
                self.script_failed = parsed.error or "failed by its script (Run.fail)"
            return
        if not isinstance(parsed, str):
            self.notes.add(parsed)
            return
        self._bad_metrics += 1
        if self._bad_metrics <= MAX_BAD_METRIC_LINES:
            self.output.system(parsed)
        if self._bad_metrics == MAX_BAD_METRIC_LINES:
            self.output.system("further bad metric lines are not reported")
