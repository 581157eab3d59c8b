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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import structlog
from nats.aio.msg import Msg

from sortie.agents import orphans
from sortie.agents.attempt import Attempt, AttemptDeps, write_runtime
from sortie.agents.config import AgentConfig, default_agent_id
from sortie.agents.engine import docker_host, probe_engine
from sortie.agents.envcache import EnvCache
from sortie.agents.executors.container import remove_orphans
from sortie.agents.executors.process import ProcessExecutor
from sortie.agents.facts import host_capacity, hostname
from sortie.agents.gpus import GpuPool, GpuProbe, probe_gpus, restrict
from sortie.agents.lease import Lease
from sortie.agents.publisher import send_report
from sortie.agents.snapshot_cache import SnapshotCache
from sortie.bus.connection import Bus, BusAuth, open_bus
from sortie.bus.errors import BrokerUnreachable, NotInitialised
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState

__all__ = ["AgentConfig", "AgentState", "default_agent_id", "run_agent"]

SEEN_CAP = 10_000
MAX_BAD_COMMANDS_LOGGED = 20  # a flood of bad commands must not flood the log
SHUTDOWN_LIMIT_S = 60.0
VERSION = "0.1.0"

log = structlog.get_logger()


@dataclass
class AgentState:
    """What one agent incarnation holds: attempts in flight, and what it finished."""

    incarnation: str
    running: dict[str, Attempt] = field(default_factory=dict)  # run_id -> current attempt
    finished: collections.OrderedDict[tuple[str, int], float] = field(
        default_factory=collections.OrderedDict
    )  # (run_id, attempt) -> finished at
    seen: collections.OrderedDict[tuple[str, int], None] = field(
        default_factory=collections.OrderedDict
    )
    bad_commands: int = 0
    preempting: bool = False  # a Preempt arrived: no new runs are taken
    container_engine: str | None = None  # what the engine said it is, None: no answer

    def mark_seen(self, key: tuple[str, int]) -> None:
        self.seen[key] = None
        while len(self.seen) > SEEN_CAP:
            self.seen.popitem(last=False)

    def prune_finished(self, now: float, keep_s: float, cap: int) -> None:
        for key, at in list(self.finished.items()):
            if now - at > keep_s:
                del self.finished[key]
        while len(self.finished) > cap:
            self.finished.popitem(last=False)


