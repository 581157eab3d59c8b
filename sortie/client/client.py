"""The async client library: everything the CLI and the SDK do, done once.

Writes (submit, cancel) are requests to the scheduler; reads come straight from JetStream
(the runs KV bucket, the log and metric streams, the blob store).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from sortie.bus.blobs import BlobError, fetch_blob_to, missing_blobs
from sortie.bus.connection import Bus, open_bus
from sortie.bus.kv import kv_items
from sortie.bus.pause import retry_pause
from sortie.bus.profile import resolve_auth, resolve_url
from sortie.bus.renewal import from_scheduler, keep_renewed, renew_if_due
from sortie.bus.store_limits import (
    BLOBS_STREAM,
    FULL_PREFIX,
    describe_full,
    full_message,
    is_store_full,
    room_needed,
    store_uses,
)
from sortie.client.provenance import believed
from sortie.client.resubmit import resubmit_refusal, resubmit_spec
from sortie.proto import codec, notes, run_index, subjects
from sortie.proto import messages as m
from sortie.proto.leadership import Leadership
from sortie.proto.paths import check_relpath
from sortie.proto.queue import QueueReply, QueueReplyOrError, QueueRequest
from sortie.proto.states import TERMINAL

if TYPE_CHECKING:  # imported where used: a client that only reads runs loads neither
    from sortie.client import snapshot as snap
    from sortie.client.runconfig import ScriptRunConfig

T = TypeVar("T")
B = TypeVar("B", m.LogBatch, m.MetricBatch)

SUBMIT_RETRY_S = 30.0  # how long a submit is retried after timeouts (no answer)
NO_SCHEDULER_WAIT_S = 15.0  # ... and while no scheduler listens (one restarting)
NO_SCHEDULER_RETRY_S = 0.2  # how often meanwhile
# beyond a leader's lease, how long a request waits for a standby to take over and answer
TAKEOVER_GRACE_S = 10.0


class ClientError(RuntimeError):
    """An error to show the user as is (no traceback)."""


class NoScheduler(ClientError):
    """The broker answers but no scheduler listens (not started, or restarting)."""


class NotFound(ClientError):
    """No run (or other object) of that name."""


class StoreFullError(ClientError):
    """The Sortie store is full: the message says which part, how full, and what to do
    ("the Sortie store is full: run logs use 7.2 MB of 7.2 MB ...; free space with `sortie
    gc` or raise `sortie up --store-limit`"). Nothing was submitted."""


class RequestRefused(ClientError):
    def __init__(self, reply: m.ErrorReply) -> None:
        super().__init__(reply.message)
        self.code = reply.code


@dataclass(frozen=True)
class SnapshotSummary:
    id: str
    files: int
    bytes: int
    uploaded_files: int
    uploaded_bytes: int


@dataclass(frozen=True)
class Submission:
    run_id: str
    snapshot: SnapshotSummary
    warnings: list[str] = field(default_factory=list)


class Client:
    def __init__(self, bus: Bus, renewing: asyncio.Task[None] | None = None) -> None:
        self.bus = bus
        self._renewing = renewing

    @classmethod
    async def connect(
        cls,
        url: str | None = None,
        *,
        name: str = "sortie-client",
        creds: Path | None = None,
        tls_ca: Path | None = None,
        stay_connected: bool = False,
    ) -> Client:
        """Connect to ``url`` (else SORTIE_URL, else the profile's) with ``creds`` and
        ``tls_ca`` (else SORTIE_CREDS / SORTIE_TLS_CA, else the profile's for that URL).
        ``stay_connected``: once connected, reconnect however long the broker is away (a
        server such as the dashboard; a command gives up after a few tries)."""
        resolved = resolve_url(url)
        auth = resolve_auth(resolved, creds=creds, tls_ca=tls_ca)
        bus = await open_bus(resolved, name, auth=auth, stay_connected=stay_connected)
        # a long-lived client (--wait, logs --follow, a notebook) outlives short credentials:
        # they are renewed through the scheduler, like an agent's (bus.renewal)
        if auth.creds is None:
            return cls(bus)
        renew = from_scheduler(bus.nc)
        await renew_if_due(bus.nc, auth.creds, renew)
        return cls(bus, asyncio.create_task(keep_renewed(bus.nc, auth.creds, renew)))

    async def close(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
        await self.bus.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- requests to the scheduler -----------------------------------------------------------

    async def _request(
        self,
        subject: str,
        message: m.Message,
        reply_type: Any,
        timeout: float = 10.0,  # noqa: ASYNC109 - passed to nc.request, which raises nats' TimeoutError
    ) -> Any:
        data = codec.encode(message)
        waited_for: float | None = None  # a takeover's length, once one is seen under way
        start = time.monotonic()
        while True:
            try:
                msg = await self.bus.nc.request(subject, data, timeout=timeout)
                break
            except nats.errors.NoRespondersError:
                if waited_for is None:
                    waited_for = await self._takeover_wait()
                if time.monotonic() - start >= waited_for:
                    raise NoScheduler(
                        f"no scheduler is answering at {self.bus.url}: start one with `sortie "
                        "up` (or `sortie scheduler`)"
                    ) from None
                await retry_pause(NO_SCHEDULER_RETRY_S)
        try:
            reply = codec.decode(reply_type, msg.data)
        except codec.BadMessage as exc:
            raise ClientError(f"the scheduler's reply could not be read: {exc}") from None
        if isinstance(reply, m.ErrorReply):
            raise RequestRefused(reply)
        return reply

    async def _takeover_wait(self) -> float:
        """How long a request that finds no scheduler listening waits for one: while a lease
        names a leader that has not released it, a standby may be taking over (the lease's
        length and a grace to load); otherwise none (no scheduler: said at once)."""
        try:
            kv = await self.bus.js.key_value(subjects.KV_LEADERSHIP)
            entry = await kv.get(subjects.LEADER_KEY)
            lease = codec.decode(Leadership, entry.value or b"")
        except (nats.errors.Error, codec.BadMessage):
            return 0.0
        return 0.0 if lease.released else lease.lease_s + TAKEOVER_GRACE_S

    async def targets(self) -> list[m.TargetInfo]:
        reply = await self._request(subjects.API_TARGETS, m.TargetsRequest(), m.TargetsReplyOrError)
        return list(reply.targets)

    async def submit(
        self,
        config: ScriptRunConfig,
        *,
        experiment: str = "default",
        submission_id: str | None = None,
        tags: dict[str, str] | None = None,
        snapshot_limit_bytes: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        hash_progress: Callable[[int, int], None] | None = None,
        sweep: m.SweepSpec | None = None,
    ) -> Submission:
        """Snapshot the config's source directory, upload what the store lacks, and queue
        the run (with ``sweep``: a sweep whose trials run the config with their parameters
        appended to its arguments; the submission's run id is the sweep run's).

        Retries of a submit with the same ``submission_id`` land on one run; None: a fresh
        id for this call (its own retries, after a timeout or while no scheduler answers,
        still share it). ``hash_progress`` and ``progress`` are called with (bytes done, bytes
        in all) while the files are hashed and while the missing ones are uploaded.

        Raises ``RunConfigError`` for arguments or variables a process cannot receive (a NUL
        byte), ``SnapshotError`` when the source directory cannot be snapshotted (including a
        file deleted or changed between hashing and upload: the message names it), and
        ``RequestRefused`` when the scheduler refuses the run, and ``StoreFullError`` when
        the store is full (nothing is submitted).
        """
        from sortie.client import snapshot as snap
        from sortie.client.gitinfo import git_info
        from sortie.client.runconfig import Source, check_process_input, run_spec

        check_process_input(config)
        source_dir = Path(config.source_directory)
        plan = snap.build_manifest(
            source_dir, limit_bytes=snapshot_limit_bytes, progress=hash_progress
        )
        snap.check_script(plan, config.script)
        snapshot_id, _ = snap.encode_manifest(plan.manifest)
        source = Source(
            snapshot_id=snapshot_id,
            files=plan.files,
            bytes=plan.total_bytes,
            git=git_info(source_dir),
        )
        spec = run_spec(
            config,
            source,
            experiment=experiment,
            submission_id=submission_id or uuid.uuid4().hex,
        )
        if tags:
            spec = msgspec.structs.replace(spec, tags={str(k): str(v) for k, v in tags.items()})
        secrets = config.run_config.secret_environment_variables
        secret = m.SecretEnv(values=dict(secrets)) if secrets else None
        # Refuse a bad target or spec before sending a single byte of the snapshot.
        await self._submit_with_retries(
            m.SubmitRequest(spec=spec, validate_only=True, secret_env=secret, sweep=sweep)
        )
        uploaded, accepted = await self._upload_and_submit(plan, spec, secret, progress, sweep)
        return Submission(
            run_id=accepted.run_id,
            snapshot=SnapshotSummary(
                id=snapshot_id,
                files=plan.files,
                bytes=plan.total_bytes,
                uploaded_files=uploaded.uploaded_files,
                uploaded_bytes=uploaded.uploaded_bytes,
            ),
            warnings=list(plan.warnings),
        )

    async def check_request(self, request: m.SubmitRequest) -> None:
        """Send ``request`` as ``validate_only``: ``RequestRefused`` says what is wrong, and
        nothing is stored (what ``submit`` does before uploading a byte)."""
        await self._submit_with_retries(msgspec.structs.replace(request, validate_only=True))

    async def submit_request(self, request: m.SubmitRequest) -> m.SubmitAccepted:
        """Send a submit whose snapshots are uploaded (``upload_plan``): a pipeline's
        (``client/pipeline_submit.py``). Retried like ``submit``'s, by its submission id."""
        return await self._queue(request)

    async def upload_plan(self, plan: snap.SnapshotPlan) -> snap.UploadResult:
        """Upload what the store lacks of one snapshot (``StoreFullError`` when it is full)."""
        return await self._upload(plan, None)

    async def _queue(self, request: m.SubmitRequest) -> m.SubmitAccepted:
        """The submit that queues the run; ``StoreFullError`` when the scheduler could not
        store it."""
        try:
            accepted: m.SubmitAccepted = await self._submit_with_retries(request)
        except RequestRefused as exc:
            if str(exc).startswith(FULL_PREFIX):
                raise StoreFullError(str(exc)) from None
            raise
        return accepted

    async def _upload(
        self,
        plan: snap.SnapshotPlan,
        progress: Callable[[int, int], None] | None,
        *,
        every_file: bool = False,
    ) -> snap.UploadResult:
        """Upload the snapshot unless the store is full (then ``StoreFullError``): a run
        whose logs and outputs cannot be stored would only end Failed (disk_full)."""
        js = self.bus.js
        with contextlib.suppress(nats.errors.Error, TimeoutError):  # the upload will tell
            await self._check_room(plan)
        from sortie.client import snapshot as snap

        try:
            return await snap.upload_snapshot(
                self.bus, plan, progress=progress, every_file=every_file
            )
        except (nats.errors.Error, TimeoutError) as exc:
            # a refused object times out cleaning up after itself (a client may not purge):
            # what the store holds now says whether it was full
            if is_store_full(exc) or await _blobs_full(js):
                raise StoreFullError(await describe_full(js, refusal=exc)) from None
            raise

    async def _check_room(self, plan: snap.SnapshotPlan) -> None:
        """Refuse a submit to a full store, or one whose new blobs the blob store has no room
        for (a refused upload would leave the chunks sent before the refusal behind)."""
        uses = await store_uses(self.bus.js)
        if any(u.full for u in uses):
            raise StoreFullError(full_message(uses))
        blobs = next(u for u in uses if u.stream == BLOBS_STREAM)
        if blobs.limit <= 0 or blobs.limit - blobs.used >= room_needed(plan.total_bytes):
            return  # room for all of it: no need to ask which blobs are missing
        sizes = {e.sha256: e.size for e in plan.manifest.files}
        need = sum(sizes[sha] for sha in await missing_blobs(self.bus.blobs, list(plan.blobs)))
        if blobs.limit - blobs.used < room_needed(need):
            raise StoreFullError(full_message(uses, blob=("the snapshot", need)))

    async def _upload_and_submit(
        self,
        plan: snap.SnapshotPlan,
        spec: m.RunSpec,
        secret: m.SecretEnv | None,
        progress: Callable[[int, int], None] | None,
        sweep: m.SweepSpec | None = None,
    ) -> tuple[snap.UploadResult, m.SubmitAccepted]:
        """Upload what the store lacks and submit. Once more if the scheduler finds a file
        missing: the manifest was in the store without all its files (another uploader stored
        it), so every file is checked and sent."""
        every_file = False
        while True:
            uploaded = await self._upload(plan, progress, every_file=every_file)
            request = m.SubmitRequest(
                spec=spec, secret_env=secret, uploaded_bytes=uploaded.uploaded_bytes, sweep=sweep
            )
            try:
                accepted = await self._queue(request)
            except RequestRefused as exc:
                if exc.code != "snapshot_missing" or every_file:
                    raise
                every_file = True
                continue
            return uploaded, accepted

    async def _submit_with_retries(self, request: m.SubmitRequest) -> Any:
        """Send the submit until the scheduler answers: for up to ``SUBMIT_RETRY_S`` after
        timeouts, ``NO_SCHEDULER_WAIT_S`` while no scheduler listens.

        The scheduler may be restarting (no responders) or may have stored the run and died
        before replying (timeout): the same ``submission_id`` makes every retry land on the
        one run, so retrying is safe.
        """
        start = time.monotonic()
        delay = 0.2
        while True:
            try:
                return await self._request(subjects.API_SUBMIT, request, m.SubmitReply)
            except (TimeoutError, nats.errors.TimeoutError, NoScheduler) as exc:
                waited = time.monotonic() + delay - start
                none_listens = isinstance(exc, NoScheduler)
                if none_listens:
                    if waited > NO_SCHEDULER_WAIT_S:
                        raise
                elif waited > SUBMIT_RETRY_S:
                    raise ClientError(
                        f"the scheduler at {self.bus.url} did not answer the submit within "
                        f"{SUBMIT_RETRY_S:.0f}s; submit again with --submission-id "
                        f"{request.spec.submission_id} to be sure it lands on one run"
                    ) from None
            await retry_pause(delay)
            # while none listens (a scheduler restarting, a standby taking over) asking is
            # cheap and the answer comes the moment one does: ask often
            delay = NO_SCHEDULER_RETRY_S if none_listens else min(delay * 2, 2.0)

    async def compute(self, request: m.Message) -> Any:
        """One compute request (create, update, delete, show, list, sizes)."""
        return await self._request(subjects.API_COMPUTE, request, m.ComputeReplyOrError)

    async def host_key(self, request: m.HostKeyScan) -> m.HostKeyReply:
        """The host key a machine's SSH server offers, as the scheduler sees it (for a
        person to confirm before an attach pins it)."""
        reply: m.HostKeyReply = await self._request(
            subjects.API_HOST_KEY, request, m.HostKeyReplyOrError
        )
        return reply

    async def agents(self, request: m.Message) -> Any:
        """One agent request (list, cordon, uncordon, drain, preempt)."""
        return await self._request(subjects.API_AGENTS, request, m.AgentReplyOrError)

    async def why(self, run_id: str) -> m.WhyReply:
        reply: m.WhyReply = await self._request(
            subjects.API_WHY, m.WhyRequest(run_id=run_id), m.WhyReplyOrError
        )
        return reply

    async def queue(self, limit: int = 100, target: str | None = None) -> QueueReply:
        """The queued runs in placement order (the first ``limit``), each with its position
        and why it waits."""
        reply: QueueReply = await self._request(
            subjects.API_QUEUE, QueueRequest(limit=limit, target=target), QueueReplyOrError
        )
        return reply

    async def resubmit(self, run_id: str) -> str:
        """Submit a stored run again (same snapshot and configuration, nothing uploaded);
        the new run's id. ``ClientError`` when its record alone cannot (``resubmit.py``)."""
        rec = await self.get_run(run_id)
        if (why := resubmit_refusal(rec)) is not None:
            raise ClientError(why)
        request = m.SubmitRequest(spec=resubmit_spec(rec, uuid.uuid4().hex))
        return (await self._queue(request)).run_id

    async def cancel(self, run_id: str) -> m.CancelAccepted:
        reply: m.CancelAccepted = await self._request(
            subjects.API_CANCEL, m.CancelRequest(run_id=run_id), m.CancelReply
        )
        return reply

    # --- reads -------------------------------------------------------------------------------

    async def get_run(self, run_id: str) -> m.RunRecord:
        try:
            subjects.check_token("run id", run_id)
            entry = await self.bus.runs.get(run_id)
        except ValueError as exc:
            raise ClientError(str(exc)) from None
        except nats.js.errors.KeyNotFoundError:
            raise NotFound(f"no run {run_id!r}: `sortie run list` shows the runs") from None
        try:
            return codec.decode(m.RunRecord, entry.value or b"")
        except codec.BadMessage as exc:
            raise ClientError(f"run {run_id}'s stored record could not be read: {exc}") from None

    async def list_runs(self, experiment: str | None = None) -> list[m.RunRecord]:
        """All runs (of one experiment), newest first. One experiment's are found through the
        scheduler's run index; every run (or any without a scheduler) by one read of the
        whole bucket."""
        if experiment is not None:
            with contextlib.suppress(NoScheduler):
                query = run_index.RunQuery(experiment=experiment, limit=run_index.MAX_LIMIT)
                return await self.query_all_runs(query)
        out: list[m.RunRecord] = []
        for entry in await kv_items(self.bus.runs):
            try:
                rec = codec.decode(m.RunRecord, entry.value or b"")
            except codec.BadMessage:
                continue
            if experiment is None or rec.spec.experiment == experiment:
                out.append(rec)
        out.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return out

    async def schedulers(self) -> list[tuple[str, Leadership]]:
        """The schedulers' leader lease and standbys' presence as stored: (key, record) each
        (none where no scheduler with leadership ever ran on this broker)."""
        try:
            kv = await self.bus.js.key_value(subjects.KV_LEADERSHIP)
        except nats.js.errors.BucketNotFoundError:
            return []
        out = []
        for entry in await kv_items(kv):
            with contextlib.suppress(codec.BadMessage):
                out.append((entry.key, codec.decode(Leadership, entry.value or b"")))
        return out

    async def query_runs(
        self, query: run_index.RunQuery
    ) -> tuple[list[m.RunRecord], run_index.RunPage]:
        """One page of runs from the scheduler's run index (no full read of the runs bucket):
        the page's records, got by key at once, newest first; a run deleted meanwhile is left
        out. Raises ``NoScheduler`` when no scheduler answers."""
        page: run_index.RunPage = await self._request(
            subjects.API_RUNS_QUERY, query, run_index.RunPageOrError
        )
        return await self.runs_by_id(page.run_ids), page

    async def query_all_runs(
        self, query: run_index.RunQuery, most: int | None = None
    ) -> list[m.RunRecord]:
        """The newest ``most`` runs (None: all) ``query`` keeps, page after page (pages of
        ``query.limit``)."""
        found: list[m.RunRecord] = []
        while True:
            records, page = await self.query_runs(query)
            found += records
            if page.older is None or (most is not None and len(found) >= most):
                return found[:most] if most is not None else found
            query = msgspec.structs.replace(query, before=page.older)

    async def runs_by_id(self, run_ids: list[str]) -> list[m.RunRecord]:
        """These runs' records, in this order; one that is gone or unreadable is left out."""

        async def one(run_id: str) -> m.RunRecord | None:
            try:
                entry = await self.bus.runs.get(run_id)
                return codec.decode(m.RunRecord, entry.value or b"")
            except (nats.js.errors.KeyNotFoundError, codec.BadMessage):
                return None

        found = await asyncio.gather(*(one(r) for r in run_ids))
        return [r for r in found if r is not None]

    async def experiments(self, query: run_index.ExperimentsQuery) -> run_index.ExperimentList:
        """Every experiment with its run counts, latest run and best value of a metric."""
        reply: run_index.ExperimentList = await self._request(
            subjects.API_EXPERIMENTS, query, run_index.ExperimentListOrError
        )
        return reply

    async def wait(
        self, run_id: str, on_record: Callable[[m.RunRecord], None] | None = None
    ) -> m.RunRecord:
        """Block until the run reaches a terminal state (watches its record; no polling).
        ``on_record`` sees each version of the record read on the way."""
        rec = await self.get_run(run_id)
        if on_record is not None:
            on_record(rec)
        if rec.state in TERMINAL:
            return rec
        watcher = await self.bus.runs.watch(run_id)
        try:
            while True:
                try:
                    entry = await watcher.updates(timeout=3600)  # type: ignore[no-untyped-call]  # nats-py leaves KeyWatcher unannotated
                except nats.errors.TimeoutError:
                    continue
                if entry is None or entry.value is None:
                    continue
                try:
                    rec = codec.decode(m.RunRecord, entry.value)
                except codec.BadMessage:
                    continue  # only the scheduler writes records; a later one will do
                if on_record is not None:
                    on_record(rec)
                if rec.state in TERMINAL:
                    return rec
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves KeyWatcher unannotated

    async def _last_seq(self, stream: str, filters: list[str]) -> int | None:
        """The stream sequence of the last message on any of ``filters``; ``None``: none."""
        seqs: list[int] = []
        for subject in filters:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                last = await self.bus.js.get_last_msg(stream, subject)
                seqs.append(last.seq or 0)
        return max(seqs) if seqs else None

    async def _subject_messages(
        self, stream: str, filters: list[str], *, follow: bool, after: int = 0
    ) -> AsyncGenerator[Msg, None]:
        """Every message on ``filters`` from the first (after stream sequence ``after``);
        ``follow`` keeps waiting for more."""
        last_seq: int | None = None
        if not follow:
            last_seq = await self._last_seq(stream, filters)
            if last_seq is None or last_seq <= after:
                return
        config = ConsumerConfig(filter_subjects=filters)
        if after > 0:
            config.opt_start_seq = after + 1
        sub = await self.bus.js.subscribe(
            "",
            stream=stream,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after > 0 else DeliverPolicy.ALL,
            config=config,
        )
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                yield msg
                if last_seq is not None and msg.metadata.sequence.stream >= last_seq:
                    return
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _believed(
        self, kind: type[B], run_id: str, *, follow: bool
    ) -> AsyncGenerator[B, None]:
        """A run's log or metric batches from the first, those its attempts' holders wrote
        only (``provenance.believed``); the one reader behind ``logs`` and ``metrics``."""
        batches = self.batches(kind, run_id, follow=follow)
        async with contextlib.aclosing(batches):
            async for _, batch in batches:
                yield batch

    async def batches(
        self, kind: type[B], run_id: str, *, follow: bool, after: int = 0
    ) -> AsyncGenerator[tuple[int, B], None]:
        """(stream sequence, batch) of a run's log (``m.LogBatch``) or metric
        (``m.MetricBatch``) batches after sequence ``after``, those its attempts' holders
        wrote only (``provenance.believed``): a follower that reconnects resumes after the
        last sequence it saw (the dashboard's live logs and charts)."""
        subjects.check_token("run id", run_id)
        is_logs = kind is m.LogBatch
        stream = subjects.STREAM_LOGS if is_logs else subjects.STREAM_METRICS
        filters = (
            [subjects.run_logs(run_id), subjects.legacy_logs(run_id)]
            if is_logs
            else [subjects.run_metrics(run_id), subjects.legacy_metrics(run_id)]
        )
        rec = await self.get_run(run_id)
        messages = self._subject_messages(stream, filters, follow=follow, after=after)
        async with contextlib.aclosing(messages):
            async for msg in messages:
                try:
                    batch = codec.decode(kind, msg.data)
                except codec.BadMessage:
                    continue
                writer = subjects.writer_of(msg.subject)
                batch_rank = batch.rank if isinstance(batch, m.LogBatch) else None
                if not believed(rec, writer, batch.attempt, batch_rank):
                    rec = await self.get_run(run_id)  # it may name a newer attempt's holder
                    if not believed(rec, writer, batch.attempt, batch_rank):
                        continue
                yield msg.metadata.sequence.stream, batch

    async def logs(
        self, run_id: str, *, follow: bool = False, rank: int | None = None
    ) -> AsyncIterator[tuple[int, m.LogLine]]:
        """(rank, line) of the run's output from the first line; with ``follow``, until the
        run has ended. ``rank`` keeps only that node's lines (multi-node runs)."""
        batches = self._believed(m.LogBatch, run_id, follow=follow)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                if rank is None or batch.rank == rank:
                    for line in batch.lines:
                        yield batch.rank, line
                if batch.eof:
                    return

    async def metric_points(self, run_id: str) -> list[m.MetricPoint]:
        """Every point the run logged, in order. A child run's points are on its parent's
        subjects, marked with its id (``MetricPoint.run``)."""
        source, mine = metric_source(await self.get_run(run_id))
        out: list[m.MetricPoint] = []
        batches = self._believed(m.MetricBatch, source, follow=False)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                out.extend(p for p in batch.points if p.run == mine)
        return out

    async def metrics(self, run_id: str) -> dict[str, list[m.MetricValue]]:
        """name -> values of the run's plain metrics (table cells: ``metric_points``)."""
        out: dict[str, list[m.MetricValue]] = {}
        for p in await self.metric_points(run_id):
            if p.column is None:
                out.setdefault(p.name, []).append(p.value)
        return out

    async def tag_run(
        self, run_id: str, tags: dict[str, str], properties: dict[str, str] | None = None
    ) -> m.RunRecord:
        """Set tags and add properties of a run (the scheduler writes its record)."""
        request = notes.RunTagRequest(run_id=run_id, tags=tags, properties=properties or {})
        reply: notes.RunTagged = await self._request(
            subjects.API_RUN_TAG, request, notes.RunTagReply
        )
        return reply.record

    async def children(self, run_id: str) -> list[m.RunRecord]:
        """The run's child runs, oldest first (from the scheduler's run index; without a
        scheduler, from a read of every record)."""
        try:
            query = run_index.RunQuery(parent_id=run_id, limit=run_index.MAX_LIMIT)
            kids = await self.query_all_runs(query)
        except NoScheduler:
            kids = [r for r in await self.list_runs() if r.parent_id == run_id]
        return sorted(kids, key=lambda r: (r.created_at, r.run_id))

    async def download(
        self,
        run_id: str,
        dest: Path,
        *,
        prefix: str = "",
        place: Callable[[str], str | None] | None = None,
    ) -> list[Path]:
        """Fetch the run's artifacts (optionally only those under ``prefix``) into ``dest``.
        ``place`` says where an artifact goes under ``dest`` (None: leave it out); by default
        at its own path."""
        rec = await self.get_run(run_id)
        dest = Path(dest)
        written: list[Path] = []
        root = dest.resolve()
        for art in rec.artifacts:
            if prefix and not art.path.startswith(prefix):
                continue
            rel = art.path if place is None else place(art.path)
            if rel is None:
                continue
            if (why := check_relpath(rel)) is not None:
                raise ClientError(f"artifact path refused: {why}")
            target = (dest / rel).resolve()
            if not target.is_relative_to(root):
                raise ClientError(f"artifact path {rel!r} leaves {dest}")
            try:
                await fetch_blob_to(self.bus.blobs, art.sha256, target)
            except BlobError as exc:
                raise ClientError(
                    f"artifact {art.path} of run {run_id} cannot be downloaded: {exc}. Nothing "
                    f"was written for it; run {run_id} again to produce it anew, or ask the "
                    "operator to check the broker's store"
                ) from None
            written.append(target)
        return written


def metric_source(rec: m.RunRecord) -> tuple[str, str | None]:
    """Where a run's metric points are: (the run whose subjects hold them, the
    ``MetricPoint.run`` that marks its points there). A child run logged from its parent's
    process (``Run.child_run``) is on its parent's subjects, marked with its id; a sweep's
    trial and a pipeline's step are runs of their own, placed and run alone, so on their own
    subjects."""
    if rec.parent_id is None or rec.trial is not None or rec.step is not None:
        return rec.run_id, None
    return rec.parent_id, rec.run_id


async def _blobs_full(js: JetStreamContext) -> bool:
    with contextlib.suppress(nats.errors.Error, TimeoutError):
        return any(u.full for u in await store_uses(js) if u.stream == BLOBS_STREAM)
    return False


def echo_line(line: m.LogLine, rank: int | None = None) -> None:
    """Print one line of a run's output as people see it: stderr to stderr, Sortie's own
    lines marked ``[sortie]``, and (for multi-node runs) each line's rank."""
    out = sys.stderr if line.stream == "stderr" else sys.stdout
    prefix = f"[rank {rank}] " if rank is not None else ""
    prefix += "[sortie] " if line.stream == "system" else ""
    print(f"{prefix}{line.text}", file=out, flush=True)
