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
from typing import Any, TypeVar

import nats.errors
import nats.js.errors
from nats.js.api import DeliverPolicy

from sortie.bus.blobs import BlobError, fetch_blob_to
from sortie.bus.connection import Bus, open_bus
from sortie.bus.kv import kv_items
from sortie.bus.profile import resolve_auth, resolve_url
from sortie.client import snapshot as snap
from sortie.client.gitinfo import git_info
from sortie.client.runconfig import ScriptRunConfig, Source, check_process_input, run_spec
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.paths import check_relpath
from sortie.proto.states import TERMINAL

T = TypeVar("T")

SUBMIT_RETRY_S = 30.0  # how long a submit is retried after timeouts (no answer)
NO_SCHEDULER_WAIT_S = 15.0  # ... and while no scheduler listens (one restarting)


class ClientError(RuntimeError):
    """An error to show the user as is (no traceback)."""


class NoScheduler(ClientError):
    """The broker answers but no scheduler listens (not started, or restarting)."""


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
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    @classmethod
    async def connect(
        cls,
        url: str | None = None,
        *,
        name: str = "sortie-client",
        creds: Path | None = None,
        tls_ca: Path | None = None,
    ) -> Client:
        """Connect to ``url`` (else SORTIE_URL, else the profile's) with ``creds`` and
        ``tls_ca`` (else SORTIE_CREDS / SORTIE_TLS_CA, else the profile's for that URL)."""
        resolved = resolve_url(url)
        auth = resolve_auth(resolved, creds=creds, tls_ca=tls_ca)
        return cls(await open_bus(resolved, name, auth=auth))

    async def close(self) -> None:
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
        try:
            msg = await self.bus.nc.request(subject, codec.encode(message), timeout=timeout)
        except nats.errors.NoRespondersError:
            raise NoScheduler(
                f"no scheduler is answering at {self.bus.url}: start one with `sortie up` "
                "(or `sortie scheduler`)"
            ) from None
        try:
            reply = codec.decode(reply_type, msg.data)
        except codec.BadMessage as exc:
            raise ClientError(f"the scheduler's reply could not be read: {exc}") from None
        if isinstance(reply, m.ErrorReply):
            raise RequestRefused(reply)
        return reply

    async def targets(self) -> list[m.TargetInfo]:
        reply = await self._request(subjects.API_TARGETS, m.TargetsRequest(), m.TargetsReplyOrError)
        return list(reply.targets)

    async def submit(
        self,
        config: ScriptRunConfig,
        *,
        experiment: str = "default",
        submission_id: str | None = None,
        snapshot_limit_bytes: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        hash_progress: Callable[[int, int], None] | None = None,
    ) -> Submission:
        """Snapshot the config's source directory, upload what the store lacks, and queue
        the run.

        Retries of a submit with the same ``submission_id`` land on one run; None: a fresh
        id for this call (its own retries, after a timeout or while no scheduler answers,
        still share it). ``hash_progress`` and ``progress`` are called with (bytes done, bytes
        in all) while the files are hashed and while the missing ones are uploaded.

        Raises ``RunConfigError`` for arguments or variables a process cannot receive (a NUL
        byte), ``SnapshotError`` when the source directory cannot be snapshotted (including a
        file deleted or changed between hashing and upload: the message names it), and
        ``RequestRefused`` when the scheduler refuses the run.
        """
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
        secrets = config.run_config.secret_environment_variables
        secret = m.SecretEnv(values=dict(secrets)) if secrets else None
        # Refuse a bad target or spec before sending a single byte of the snapshot.
        await self._submit_with_retries(
            m.SubmitRequest(spec=spec, validate_only=True, secret_env=secret)
        )
        uploaded, accepted = await self._upload_and_submit(plan, spec, secret, progress)
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

    async def _upload_and_submit(
        self,
        plan: snap.SnapshotPlan,
        spec: m.RunSpec,
        secret: m.SecretEnv | None,
        progress: Callable[[int, int], None] | None,
    ) -> tuple[snap.UploadResult, m.SubmitAccepted]:
        """Upload what the store lacks and submit. Once more if the scheduler finds a file
        missing: the manifest was in the store without all its files (another uploader stored
        it), so every file is checked and sent."""
        every_file = False
        while True:
            uploaded = await snap.upload_snapshot(
                self.bus, plan, progress=progress, every_file=every_file
            )
            request = m.SubmitRequest(
                spec=spec, secret_env=secret, uploaded_bytes=uploaded.uploaded_bytes
            )
            try:
                accepted: m.SubmitAccepted = await self._submit_with_retries(request)
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
                if isinstance(exc, NoScheduler):
                    if waited > NO_SCHEDULER_WAIT_S:
                        raise
                elif waited > SUBMIT_RETRY_S:
                    raise ClientError(
                        f"the scheduler at {self.bus.url} did not answer the submit within "
                        f"{SUBMIT_RETRY_S:.0f}s; submit again with --submission-id "
                        f"{request.spec.submission_id} to be sure it lands on one run"
                    ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def compute(self, request: m.Message) -> Any:
        """One compute request (create, update, delete, show, list, sizes)."""
        return await self._request(subjects.API_COMPUTE, request, m.ComputeReplyOrError)

    async def agents(self, request: m.Message) -> Any:
        """One agent request (list, cordon, uncordon, drain, preempt)."""
        return await self._request(subjects.API_AGENTS, request, m.AgentReplyOrError)

    async def why(self, run_id: str) -> m.WhyReply:
        reply: m.WhyReply = await self._request(
            subjects.API_WHY, m.WhyRequest(run_id=run_id), m.WhyReplyOrError
        )
        return reply

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
            raise ClientError(f"no run {run_id!r}: `sortie run list` shows the runs") from None
        try:
            return codec.decode(m.RunRecord, entry.value or b"")
        except codec.BadMessage as exc:
            raise ClientError(f"run {run_id}'s stored record could not be read: {exc}") from None

    async def list_runs(self, experiment: str | None = None) -> list[m.RunRecord]:
        """All runs (of one experiment), newest first."""
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

    async def wait(self, run_id: str) -> m.RunRecord:
        """Block until the run reaches a terminal state (watches its record; no polling)."""
        rec = await self.get_run(run_id)
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
                if rec.state in TERMINAL:
                    return rec
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves KeyWatcher unannotated

    async def _subject_messages(
        self, stream: str, subject: str, *, follow: bool
    ) -> AsyncGenerator[bytes, None]:
        """Every message on ``subject`` from the first; ``follow`` keeps waiting for more."""
        js = self.bus.js
        last_seq: int | None = None
        if not follow:
            try:
                last = await js.get_last_msg(stream, subject)
            except nats.js.errors.NotFoundError:
                return
            last_seq = last.seq
        sub = await js.subscribe(
            subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                yield msg.data
                if last_seq is not None and msg.metadata.sequence.stream >= last_seq:
                    return
        finally:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def logs(
        self, run_id: str, *, follow: bool = False, rank: int | None = None
    ) -> AsyncIterator[tuple[int, m.LogLine]]:
        """(rank, line) of the run's output from the first line; with ``follow``, until the
        run has ended. ``rank`` keeps only that node's lines (multi-node runs)."""
        subjects.check_token("run id", run_id)
        messages = self._subject_messages(
            subjects.STREAM_LOGS, subjects.logs(run_id), follow=follow
        )
        async with contextlib.aclosing(messages):
            async for data in messages:
                try:
                    batch = codec.decode(m.LogBatch, data)
                except codec.BadMessage:
                    continue
                if rank is None or batch.rank == rank:
                    for line in batch.lines:
                        yield batch.rank, line
                if batch.eof:
                    return

    async def metrics(self, run_id: str) -> dict[str, list[m.MetricValue]]:
        subjects.check_token("run id", run_id)
        out: dict[str, list[m.MetricValue]] = {}
        async for data in self._subject_messages(
            subjects.STREAM_METRICS, subjects.metrics(run_id), follow=False
        ):
            try:
                batch = codec.decode(m.MetricBatch, data)
            except codec.BadMessage:
                continue
            for p in batch.points:
                out.setdefault(p.name, []).append(p.value)
        return out

    async def download(self, run_id: str, dest: Path, *, prefix: str = "") -> list[Path]:
        """Fetch the run's artifacts (optionally only those under ``prefix``) into ``dest``."""
        rec = await self.get_run(run_id)
        dest = Path(dest)
        written: list[Path] = []
        root = dest.resolve()
        for art in rec.artifacts:
            if prefix and not art.path.startswith(prefix):
                continue
            if (why := check_relpath(art.path)) is not None:
                raise ClientError(f"artifact path refused: {why}")
            target = (dest / art.path).resolve()
            if not target.is_relative_to(root):
                raise ClientError(f"artifact path {art.path!r} leaves {dest}")
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


def echo_line(line: m.LogLine, rank: int | None = None) -> None:
    """Print one line of a run's output as people see it: stderr to stderr, Sortie's own
    lines marked ``[sortie]``, and (for multi-node runs) each line's rank."""
    out = sys.stderr if line.stream == "stderr" else sys.stdout
    prefix = f"[rank {rank}] " if rank is not None else ""
    prefix += "[sortie] " if line.stream == "system" else ""
    print(f"{prefix}{line.text}", file=out, flush=True)
