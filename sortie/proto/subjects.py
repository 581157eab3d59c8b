"""Every NATS subject, stream, bucket and object-store name Sortie uses, built in one place.

Nothing else in the code spells a subject string. Tokens that come from users or agents
(run ids, agent ids) are checked so that no caller can inject ``.``, ``*`` or ``>``.
"""

from __future__ import annotations

import base64
import hashlib
import re

PREFIX = "sortie"

# --- request/reply API served by the scheduler (queue group ``SCHEDULER_QUEUE``) -----------
API_SUBMIT = f"{PREFIX}.api.submit"
API_CANCEL = f"{PREFIX}.api.cancel"
API_TARGETS = f"{PREFIX}.api.targets"
API_COMPUTE = f"{PREFIX}.api.compute"  # ComputeRequest -> ComputeReplyOrError
API_AGENTS = f"{PREFIX}.api.agents"  # AgentRequest -> AgentReplyOrError
API_WHY = f"{PREFIX}.api.why"  # WhyRequest -> WhyReplyOrError
API_QUEUE = f"{PREFIX}.api.queue"  # queue.QueueRequest -> queue.QueueReplyOrError
API_RUN_TAG = f"{PREFIX}.api.run_tag"  # notes.RunTagRequest -> notes.RunTagReply
API_MODELS = f"{PREFIX}.api.models"  # ModelRegister -> ModelReplyOrError
API_RUNS_QUERY = f"{PREFIX}.api.runs.query"  # run_index.RunQuery -> RunPageOrError
API_EXPERIMENTS = f"{PREFIX}.api.experiments"  # ExperimentsQuery -> ExperimentListOrError
API_HOST_KEY = f"{PREFIX}.api.host_key"  # HostKeyScan -> HostKeyReplyOrError
API_ALL = f"{PREFIX}.api.>"
# RenewRequest -> RenewReplyOrError: agents and clients renew their credentials (scheduler)
AUTH_RENEW = f"{PREFIX}.auth.renew"
SCHEDULER_QUEUE = "sortie-scheduler"
# client or agent -> scheduler: BlobCommit -> BlobCommitReply. Outside ``sortie.api.>`` so a
# long verification never holds up the API; any scheduler (queue group) may answer.
BLOB_COMMIT = f"{PREFIX}.blobs.commit"

# --- agents ------------------------------------------------------------------------------
HEARTBEATS_ALL = f"{PREFIX}.hb.*"
# scheduler -> every agent, empty body: "I (re)started: send a heartbeat now", so a restarted
# scheduler confirms its agents (and places again) without waiting a heartbeat interval
HEARTBEAT_NOW = f"{PREFIX}.hbnow"
REPORTS_ALL = f"{PREFIX}.report.*"

# --- JetStream resources -------------------------------------------------------------------
STREAM_REPORTS = "SORTIE_REPORTS"  # agent -> scheduler run reports (durable, work queue)
STREAM_LOGS = "SORTIE_LOGS"  # run output, one subject per run and writer
STREAM_METRICS = "SORTIE_METRICS"  # run metrics, one subject per run and writer
# both forms: ``<run>.<writer>`` and the 0.1 form ``<run>`` (kept readable, see legacy_logs)
LOGS_ALL = f"{PREFIX}.logs.>"
METRICS_ALL = f"{PREFIX}.metrics.>"
# the writer token of the scheduler's own log lines (the end-of-log marker); not a valid
# agent id (check_token refuses "~"), so no agent can be granted it
SCHEDULER_WRITER = "~scheduler"
REPORTS_CONSUMER = "scheduler"


def reports_consumer(epoch: int) -> str:
    """The leader's durable consumer of the reports stream: one per leader epoch (a deposed
    leader's, deleted by the next, can take no more reports); ``REPORTS_CONSUMER`` itself for
    a scheduler that leads by no lease (epoch 0)."""
    return REPORTS_CONSUMER if epoch == 0 else f"{REPORTS_CONSUMER}-e{epoch}"


def reports_consumer_epoch(name: str) -> int | None:
    """The leader epoch a reports consumer's name is for (``reports_consumer``), or None for
    a name it never makes."""
    if name == REPORTS_CONSUMER:
        return 0
    prefix = f"{REPORTS_CONSUMER}-e"
    digits = name[len(prefix) :]
    return int(digits) if name.startswith(prefix) and digits.isdigit() else None