def heartbeat(
    config: AgentConfig,
    state: AgentState,
    capacity: m.Capacity,
    host: str,
    envs: EnvCache,
    now: float,
    gpus: list[m.GpuDevice] | None = None,
) -> m.Heartbeat:
    state.prune_finished(now, config.finished_keep_s, config.finished_cap)
    return m.Heartbeat(
        agent_id=config.agent_id,
        incarnation=state.incarnation,
        target=config.target,
        hostname=host,
        capacity=capacity,
        running=[a.ref for a in state.running.values()],
        finished=[m.RunRef(run_id=r, attempt=a) for (r, a) in state.finished],
        sent_at=now,
        version=VERSION,
        env_cache_hits=envs.hits,
        env_cache_misses=envs.misses,
        gpus=gpus or [],
        labels=dict(config.labels),
        priority=config.priority,
        preempting=state.preempting,
        container_engine=state.container_engine,
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
        if code == 0:
            final, error = RunState.COMPLETED, None
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
        cmd: m.Assign | m.Cancel | m.Preempt = codec.decode(m.AgentCommand, data)
        if isinstance(cmd, m.Preempt):
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


async def run_agent(
    config: AgentConfig, stop: asyncio.Event, *, gpu_probe: GpuProbe = probe_gpus
) -> None:
    """Serve as agent ``config.agent_id`` until ``stop`` is set; then stop runs and close.

    ``gpu_probe`` finds the host's GPUs (tests pass a fake list). Raises
    :class:`agents.gpus.GpuConfigError` at once when ``config.gpu_indices`` names a GPU the
    host does not have.
    """
    subjects.check_token("agent id", config.agent_id)
    incarnation = secrets.token_hex(8)
    alog = log.bind(agent_id=config.agent_id, incarnation=incarnation)
    devices = restrict(await asyncio.to_thread(gpu_probe), config.gpu_indices)
    gpus = GpuPool(devices)
    data_dir = config.data_dir.resolve()
    runtime_dir = data_dir / "runtime"
    write_runtime(runtime_dir)
    capacity = config.capacity
    if capacity is None:
        capacity = await asyncio.to_thread(host_capacity, devices)
    host = hostname()

    # runs a previous incarnation left running (it died without stopping them) must not go on
    # beside the attempts the scheduler gives their runs next
    reaped = await asyncio.to_thread(orphans.kill_leftovers, data_dir / "runs")
    if reaped:
        alog.warning("killed runs left behind by a previous agent", pids=reaped)
    engine_url = config.docker_host or docker_host()
    state = AgentState(incarnation=incarnation)

    async def check_engine_now() -> None:
        """Probe the engine; when it (first) answers, remove this agent's orphans."""
        was = state.container_engine
        state.container_engine = await probe_engine(engine_url)
        if state.container_engine != was:
            alog.info("container engine", url=engine_url, engine=state.container_engine)
        if state.container_engine is not None and was is None:
            keep = {(a.run_id, a.attempt) for a in state.running.values()}
            removed = await remove_orphans(engine_url, config.agent_id, keep)
            if removed:
                alog.warning("orphaned containers removed", count=len(removed), ids=removed)

    await check_engine_now()
    bus = await _open(config, stop)
    if bus is None:
        return
    if await report_unreported_exits(bus, config.agent_id, incarnation, data_dir / "runs", alog):
        # let the scheduler apply them before this incarnation's first heartbeat makes it
        # requeue the previous incarnation's runs
        await asyncio.sleep(RECOVERY_SETTLE_S)
    envs = EnvCache(data_dir / "envs")
    lease = Lease(config.lease_s, time.monotonic())
    lease_file = data_dir / "lease"  # its mtime: the last confirmed heartbeat (the watchdog's)
    lease_file.touch()
    watchdog = await start_watchdog(config, data_dir, lease_file) if config.watchdog else None
    deps = AttemptDeps(
        js=bus.js,
        blobs=bus.blobs,
        agent_id=config.agent_id,
        incarnation=incarnation,
        data_dir=data_dir,
        runtime_dir=runtime_dir,
        kill_grace_s=config.kill_grace_s,
        snapshots=SnapshotCache(
            data_dir / "blobs", bus.blobs, concurrency=config.snapshot_concurrency
        ),
        envs=envs,
        executor=ProcessExecutor(),
        gpus=gpus,
        preempt_grace_s=config.preempt_grace_s,
        node_priority=config.priority,
        docker_host=engine_url,
        lease=lease,
    )
    commands: asyncio.Queue[bytes] = asyncio.Queue()
    background: set[asyncio.Task[None]] = set()

    def spawn(coro: collections.abc.Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
        background.add(task)
        task.add_done_callback(background.discard)

    async def on_command(msg: Msg) -> None:
        commands.put_nowait(msg.data)

    def fence_runs(why: str) -> None:
        """The lease lapsed: stop every run held now and give it back (reported Queued, kind
        "lost", once the broker is reachable). The scheduler requeues them after its lease
        and the kill grace, by when these attempts are gone."""
        alog.warning(why, lease_s=config.lease_s, running=len(state.running))
        for attempt in list(state.running.values()):
            spawn(attempt.stop("fenced"))

    async def send_heartbeat() -> None:
        hb = heartbeat(config, state, capacity, host, envs, time.time(), gpus.view())
        sent_at = time.monotonic()
        try:
            await bus.nc.publish(subjects.heartbeat(config.agent_id), codec.encode(hb))
            # confirmed: the broker has it (a round trip), so the scheduler can hear it. (While
            # reconnecting, nats-py's flush returns at once without a round trip: check.)
            if not bus.nc.is_connected:
                return
            if not await confirmed(bus, max(0.5, min(5.0, config.lease_s / 2))):
                return
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            alog.warning("heartbeat not sent", error=repr(exc))
            return
        if not bus.nc.is_connected:
            return
        with contextlib.suppress(OSError):
            os.utime(lease_file)
        if lease.renew(sent_at):
            fence_runs("lease lapsed unnoticed (the agent was stalled); stopping every run")

    async def heartbeats() -> None:
        while True:
            await send_heartbeat()
            await asyncio.sleep(config.heartbeat_interval_s)

    async def fence() -> None:
        """No confirmed heartbeat for a lease: stop every run (see agents.lease)."""
        while True:
            await asyncio.sleep(min(0.5, config.lease_s / 4))
            if lease.lapse_seen(time.monotonic()):
                fence_runs("lease expired: no heartbeat confirmed; stopping every run")

    async def refresh_gpus() -> None:
        """Fresh memory/utilisation readings every ``gpu_refresh_s`` (the set never changes)."""
        while True:
            await asyncio.sleep(config.gpu_refresh_s)
            try:
                gpus.update(await asyncio.to_thread(gpu_probe))
            except Exception as exc:  # a failing probe must not take the agent down
                alog.warning("GPU readings not refreshed", error=repr(exc))

    async def probe_engine_loop() -> None:
        while True:
            await asyncio.sleep(config.engine_probe_s)
            try:
                await check_engine_now()
            except Exception as exc:  # a failing probe must not take the agent down
                alog.warning("container engine not probed", error=repr(exc))

    async def watch(attempt: Attempt) -> None:
        assert attempt.task is not None
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([attempt.task])
        if state.running.get(attempt.run_id) is attempt:
            del state.running[attempt.run_id]
        state.finished[(attempt.run_id, attempt.attempt)] = time.time()
        state.finished.move_to_end((attempt.run_id, attempt.attempt))

    def preempt(cmd: m.Preempt) -> None:
        if not state.preempting:
            alog.warning("preemption notice: stopping every run", reason=cmd.reason)
        state.preempting = True
        for attempt in list(state.running.values()):
            spawn(attempt.stop("preempted"))

    def handle(cmd: m.Assign | m.Cancel | m.Preempt) -> None:
        if isinstance(cmd, m.Preempt):
            preempt(cmd)
            return
        clog = alog.bind(run_id=cmd.run_id, attempt=cmd.attempt)
        key = (cmd.run_id, cmd.attempt)
        if isinstance(cmd, m.Assign):
            if cmd.incarnation != incarnation:
                clog.info("assignment for another incarnation ignored")
                return
            if state.preempting:
                clog.info("assignment ignored: this node is being preempted")
                return
            if key in state.seen or key in state.finished:
                return  # a resend
            previous = state.running.get(cmd.run_id)
            if previous is not None and previous.attempt > cmd.attempt:
                clog.info("assignment older than the attempt running ignored")
                return
            state.mark_seen(key)
            attempt = Attempt(deps, cmd)
            state.running[cmd.run_id] = attempt
            clog.info("attempt assigned", script=cmd.spec.script)
            attempt.start(previous)
            spawn(watch(attempt))
            return
        current = state.running.get(cmd.run_id)
        if current is None or current.attempt > cmd.attempt:
            return  # unknown run, or a newer attempt than the one to stop
        clog.info("cancel received", reason=cmd.reason)
        spawn(current.stop(cmd.reason))

    async def commands_loop() -> None:
        while True:
            data = await commands.get()
            cmd = read_command(data)
            if isinstance(cmd, str):
                state.bad_commands += 1
                if state.bad_commands <= MAX_BAD_COMMANDS_LOGGED:
                    alog.warning("bad command ignored", error=cmd[:300], size=len(data))
                continue
            handle(cmd)

    sub = await bus.nc.subscribe(subjects.agent_commands(config.agent_id), cb=on_command)

    async def on_heartbeat_now(_msg: Msg) -> None:
        spawn(send_heartbeat())

    hb_now = await bus.nc.subscribe(subjects.HEARTBEAT_NOW, cb=on_heartbeat_now)
    alog.info(
        "agent started",
        target=config.target,
        data_dir=str(data_dir),
        gpus=[d.index for d in devices],
        priority=config.priority,
        container_engine=state.container_engine,
    )
    loops = [
        asyncio.create_task(heartbeats()),
        asyncio.create_task(commands_loop()),
        asyncio.create_task(probe_engine_loop()),
        asyncio.create_task(fence()),
    ]
    if gpus.has_gpus:
        loops.append(asyncio.create_task(refresh_gpus()))
    if config.exit_with_parent is not None:
        loops.append(asyncio.create_task(watch_parent(config.exit_with_parent, stop, alog)))
    try:
        await stop.wait()
    finally:
        alog.info("agent stopping", running=len(state.running))
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
            await hb_now.unsubscribe()
        for task in loops:
            task.cancel()
        stopping = [a.stop("shutdown") for a in list(state.running.values())]
        if stopping:
            _done, pending = await asyncio.wait(
                [asyncio.create_task(s) for s in stopping],
                timeout=max(config.kill_grace_s, config.preempt_grace_s) + SHUTDOWN_LIMIT_S,
            )
            for t in pending:
                t.cancel()
        for task in list(background):
            task.cancel()
        await asyncio.gather(*loops, *background, return_exceptions=True)
        if watchdog is not None:
            await stop_watchdog(watchdog)
        await bus.close()
        alog.info("agent stopped")
