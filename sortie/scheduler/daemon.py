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
import dataclasses
import functools
import math
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, assert_never

import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue
from prometheus_client import CollectorRegistry

from sortie.bus.auth import DEFAULT_TTL_S, Creds, Signer
from sortie.bus.blobcommit import BlobCommits
from sortie.bus.connection import Bus, BusAuth, open_bus
from sortie.bus.kv import REMOVED, kv_entries, kv_items
from sortie.bus.metrics_http import MetricsServer, serve_metrics
from sortie.bus.pause import TRANSIENT, retry_pause
from sortie.bus.resources import kv_stream
from sortie.bus.retention import Retention, apply_retention
from sortie.bus.store_limits import FullBound, apply_store_limits, describe_full, is_store_full
from sortie.proto import codec, notes, subjects
from sortie.proto import messages as m
from sortie.proto.leadership import Leadership
from sortie.proto.pipelines import CACHED_PREFIX, LAST_PREFIX, CachedStep, LastKey
from sortie.proto.queue import QueueRequest
from sortie.proto.run_snapshot import RunsSnapshot, RunsSnapshotRef
from sortie.proto.states import TERMINAL
from sortie.scheduler import (
    core,
    image_lookup,
    kvbatch,
    renewals,
    run_history,
    run_secrets,
    run_snapshot,
)
from sortie.scheduler.blob_gc import BlobGc, blob_gc_loop
from sortie.scheduler.compact import Compactor
from sortie.scheduler.events import (
    IndexQuery,
    LoopRequest,
    lists_in_full,
    read_heartbeat,
    read_report,
    read_request,
)
from sortie.scheduler.fence import FENCED_BUCKETS, Fence, FencedBucket
from sortie.scheduler.follow import Follower
from sortie.scheduler.image_lookup import tagged_steps
from sortie.scheduler.index_feed import IndexFeed, open_index
from sortie.scheduler.lease import DEFAULT_LEASE_S, Deposed, Lease
from sortie.scheduler.lease import me as lease_holder
from sortie.scheduler.machines import Machines, credentials
from sortie.scheduler.metrics import CycleCounts, LeadershipCollector, Metrics
from sortie.scheduler.model import AgentView, SchedulerState, Stored, restore, restore_step_cache
from sortie.scheduler.model_registry import register_model
from sortie.scheduler.providers import registry
from sortie.scheduler.providers.base import (
    NodeProvider,
    NodeRequest,
    ProviderContext,
    ProviderError,
)
from sortie.scheduler.reconcile import Timing
from sortie.scheduler.run_index import answer
from sortie.scheduler.sizes import load_catalog
from sortie.scheduler.snapshot_check import SnapshotCheck, snapshot_limit_bytes
from sortie.scheduler.ssh import host_key_scan, save_credentials
from sortie.scheduler.sweep_feed import SweepFeed
from sortie.scheduler.tables import Changes, Table
from sortie.scheduler.tag_store import tag_stored, trial_objective_stored
from sortie.scheduler.validate import SHA256

log = structlog.get_logger("sortie.scheduler")
CLOSE_TASKS_S = 5.0  # how long a stop waits for the daemon's canceled tasks to end
LOAD_YIELD_EVERY = 1000  # records decoded at start between two turns of the event loop
# how long a run list waits for the run index to catch up after a start (clients wait 10 s)
INDEX_WAIT_S = 5.0
# atomic batches of run records in flight at once (nats-server allows 50 per stream): a
# cycle's are all sent before the next cycle decides, which holds up their answers
BATCHES_IN_FLIGHT = 16
# turns of the event loop from a cycle's writes being started to their bytes being sent
# (its task, the batches' tasks, nats-py's flusher)
WRITES_OUT_TURNS = 3
BUSY_S = 2.0  # a cycle changed something this recently: the run index's catch-up yields

Ack = Callable[[], Awaitable[None]]
# the tables written by plain puts and deletes (runs are written by compare-and-set)
RowTable = (
    Table[AgentView]
    | Table[m.ComputeRecord]
    | Table[m.NodeRecord]
    | Table[m.VmRecord]
    | Table[CachedStep]
    | Table[LastKey]
)
STOP_CYCLE_GRACE_S = 5.0  # how long a stop waits for the cycle in progress


@dataclass(frozen=True)
class SchedulerConfig:
    url: str
    timing: Timing = field(default_factory=Timing)
    tick_s: float = 1.0
    max_batch: int = 2000
    write_concurrency: int = 256
    placement_limit: int | None = 10_000  # runs placed per cycle at most (core.Config)
    data_dir: Path | None = None  # where node providers keep their files
    provider_poll_s: float = 2.0
    preempt_grace_s: float = 30.0
    node_boot_timeout_s: float = 120.0
    gpu_pool: tuple[int, ...] = ()  # host GPU indices the process provider may hand to nodes
    # copies of each stream, bucket and the object store (3 on a 3-node cluster); None keeps
    # existing ones as they are and creates missing ones with 1 (sortie.bus.ensure_resources)
    replicas: int | None = None
    # credentials and TLS trust of the scheduler's own connection (None: no authentication)
    auth: BusAuth | None = None
    # the account key (sortie.bus.auth): with it the scheduler mints credentials for the agents it
    # starts (cluster nodes, attached machines); without it they get none
    account_key: Path | None = None
    # how long the credentials it mints or renews are valid (auth.DEFAULT_TTL_S: a day)
    creds_ttl_s: int = DEFAULT_TTL_S
    # Prometheus metrics over HTTP (scheduler.metrics) on this port; None: not served
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # the broker's JetStream max_file_store (bytes), shared out among the bulk streams
    # (bus.store_limits.apply_store_limits); None: streams keep their own limits
    store_limit: int | None = None
    # how long and how much the logs and metrics streams keep (applied at each start)
    retention: Retention = field(default_factory=Retention)
    # the mark and sweep of unreferenced blobs (scheduler.blob_gc): how often, after what grace
    blob_gc: BlobGc = field(default_factory=BlobGc)
    # the most bytes a submitted snapshot may hold (SORTIE_SNAPSHOT_LIMIT_MB; 10 GiB)
    snapshot_limit_bytes: int = field(default_factory=snapshot_limit_bytes)
    # a standby takes over a leader lease left unrenewed this long (lease.py)
    leader_lease_s: float = DEFAULT_LEASE_S
    # a snapshot of the runs in flight (run_snapshot.py) this often when any was written,
    # and after this many record writes
    snapshot_every_s: float = run_snapshot.SNAPSHOT_EVERY_S
    snapshot_every_writes: int = run_snapshot.SNAPSHOT_EVERY_WRITES


def _asked(
    request: m.TargetsRequest | QueueRequest | m.AgentRequest | m.ComputeRequest, reply_to: str
) -> core.Event:
    """The event of a request the loop answers as it is (it needs nothing read first)."""
    if isinstance(request, m.TargetsRequest):
        return core.TargetsAsked(reply_to=reply_to)
    if isinstance(request, QueueRequest):
        return core.QueueAsked(request=request, reply_to=reply_to)
    if isinstance(request, m.AgentList | m.AgentAdmin):
        return core.AgentAsked(request=request, reply_to=reply_to)
    return core.ComputeAsked(request=request, reply_to=reply_to)


def new_node_id(cluster: str) -> str:
    """``<cluster>-<6 hex>``: also the node's agent id."""
    return f"{cluster}-{secrets.token_hex(3)}"


def new_run_id(experiment: str, now: float) -> str:
    """``<experiment>_<unix seconds>_<8 hex>``: sortable by time, unique, subject-safe."""
    stem = re.sub(r"[^A-Za-z0-9_-]", "", experiment)[:40] or "run"
    return f"{stem}_{int(now)}_{secrets.token_hex(4)}"


# what a scheduler loads its state from (``Daemon.load``)
LOADED_BUCKETS = (
    subjects.KV_RUNS,
    subjects.KV_AGENTS,
    subjects.KV_COMPUTES,
    subjects.KV_NODES,
    subjects.KV_VMS,
    subjects.KV_STEP_CACHE,
)
# what a standby follows: the runs are not (a start reads the latest snapshot of the runs in
# flight and what was stored after it, run_snapshot.py: following them would hold history)
FOLLOWED_BUCKETS = tuple(b for b in LOADED_BUCKETS if b != subjects.KV_RUNS)
# a bucket's current entries, by its name and handle
Reader = Callable[[str, KeyValue], Awaitable[list[KeyValue.Entry]]]


async def _read_whole(_bucket: str, kv: KeyValue) -> list[KeyValue.Entry]:
    return await kv_items(kv)


@dataclass
class Decided:
    """A cycle decided and not yet stored: its events, commands, and the changes taken from
    the state's tables (``Daemon._decide``; stored and carried out by ``Daemon._finish``)."""

    batch: list[tuple[core.Event, Ack | None]]
    cmds: list[core.Command]
    runs: list[tuple[str, m.RunRecord]]  # run records to store, in key order
    rows: list[tuple[FencedBucket, Changes[Any]]]  # every other table's, bucket by bucket
    assigns: list[str]  # runs sent an Assign: stamped as sent once it went out
    counts: CycleCounts
    started: float  # monotonic, when it began deciding
    decide_s: float
    behind: set[str] = field(default_factory=set)  # changed behind it: not written, not sent


