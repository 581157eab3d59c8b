"""The scheduler daemon: a thin shell around core.py.

Adapters turn bus messages and timer ticks into events on one queue. The loop takes a batch
of events, lets core.py decide, writes every run the batch changed (one compare-and-set per
run per batch, never a full-state rewrite), then carries out the commands: assignments and
cancels to agents, replies to clients, end-of-log markers. Agent reports arrive through a
durable JetStream consumer and are acknowledged only after their effect is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from proto import codec, subjects
from proto import messages as m
from proto.states import TERMINAL
from scheduler import core
from scheduler.model import AgentView, SchedulerState
from scheduler.reconcile import Timing
from sortie.bus import Bus, has_blob, kv_items, open_bus

log = structlog.get_logger("sortie.scheduler")

Ack = Callable[[], Awaitable[None]]
TRANSIENT = (
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    asyncio.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
    OSError,
)


@dataclass(frozen=True)
class SchedulerConfig:
    url: str
    timing: Timing = field(default_factory=Timing)
    tick_s: float = 1.0
    max_batch: int = 2000
    write_concurrency: int = 256


def new_run_id(experiment: str, now: float) -> str:
    """``<experiment>_<unix seconds>_<8 hex>``: sortable by time, unique, subject-safe."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "", experiment)[:40] or "run"
    return f"{stem}_{int(now)}_{secrets.token_hex(4)}"


