"""Every NATS subject, stream, bucket and object-store name Sortie uses, built in one place.

Nothing else in the code spells a subject string. Tokens that come from users or agents
(run ids, agent ids) are checked so that no caller can inject ``.``, ``*`` or ``>``.
"""

from __future__ import annotations

import base64
import re

PREFIX = "sortie"

# --- request/reply API served by the scheduler (queue group ``SCHEDULER_QUEUE``) -----------
API_SUBMIT = f"{PREFIX}.api.submit"
API_CANCEL = f"{PREFIX}.api.cancel"
API_TARGETS = f"{PREFIX}.api.targets"
API_COMPUTE = f"{PREFIX}.api.compute"  # ComputeRequest -> ComputeReplyOrError
API_AGENTS = f"{PREFIX}.api.agents"  # AgentRequest -> AgentReplyOrError
API_WHY = f"{PREFIX}.api.why"  # WhyRequest -> WhyReplyOrError
API_ALL = f"{PREFIX}.api.>"
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
STREAM_LOGS = "SORTIE_LOGS"  # run output, one subject per run
STREAM_METRICS = "SORTIE_METRICS"  # run metrics, one subject per run
LOGS_ALL = f"{PREFIX}.logs.*"
METRICS_ALL = f"{PREFIX}.metrics.*"
REPORTS_CONSUMER = "scheduler"

KV_RUNS = "sortie_runs"  # run id -> RunRecord
KV_AGENTS = "sortie_agents"  # agent id -> AgentRecord
KV_COMPUTES = "sortie_computes"  # compute name -> ComputeRecord
KV_NODES = "sortie_nodes"  # node id -> NodeRecord
KV_VMS = "sortie_vms"  # attached machine name -> VmRecord
OBJ_BLOBS = "sortie_blobs"  # sha256 hex -> bytes (snapshot files, manifests, artifacts)
KV_QUARANTINE = "sortie_quarantine"  # sha256 hex -> QuarantinedBlob (blobs refused, and why)

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def check_token(kind: str, value: str) -> str:
    """Return ``value`` if it can stand as one subject token; raise ``ValueError`` otherwise."""
    if not _TOKEN.match(value):
        raise ValueError(f"{kind} {value!r} is not valid: use 1-128 letters, digits, '-' or '_'")
    return value


def agent_commands(agent_id: str) -> str:
    """Scheduler -> one agent: assignments and cancels."""
    return f"{PREFIX}.agent.{check_token('agent id', agent_id)}.cmd"


def heartbeat(agent_id: str) -> str:
    return f"{PREFIX}.hb.{check_token('agent id', agent_id)}"


def report(agent_id: str) -> str:
    return f"{PREFIX}.report.{check_token('agent id', agent_id)}"


def logs(run_id: str) -> str:
    return f"{PREFIX}.logs.{check_token('run id', run_id)}"


def metrics(run_id: str) -> str:
    return f"{PREFIX}.metrics.{check_token('run id', run_id)}"


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


def obj_stream(bucket: str) -> str:
    """The stream JetStream keeps an object store in."""
    return f"OBJ_{bucket}"


def obj_chunks(bucket: str) -> str:
    return f"$O.{bucket}.C.>"


def obj_meta(bucket: str) -> str:
    return f"$O.{bucket}.M.>"


def obj_chunk_subject(bucket: str, nuid: str) -> str:
    """Where one object's chunks are published, in order (nats-py's object-store layout)."""
    return f"$O.{bucket}.C.{check_token('object nuid', nuid)}"


def obj_meta_subject(bucket: str, name: str) -> str:
    """Where one object's meta entry (nats-py's ``ObjectInfo`` as JSON) is kept."""
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