KV_RUNS = "sortie_runs"  # run id -> RunRecord
KV_AGENTS = "sortie_agents"  # agent id -> AgentRecord
KV_COMPUTES = "sortie_computes"  # compute name -> ComputeRecord
KV_NODES = "sortie_nodes"  # node id -> NodeRecord
KV_VMS = "sortie_vms"  # attached machine name -> VmRecord
OBJ_BLOBS = "sortie_blobs"  # sha256 hex -> bytes (snapshot files, manifests, artifacts)
KV_QUARANTINE = "sortie_quarantine"  # sha256 hex -> QuarantinedBlob (blobs refused, and why)
KV_MODELS = "sortie_models"  # model_key(name, version) -> ModelRecord (the model registry)
# sha256 hex of a dashboard token -> web_tokens.WebToken (`sortie auth web-token` writes them)
KV_WEB_TOKENS = "sortie_web_tokens"
# pipelines' reuse: pipelines.cache_id(key) -> CachedStep, pipelines.last_key_id(...) -> LastKey
KV_STEP_CACHE = "sortie_step_cache"
# which scheduler leads (leadership.Leadership under LEADER_KEY, renewed by compare-and-set),
# and each standby's presence (the same record under standby_key(holder))
KV_LEADERSHIP = "sortie_leadership"
# submission_key(submission id) -> the run id it created: a retry of a run that has ended (and
# so is no longer in the scheduler's memory) finds its run here (proto/run_snapshot.py)
KV_SUBMISSIONS = "sortie_submissions"
# the leader's snapshots of the runs it holds (run_snapshot.RunsSnapshot); scheduler only
OBJ_STATE = "sortie_state"
LEADER_KEY = "leader"
STANDBY_PREFIX = "standby."
# in each bucket the leader writes: the fence (the leadership record of the leader whose writes
# are stored there, scheduler/fence.py) and the probe its compare-and-set batches lead with.
# Sortie's own keys start with RESERVED_PREFIX, which holds a '.' (no token, run id, agent
# id, compute name or model key can), and readers of a whole bucket skip them
RESERVED_PREFIX = "_sortie."
FENCE_KEY = f"{RESERVED_PREFIX}fence"
FENCE_PROBE_KEY = f"{RESERVED_PREFIX}fence-probe"
# in KV_RUNS: which snapshot of the runs is the latest (run_snapshot.RunsSnapshotRef)
RUNS_SNAPSHOT_KEY = f"{RESERVED_PREFIX}snapshot"

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def check_token(kind: str, value: str) -> str:
    """Return ``value`` if it can stand as one subject token; raise ``ValueError`` otherwise."""
    if not _TOKEN.match(value):
        raise ValueError(f"{kind} {value!r} is not valid: use 1-128 letters, digits, '-' or '_'")
    return value


def model_key(name: str, version: int) -> str:
    """A registered model version's key in ``KV_MODELS``: ``<name>/<version>`` (a model name
    never holds ``/``: ``proto/model_names.check_name``)."""
    return f"{name}/{version}"


def submission_key(submission_id: str) -> str:
    """A submission id's key in ``KV_SUBMISSIONS``: its SHA-256 in hex (an id is any text)."""
    return hashlib.sha256(submission_id.encode()).hexdigest()


def reserved_key(key: str) -> bool:
    """Is this one of Sortie's own keys in a bucket (the fence), not a record?"""
    return key.startswith(RESERVED_PREFIX)


def standby_key(holder: str) -> str:
    """A standby scheduler's presence in ``KV_LEADERSHIP``: ``standby.<holder>``."""
    return f"{STANDBY_PREFIX}{check_token('scheduler holder id', holder)}"


def agent_commands(agent_id: str) -> str:
    """Scheduler -> one agent: assignments and cancels."""
    return f"{PREFIX}.agent.{check_token('agent id', agent_id)}.cmd"


def agent_images(agent_id: str) -> str:
    """Scheduler -> one agent: ``ImageQuery`` (which image a reference names on its engine),
    its reply subject one of :func:`image_answer`."""
    return f"{PREFIX}.agent.{check_token('agent id', agent_id)}.images"


def image_answer(agent_id: str, query: str) -> str:
    """Where one agent answers one ``ImageQuery`` (``query``: a token the asker picks)."""
    return f"{PREFIX}.images.{check_token('agent id', agent_id)}.{check_token('query', query)}"


def image_answers(agent_id: str) -> str:
    """Every :func:`image_answer` subject of one agent: the only ones it may answer on."""
    return f"{PREFIX}.images.{check_token('agent id', agent_id)}.*"