class Daemon:
    def __init__(self, bus: Bus, config: SchedulerConfig) -> None:
        self.bus = bus
        self.config = config
        self.core_config = core.Config(timing=config.timing)
        self.state = SchedulerState()
        self.revisions: dict[str, int] = {}
        self.queue: asyncio.Queue[tuple[core.Event, Ack | None]] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []
        self.subs: list[object] = []
        self._bad_subjects: set[str] = set()

    # --- startup -------------------------------------------------------------------------

    async def load(self) -> None:
        """Rebuild state from the store: every unfinished run, every known agent."""
        t0 = time.monotonic()
        now = time.time()
        self.state.started_at = now
        runs = 0
        for entry in await kv_items(self.bus.runs):
            try:
                rec = codec.decode(m.RunRecord, entry.value or b"")
            except codec.BadMessage as exc:
                log.warning("unreadable run record skipped", key=entry.key, error=str(exc))
                continue
            runs += 1
            if rec.spec.submission_id is not None:
                self.state.submissions[rec.spec.submission_id] = rec.run_id
            if rec.state in TERMINAL:
                continue
            self.state.runs[rec.run_id] = rec
            self.revisions[rec.run_id] = entry.revision or 0
        for entry in await kv_items(self.bus.agents):
            try:
                a = codec.decode(m.AgentRecord, entry.value or b"")
            except codec.BadMessage:
                continue
            if a.state == "lost":
                continue
            self.state.agents[a.agent_id] = AgentView(
                agent_id=a.agent_id,
                incarnation=a.incarnation,
                target=a.target,
                hostname=a.hostname,
                capacity=a.capacity,
                first_seen=a.first_seen,
                last_seen=now,
                confirmed=False,
            )
        log.info(
            "state loaded",
            runs=runs,
            active=len(self.state.runs),
            agents=len(self.state.agents),
            seconds=round(time.monotonic() - t0, 3),
        )

    async def start(self) -> None:
        nc = self.bus.nc
        self.subs.append(
            await nc.subscribe(subjects.API_ALL, queue=subjects.SCHEDULER_QUEUE, cb=self._on_api)
        )
        self.subs.append(await nc.subscribe(subjects.HEARTBEATS_ALL, cb=self._on_heartbeat))
        self.tasks.append(asyncio.create_task(self._reports()))
        self.tasks.append(asyncio.create_task(self._ticks()))

    # --- adapters: bus -> events -----------------------------------------------------------

    def _enqueue(self, event: core.Event, ack: Ack | None = None) -> None:
        self.queue.put_nowait((event, ack))

    async def _reply(self, msg: Msg, message: m.Message) -> None:
        if msg.reply:
            await self.bus.nc.publish(msg.reply, codec.encode(message))

    async def _on_api(self, msg: Msg) -> None:
        try:
            if msg.subject == subjects.API_SUBMIT:
                req = codec.decode(m.SubmitRequest, msg.data)
                if not req.validate_only and not await has_blob(
                    self.bus.blobs, req.spec.snapshot_id
                ):
                    await self._reply(
                        msg,
                        m.ErrorReply(
                            code="snapshot_missing",
                            message=(
                                f"snapshot {req.spec.snapshot_id[:12]} is not in the store: "
                                "upload the manifest and its files before submitting"
                            ),
                        ),
                    )
                    return
                run_id = new_run_id(req.spec.experiment, time.time())
                self._enqueue(core.Submitted(request=req, run_id=run_id, reply_to=msg.reply))
            elif msg.subject == subjects.API_CANCEL:
                creq = codec.decode(m.CancelRequest, msg.data)
                if creq.run_id in self.state.runs:
                    self._enqueue(core.CancelAsked(run_id=creq.run_id, reply_to=msg.reply))
                else:
                    await self._reply(msg, await self._cancel_unknown(creq.run_id))
            elif msg.subject == subjects.API_TARGETS:
                codec.decode(m.TargetsRequest, msg.data)
                self._enqueue(core.TargetsAsked(reply_to=msg.reply))
            else:
                await self._reply(
                    msg,
                    m.ErrorReply(code="bad_request", message=f"unknown API subject {msg.subject}"),
                )
        except codec.BadMessage as exc:
            self._note_bad(msg.subject, str(exc))
            await self._reply(msg, m.ErrorReply(code="bad_request", message=str(exc)))
        except TRANSIENT as exc:
            log.warning("api request failed", subject=msg.subject, error=repr(exc))
            await self._reply(
                msg, m.ErrorReply(code="internal", message=f"scheduler could not answer: {exc!r}")
            )

    async def _cancel_unknown(self, run_id: str) -> m.ErrorReply:
        try:
            subjects.check_token("run id", run_id)
            entry = await self.bus.runs.get(run_id)
        except ValueError as exc:
            return m.ErrorReply(code="bad_request", message=str(exc))
        except nats.js.errors.KeyNotFoundError:
            return m.ErrorReply(code="not_found", message=f"no run {run_id!r}")
        rec = codec.decode(m.RunRecord, entry.value or b"")
        return m.ErrorReply(
            code="invalid_state", message=f"run {run_id} already ended: {rec.state}"
        )

    def _note_bad(self, subject: str, why: str) -> None:
        """Log an undecodable message once per subject (a flood must not flood the log)."""
        if subject not in self._bad_subjects and len(self._bad_subjects) < 10_000:
            self._bad_subjects.add(subject)
            log.warning("undecodable message ignored", subject=subject, error=why[:300])

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            hb = codec.decode(m.Heartbeat, msg.data)
            if subjects.heartbeat(hb.agent_id) != msg.subject:
                raise codec.BadMessage(f"heartbeat for {hb.agent_id} on {msg.subject}")
        except (codec.BadMessage, ValueError) as exc:
            self._note_bad(msg.subject, str(exc))
            return
        self._enqueue(core.HeartbeatSeen(heartbeat=hb))

    async def _reports(self) -> None:
        js = self.bus.js
        psub = await js.pull_subscribe(
            subjects.REPORTS_ALL,
            durable=subjects.REPORTS_CONSUMER,
            stream=subjects.STREAM_REPORTS,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=30,
                max_ack_pending=10_000,
            ),
        )
        self.subs.append(psub)
        while True:
            try:
                msgs = await psub.fetch(batch=500, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except TRANSIENT as exc:
                log.warning("report fetch failed; retrying", error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                try:
                    rep = codec.decode(m.RunReport, msg.data)
                    if subjects.report(rep.agent_id) != msg.subject:
                        raise codec.BadMessage(f"report from {rep.agent_id} on {msg.subject}")
                except (codec.BadMessage, ValueError) as exc:
                    self._note_bad(msg.subject, str(exc))
                    await msg.ack()
                    continue
                self._enqueue(core.ReportSeen(report=rep), msg.ack)

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_s)
            if self.queue.empty():
                self._enqueue(core.Tick())

    # --- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        stopper = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                getter = asyncio.create_task(self.queue.get())
                done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                batch = [getter.result()]
                while len(batch) < self.config.max_batch and not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                await self.cycle(batch)
        finally:
            stopper.cancel()

    async def cycle(self, batch: list[tuple[core.Event, Ack | None]]) -> None:
        now = time.time()
        cmds: list[core.Command] = []
        for event, _ in batch:
            cmds.extend(core.handle(self.state, event, now, self.core_config))
        cmds.extend(core.decide(self.state, now, self.core_config))
        failed = await self._persist()
        await self._execute(cmds, failed)
        for _, ack in batch:
            if ack is not None:
                with contextlib.suppress(*TRANSIENT):
                    await ack()

    async def _persist(self) -> set[str]:
        """Write every changed run (compare-and-set) and agent. Returns runs that conflicted."""
        dirty, self.state.dirty_runs = self.state.dirty_runs, set()
        failed: set[str] = set()
        sem = asyncio.Semaphore(self.config.write_concurrency)

        async def write(run_id: str) -> None:
            rec = self.state.runs[run_id]
            data = codec.encode(rec)
            async with sem:
                while True:
                    try:
                        rev = self.revisions.get(run_id)
                        if rev is None:
                            new = await self.bus.runs.create(run_id, data)
                        else:
                            new = await self.bus.runs.update(run_id, data, last=rev)
                        break
                    except nats.js.errors.KeyWrongLastSequenceError:
                        failed.add(run_id)
                        await self._reload(run_id)
                        return
                    except TRANSIENT as exc:
                        log.warning("store write failed; retrying", run_id=run_id, error=repr(exc))
                        await asyncio.sleep(0.5)
            self.revisions[run_id] = new
            if rec.state in TERMINAL:
                core.forget_finished(self.state, run_id)
                self.revisions.pop(run_id, None)

        await asyncio.gather(*(write(r) for r in sorted(dirty)))
        agents, self.state.dirty_agents = self.state.dirty_agents, set()
        for agent_id in sorted(agents):
            view = self.state.agents.get(agent_id)
            if view is None:
                continue
            while True:
                try:
                    await self.bus.agents.put(agent_id, codec.encode(view.record()))
                    break
                except TRANSIENT as exc:
                    log.warning("agent write failed; retrying", agent_id=agent_id, error=repr(exc))
                    await asyncio.sleep(0.5)
        return failed

    async def _reload(self, run_id: str) -> None:
        """Another writer changed this run: take the stored record as the truth."""
        log.warning("run changed by another writer; reloading", run_id=run_id)
        entry = await self.bus.runs.get(run_id)
        rec = codec.decode(m.RunRecord, entry.value or b"")
        if rec.state in TERMINAL:
            self.state.runs.pop(run_id, None)
            self.revisions.pop(run_id, None)
        else:
            self.state.runs[run_id] = rec
            self.revisions[run_id] = entry.revision or 0

    async def _execute(self, cmds: list[core.Command], failed: set[str]) -> None:
        nc = self.bus.nc
        for cmd in cmds:
            if isinstance(cmd, core.Log):
                log.info(cmd.event, **cmd.fields)
                continue
            run_id = cmd.run_id
            if run_id is not None and run_id in failed:
                if isinstance(cmd, core.Reply) and cmd.reply_to:
                    await nc.publish(
                        cmd.reply_to,
                        codec.error("conflict", f"run {run_id} was changed concurrently; retry"),
                    )
                continue
            try:
                if isinstance(cmd, core.SendToAgent):
                    await nc.publish(
                        subjects.agent_commands(cmd.agent_id), codec.encode(cmd.command)
                    )
                elif isinstance(cmd, core.Reply):
                    if cmd.reply_to:
                        await nc.publish(cmd.reply_to, codec.encode(cmd.message))
                elif isinstance(cmd, core.PublishEof):
                    await self._publish_eof(cmd)
            except TRANSIENT as exc:
                # Commands are re-derived by reconciliation (resend, stale stop); a lost reply
                # is retried by the client. Nothing here is the only copy of a decision.
                log.warning("command not delivered", command=type(cmd).__name__, error=repr(exc))

    async def _publish_eof(self, cmd: core.PublishEof) -> None:
        data = codec.encode(m.LogBatch(run_id=cmd.run_id, attempt=cmd.attempt, eof=True))
        for delay in (0.1, 0.3, 1.0, 2.0, 5.0):
            try:
                await self.bus.js.publish(subjects.logs(cmd.run_id), data)
                return
            except TRANSIENT:
                await asyncio.sleep(delay)
        log.warning("end-of-log marker not published", run_id=cmd.run_id)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for sub in self.subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()  # type: ignore[attr-defined]
        await self.bus.close()


async def run_scheduler(
    config: SchedulerConfig, stop: asyncio.Event, ready: asyncio.Event | None = None
) -> None:
    """Run the scheduler until ``stop`` is set."""
    bus = await open_bus(config.url, "sortie-scheduler", create=True, reconnect_forever=True)
    daemon = Daemon(bus, config)
    try:
        await daemon.load()
        await daemon.start()
        log.info("scheduler ready", url=config.url)
        if ready is not None:
            ready.set()
        await daemon.run(stop)
    finally:
        await daemon.close()
