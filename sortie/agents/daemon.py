"""The agent daemon: heartbeats, commands in, one task per attempt.

Commands arrive on core NATS and go through one queue, handled in order by one task.
A ``Preempt`` command puts the agent in ``preempting``: it takes no new runs, and stops every
attempt it holds (each reports Queued, kind "preempted").

The container engine (``DOCKER_HOST``) is probed at start and every ``engine_probe_s``; the
answer goes in every heartbeat (``container_engine``). At start, and when the engine first
answers, containers labelled with this agent's id that no attempt of this incarnation holds
are removed (leftovers of a crashed agent).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from sortie.agents import core, orphans
from sortie.agents.attempt import Attempt, AttemptDeps, write_runtime
from sortie.agents.config import AgentConfig, default_agent_id
from sortie.agents.core import AgentState, heartbeat_listing
from sortie.agents.data_upload import stored_or_error
from sortie.agents.disk_gc import IMAGES, agent_gc_loop
from sortie.agents.engine import docker_host, probe_engine
from sortie.agents.engine_health import next_probe_s
from sortie.agents.envcache import EnvCache
from sortie.agents.events import (
    Assigned,
    AttemptEnded,
    CancelAsked,
    Command,
    CommandRefused,
    EngineProbed,
    Event,
    LeaderSeen,
    LeaseLapsed,
    Note,
    PreemptNoticed,
    RemoveOrphans,
    StartAttempt,
    StopAttempt,
    Tick,
)
from sortie.agents.executors.container_run import remove_orphans
from sortie.agents.executors.registry import ExecutorSettings, make_executors
from sortie.agents.executors.sandbox import Isolation, make_isolation, prepare_agent_dirs
from sortie.agents.executors.slurm import cancel_leftovers
from sortie.agents.executors.slurm import capacity as slurm_capacity
from sortie.agents.executors.spark import capacity as spark_capacity
from sortie.agents.facts import host_capacity, hostname
from sortie.agents.gpus import GpuPool, GpuProbe, probe_gpus, restrict
from sortie.agents.image_ids import look_up, own_answer_subject
from sortie.agents.lease import Lease
from sortie.agents.pipeline_data import data_dir
from sortie.agents.publisher import send_report
from sortie.agents.snapshot_cache import SnapshotCache
from sortie.bus.connection import Bus, BusAuth, open_bus
from sortie.bus.errors import BrokerUnreachable, NotInitialised
from sortie.bus.pause import retry_pause
from sortie.bus.renewal import from_scheduler, keep_renewed
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.agent_env import SETTINGS_CHECKED
from sortie.proto.engines import Engine, SlurmEngine, SparkEngine, kind_of
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState

__all__ = ["AgentConfig", "AgentState", "default_agent_id", "run_agent"]

SHUTDOWN_LIMIT_S = 60.0
VERSION = "0.1.0"

log = structlog.get_logger()


def heartbeat(
    config: AgentConfig,
    state: AgentState,
    facts: HostFacts,
    *,
    envs: EnvCache,
    now: float,
    asked: bool = False,
) -> m.Heartbeat:
    """The heartbeat that says what ``state`` holds, its listing in full or by digest
    (``core.heartbeat_listing``; ``asked``: a leader asked for it)."""
    listing = heartbeat_listing(state, asked=asked)
    return m.Heartbeat(
        agent_id=config.agent_id,
        incarnation=state.incarnation,
        target=config.target,
        hostname=facts.hostname,
        capacity=facts.capacity,
        running=listing.running,
        finished=listing.finished,
        listing=listing.digest,
        listed=listing.listed,
        sent_at=now,
        version=VERSION,
        env_cache_hits=envs.hits,
        env_cache_misses=envs.misses,
        gpus=facts.gpus.view(),
        labels=dict(config.labels),
        priority=config.priority,
        preempting=state.preempting,
        container_engine=state.container_engine,
        isolation=facts.isolation.mode,
        engine=kind_of(config.engine) if config.engine is not None else None,
    )


# nats-py's flush future must never be cancelled while it waits in the client's PONG queue:
# a PONG arriving for a cancelled future kills the client's read loop (InvalidStateError).
# So it is never cancelled from outside, and its own timeout is longer than the stale-
# connection detection (ping_interval x max_outstanding_pings), after which a reconnect
# empties that queue.
FLUSH_INNER_TIMEOUT_S = 60


async def confirmed(bus: Bus, timeout_s: float) -> bool:
    """Has everything published so far reached the broker (a PING/PONG round trip) within
    ``timeout_s``? Never cancels the round trip it waits for (see above)."""
    flush = asyncio.ensure_future(bus.nc.flush(timeout=FLUSH_INNER_TIMEOUT_S))
    flush.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
    done, _ = await asyncio.wait([flush], timeout=timeout_s)
    return flush in done and not flush.cancelled() and flush.exception() is None


RECOVERY_SETTLE_S = 2.0


async def start_watchdog(
    config: AgentConfig, data_dir: Path, lease_file: Path
) -> asyncio.subprocess.Process:
    """Start agents.watchdog for this agent: it kills the runs if the lease file goes stale
    (the agent paused or hung) or the agent dies. Its limit leaves the run most of the kill
    grace to stop by itself, and ends before the scheduler requeues (lease + kill grace)."""
    limit = config.lease_s + 0.75 * config.kill_grace_s
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sortie.agents.watchdog",
        "--runs-dir",
        str(data_dir / "runs"),
        "--lease-file",
        str(lease_file),
        "--limit",
        str(limit),
        "--agent-pid",
        str(os.getpid()),
        stdin=asyncio.subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C aimed at the agent must not stop it first
    )


async def stop_watchdog(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 5)


async def report_unreported_exits(
    bus: Bus, agent_id: str, incarnation: str, runs_dir: Path, alog: Any
) -> int:
    """Report the outcome of attempts whose script ended but whose agent died before
    reporting it (see agents.orphans). Exit 0 completes the run; a script's own failure fails
    it; a signal (it was stopped) gives the attempt back to be run again."""
    found = orphans.unreported_exits(runs_dir)
    for run_id, attempt, code in found:
        data: dict[str, str] = {}
        if code == 0:
            # a pipeline step's output data, stored now (its agent died before it could)
            data, error = await _left_data(bus, data_dir(runs_dir / run_id / str(attempt)), alog)
            final = RunState.COMPLETED if error is None else RunState.FAILED
        elif code > 0:
            final = RunState.FAILED
            error = m.RunError(
                kind=ErrorKind.EXIT_CODE, message=f"the script exited with code {code}"
            )
        else:
            final = RunState.QUEUED
            error = m.RunError(
                kind=ErrorKind.LOST, message=f"its agent died; killed by signal {-code}"
            )
        states = [RunState.RUNNING, RunState.FINALIZING, final] if code >= 0 else [final]
        for state in states:
            report = m.RunReport(
                agent_id=agent_id,
                incarnation=incarnation,
                run_id=run_id,
                attempt=attempt,
                state=state,
                at=time.time(),
                exit_code=code if state is final and code >= 0 else None,
                error=error if state is final else None,
                data_outputs=data if state is final else {},
            )
            await send_report(bus.js, report)
        orphans.forget_exit(runs_dir / run_id / f"{attempt}.pid")
        alog.warning(
            "reported the outcome of an attempt its previous agent left unreported",
            run_id=run_id,
            attempt=attempt,
            exit_code=code,
        )
    return len(found)


async def _left_data(bus: Bus, data: Path, alog: Any) -> tuple[dict[str, str], m.RunError | None]:
    """The output data an attempt left (agents.pipeline_data), stored: see
    :func:`agents.data_upload.stored_or_error` (none without a data dir)."""
    if not await asyncio.to_thread(data.is_dir):
        return {}, None

    def say(line: str) -> None:
        alog.info("output data of an attempt left unreported", line=line)

    return await stored_or_error(bus.blobs, bus.js, data, None, say)


async def watch_parent(
    parent_pid: int, stop: asyncio.Event, alog: structlog.stdlib.BoundLogger, every_s: float = 0.5
) -> None:
    """Set ``stop`` once ``parent_pid`` is no longer this process's parent (it died, even by
    SIGKILL, and the agent was re-parented), so a node never outlives its scheduler."""
    while not stop.is_set():
        if os.getppid() != parent_pid:
            alog.warning("the process that started this agent is gone; stopping", parent=parent_pid)
            stop.set()
            return
        await asyncio.sleep(every_s)


def read_command(data: bytes) -> m.AgentCommand | str:
    """A command from the scheduler, or why it is ignored (pure).

    Beyond decoding: a run id must be one subject token (it also names the run's directory),
    attempts count from 1, and a rank lies within its run's world.
    """
    try:
        cmd: m.AgentCommand = codec.decode(m.AgentCommand, data)
        if isinstance(cmd, m.Preempt | m.Retire):
            return cmd
        subjects.check_token("run id", cmd.run_id)
    except ValueError as exc:  # codec.BadMessage, or a run id that could leave runs/
        return str(exc)
    if cmd.attempt < 1:
        return f"attempt {cmd.attempt} of run {cmd.run_id} is not a positive number"
    if isinstance(cmd, m.Assign) and not 0 <= cmd.rank < cmd.world_size:
        return f"rank {cmd.rank} of run {cmd.run_id} is outside its world of {cmd.world_size}"
    return cmd


async def _open(config: AgentConfig, stop: asyncio.Event) -> Bus | None:
    waited = False
    while not stop.is_set():
        try:
            return await open_bus(
                config.url,
                f"agent-{config.agent_id}",
                reconnect_forever=True,
                auth=config.auth if config.auth is not None else BusAuth.from_env(),
            )
        except (NotInitialised, BrokerUnreachable) as exc:
            if not waited:
                log.warning("waiting for the broker and the scheduler's resources", why=str(exc))
                waited = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return None


@dataclass(frozen=True, kw_only=True)
class HostFacts:
    """What the agent learns about its host before it connects."""

    devices: list[m.GpuDevice]
    gpus: GpuPool
    data_dir: Path
    runtime_dir: Path
    capacity: m.Capacity
    hostname: str
    isolation: Isolation


async def _engine_capacity(engine: Engine, alog: Any) -> m.Capacity | None:
    """An engine agent's capacity: its cluster's largest node (Slurm, from sinfo) or worker
    (Spark, from the master), so a run bigger than any is refused at placement instead of
    waiting in the engine for ever. None: the engine did not say (the login or head node's
    own capacity is used until the agent restarts)."""
    match engine:
        case SlurmEngine():
            node = await slurm_capacity(engine)
            if node is not None:
                cpus, memory_mb, gpus = node
                return m.Capacity(cpus=float(cpus), memory_mb=memory_mb, gpus=gpus)
        case SparkEngine():
            worker = await spark_capacity(engine)
            if worker is not None:
                return m.Capacity(cpus=worker[0], memory_mb=worker[1])
    alog.warning(
        "the engine did not say how big its nodes are: advertising this host's capacity "
        "until the agent restarts",
        engine=kind_of(engine),
    )
    return None


async def _host_facts(config: AgentConfig, gpu_probe: GpuProbe, alog: Any) -> HostFacts:
    devices = restrict(await asyncio.to_thread(gpu_probe), config.gpu_indices)
    data_dir = config.data_dir.resolve()
    isolation = make_isolation(run_user=config.run_user, run_uids=config.run_uids)
    prepare_agent_dirs(isolation, data_dir)
    runtime_dir = data_dir / "runtime"
    write_runtime(runtime_dir)
    capacity = config.capacity
    if capacity is None and config.engine is not None:
        capacity = await _engine_capacity(config.engine, alog)
    if capacity is None:
        capacity = await asyncio.to_thread(host_capacity, devices)
    # runs a previous incarnation left running (it died without stopping them) must not go on
    # beside the attempts the scheduler gives their runs next
    reaped = await asyncio.to_thread(orphans.kill_leftovers, data_dir / "runs")
    if reaped.killed:
        alog.warning("killed runs left behind by a previous agent", pids=reaped.killed)
    if reaped.alive:
        alog.error(
            "runs left behind by a previous agent are still alive after SIGKILL: their new "
            "attempts may run beside them; look at these process groups on the host",
            seconds=orphans.GONE_WAIT_S,
            pgids=reaped.alive,
        )
    if isinstance(config.engine, SlurmEngine):
        cancelled, failed = await cancel_leftovers(data_dir / "runs")
        if cancelled:
            alog.warning("cancelled Slurm jobs left behind by a previous agent", jobs=cancelled)
        if failed:
            alog.warning("could not cancel Slurm jobs a previous agent left", jobs=failed)
    return HostFacts(
        devices=devices,
        gpus=GpuPool(devices),
        data_dir=data_dir,
        runtime_dir=runtime_dir,
        capacity=capacity,
        hostname=hostname(),
        isolation=isolation,
    )


class AgentShell:
    """One agent incarnation's I/O. Broker messages, attempt exits and timers become events
    for :func:`agents.core.handle` (:meth:`dispatch`); the commands it answers are carried
    out here. Everything runs on one event loop: no locks."""

    def __init__(
        self,
        config: AgentConfig,
        facts: HostFacts,
        bus: Bus,
        state: AgentState,
        *,
        gpu_probe: GpuProbe,
        alog: Any,
    ) -> None:
        self.config, self.facts, self.bus, self.state = config, facts, bus, state
        self.gpu_probe = gpu_probe
        self.alog = alog
        # stop for good: the scheduler said its target is gone (Retire), or the broker closed
        # this agent's connection for good (its credentials revoked or expired)
        self.retired = asyncio.Event()
        self.engine_url = config.docker_host or docker_host()
        self.envs = EnvCache(facts.data_dir / "envs")
        self.lease = Lease(config.lease_s, time.monotonic())
        # its mtime: the last confirmed heartbeat (the watchdog's)
        self.lease_file = facts.data_dir / "lease"
        self.deps = AttemptDeps(
            js=bus.js,
            blobs=bus.blobs,
            agent_id=config.agent_id,
            incarnation=state.incarnation,
            data_dir=facts.data_dir,
            runtime_dir=facts.runtime_dir,
            kill_grace_s=config.kill_grace_s,
            snapshots=SnapshotCache(
                facts.data_dir / "blobs", bus.blobs, concurrency=config.snapshot_concurrency
            ),
            engine=config.engine,
            executors=make_executors(
                ExecutorSettings(
                    envs=self.envs,
                    docker_host=self.engine_url,
                    isolation=facts.isolation,
                    images_dir=facts.data_dir / IMAGES,
                    engine=config.engine,
                )
            ),
            gpus=facts.gpus,
            preempt_grace_s=config.preempt_grace_s,
            node_priority=config.priority,
            lease=self.lease,
            limits=config.limits,
        )
        self.attempts: dict[tuple[str, int], Attempt] = {}
        self.commands: asyncio.Queue[bytes] = asyncio.Queue()
        self.background: set[asyncio.Task[None]] = set()

    # events in, commands out ---------------------------------------------------------------

    async def dispatch(self, event: Event) -> None:
        for command in core.handle(self.state, event, time.time()):
            await self._carry_out(command)

    async def _carry_out(self, command: Command) -> None:
        match command:
            case StartAttempt(assign=assign, replaces=replaces):
                previous = (
                    None if replaces is None else self.attempts.get((assign.run_id, replaces))
                )
                attempt = Attempt(self.deps, assign)
                self.attempts[(assign.run_id, assign.attempt)] = attempt
                attempt.start(previous)
                self.spawn(self._watch(attempt))
            case StopAttempt(run_id=run_id, attempt=number, reason=reason):
                held = self.attempts.get((run_id, number))
                if held is not None:
                    self.spawn(held.stop(reason))
            case RemoveOrphans(keep=keep):
                removed = await remove_orphans(self.engine_url, self.config.agent_id, set(keep))
                if removed:
                    self.alog.warning(
                        "orphaned containers removed", count=len(removed), ids=removed
                    )
            case Note(level=level, message=message, fields=fields):
                getattr(self.alog, level)(message, **fields)

    def spawn(self, coro: collections.abc.Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _watch(self, attempt: Attempt) -> None:
        assert attempt.task is not None
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([attempt.task])
        self.attempts.pop((attempt.run_id, attempt.attempt), None)
        await self.dispatch(AttemptEnded(run_id=attempt.run_id, attempt=attempt.attempt))

    async def on_command(self, msg: Msg) -> None:
        self.commands.put_nowait(msg.data)

    async def on_heartbeat_now(self, msg: Msg) -> None:
        if msg.data:  # a new leader: its epoch is the floor from now on
            with contextlib.suppress(codec.BadMessage):
                now = codec.decode(m.HeartbeatNow, msg.data)
                await self.dispatch(
                    LeaderSeen(epoch=now.epoch, short_heartbeats=now.short_heartbeats)
                )
        self.spawn(self.send_heartbeat(asked=True))

    async def on_image_query(self, msg: Msg) -> None:
        """The scheduler asks which image a reference names here (beside the commands: an
        engine call must not hold them up)."""
        self.spawn(self.answer_image_query(msg))

    async def answer_image_query(self, msg: Msg) -> None:
        if not own_answer_subject(self.config.agent_id, msg.reply):
            self.alog.warning("image query without a valid reply subject ignored")
            return
        try:
            query = codec.decode(m.ImageQuery, msg.data)
        except codec.BadMessage as exc:
            self.alog.warning("image query ignored", error=str(exc))
            return
        answer = await look_up(self.engine_url, query.reference)
        with contextlib.suppress(nats.errors.Error):
            await self.bus.nc.publish(msg.reply, codec.encode(answer))

    # loops ------------------------------------------------------------------------------------

    async def commands_loop(self) -> None:
        """Commands in arrival order, one at a time."""
        while True:
            data = await self.commands.get()
            cmd = read_command(data)
            if isinstance(cmd, str):
                await self.dispatch(CommandRefused(error=cmd, size=len(data)))
            elif isinstance(cmd, m.Preempt):
                await self.dispatch(PreemptNoticed(reason=cmd.reason))
            elif isinstance(cmd, m.Retire):
                self.alog.warning("retired by the scheduler; stopping", reason=cmd.reason)
                self.retired.set()
            elif isinstance(cmd, m.Assign):
                await self.dispatch(Assigned(assign=cmd))
            else:
                await self.dispatch(CancelAsked(cancel=cmd))

    async def send_heartbeat(self, *, asked: bool = False) -> None:
        """Publish a heartbeat (``asked``: a leader asked for it: listed in full); once the
        broker confirms it, renew the lease (and fence the runs if it had lapsed meanwhile,
        unnoticed)."""
        await self.dispatch(Tick())
        config, nc = self.config, self.bus.nc
        hb = heartbeat(config, self.state, self.facts, envs=self.envs, now=time.time(), asked=asked)
        sent_at = time.monotonic()
        try:
            await nc.publish(subjects.heartbeat(config.agent_id), codec.encode(hb))
            # confirmed: the broker has it (a round trip), so the scheduler can hear it. (While
            # reconnecting, nats-py's flush returns at once without a round trip: check.)
            if not nc.is_connected:
                return
            if not await confirmed(self.bus, max(0.5, min(5.0, config.lease_s / 2))):
                return
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            self.alog.warning("heartbeat not sent", error=repr(exc))
            return
        if not nc.is_connected:
            return
        with contextlib.suppress(OSError):
            os.utime(self.lease_file)
        if self.lease.renew(sent_at):
            why = "lease lapsed unnoticed (the agent was stalled); stopping every run"
            await self.dispatch(LeaseLapsed(why=why))

    async def heartbeats(self) -> None:
        while True:
            await self.send_heartbeat()
            await retry_pause(self.config.heartbeat_interval_s)

    async def fence(self) -> None:
        """No confirmed heartbeat for a lease: stop every run (see agents.lease)."""
        while True:
            await asyncio.sleep(min(0.5, self.config.lease_s / 4))
            if self.lease.lapse_seen(time.monotonic()):
                why = "lease expired: no heartbeat confirmed; stopping every run"
                await self.dispatch(LeaseLapsed(why=why))
                if self.config.exit_when_refused and self.bus.nc.is_closed:
                    # nats-py never reopens a closed connection: the broker refused this
                    # agent's credentials (revoked, as on detach, or expired). Its runs were
                    # given back above; waiting on would only heartbeat into nothing.
                    self.alog.error(
                        "the broker closed this agent's connection for good (credentials "
                        "revoked or expired); stopping"
                    )
                    self.retired.set()

    async def refresh_gpus(self) -> None:
        """Fresh memory/utilisation readings every ``gpu_refresh_s`` (the set never changes)."""
        while True:
            await asyncio.sleep(self.config.gpu_refresh_s)
            try:
                self.facts.gpus.update(await asyncio.to_thread(self.gpu_probe))
            except Exception as exc:  # noqa: BLE001 - a failing probe must not take the agent down
                self.alog.warning("GPU readings not refreshed", error=repr(exc))

    async def check_engine(self) -> None:
        """Probe the container engine (when it first answers, orphans are removed)."""
        await self.dispatch(EngineProbed(engine=await probe_engine(self.engine_url)))

    async def probe_engine_loop(self) -> None:
        while True:
            await asyncio.sleep(next_probe_s(self.state.engine, self.config.engine_probe_s))
            try:
                await self.check_engine()
            except Exception as exc:  # noqa: BLE001 - a failing probe must not take the agent down
                self.alog.warning("container engine not probed", error=repr(exc))

    def loops(self) -> list[asyncio.Task[None]]:
        coros = [self.heartbeats(), self.commands_loop(), self.probe_engine_loop(), self.fence()]
        coros.append(
            agent_gc_loop(
                self.facts.data_dir,
                self.config.disk_gc,
                lambda: {run_id for run_id, _ in self.attempts},
                self.alog,
                engine_url=self.engine_url,
            )
        )
        if self.facts.gpus.has_gpus:
            coros.append(self.refresh_gpus())
        return [asyncio.create_task(c) for c in coros]

    async def stop_attempts(self) -> None:
        """Stop every attempt held (shutdown), waiting a bounded time for them to wind down."""
        stopping = [a.stop("shutdown") for a in list(self.attempts.values())]
        if stopping:
            limit = max(self.config.kill_grace_s, self.config.preempt_grace_s) + SHUTDOWN_LIMIT_S
            _done, pending = await asyncio.wait(
                [asyncio.create_task(s) for s in stopping], timeout=limit
            )
            for t in pending:
                t.cancel()


async def run_agent(
    config: AgentConfig, stop: asyncio.Event, *, gpu_probe: GpuProbe = probe_gpus
) -> None:
    """Serve as agent ``config.agent_id`` until ``stop`` is set; then stop runs and close.

    ``gpu_probe`` finds the host's GPUs (tests pass a fake list). Raises
    :class:`agents.gpus.GpuConfigError` at once when ``config.gpu_indices`` names a GPU the
    host does not have.
    """
    subjects.check_token("agent id", config.agent_id)
    codec.warm()
    incarnation = secrets.token_hex(8)
    alog = log.bind(agent_id=config.agent_id, incarnation=incarnation)
    facts = await _host_facts(config, gpu_probe, alog)
    alog.info(SETTINGS_CHECKED, target=config.target)
    bus = await _open(config, stop)
    if bus is None:
        return
    state = AgentState(
        incarnation=incarnation,
        finished_keep_s=config.finished_keep_s,
        finished_cap=config.finished_cap,
    )
    shell = AgentShell(config, facts, bus, state, gpu_probe=gpu_probe, alog=alog)
    await _recover(shell)
    shell.lease_file.touch()
    watchdog = (
        await start_watchdog(config, facts.data_dir, shell.lease_file) if config.watchdog else None
    )
    subs = [
        await bus.nc.subscribe(subjects.agent_commands(config.agent_id), cb=shell.on_command),
        await bus.nc.subscribe(subjects.HEARTBEAT_NOW, cb=shell.on_heartbeat_now),
        await bus.nc.subscribe(subjects.agent_images(config.agent_id), cb=shell.on_image_query),
    ]
    alog.info(
        "agent started",
        target=config.target,
        data_dir=str(facts.data_dir),
        gpus=[d.index for d in facts.devices],
        priority=config.priority,
        container_engine=state.container_engine,
        isolation=facts.isolation.mode,
    )
    loops = shell.loops()
    if config.auth is not None and config.auth.creds is not None:  # renewed by the scheduler
        renewing = keep_renewed(bus.nc, config.auth.creds, from_scheduler(bus.nc))
        loops.append(asyncio.create_task(renewing))
    if config.exit_with_parent is not None:
        loops.append(asyncio.create_task(watch_parent(config.exit_with_parent, stop, alog)))
    loops.append(asyncio.create_task(_stop_when(shell.retired, stop)))
    try:
        await stop.wait()
    finally:
        await _shut_down(shell, subs, loops, watchdog)


async def _stop_when(retired: asyncio.Event, stop: asyncio.Event) -> None:
    await retired.wait()
    stop.set()


async def _recover(shell: AgentShell) -> None:
    """Before any attempt starts: leftover containers go, and what a previous incarnation
    left unreported is reported."""
    await shell.check_engine()
    runs_dir = shell.facts.data_dir / "runs"
    agent_id, incarnation = shell.config.agent_id, shell.state.incarnation
    if await report_unreported_exits(shell.bus, agent_id, incarnation, runs_dir, shell.alog):
        # let the scheduler apply them before this incarnation's first heartbeat makes it
        # requeue the previous incarnation's runs
        await asyncio.sleep(RECOVERY_SETTLE_S)


async def _shut_down(
    shell: AgentShell,
    subs: list[Subscription],
    loops: list[asyncio.Task[None]],
    watchdog: asyncio.subprocess.Process | None,
) -> None:
    """Stop taking commands, stop the runs (bounded), then the loops, watchdog and bus."""
    alog = shell.alog
    alog.info("agent stopping", running=len(shell.state.running))
    with contextlib.suppress(nats.errors.Error):
        for sub in subs:
            await sub.unsubscribe()
    for task in loops:
        task.cancel()
    await shell.stop_attempts()
    for task in list(shell.background):
        task.cancel()
    await asyncio.gather(*loops, *shell.background, return_exceptions=True)
    if watchdog is not None:
        await stop_watchdog(watchdog)
    await shell.bus.close()
    alog.info("agent stopped")