def heartbeat(agent_id: str) -> str:
    return f"{PREFIX}.hb.{check_token('agent id', agent_id)}"


def report(agent_id: str) -> str:
    return f"{PREFIX}.report.{check_token('agent id', agent_id)}"


def _writer(writer: str) -> str:
    return writer if writer == SCHEDULER_WRITER else check_token("agent id", writer)


def logs(run_id: str, writer: str) -> str:
    """A run's output as ``writer`` (an agent id, or ``SCHEDULER_WRITER``) publishes it: each
    agent may publish only under its own id, so a reader knows who wrote every line."""
    return f"{PREFIX}.logs.{check_token('run id', run_id)}.{_writer(writer)}"


def metrics(run_id: str, writer: str) -> str:
    return f"{PREFIX}.metrics.{check_token('run id', run_id)}.{_writer(writer)}"


def run_logs(run_id: str) -> str:
    """Every writer's output of one run (what readers subscribe to)."""
    return f"{PREFIX}.logs.{check_token('run id', run_id)}.*"


def run_metrics(run_id: str) -> str:
    return f"{PREFIX}.metrics.{check_token('run id', run_id)}.*"


def legacy_logs(run_id: str) -> str:
    """Where Sortie 0.1 published a run's output, with no writer: read for records stored
    then (no ``RunRecord.writers``); no role may publish here any more."""
    return f"{PREFIX}.logs.{check_token('run id', run_id)}"


def legacy_metrics(run_id: str) -> str:
    return f"{PREFIX}.metrics.{check_token('run id', run_id)}"


def agent_logs_any_run(agent_id: str) -> str:
    """What one agent may publish output to: any run, under its own id only."""
    return f"{PREFIX}.logs.*.{check_token('agent id', agent_id)}"


def agent_metrics_any_run(agent_id: str) -> str:
    return f"{PREFIX}.metrics.*.{check_token('agent id', agent_id)}"


def writer_of(subject: str) -> str | None:
    """The writer token of a log or metrics subject; ``None`` for the 0.1 form."""
    parts = subject.split(".")
    return parts[3] if len(parts) == 4 else None


# --- JetStream's own subjects, as permissions must name them ---------------------------------
# nats-py builds these on its own; they are spelled here only to grant or refuse them.
INBOX = "_INBOX"  # nats-py's default reply-subject prefix
CLIENT_INBOX = f"{INBOX}.client"
SCHEDULER_INBOX = f"{INBOX}.scheduler"
JS_API = "$JS.API"
JS_FLOW_CONTROL = "$JS.FC"
JS_ACK = "$JS.ACK"


def agent_inbox(agent_id: str) -> str:
    """The reply-subject prefix of one agent's connection (no other identity may read it)."""
    return f"{INBOX}.agent.{check_token('agent id', agent_id)}"


def kv_stream(bucket: str) -> str:
    """The stream JetStream keeps a KV bucket in."""
    return f"KV_{bucket}"


def kv_keys(bucket: str) -> str:
    """Every key of a KV bucket (writing one is publishing here)."""
    return f"$KV.{bucket}.>"


def kv_key(bucket: str, subject: str) -> str:
    """The key a message on one of ``kv_keys(bucket)`` writes."""
    return subject.removeprefix(f"$KV.{bucket}.")


def obj_stream(bucket: str) -> str:
    """The stream JetStream keeps an object store in."""
    return f"OBJ_{bucket}"


def obj_chunks(bucket: str) -> str:
    return f"$O.{bucket}.C.>"


def obj_chunks_of(bucket: str, nuid: str) -> str:
    """The chunks of one object (its ``ObjectInfo.nuid``)."""
    return f"$O.{bucket}.C.{nuid}"


def obj_meta(bucket: str) -> str:
    return f"$O.{bucket}.M.>"


def obj_chunk_subject(bucket: str, nuid: str) -> str:
    """Where one object's chunks are published, in order (nats-py's object-store layout)."""
    return f"$O.{bucket}.C.{check_token('object nuid', nuid)}"


def obj_meta_subject(bucket: str, name: str) -> str:
    """Where one object's meta entry (nats-py's ``ObjectInfo`` as JSON) is kept."""
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


# --- the broker's system account (only ``sortie auth revoke`` speaks it) ----------------------


def account_claims_update(account_public_key: str) -> str:
    """Where a running nats-server takes a newer JWT of an account (its revocations)."""
    return f"$SYS.REQ.ACCOUNT.{account_public_key}.CLAIMS.UPDATE"