class Daemon:
    def __init__(
        self,
        bus: Bus,
        config: SchedulerConfig,
        exported: CollectorRegistry | None = None,
        feed: IndexFeed | None = None,
    ) -> None:
        """``exported``: where its metrics go (run_scheduler's, served from the start);
        None: one of its own. ``feed``: the run index as the standby kept it (None: one of
        its own, in the data directory, started by :meth:`load`)."""
        self.bus = bus
        self.config = config
        sizes_file = os.environ.get("SORTIE_SIZES_FILE")
        self.core_config = core.Config(
            timing=config.timing,
            catalog=load_catalog(Path(sizes_file) if sizes_file else None),
            providers=registry.KNOWN_PROVIDERS,
            preempt_grace_s=config.preempt_grace_s,
            node_boot_timeout_s=config.node_boot_timeout_s,
            placement_limit=config.placement_limit,
        )
        self.providers: dict[str, NodeProvider] = {}
        self.background: set[asyncio.Task[None]] = set()
        self.signer = (
            Signer.load(config.account_key, config.creds_ttl_s) if config.account_key else None
        )
        self.machines = Machines(
            config.data_dir or Path(),
            bus.url,
            self._enqueue,
            mint=self.agent_creds,
            tls_ca=config.auth.tls_ca if config.auth else None,
        )
        # sweeps wait for the metrics stream to be read up to where it is (sweep_feed.py)
        self.state = SchedulerState(sweep_feed_ready=False)
        self.sweep_metrics: dict[str, str] = {}  # active sweep -> its primary metric
        self.sweep_feed = SweepFeed(bus.js, self._enqueue, lambda: self.sweep_metrics)
        self.revisions: dict[str, int] = {}
        # every record write goes through the leader's fence (fence.py), raised by lead()
        self.fence = Fence(bus.nc, bus.js, None)
        self.runs = self.fence.bucket(subjects.KV_RUNS, bus.runs)
        self.step_cache_kv: FencedBucket | None = None  # bound by load()
        # every stored run, ended ones too: what run lists ask (on disk, index_feed.py)
        self.feed = feed or IndexFeed(bus.js, open_index(config.data_dir))
        self.index = self.feed.index
        self.busy_at = -math.inf  # monotonic: the last cycle that changed something
        self.feed.busy = lambda: time.monotonic() - self.busy_at < BUSY_S
        self.submissions: FencedBucket | None = None  # bound by load()
        # what a snapshot of the runs holds besides the runs in flight: the ended trials and
        # steps of sweeps and pipelines in flight (their controllers count them)
        self.kept_ended: dict[str, tuple[m.RunRecord, int]] = {}  # run id -> it, its revision
        self.runs_seq = 0  # KV_RUNS' stream sequence that memory reflects every write up to
        self.written_seq = 0  # the last record this scheduler stored: run lists list it
        self.snapshot_ref: RunsSnapshotRef | None = None  # the latest one stored
        self.snapshot_task: asyncio.Task[None] | None = None
        self.writes_since_snapshot = 0
        self.snapshot_at = time.monotonic()
        self.snapshot_cost_s = 0.0  # what storing the last one took
        # until every stored run's submission id has its key, no snapshot (a start from one
        # would not find the ids of runs that are over)
        self.submissions_kept = False
        self._after_load: list[Callable[[], Coroutine[Any, Any, None]]] = []  # run by start()
        self.ended_submissions: list[tuple[str, str]] = []  # ended this cycle: (id, run)
        self.queued_ids: Counter[str] = Counter()  # submission ids of submits in the queue
        self.atomic = False  # runs written in atomic batches (kvbatch), where the server can
        self.queue: asyncio.Queue[tuple[core.Event, Ack | None]] = asyncio.Queue()
        # subject (one per agent) -> its latest heartbeat, undecoded until the next cycle, and
        # whether it lists in full; and a full one a later short one came after (handled first)
        self.heartbeats: dict[str, tuple[bytes, bool]] = {}
        self.listings: dict[str, bytes] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.subs: list[Subscription | JetStreamContext.PullSubscription] = []
        self._bad_subjects: set[str] = set()
        # secret variables of active runs (also on disk, see run_secrets.py); added to Assigns
        self.run_secrets: dict[str, m.SecretEnv] = {}
        # new runs this cycle could not store (the store is full) -> why; answered, then dropped
        self.unstored: dict[str, str] = {}
        self.deposed: Deposed | None = None  # a write beside the loop found a newer leader
        # runs whose record in memory a stored cycle replaced or dropped (another writer's
        # change, refused by the full store, ended) since the next cycle decided (``run``)
        self.replaced: set[str] = set()
        self.stored_now: list[tuple[m.RunRecord, int]] = []  # this cycle's, for the index
        self.metrics = Metrics(lambda: self.state, registry=exported)
        self.blob_commits = BlobCommits(bus.blobs)  # verifies and stores uploaded blobs
        self.snapshots = SnapshotCheck(bus.blobs, config.snapshot_limit_bytes)

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir or Path()

    @property
    def epoch(self) -> int:
        """The leader epoch this scheduler acts in (0: it leads by no lease, as in tests)."""
        return self.fence.leader.epoch if self.fence.leader is not None else 0

    async def lead_as(self, leader: Leadership) -> None:
        """Act as ``leader`` from now on: the fence is raised in every bucket it writes, so
        the previous leader's writes fail from here on, and its Assigns and Cancels carry
        the epoch (agents refuse older ones)."""
        self.fence.leader = leader
        await self.fence.raise_(FENCED_BUCKETS)
        fenced_at = self.fence.revisions.get(subjects.KV_RUNS)
        if fenced_at is not None:  # every run record after it is one this leader stores
            self.feed.lead_from(fenced_at)

    def agent_creds(self, agent_id: str) -> Creds | None:
        """Fresh credentials for an agent this scheduler starts (None without an account
        key: then the broker must not require any)."""
        if self.signer is None:
            return None
        from sortie.proto.permissions import Role

        return self.signer.mint(Role("agent", agent_id))

    # --- startup -------------------------------------------------------------------------

    async def load(self, read: Reader = _read_whole) -> None:
        """Rebuild state from the store, every bucket decoded the same way (``model.restore``
        says what is kept). Loading only loads: what the previous scheduler left behind is
        settled by the ``Started`` event, the first the loop handles. ``read``: each bucket's
        current entries (run_scheduler's: as its ``Follower`` followed them)."""
        t0 = time.monotonic()
        now = time.time()
        found: dict[str, int] = {}
        kv = await self.bus.js.key_value(subjects.KV_SUBMISSIONS)
        self.submissions = self.fence.bucket(subjects.KV_SUBMISSIONS, kv)
        self.feed.start()  # a standby's runs already
        with run_history.gc_paused(), self.feed.paused():
            runs, from_snapshot = await self._read_runs()
            found[m.RunRecord.__name__] = len(runs)
            pipeline_runs = await self._restore_runs(runs, now)
        for bucket, kv, kind in self._buckets():  # computes before nodes (a node's compute)
            entries = await read(bucket, kv)
            found[kind.__name__] = len(entries)
            for entry in entries:
                try:
                    record = codec.decode(kind, entry.value or b"")
                except codec.BadMessage as exc:
                    log.warning(
                        "unreadable record skipped",
                        kind=kind.__name__,
                        key=entry.key,
                        error=str(exc),
                    )
                    continue
                restore(self.state, record, now)
        children = frozenset(
            str(kind.__struct_config__.tag)
            for kind, entry in registry.PROVIDERS.items()
            if not entry.nodes_outlive_scheduler
        )
        await self._load_step_cache(read)
        put_back = restore_step_cache(self.state, pipeline_runs)
        if put_back:
            log.warning("step-cache entries put back from pipeline records", keys=put_back)
        self._enqueue(core.Started(children_of=children))
        self._watch_sweeps()
        kept, unreadable = await asyncio.to_thread(run_secrets.load_all, self.data_dir)
        for run_id, secret in kept.items():
            if run_id in self.state.runs:
                self.run_secrets[run_id] = secret
            else:  # the run ended (or was never stored): its values are no longer needed
                await asyncio.to_thread(run_secrets.delete, self.data_dir, run_id)
        if unreadable:
            log.warning("unreadable run secrets files skipped", files=unreadable)
        self.metrics.seed(self.state)
        log.info(
            "state loaded",
            runs=found[m.RunRecord.__name__],
            from_snapshot=from_snapshot,
            active=len(self.state.runs),
            agents=len(self.state.agents),
            computes=len(self.state.computes),
            seconds=round(time.monotonic() - t0, 3),
        )

    async def _restore_runs(
        self, runs: list[tuple[m.RunRecord, int]], now: float
    ) -> list[m.RunRecord]:
        """Take the runs read at start; returns the pipelines and step runs among them (the
        step cache's check)."""
        pipeline_runs: list[m.RunRecord] = []
        for i, (rec, revision) in enumerate(runs):
            if i % LOAD_YIELD_EVERY == LOAD_YIELD_EVERY - 1:
                await asyncio.sleep(0)  # the leader lease is renewed meanwhile (lease.py)
            if rec.pipeline is not None or rec.step is not None:
                pipeline_runs.append(rec)
            if restore(self.state, rec, now):
                self.revisions[rec.run_id] = revision
        self._keep_ended_children(runs)
        return pipeline_runs

    async def _read_runs(self) -> tuple[list[tuple[m.RunRecord, int]], bool]:
        """The run records a start needs, with their revisions, and whether they came from a
        snapshot: the latest snapshot and the records stored after it, or (none stored yet)
        every record, with the keys of their submission ids stored afterwards."""
        found = await run_snapshot.latest(self.bus.js, self.bus.runs)
        self._after_load.append(self._sweep_snapshots)
        if found is not None:
            self.snapshot_ref, snapshot = found
            written, self.runs_seq = await run_snapshot.records_after(self.bus.js, snapshot.seq)
            merged, _ = run_snapshot.merge(snapshot, written)
            later = [merged[key][0] for key, _, _ in written if key in merged]
            pairs = [(r.spec.submission_id, r.run_id) for r in later if r.spec.submission_id]
            self._after_load.append(functools.partial(self._keep_found_submissions, pairs))
            return list(merged.values()), True
        stream = await self.bus.js.stream_info(kv_stream(subjects.KV_RUNS))
        self.runs_seq = stream.state.last_seq
        runs, pairs = await self._read_every_run()
        self._after_load.append(functools.partial(self._keep_found_submissions, pairs))
        return runs, False

    async def _read_every_run(
        self,
    ) -> tuple[list[tuple[m.RunRecord, int]], list[tuple[str, str]]]:
        """Every stored run, one at a time, into the submission ids; returns
        only the records ``restore`` needs (runs in flight, pipelines and their steps, the
        ended trials of sweeps in flight) and every ``(submission id, run id)``: memory holds
        no more than that while a million records go by."""
        runs: list[tuple[m.RunRecord, int]] = []
        trials: list[tuple[m.RunRecord, int]] = []  # ended ones: kept if their sweep goes on
        pairs: list[tuple[str, str]] = []
        subs = self.state.submissions  # every id until its key is stored (then only live ones)
        compactor = Compactor()  # kept records share what repeats (a million fit in memory)
        async for entry in kv_entries(self.bus.runs):
            revision = entry.revision or 0
            self.runs_seq = max(self.runs_seq, revision)
            if entry.operation in REMOVED:
                continue
            try:
                rec = codec.decode(m.RunRecord, entry.value or b"")
            except codec.BadMessage as exc:
                log.warning(
                    "unreadable record skipped", kind="RunRecord", key=entry.key, error=str(exc)
                )
                continue
            if rec.spec.submission_id is not None:
                pairs.append((rec.spec.submission_id, rec.run_id))
                subs[rec.spec.submission_id] = rec.run_id
            if rec.state not in TERMINAL or rec.pipeline is not None or rec.step is not None:
                runs.append((compactor.record(rec), revision))
            elif rec.trial is not None and rec.parent_id is not None:
                trials.append((compactor.record(rec), revision))
        going = {rec.run_id for rec, _ in runs if rec.state not in TERMINAL}
        runs += [(rec, rev) for rec, rev in trials if rec.parent_id in going]
        return runs, pairs

    def _keep_ended_children(self, records: Iterable[tuple[m.RunRecord, int]]) -> None:
        """Ended trials and steps of the sweeps and pipelines in flight, for the snapshots."""
        for rec, revision in records:
            self._keep_if_child(rec, revision)

    def _keep_if_child(self, rec: m.RunRecord, revision: int) -> None:
        if rec.state not in TERMINAL or rec.parent_id not in self.state.runs:
            return
        if rec.trial is not None or rec.step is not None:
            self.kept_ended[rec.run_id] = (rec, revision)

    async def _sweep_snapshots(self) -> None:
        """The snapshot objects earlier leaders left behind, deleted beside the loop."""
        try:
            gone = await run_snapshot.sweep(self.bus.js, self.bus.runs, self.epoch)
        except (*TRANSIENT, nats.errors.Error) as exc:
            log.warning("old runs snapshots not swept", error=repr(exc))
            return
        if gone:
            log.info("old runs snapshots deleted", objects=gone)

    async def _keep_found_submissions(self, pairs: list[tuple[str, str]]) -> None:
        """The submission-id keys of runs read at start (their keys may not have been stored:
        a stop between a record and its key, or a store from before keys existed); then
        snapshots may be taken, and memory keeps the ids of runs in flight only."""
        t0 = time.monotonic()
        assert self.submissions is not None  # bound by load()
        await run_history.keep_submissions(self.submissions, pairs, self._put)
        if len(pairs) > 1000:
            log.info(
                "submission ids kept", runs=len(pairs), seconds=round(time.monotonic() - t0, 1)
            )
        runs = self.state.runs
        self._forget_submissions(
            [(sid, r) for sid, r in self.state.submissions.items() if r not in runs]
        )
        self.submissions_kept = True
        if self.snapshot_ref is None:  # every record was read: the next start need not
            self.writes_since_snapshot = max(1, self.writes_since_snapshot)
            self.snapshot_at = -math.inf

    def _note_written(self, revision: int) -> None:
        """A run record this scheduler stored at ``revision``: a run list asked from now on
        waits until the run index (index_feed.py) has it."""
        self.written_seq = max(self.written_seq, revision)

    async def _load_step_cache(self, read: Reader) -> None:
        """The step cache, whole, into memory: completed steps and each step's last key."""
        kv = await self.bus.js.key_value(subjects.KV_STEP_CACHE)
        self.step_cache_kv = self.fence.bucket(subjects.KV_STEP_CACHE, kv)
        for entry in await read(subjects.KV_STEP_CACHE, kv):
            try:
                if entry.key.startswith(CACHED_PREFIX):
                    cached = codec.decode(CachedStep, entry.value or b"")
                    self.state.step_cache.load(entry.key, cached)
                elif entry.key.startswith(LAST_PREFIX):
                    last = codec.decode(LastKey, entry.value or b"")
                    self.state.last_keys.load(entry.key, last)
            except codec.BadMessage as exc:
                log.warning("unreadable step-cache entry skipped", key=entry.key, error=str(exc))

    def _buckets(self) -> list[tuple[str, KeyValue, type[Stored]]]:
        """Each bucket (``LOADED_BUCKETS`` but the runs and the step cache) and the record it
        holds, in the order they are loaded."""
        bus = self.bus
        return [
            (subjects.KV_AGENTS, bus.agents, m.AgentRecord),
            (subjects.KV_COMPUTES, bus.computes, m.ComputeRecord),
            (subjects.KV_NODES, bus.nodes, m.NodeRecord),
            (subjects.KV_VMS, bus.vms, m.VmRecord),
        ]

    async def start(self) -> None:
        nc = self.bus.nc
        try:
            self.atomic = await kvbatch.enable_atomic(self.bus.js, subjects.KV_RUNS)
            await kvbatch.enable_atomic(self.bus.js, subjects.KV_SUBMISSIONS)
        except TRANSIENT as exc:
            log.warning("atomic batch writes not enabled", error=repr(exc))
        log.info("run records written in atomic batches" if self.atomic else "single writes")
        self.subs.append(
            await nc.subscribe(subjects.API_ALL, queue=subjects.SCHEDULER_QUEUE, cb=self._on_api)
        )
        self.subs.append(await nc.subscribe(subjects.HEARTBEATS_ALL, cb=self._on_heartbeat))
        if self.signer is not None:
            self.subs.append(await renewals.serve(nc, self.signer))
        if self.config.auth is not None and self.config.auth.creds is not None:
            self.tasks.append(renewals.keep_own(nc, self.signer, self.config.auth.creds))
        await self.blob_commits.start()
        # every agent confirms itself now rather than at its next heartbeat
        now_msg = m.HeartbeatNow(epoch=self.epoch, short_heartbeats=True)
        await nc.publish(subjects.HEARTBEAT_NOW, codec.encode(now_msg))
        self.tasks.append(asyncio.create_task(self._reports(), name="reports"))
        for n, work in enumerate(self._after_load):
            self.tasks.append(asyncio.create_task(work(), name=f"after-load-{n}"))
        self._after_load.clear()
        self.tasks.append(
            asyncio.create_task(self.sweep_feed.run(self._sweeps_since()), name="sweep-feed")
        )
        self.tasks.append(asyncio.create_task(self._ticks(), name="ticks"))
        self.tasks.append(asyncio.create_task(self._poll_providers(), name="providers"))
        self.tasks.append(
            asyncio.create_task(blob_gc_loop(self.bus, self.config.blob_gc), name="blob-gc")
        )
        for rec in list(self.state.vms.values()):
            self._spawn(self.machines.restore(rec))

    def _watch_sweeps(self) -> None:
        """What the sweep feed hands on: each active sweep's primary metric."""
        runs = self.state.runs
        self.sweep_metrics = {
            sweep_id: rec.sweep.spec.primary_metric
            for sweep_id in self.state.sweeps
            if (rec := runs.get(sweep_id)) is not None and rec.sweep is not None
        }

    def _sweeps_since(self) -> float | None:
        """When the oldest active sweep was created: its trials' metrics are read again
        from then (None: no sweep is active)."""
        runs = self.state.runs
        created = [runs[s].created_at for s in self.sweep_metrics if s in runs]
        return min(created) if created else None

    # --- adapters: bus -> events -----------------------------------------------------------

    def _enqueue(self, event: core.Event, ack: Ack | None = None) -> None:
        if isinstance(event, core.Submitted) and event.request.spec.submission_id is not None:
            self.queued_ids[event.request.spec.submission_id] += 1
        self.queue.put_nowait((event, ack))

    async def _reply(self, msg: Msg, message: m.Message) -> None:
        if msg.reply:
            await self.bus.nc.publish(msg.reply, codec.encode(message))

    async def _on_api(self, msg: Msg) -> None:
        req = read_request(msg.subject, msg.data)
        if isinstance(req, m.ErrorReply):
            self._note_bad(msg.subject, req.message)
            await self._safe_reply(msg, req)
            return
        try:
            if isinstance(req, m.ModelRegister):  # outside the loop: it writes models only
                kv = await self.bus.js.key_value(subjects.KV_MODELS)
                models = self.fence.bucket(subjects.KV_MODELS, kv)
                await self._reply(msg, await register_model(self.bus, models, req))
            elif isinstance(req, IndexQuery):  # outside the loop too: it reads the index only
                await self._reply(msg, await self._index_answer(req))
            elif isinstance(req, m.HostKeyScan):  # beside the loop: it only reads an SSH server
                self._spawn(self._scan_host_key(msg, req))
            else:
                await self._on_request(msg, req)
        except TRANSIENT as exc:
            log.warning("api request failed", subject=msg.subject, error=repr(exc))
            await self._safe_reply(
                msg, m.ErrorReply(code="internal", message=f"scheduler could not answer: {exc!r}")
            )
        except Deposed as exc:  # a write refused by the new leader's fence: nothing stored
            await self._safe_reply(msg, m.ErrorReply(code="internal", message=str(exc)))
            self.deposed = exc
            self._enqueue(core.Tick())  # the loop wakes and stops
        except Exception as exc:  # a bug must not leave the client waiting, or stop the daemon
            log.exception("api request failed", subject=msg.subject, request=type(req).__name__)
            await self._safe_reply(
                msg,
                m.ErrorReply(
                    code="internal",
                    message=f"the scheduler failed on this {type(req).__name__}: "
                    f"{type(exc).__name__}; see its log",
                ),
            )

    async def _index_answer(self, req: IndexQuery) -> m.Message:
        """The index's answer, once its feed has read what was stored before the start (a
        new data directory reads the whole history) and what this scheduler stored since;
        waited for within ``INDEX_WAIT_S`` in all."""
        deadline = time.monotonic() + INDEX_WAIT_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.feed.caught_up.wait(), INDEX_WAIT_S)
        if not self.feed.caught_up.is_set():
            return m.ErrorReply(
                code="internal",
                message="the scheduler is still reading the run history that run lists are "
                "answered from (after a start with a new data directory, a minute or more "
                "at a million runs); try again in a few seconds",
            )
        # what this scheduler stored is listed (the feed is a round trip behind, as a rule;
        # a feed held up longer answers with what it has)
        await self.feed.applied_to(self.written_seq, max(0.0, deadline - time.monotonic()))
        return await asyncio.to_thread(answer, self.index, req)

    async def _snapshot_problem(self, request: m.SubmitRequest) -> m.ErrorReply | None:
        """Why a snapshot the submission names cannot run (the run's, or each distinct one of
        a pipeline's steps), or None."""
        ids = [request.spec.snapshot_id]
        if request.pipeline is not None:
            ids = list(dict.fromkeys(s.run.snapshot_id for s in request.pipeline.spec.steps))
        for snapshot_id in ids:
            # a snapshot id that is not a sha256 is refused by the core, with the rule
            if SHA256.match(snapshot_id):
                why = await self.snapshots.problem(snapshot_id)
                if why is not None:
                    return why
        return None

    async def _submit_looked_up(self, msg: Msg, request: m.SubmitRequest) -> None:
        """A pipeline with tagged container steps: submitted once its targets' agents said
        which image each tag names (``image_lookup``)."""
        assert request.pipeline is not None
        agents = list(self.state.agents.values())
        try:
            images = await image_lookup.look_up(self.bus.nc, agents, request.pipeline.spec)
        except Exception as exc:  # a bug must not leave the client waiting
            log.exception("image look-up failed")
            why = f"the scheduler failed looking up images: {type(exc).__name__}; see its log"
            await self._safe_reply(msg, m.ErrorReply(code="internal", message=why))
            return
        run_id = new_run_id(request.spec.experiment, time.time())
        self._enqueue(
            core.Submitted(request=request, run_id=run_id, reply_to=msg.reply, images=images)
        )

    async def _scan_host_key(self, msg: Msg, req: m.HostKeyScan) -> None:
        await self._safe_reply(msg, await host_key_scan.scan(req))

    async def _safe_reply(self, msg: Msg, message: m.Message) -> None:
        with contextlib.suppress(*TRANSIENT, nats.errors.Error):
            await self._reply(msg, message)

    async def _on_request(self, msg: Msg, request: LoopRequest) -> None:
        if isinstance(request, m.SubmitRequest):
            spec = request.spec
            # a snapshot id that is not a sha256 is refused by the core, with the rule
            why = None if request.validate_only else await self._snapshot_problem(request)
            if why is not None:
                await self._reply(msg, why)
                return
            existing = await self._submitted_as(request)
            if existing is not None:
                await self._reply(msg, m.SubmitAccepted(run_id=existing, created=False))
                return
            pipe = request.pipeline
            if pipe is not None and not request.validate_only and tagged_steps(pipe.spec):
                # beside the loop: agents' answers are waited for (bounded) before the core
                # decides the steps' reuse on them
                self._spawn(self._submit_looked_up(msg, request))
                return
            run_id = new_run_id(spec.experiment, time.time())
            self._enqueue(core.Submitted(request=request, run_id=run_id, reply_to=msg.reply))
        elif isinstance(request, m.CancelRequest):
            if request.run_id in self.state.runs:
                self._enqueue(core.CancelAsked(run_id=request.run_id, reply_to=msg.reply))
            else:
                await self._reply(msg, await self._cancel_unknown(request.run_id))
        elif isinstance(request, m.WhyRequest):
            if request.run_id in self.state.runs:
                self._enqueue(core.WhyAsked(run_id=request.run_id, reply_to=msg.reply))
            else:
                await self._reply(msg, await self._why_unknown(request.run_id))
        elif isinstance(request, notes.RunTagRequest):
            await self._on_tag(msg, request)
        else:
            self._enqueue(_asked(request, msg.reply))

    async def _submitted_as(self, request: m.SubmitRequest) -> str | None:
        """The run this submission's id created, if it has ended and left memory (its key in
        ``KV_SUBMISSIONS``); None otherwise: the loop decides (it holds the ids of the runs in
        flight, and of those created but not stored yet)."""
        sid = request.spec.submission_id
        if sid is None or request.validate_only:
            return None
        if sid in self.state.submissions:
            return None  # the loop answers with it
        assert self.submissions is not None  # bound by load()
        return await run_history.submitted_as(self.submissions.kv, sid)

    async def _on_tag(self, msg: Msg, request: notes.RunTagRequest) -> None:
        """A run in memory is tagged by the loop; an ended one here, in the store."""
        if request.run_id in self.state.runs:
            self._enqueue(core.TagAsked(request=request, reply_to=msg.reply))
        else:
            reply, revision = await tag_stored(self.runs, request)
            if isinstance(reply, notes.RunTagged):
                self._stored_beside(reply.record, revision)
            await self._reply(msg, reply)

    async def _stored_run(self, run_id: str) -> m.RunRecord | m.ErrorReply:
        """A run the scheduler no longer holds, from the store (it ended, or never existed)."""
        try:
            subjects.check_token("run id", run_id)
            entry = await self.bus.runs.get(run_id)
        except ValueError as exc:
            return m.ErrorReply(code="bad_request", message=str(exc))
        except nats.js.errors.KeyNotFoundError:
            return m.ErrorReply(code="not_found", message=f"no run {run_id!r}")
        try:
            return codec.decode(m.RunRecord, entry.value or b"")
        except codec.BadMessage as exc:
            return m.ErrorReply(code="internal", message=f"run {run_id}'s stored record: {exc}")

    async def _why_unknown(self, run_id: str) -> m.WhyReply | m.ErrorReply:
        rec = await self._stored_run(run_id)
        if isinstance(rec, m.ErrorReply):
            return rec
        return m.WhyReply(
            run_id=run_id,
            state=rec.state,
            summary=f"run {run_id} is not waiting: it ended {rec.state}",
        )

    async def _cancel_unknown(self, run_id: str) -> m.ErrorReply:
        rec = await self._stored_run(run_id)
        if isinstance(rec, m.ErrorReply):
            return rec
        return m.ErrorReply(
            code="invalid_state", message=f"run {run_id} already ended: {rec.state}"
        )

    def _note_bad(self, subject: str, why: str) -> None:
        """Log an undecodable message once per subject (a flood must not flood the log)."""
        if subject not in self._bad_subjects and len(self._bad_subjects) < 10_000:
            self._bad_subjects.add(subject)
            log.warning("undecodable message ignored", subject=subject, error=why[:300])

    async def _on_heartbeat(self, msg: Msg) -> None:
        # the latest of each agent's, handled at the next cycle whatever its batch: a
        # heartbeat queued behind thousands of events (or a long cycle) made a live agent look
        # lost, and 5,000 agents' heartbeats a second are more events than a cycle takes.
        # Kept as bytes: only the one a cycle handles is decoded (each lists every run its
        # agent holds; decoding every one cost more than the cycles did at a million runs)
        # A short heartbeat (its listing by digest only: Heartbeat.listed) names the listing
        # of the last full one: a full one not handled yet is kept, and handled first.
        wake = not self.heartbeats
        subject, data = msg.subject, msg.data
        full = lists_in_full(data)
        before = self.heartbeats.get(subject)
        if full:
            self.listings.pop(subject, None)
        elif before is not None and before[1]:
            self.listings[subject] = before[0]
        self.heartbeats[subject] = (data, full)
        if wake:
            self._enqueue(core.Tick())

    def _latest_heartbeats(self) -> list[tuple[core.Event, Ack | None]]:
        """The heartbeats received since the last cycle, the latest of each agent, decoded
        (one that does not decode, or came on another agent's subject, is logged and left)."""
        beats, self.heartbeats = self.heartbeats, {}
        listings, self.listings = self.listings, {}
        out: list[tuple[core.Event, Ack | None]] = []
        for subject, (data, _) in beats.items():
            listed = listings.get(subject)
            for one in (data,) if listed is None else (listed, data):
                hb = read_heartbeat(subject, one)
                if isinstance(hb, str):
                    self._note_bad(subject, hb)
                else:
                    out.append((core.HeartbeatSeen(heartbeat=hb), None))
        return out

    async def _reports(self) -> None:
        """Hand every report to the loop, acknowledged once applied; the consumer is made
        again if it goes (a deposed leader resumed from a pause deleted it: 17 s of reports
        waited, and runs whose agent restarted meanwhile ran twice)."""
        while True:
            psub = await self._reports_consumer()
            self.subs.append(psub)
            await self._fetch_reports(psub)
            self.subs.remove(psub)
            with contextlib.suppress(*TRANSIENT, nats.errors.Error):
                await psub.unsubscribe()

    async def _reports_consumer(self) -> JetStreamContext.PullSubscription:
        js = self.bus.js
        while True:
            # A cluster that is electing a leader or adding replicas answers 503 for a while:
            # keep trying, since without this consumer no report is ever applied.
            try:
                await self._reset_report_consumers()
                return await js.pull_subscribe(
                    subjects.REPORTS_ALL,
                    durable=subjects.reports_consumer(self.epoch),
                    stream=subjects.STREAM_REPORTS,
                    config=ConsumerConfig(
                        ack_policy=AckPolicy.EXPLICIT,
                        deliver_policy=DeliverPolicy.ALL,
                        ack_wait=30,
                        max_ack_pending=10_000,
                    ),
                )
            except (*TRANSIENT, nats.js.errors.APIError) as exc:
                # (APIError: a newer leader's consumer excludes this one's; this scheduler is
                # deposed and learns it from its lease or its next write)
                log.warning("reports consumer not ready; retrying", error=repr(exc))
                await retry_pause(0.5)

    async def _fetch_reports(self, psub: JetStreamContext.PullSubscription) -> None:
        """Fetch reports until the consumer is found gone."""
        while True:
            try:
                msgs = await psub.fetch(batch=500, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except TRANSIENT as exc:
                log.warning("report fetch failed; retrying", error=repr(exc))
                if await self._reports_consumer_gone():
                    log.warning("reports consumer gone; making it again")
                    return
                await retry_pause(0.5)
                continue
            for msg in msgs:
                rep = read_report(msg.subject, msg.data)
                if isinstance(rep, str):
                    self._note_bad(msg.subject, rep)
                    with contextlib.suppress(*TRANSIENT):
                        await msg.ack()
                    continue
                event = (
                    core.ReportSeen(report=rep)
                    if isinstance(rep, m.RunReport)
                    else core.NoteSeen(note=rep)
                )
                self._enqueue(event, msg.ack)

    async def _reports_consumer_gone(self) -> bool:
        name = subjects.reports_consumer(self.epoch)
        try:
            await self.bus.js.consumer_info(subjects.STREAM_REPORTS, name)
        except nats.js.errors.NotFoundError:
            return True
        except TRANSIENT:
            return False  # the broker does not answer: not known to be gone
        return False

    async def _reset_report_consumers(self) -> None:
        """Delete the reports consumers of this leader's epoch and older ones, its own too:
        reports an earlier scheduler fetched and never acknowledged (it was killed or
        deposed) come again at once, not after the ack wait (their run's agent could restart
        meanwhile, and the run be run again), and a deposed leader's consumer takes no more.
        A newer epoch's is left: this scheduler, resumed from a pause, may not know yet that
        it was deposed (the reports stream is a work queue, so its consumers exclude each
        other). The stream keeps every report until one is acknowledged."""
        js = self.bus.js
        for info in await js.consumers_info(subjects.STREAM_REPORTS):
            name = info.name or ""
            epoch = subjects.reports_consumer_epoch(name)
            if epoch is not None and epoch > self.epoch:
                log.info("a newer leader's reports consumer left", consumer=name)
                continue
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_consumer(subjects.STREAM_REPORTS, name)
            log.info("reports consumer reset", consumer=name)

    async def _ticks(self) -> None:
        away = False
        while True:
            await retry_pause(self.config.tick_s)
            if not self.bus.nc.is_connected:
                if not away:
                    log.warning("broker unreachable")
                    self._enqueue(core.BrokerAway())
                away = True
            elif away:
                away = False
                log.warning("broker reachable again")
                self._enqueue(core.BrokerBack())
            if self.queue.empty():
                self._enqueue(core.Tick())

    # --- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Cycles until ``stop``, two at a time: the next cycle decides while the previous
        one's records are being stored (the broker's work), so a cycle costs the longer of
        the two, not their sum. Writes still go out in cycle order, each cycle's after the
        previous one's, and every Assign only once its record is stored (``_finish``). What
        a stored cycle found changed behind the next one's decisions (another writer's
        record, a run the full store refused, a run that ended) is dropped from the next
        one's writes and commands: its requests are answered "retry", and the runs are
        judged again from what the store holds."""
        stopper = asyncio.create_task(stop.wait())
        pending: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                batch = await self._next_batch(stopper)
                if batch is None:
                    break
                if pending is not None and (pending.done() or self._snapshot_due()):
                    # a snapshot is taken of what is stored: nothing decided ahead of it
                    if not await self._stored_unless_stopped(pending, stopper):
                        return
                    pending = None
                if pending is None:
                    self._maybe_snapshot()
                self.replaced = set()
                decided = self._decide(batch)
                if pending is not None:
                    if not await self._stored_unless_stopped(pending, stopper):
                        return
                    # a copy: this cycle's own writes add to the set (a run it ends) later
                    decided.behind = set(self.replaced)
                pending = asyncio.create_task(self._finish(decided))
                for _ in range(WRITES_OUT_TURNS):  # its writes reach the socket first
                    await asyncio.sleep(0)
                if self.deposed is not None:  # found by a write beside the loop
                    raise self.deposed
            if pending is not None:
                await self._stored_unless_stopped(pending, stopper)
        finally:
            stopper.cancel()
            if pending is not None:
                pending.cancel()  # a no-op once done

    async def _next_batch(
        self, stopper: asyncio.Task[bool]
    ) -> list[tuple[core.Event, Ack | None]] | None:
        """The next events, as many as are queued (up to ``max_batch``); None once stopped."""
        getter = asyncio.create_task(self.queue.get())
        done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in done:
            getter.cancel()
            return None
        batch = [getter.result()]
        while len(batch) < self.config.max_batch and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        return batch

    async def _stored_unless_stopped(
        self, pending: asyncio.Task[None], stopper: asyncio.Task[bool]
    ) -> bool:
        """Wait for a cycle's writes; when asked to stop meanwhile, they get
        ``STOP_CYCLE_GRACE_S`` more, then are abandoned (False): a cycle retrying a write the
        store refuses (full, or the broker away) must not hold up shutdown. Nothing it had
        not stored was acked, so reports come back and clients retry their submits."""
        await asyncio.wait({pending, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not pending.done():
            await asyncio.wait({pending}, timeout=STOP_CYCLE_GRACE_S)
        if not pending.done():
            log.warning("stopping with a cycle's writes not done; the next start redoes them")
            return False
        pending.result()
        if self.deposed is not None:
            raise self.deposed
        return True

    async def cycle(self, batch: list[tuple[core.Event, Ack | None]]) -> None:
        """One whole cycle, nothing overlapping: decide, store, send (as tests drive it)."""
        self._maybe_snapshot()
        await self._finish(self._decide(batch))

    def _decide(self, batch: list[tuple[core.Event, Ack | None]]) -> Decided:
        """A cycle's decisions (synchronous: nothing else runs meanwhile) and the changes they
        made, taken from the state's tables to be stored by ``_finish``."""
        t0 = time.monotonic()
        now = time.time()
        cmds: list[core.Command] = []
        # after the batch: the first cycle's first event is ``Started`` (load, then settle)
        batch = [*batch, *self._latest_heartbeats()]
        for event, _ in batch:
            cmds.extend(core.handle(self.state, event, now, self.core_config))
            if isinstance(event, core.Submitted) and event.request.spec.submission_id:
                self.queued_ids[event.request.spec.submission_id] -= 1
        self.queued_ids = +self.queued_ids  # drops the ids no longer queued
        cmds.extend(core.decide(self.state, now, self.core_config, new_node_id))
        decided = time.monotonic() - t0  # the decision code's part of the cycle
        counts = self.metrics.observe((e for e, _ in batch), self.state, now)  # before writing
        st = self.state
        tables: list[tuple[FencedBucket, RowTable]] = [
            (self.fence.bucket(subjects.KV_AGENTS, self.bus.agents), st.agents),
            (self.fence.bucket(subjects.KV_COMPUTES, self.bus.computes), st.computes),
            (self.fence.bucket(subjects.KV_NODES, self.bus.nodes), st.nodes),
            (self.fence.bucket(subjects.KV_VMS, self.bus.vms), st.vms),
        ]
        if self.step_cache_kv is not None:  # after the runs: an entry names a stored step run
            tables += [(self.step_cache_kv, st.step_cache), (self.step_cache_kv, st.last_keys)]
        # sent once stored: stamped as sent by the first cycle to start after that
        assigns, st.assigns_out = st.assigns_out, []
        return Decided(
            batch=batch,
            cmds=cmds,
            runs=st.runs.take_changes().written,
            rows=[(kv, table.take_changes()) for kv, table in tables],
            assigns=assigns,
            counts=counts,
            started=t0,
            decide_s=decided,
        )

    async def _finish(self, d: Decided) -> None:
        """Store a decided cycle's changes, then carry out its commands and acknowledge its
        events: the second half of a cycle, overlapping the next one's decisions."""
        await self._keep_run_secrets(d.cmds)  # before the runs are stored
        t1 = time.monotonic()
        failed = await self._persist(d)
        stored = time.monotonic() - t1  # writing the cycle's records
        self._drop_unstored()
        if self.state.sweeps or self.sweep_metrics:
            self._watch_sweeps()
        t2 = time.monotonic()
        await self._execute(d.cmds, failed | d.behind)
        sent = time.monotonic() - t2  # sending its commands and replies
        self.state.assigns_out.extend(r for r in d.assigns if r not in failed | d.behind)
        self.unstored.clear()
        for _, ack in d.batch:
            if ack is not None:
                with contextlib.suppress(*TRANSIENT):
                    await ack()
        seconds = time.monotonic() - d.started
        self.metrics.cycle_done(seconds)
        # the one canonical line per cycle: info when it changed something, debug when idle
        if d.counts.busy:
            self.busy_at = time.monotonic()
        level = log.info if d.counts.busy or failed or d.behind else log.debug
        level(
            "cycle",
            **d.counts.fields(),
            waiting=self.state.runs.queued_count,
            conflicts=len(failed),
            ms=round(seconds * 1000, 1),
            decide_ms=round(d.decide_s * 1000, 1),
            store_ms=round(stored * 1000, 1),
            send_ms=round(sent * 1000, 1),
            **({"changed_behind": sorted(d.behind)} if d.behind else {}),
        )

    def _snapshot_due(self) -> bool:
        config = self.config
        return run_snapshot.due(
            writes=self.writes_since_snapshot,
            held=len(self.state.runs) + len(self.kept_ended),
            since_s=time.monotonic() - self.snapshot_at,
            cost_s=self.snapshot_cost_s,
            every_writes=config.snapshot_every_writes,
            every_s=config.snapshot_every_s,
        )

    def _maybe_snapshot(self) -> None:
        """Store a snapshot of the runs held (beside the loop, one at a time) when enough was
        written since the last (run_snapshot.py): what a start reads instead of history.
        Only between cycles, with nothing decided and not yet stored (``run``)."""
        due = self._snapshot_due()
        busy = self.snapshot_task is not None and not self.snapshot_task.done()
        if not due or busy or not self.submissions_kept:
            return
        runs = self.state.runs
        for run_id in [r for r, (rec, _) in self.kept_ended.items() if rec.parent_id not in runs]:
            del self.kept_ended[run_id]
        records = [(rec, self.revisions[r]) for r, rec in runs.items() if r in self.revisions]
        snapshot = run_snapshot.take(
            [*records, *self.kept_ended.values()], self.runs_seq, self.epoch
        )
        self.writes_since_snapshot = 0
        self.snapshot_at = time.monotonic()
        self.snapshot_task = asyncio.create_task(self._store_snapshot(snapshot), name="snapshot")
        self.background.add(self.snapshot_task)
        self.snapshot_task.add_done_callback(self.background.discard)

    async def _store_snapshot(self, snapshot: RunsSnapshot) -> None:
        t0 = time.monotonic()
        previous = self.snapshot_ref.name if self.snapshot_ref is not None else None
        try:
            ref = await run_snapshot.store(self.bus.js, self.runs, snapshot, previous)
        except Deposed as exc:
            self.deposed = exc
            self._enqueue(core.Tick())  # the loop wakes and stops
            return
        except (*TRANSIENT, nats.errors.Error, nats.js.errors.APIError) as exc:
            log.warning("runs snapshot not stored; trying again later", error=repr(exc))
            self.writes_since_snapshot += len(snapshot.runs) or 1
            return
        self.snapshot_ref = ref
        self.snapshot_cost_s = time.monotonic() - t0
        log.info(
            "runs snapshot stored",
            runs=ref.runs,
            bytes=ref.size,
            seq=ref.seq,
            seconds=round(time.monotonic() - t0, 3),
        )

    async def _keep_run_secrets(self, cmds: list[core.Command]) -> None:
        for cmd in cmds:
            if not isinstance(cmd, core.SaveRunSecret):
                continue
            self.run_secrets[cmd.run_id] = cmd.secret
            try:
                await asyncio.to_thread(run_secrets.save, self.data_dir, cmd.run_id, cmd.secret)
            except OSError as exc:
                log.error(
                    "run secrets not kept on disk: a scheduler restart before the run ends "
                    "loses them",
                    run_id=cmd.run_id,
                    error=exc.strerror,
                )

    def _forget_run_secret(self, run_id: str) -> None:
        if self.run_secrets.pop(run_id, None) is not None:
            with contextlib.suppress(OSError):
                run_secrets.delete(self.data_dir, run_id)

    async def _persist(self, d: Decided) -> set[str]:
        """Write a cycle's changes: runs by compare-and-set, every other table by plain
        writes and deletes (the scheduler is their only writer). Returns the runs that
        conflicted. A run changed behind the cycle's decisions is not written (``run``)."""
        written = [(r, rec) for r, rec in d.runs if r not in d.behind]
        new_ids = [
            (rec.spec.submission_id, r)
            for r, rec in written
            if rec.spec.submission_id is not None and r not in self.revisions
        ]
        # a sweep's new trials are stored before the sweep's record counts them, so a crash
        # in between loses none (sweep_runs._issued counts them back in); a pipeline's new
        # steps before its record says they run (a restart finds them: pipeline_runs.py)
        first = [
            (r, rec) for r, rec in written if (rec.trial or rec.step) and r not in self.revisions
        ]
        failed = await self._write_runs(first) if first else set()
        if first:
            taken = {r for r, _ in first}
            written = [(r, rec) for r, rec in written if r not in taken]
        failed |= await self._write_runs(written)
        self.feed.own(self.stored_now)  # the run index, without reading them back
        self.stored_now = []
        await self._keep_submission_ids(new_ids, failed)
        for kv, changes in d.rows:
            for key, value in changes.written:
                record = value.record() if isinstance(value, AgentView) else value
                await self._put(kv, key, codec.encode(record))
            for key in changes.deleted:
                await self._put(kv, key, None)
        return failed

    async def _keep_submission_ids(self, new: list[tuple[str, str]], failed: set[str]) -> None:
        """Store the submission-id keys of the new runs stored, then forget the ids of runs
        that ended (a retry of one finds it by its key: ``_submitted_as``)."""
        kept = [(sid, r) for sid, r in new if r not in failed and r not in self.unstored]
        if kept:
            assert self.submissions is not None  # bound by load()
            await run_history.keep_submissions(self.submissions, kept, self._put)
        ended, self.ended_submissions = self.ended_submissions, []
        if self.submissions_kept:  # else the start's keys are not all stored yet: keep them
            self._forget_submissions(ended)

    def _forget_submissions(self, ended: Iterable[tuple[str, str]]) -> None:
        """Forget the submission ids of runs that ended (their keys are stored), but not one
        a submit in the loop's queue names: the loop finds it in memory when it comes."""
        subs = self.state.submissions
        for sid, run_id in ended:
            if self.queued_ids[sid]:
                self.ended_submissions.append((sid, run_id))  # at the next cycle
            elif subs.get(sid) == run_id:
                del subs[sid]

    async def _write_runs(self, written: list[tuple[str, m.RunRecord]]) -> set[str]:
        """Compare-and-set each changed run: in atomic batches where the server allows, single
        writes otherwise. Returns the runs another writer changed (reloaded from the store)."""
        failed: set[str] = set()
        sem = asyncio.Semaphore(self.config.write_concurrency)

        async def write(run_id: str, rec: m.RunRecord) -> None:
            full = FullBound()
            async with sem:  # encoded only once its turn comes: not a cycle's worth at once
                data = codec.encode(rec)
                while True:
                    try:
                        rev = self.revisions.get(run_id)
                        if rev is None:
                            new = await self.runs.create(run_id, data)
                        else:
                            new = await self.runs.update(run_id, data, last=rev)
                        break
                    except nats.js.errors.KeyWrongLastSequenceError:
                        landed = await self._landed(run_id, data)
                        if landed is not None:
                            new = landed
                            break
                        failed.add(run_id)
                        await self._reload(run_id)
                        return
                    except TRANSIENT as exc:
                        if rev is None and is_store_full(exc) and full.refused(time.monotonic()):
                            # a new run the full store refuses: refused to its submitter
                            self.unstored[run_id] = await describe_full(self.bus.js, refusal=exc)
                            return
                        log.warning("store write failed; retrying", run_id=run_id, error=repr(exc))
                        await retry_pause(0.5)
            self._stored(run_id, rec, new)

        batches = asyncio.Semaphore(BATCHES_IN_FLIGHT)

        async def batch(part: list[tuple[str, m.RunRecord]]) -> None:
            # many compare-and-sets committed together: one fsync instead of one per record
            async with batches:  # encoded once its turn comes: not a cycle's worth at once
                items = [(r, codec.encode(rec), self.revisions.get(r, 0)) for r, rec in part]
                try:
                    revs = await self.runs.write_batch(items)
                except (kvbatch.BatchRefused, *TRANSIENT) as exc:
                    # refused whole (a conflict somewhere) or unanswered: single writes find
                    # which record changed, and retry the rest
                    log.info("batch write refused; writing singly", runs=len(part), error=repr(exc))
                    await asyncio.gather(*(write(r, rec) for r, rec in part))
                    return
            for (run_id, rec), new in zip(part, revs, strict=True):
                self._stored(run_id, rec, new)

        if self.atomic and len(written) > 1:
            size = kvbatch.BATCH_MAX - 1  # and the fence's probe
            await asyncio.gather(
                *(batch(written[i : i + size]) for i in range(0, len(written), size))
            )
        else:
            await asyncio.gather(*(write(r, rec) for r, rec in written))
        return failed

    def _drop_unstored(self) -> None:
        """Forget the new runs the full store refused, as if never submitted (their submit
        is answered with why, and a retry with the same submission id tries again)."""
        st = self.state
        for run_id, why in self.unstored.items():
            rec = st.runs.get(run_id)
            st.runs.forget(run_id)
            self.replaced.add(run_id)
            if rec is not None and rec.spec.submission_id is not None:
                st.submissions.pop(rec.spec.submission_id, None)
            st.why.forget(run_id)
            st.assign_sent_at.pop(run_id, None)
            self._forget_run_secret(run_id)
            log.warning("run not stored: the store is full", run_id=run_id, why=why)

    def _stored(self, run_id: str, rec: m.RunRecord, revision: int) -> None:
        """A run's record is in the store at ``revision``: a finished one leaves memory."""
        self.revisions[run_id] = revision
        self.runs_seq = max(self.runs_seq, revision)
        self.stored_now.append((rec, revision))
        self.writes_since_snapshot += 1
        self._note_written(revision)
        if rec.state in TERMINAL:
            core.forget_finished(self.state, run_id)
            self.replaced.add(run_id)
            self.revisions.pop(run_id, None)
            self._forget_run_secret(run_id)
            self._keep_if_child(rec, revision)
            if rec.spec.submission_id is not None:
                self.ended_submissions.append((rec.spec.submission_id, run_id))

    def _stored_beside(self, rec: m.RunRecord, revision: int) -> None:
        """An ended run's record changed beside the loop (a tag, a trial's objective)."""
        self._note_written(revision)
        self.feed.own([(rec, revision)])
        kept = self.kept_ended.get(rec.run_id)
        if kept is not None:
            self.kept_ended[rec.run_id] = (rec, kept[1])

    async def _put(self, kv: FencedBucket, key: str, data: bytes | None) -> None:
        """Write (or with ``None`` delete) one key; the scheduler is its only writer."""
        while True:
            try:
                if data is None:
                    await kv.delete(key)
                else:
                    await kv.put(key, data)
                return
            except TRANSIENT as exc:
                log.warning("store write failed; retrying", key=key, error=repr(exc))
                await retry_pause(0.5)

    async def _landed(self, run_id: str, data: bytes) -> int | None:
        """The revision at which the store holds exactly ``data`` for this run, or None: a
        write of ours that went unanswered (a batch timed out under load) may have landed,
        and is then not another writer's change (its Assign still goes out)."""
        try:
            entry = await self.bus.runs.get(run_id)
        except nats.js.errors.KeyNotFoundError:
            return None
        return entry.revision if entry.value == data and entry.revision else None

    async def _reload(self, run_id: str) -> None:
        """Another writer changed this run: take the stored record as the truth."""
        log.warning("run changed by another writer; reloading", run_id=run_id)
        entry = await self.bus.runs.get(run_id)
        rec = codec.decode(m.RunRecord, entry.value or b"")
        self.replaced.add(run_id)
        self.feed.own([(rec, entry.revision or 0)])
        self._note_written(entry.revision or 0)
        self.runs_seq = max(self.runs_seq, entry.revision or 0)
        if rec.state in TERMINAL:
            self.state.runs.forget(run_id)
            self.revisions.pop(run_id, None)
            self._forget_run_secret(run_id)
            if rec.spec.submission_id is not None:
                self.ended_submissions.append((rec.spec.submission_id, run_id))
        else:
            self.state.runs.load(run_id, rec)
            self.revisions[run_id] = entry.revision or 0

    async def _execute(self, cmds: list[core.Command], failed: set[str]) -> None:
        for cmd in cmds:
            if isinstance(cmd, core.Log):
                log.info(cmd.event, **cmd.fields)
                continue
            run_id = cmd.run_id
            if run_id is not None and run_id in self.unstored:
                if isinstance(cmd, core.Reply) and cmd.reply_to:
                    await self.bus.nc.publish(
                        cmd.reply_to, codec.error("internal", self.unstored[run_id])
                    )
                continue
            if run_id is not None and run_id in failed:
                if isinstance(cmd, core.Reply) and cmd.reply_to:
                    await self.bus.nc.publish(
                        cmd.reply_to,
                        codec.error("conflict", f"run {run_id} was changed concurrently; retry"),
                    )
                continue
            try:
                await self._carry_out(cmd)
            except TRANSIENT as exc:
                # Commands are re-derived by reconciliation (resend, stale stop); a lost reply
                # is retried by the client. Nothing here is the only copy of a decision.
                log.warning("command not delivered", command=type(cmd).__name__, error=repr(exc))

    async def _carry_out(self, cmd: core.Command) -> None:
        """One command's side effect; node and machine work runs in the background."""
        nc = self.bus.nc
        match cmd:
            case core.SendToAgent():
                await nc.publish(
                    subjects.agent_commands(cmd.agent_id), codec.encode(self._with_secrets(cmd))
                )
            case core.Reply(reply_to=reply_to) if reply_to:
                await nc.publish(reply_to, codec.encode(cmd.message))
            case core.PublishEof():
                await self._publish_eof(cmd)
            case core.CreateNode():
                self._spawn(self._create_node(cmd))
            case core.StopNode():
                self._spawn(self._stop_node(cmd))
            case core.AttachVm():
                self._spawn(self.machines.attach(cmd))
            case core.DetachVm():
                self._spawn(self.machines.detach(cmd, self.state.vms.get(cmd.name)))
            case core.SaveSecret():
                save_credentials(self.machines.data_dir, cmd.name, credentials(cmd.secret))
            case core.SetTrialObjective():
                self._spawn(self._set_trial_objective(cmd))
            case core.Reply() | core.SaveRunSecret() | core.Log():
                pass  # a reply with nowhere to go; run secrets are kept (and logs written) first
            case _:
                assert_never(cmd)

    async def _set_trial_objective(self, cmd: core.SetTrialObjective) -> None:
        try:
            stored = await trial_objective_stored(
                self.runs, cmd.run_id, cmd.objective, cmd.intervals
            )
        except (*TRANSIENT, nats.js.errors.KeyNotFoundError, codec.BadMessage) as exc:
            log.warning("trial objective not written", run_id=cmd.run_id, error=repr(exc))
            return
        if stored is not None:
            self._stored_beside(*stored)

    def _with_secrets(self, cmd: core.SendToAgent) -> m.AgentCommand:
        """An Assign or Cancel carries this leader's epoch, and an Assign of a run with secret
        variables their values (only on the wire)."""
        command = cmd.command
        if isinstance(command, m.Assign | m.Cancel):
            command = msgspec.structs.replace(command, epoch=self.epoch)
        if isinstance(command, m.Assign) and command.spec.secret_env_names:
            secret = self.run_secrets.get(command.run_id)
            held = self.state.runs.get(command.run_id)
            owned = held is not None and (held.trial is not None or held.step is not None)
            if secret is None and owned and held is not None and held.parent_id:
                # a trial has its sweep's values, a step its pipeline's
                secret = self.run_secrets.get(held.parent_id)
            return msgspec.structs.replace(command, secret_env=secret)
        return command

    # --- node providers: side effects in the background, results back as events ----------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _provider(self, compute: m.ComputeRecord) -> NodeProvider:
        """The provider of a cluster's nodes, made on first use (see providers.registry)."""
        key = registry.provider_key(compute.name, compute.cluster)
        provider = self.providers.get(key)
        if provider is None:
            ctx = ProviderContext(
                data_dir=self.config.data_dir or Path(), gpu_pool=self.config.gpu_pool
            )
            provider = self.providers[key] = registry.make_provider(
                ctx, compute.name, compute.cluster
            )
        return provider

    async def _create_node(self, cmd: core.CreateNode) -> None:
        request = NodeRequest(
            node_id=cmd.node_id,
            cluster=cmd.cluster,
            shape=cmd.shape,
            priority=cmd.priority,
            broker_url=self.bus.url,
            labels=dict(cmd.labels),
            creds=self.agent_creds(cmd.node_id),
            tls_ca=self.config.auth.tls_ca if self.config.auth else None,
        )
        try:
            compute = self.state.computes.get(cmd.cluster)
            if compute is None:
                raise ProviderError("bad_request", f"no cluster {cmd.cluster!r} for the node")
            await self._provider(compute).create_node(request)
        except ProviderError as exc:
            self._enqueue(core.NodeFailed(node_id=cmd.node_id, code=exc.code, message=exc.message))
        except Exception as exc:  # a provider bug must not stop the scheduler
            log.exception("node provider failed", node_id=cmd.node_id)
            self._enqueue(
                core.NodeFailed(
                    node_id=cmd.node_id,
                    code="provider_error",
                    message=f"{type(exc).__name__}: {exc}",
                )
            )

    async def _stop_node(self, cmd: core.StopNode) -> None:
        node = self.state.nodes.get(cmd.node_id)
        compute = self.state.computes.get(node.cluster) if node is not None else None
        try:
            # a node whose cluster is gone is stopped by whichever provider made it (any other
            # ignores an id it does not know)
            providers = [self._provider(compute)] if compute else list(self.providers.values())
            for provider in providers:
                await provider.stop_node(cmd.node_id, cmd.grace_s)
        except Exception:  # the node stays "stopping"; provider.close() stops it at shutdown
            log.exception("stopping node failed", node_id=cmd.node_id)
            return
        self._enqueue(core.NodeStopped(node_id=cmd.node_id))

    async def _poll_providers(self) -> None:
        """A node whose process died on its own becomes a NodeFailed event."""
        while True:
            await retry_pause(self.config.provider_poll_s)
            for provider in list(self.providers.values()):
                try:
                    listed = await provider.list_nodes()
                except Exception:  # polled again next time
                    log.exception("listing nodes failed", provider=provider.name)
                    continue
                for pn in listed:
                    node = self.state.nodes.get(pn.node_id)
                    if not pn.alive and node is not None and node.state in ("creating", "running"):
                        self._enqueue(
                            core.NodeFailed(
                                node_id=pn.node_id,
                                code="exited",
                                message=f"node {pn.node_id} {pn.detail or 'exited'}",
                            )
                        )

    async def _publish_eof(self, cmd: core.PublishEof) -> None:
        data = codec.encode(m.LogBatch(run_id=cmd.run_id, attempt=cmd.attempt, eof=True))
        subject = subjects.logs(cmd.run_id, subjects.SCHEDULER_WRITER)
        for delay in (0.1, 0.3, 1.0, 2.0, 5.0):
            try:
                await self.bus.js.publish(subject, data)
                return
            except TRANSIENT:
                await retry_pause(delay)
        log.warning("end-of-log marker not published", run_id=cmd.run_id)

    async def close(self, before_disconnect: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stop everything; ``before_disconnect`` runs last on the open connection (the
        leader gives its lease up there, once nothing of it acts any more)."""
        for t in [*self.tasks, *self.background]:
            t.cancel()
        # shutting down: whatever one part raises, the others are still closed
        for provider in self.providers.values():
            with contextlib.suppress(Exception):
                await provider.close()
        with contextlib.suppress(Exception):
            await self.machines.close()
        # bounded, and without swallowing a cancel of close() itself (awaiting each task
        # under suppress(CancelledError) did both: one slow task stalled the whole stop)
        ending = [*self.tasks, *self.background]
        if ending:
            _, late = await asyncio.wait(ending, timeout=CLOSE_TASKS_S)
            if late:
                log.warning(
                    "tasks still running at the stop; closing the connection under them",
                    tasks=sorted(t.get_name() for t in late),
                )
        for sub in self.subs:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()
        await self.feed.close()
        await self.blob_commits.stop()
        if before_disconnect is not None:
            await before_disconnect()
        await self.bus.close()


async def run_scheduler(
    config: SchedulerConfig, stop: asyncio.Event, ready: asyncio.Event | None = None
) -> None:
    """Run the scheduler until ``stop`` is set: a standby until it holds the leader lease
    (lease.py), then the leader. Raises ``lease.Deposed`` when another scheduler takes the
    lease from it (it has stopped acting by then)."""
    codec.warm()
    if config.data_dir is None:
        from sortie.bus.profile import default_data_dir

        config = dataclasses.replace(config, data_dir=default_data_dir() / "scheduler")
    bus = await open_bus(
        config.url,
        "sortie-scheduler",
        create=True,
        replicas=config.replicas,
        reconnect_forever=True,
        auth=config.auth,
    )
    # served from the start: a standby exports its standing too (the rest once it leads)
    exported = CollectorRegistry()
    metrics: list[MetricsServer] = []
    try:
        standing = await _stand_by(bus, config, stop, exported, metrics)
    except BaseException:
        await _close(metrics)
        await bus.close()
        raise
    if standing is None:
        await _close(metrics)
        await bus.close()
        return
    lease, follower, feed = standing
    daemon = Daemon(bus, config, exported, feed)

    async def lead() -> None:
        assert lease.held is not None
        await daemon.lead_as(lease.held)  # before all else: the last leader writes no more
        capped: frozenset[str] = frozenset()  # streams whose size the store limit governs
        if config.store_limit is not None:
            own = config.retention.byte_limits()
            capped = await apply_store_limits(bus.js, config.store_limit, own)
        await apply_retention(bus.js, config.retention, capped)
        await follower.caught_up()  # the fence stands: nothing older is still to come
        await daemon.load(follower.read)
        await follower.stop()
        await daemon.start()
        log.info("scheduler ready", url=config.url)
        if ready is not None:
            ready.set()
        await daemon.run(stop)

    try:
        # renewed from the start: loading a long history must not let the lease lapse
        await _lead(lead(), lease)
    finally:
        await follower.stop()
        await _close(metrics)
        await daemon.close(before_disconnect=lease.release)


async def _stand_by(
    bus: Bus,
    config: SchedulerConfig,
    stop: asyncio.Event,
    exported: CollectorRegistry,
    metrics: list[MetricsServer],
) -> tuple[Lease, Follower, IndexFeed] | None:
    """Wait as a standby until this scheduler leads (its lease, and what it will load followed
    meanwhile, its run index kept current too), or None once ``stop`` is set first. Its
    metrics are served meanwhile."""
    lease = Lease(
        await bus.js.key_value(subjects.KV_LEADERSHIP),
        lease_holder(config.leader_lease_s, config.data_dir),
        reconnects=lambda: int(bus.nc.stats["reconnects"]),
    )
    exported.register(LeadershipCollector(lease.standing))
    follower = Follower(bus.js, FOLLOWED_BUCKETS)
    feed = IndexFeed(bus.js, open_index(config.data_dir))
    try:
        feed.start()
        await follower.start()
        if config.metrics_port is not None:
            metrics.append(await serve_metrics(exported, config.metrics_host, config.metrics_port))
            log.info("metrics served", url=metrics[0].url)
        if await lease.acquire(stop):
            return lease, follower, feed
    except BaseException:
        await follower.stop()
        await feed.close()
        raise
    await follower.stop()
    await feed.close()
    return None


async def _close(servers: list[MetricsServer]) -> None:
    for server in servers:
        await server.close()


async def _lead(loop: Coroutine[Any, Any, None], lease: Lease) -> None:
    """Run ``loop`` (loading, then serving) while the lease is renewed; once deposed, stop
    it at once."""
    running = asyncio.create_task(loop, name="loop")
    holding = asyncio.create_task(lease.hold(), name="lease")
    try:
        await asyncio.wait({running, holding}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        holding.cancel()
        if not running.done():
            running.cancel()
        await asyncio.wait({running, holding})
    if not holding.cancelled():
        deposed = holding.exception()
        if isinstance(deposed, Deposed):
            log.error(str(deposed))
        raise deposed or RuntimeError("the lease ended without a deposition")
    try:
        running.result()
    except Deposed as exc:  # a write the new leader's fence refused (fence.py)
        lease.held = None  # nothing to give up at the stop
        log.error(str(exc))
        raise
