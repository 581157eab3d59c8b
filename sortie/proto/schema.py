"""Generate docs/protocol.md: every subject and the JSON Schema of every message.

    python -m sortie.proto.schema > docs/protocol.md

A test checks that the committed file matches what this prints, so the document can't drift
from the Structs.
"""

from __future__ import annotations

import inspect
import json

import msgspec

from sortie.proto import leadership, notes, queue, run_index, run_snapshot, web_tokens
from sortie.proto import messages as m
from sortie.proto import subjects as s

# (subject, who publishes, who consumes, payload, reply)
SUBJECTS: list[tuple[str, str, str, str, str]] = [
    (s.API_SUBMIT, "clients, services", "scheduler", "SubmitRequest", "SubmitReply"),
    (s.API_CANCEL, "clients, services", "scheduler", "CancelRequest", "CancelReply"),
    (s.API_TARGETS, "clients, services", "scheduler", "TargetsRequest", "TargetsReplyOrError"),
    (s.API_COMPUTE, "clients, services", "scheduler", "ComputeRequest", "ComputeReplyOrError"),
    (s.API_AGENTS, "clients, operators", "scheduler", "AgentRequest", "AgentReplyOrError"),
    (s.API_WHY, "clients", "scheduler", "WhyRequest", "WhyReplyOrError"),
    (s.API_QUEUE, "clients", "scheduler", "QueueRequest", "QueueReplyOrError"),
    (s.API_RUN_TAG, "clients", "scheduler", "RunTagRequest", "RunTagReply"),
    (s.API_MODELS, "clients", "scheduler", "ModelRegister", "ModelReplyOrError"),
    (s.API_RUNS_QUERY, "clients, dashboards", "scheduler", "RunQuery", "RunPageOrError"),
    (
        s.API_EXPERIMENTS,
        "clients, dashboards",
        "scheduler",
        "ExperimentsQuery",
        "ExperimentListOrError",
    ),
    (s.API_HOST_KEY, "clients", "scheduler", "HostKeyScan", "HostKeyReplyOrError"),
    (s.AUTH_RENEW, "agents, clients", "scheduler", "RenewRequest", "RenewReplyOrError"),
    (s.BLOB_COMMIT, "clients, agents", "scheduler", "BlobCommit", "BlobCommitReply"),
    (s.heartbeat("AGENT_ID"), "agent", "scheduler", "Heartbeat", "-"),
    (s.agent_commands("AGENT_ID"), "scheduler", "agent", "AgentCommand", "-"),
    (
        s.agent_images("AGENT_ID"),
        "scheduler",
        "agent",
        "ImageQuery",
        f"ImageAnswer on {s.image_answer('AGENT_ID', 'QUERY')}",
    ),
    (s.HEARTBEAT_NOW, "scheduler (at start)", "every agent", "HeartbeatNow", "-"),
    (s.report("AGENT_ID"), "agent (JetStream)", "scheduler (durable consumer)", "RunReport", "-"),
    (s.report("AGENT_ID"), "agent (JetStream)", "scheduler (durable consumer)", "RunNote", "-"),
    (s.logs("RUN_ID", "AGENT_ID"), "that agent only", "clients", "LogBatch", "-"),
    (s.logs("RUN_ID", s.SCHEDULER_WRITER), "scheduler (eof)", "clients", "LogBatch", "-"),
    (s.metrics("RUN_ID", "AGENT_ID"), "that agent only", "clients", "MetricBatch", "-"),
]

STORES: list[tuple[str, str, str]] = [
    (f"KV `{s.KV_RUNS}`", "run id", "RunRecord (written by the scheduler only)"),
    (f"KV `{s.KV_AGENTS}`", "agent id", "AgentRecord (written by the scheduler only)"),
    (f"KV `{s.KV_COMPUTES}`", "compute name", "ComputeRecord (written by the scheduler only)"),
    (f"KV `{s.KV_NODES}`", "node id", "NodeRecord (written by the scheduler only)"),
    (f"KV `{s.KV_VMS}`", "machine name", "VmRecord (written by the scheduler only; no secrets)"),
    (
        f"object store `{s.OBJ_BLOBS}`",
        "sha256 hex",
        "file contents, Manifest (JSON), artifacts (meta written by the scheduler only, once)",
    ),
    (f"KV `{s.KV_QUARANTINE}`", "sha256 hex", "QuarantinedBlob (written by the scheduler only)"),
    (
        f"KV `{s.KV_SUBMISSIONS}`",
        "sha256 hex of a submission id",
        "the run id it created, as text (written by the scheduler only)",
    ),
    (
        f"object store `{s.OBJ_STATE}`",
        "runs-EPOCH-SEQ",
        "RunsSnapshotHead then a SnapshotRun per run (JSON lines, zlib-compressed), pointed "
        "at by RunsSnapshotRef under "
        f"`{s.RUNS_SNAPSHOT_KEY}` in `{s.KV_RUNS}` (scheduler only)",
    ),
    (
        f"KV `{s.KV_MODELS}`",
        "NAME/VERSION",
        "ModelRecord (created by the scheduler only, never changed; files are blobs)",
    ),
    (
        f"KV `{s.KV_WEB_TOKENS}`",
        "sha256 hex of the token",
        "WebToken (written by `sortie auth web-token` with the scheduler's credentials)",
    ),
    (
        f"KV `{s.KV_STEP_CACHE}`",
        "key.<StepKey digest>, last.<sha256 of experiment, pipeline, step>",
        "CachedStep, LastKey (pipelines' reuse; written by the scheduler only)",
    ),
    (
        f"KV `{s.KV_LEADERSHIP}`",
        f"{s.LEADER_KEY}, {s.STANDBY_PREFIX}<holder>",
        "Leadership (the leader's lease, by compare-and-set; each standby's presence)",
    ),
    (f"stream `{s.STREAM_REPORTS}`", s.REPORTS_ALL, "work queue of RunReport"),
    (f"stream `{s.STREAM_LOGS}`", s.LOGS_ALL, "LogBatch, per run and writer"),
    (f"stream `{s.STREAM_METRICS}`", s.METRICS_ALL, "MetricBatch, per run and writer"),
]

TYPES: dict[str, object] = {
    "SubmitRequest": m.SubmitRequest,
    "SubmitReply": m.SubmitReply,
    "CancelRequest": m.CancelRequest,
    "CancelReply": m.CancelReply,
    "TargetsRequest": m.TargetsRequest,
    "TargetsReplyOrError": m.TargetsReplyOrError,
    "ComputeRequest": m.ComputeRequest,
    "ComputeReplyOrError": m.ComputeReplyOrError,
    "AgentRequest": m.AgentRequest,
    "AgentReplyOrError": m.AgentReplyOrError,
    "WhyRequest": m.WhyRequest,
    "WhyReplyOrError": m.WhyReplyOrError,
    "QueueRequest": queue.QueueRequest,
    "QueueReplyOrError": queue.QueueReplyOrError,
    "ModelRegister": m.ModelRegister,
    "ModelReplyOrError": m.ModelReplyOrError,
    "RunQuery": run_index.RunQuery,
    "RunPageOrError": run_index.RunPageOrError,
    "ExperimentsQuery": run_index.ExperimentsQuery,
    "ExperimentListOrError": run_index.ExperimentListOrError,
    "HostKeyScan": m.HostKeyScan,
    "HostKeyReplyOrError": m.HostKeyReplyOrError,
    "RenewRequest": m.RenewRequest,
    "RenewReplyOrError": m.RenewReplyOrError,
    "BlobCommit": m.BlobCommit,
    "BlobCommitReply": m.BlobCommitReply,
    "QuarantinedBlob": m.QuarantinedBlob,
    "HeartbeatNow": m.HeartbeatNow,
    "Heartbeat": m.Heartbeat,
    "AgentCommand": m.AgentCommand,
    "ImageQuery": m.ImageQuery,
    "ImageAnswer": m.ImageAnswer,
    "RunReport": m.RunReport,
    "RunNote": notes.RunNote,
    "RunTagRequest": notes.RunTagRequest,
    "RunTagReply": notes.RunTagReply,
    "LogBatch": m.LogBatch,
    "MetricBatch": m.MetricBatch,
    "RunRecord": m.RunRecord,
    "AgentRecord": m.AgentRecord,
    "ComputeRecord": m.ComputeRecord,
    "NodeRecord": m.NodeRecord,
    "VmRecord": m.VmRecord,
    "ModelRecord": m.ModelRecord,
    "Manifest": m.Manifest,
    "WebToken": web_tokens.WebToken,
    "Leadership": leadership.Leadership,
    "RunsSnapshotHead": run_snapshot.RunsSnapshotHead,
    "SnapshotRun": run_snapshot.SnapshotRun,
    "RunsSnapshotRef": run_snapshot.RunsSnapshotRef,
}

INTRO = """# Sortie's bus protocol

Generated by `python -m sortie.proto.schema` from `sortie/proto/messages.py` and
`sortie/proto/subjects.py`; do not edit by hand. Every payload is JSON (msgspec). Variants are tagged with a `"type"` field.
Unknown fields are ignored by readers, and new fields always have defaults, so older and
newer components interoperate.

A service submits a run with one request on `sortie.api.submit`: upload the files and the
manifest to the object store first (each under its sha256 hex digest), then send a
`SubmitRequest` whose `spec.snapshot_id` is the sha256 of the manifest's JSON bytes. The reply
is `{"type": "submit_accepted", "run_id": ...}` or `{"type": "error", "code": ...,
"message": ...}`. Undecodable or invalid requests get an `error` with code `bad_request`
and change nothing.

```sh
nats req sortie.api.submit '{"type":"submit","spec":{"experiment":"demo","script":"train.py","snapshot_id":"<sha256>"}}'
```

Run states: `Queued → Preparing → Starting → Running → Finalizing → Completed | Failed |
Canceled` (see `proto/states.py` for every allowed edge). A run whose agent is lost goes back to
`Queued` with `attempt` raised; an attempt on a preempted node ends `Preempted` and the run is
requeued the same way; reports for an older attempt are refused.
"""  # noqa: E501 - the doc shows the `nats req` example on one line, as it is typed


def _clean(node: object) -> object:
    """Descriptions as ``inspect.cleandoc`` gives them, whatever msgspec version made them
    (0.22 and 0.23 dedent class docstrings differently)."""
    if isinstance(node, dict):
        return {
            k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _clean(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def render() -> str:
    out = [
        INTRO,
        "## Subjects\n",
        "| subject | published by | consumed by | payload | reply |",
        "|---|---|---|---|---|",
    ]
    out += [f"| `{a}` | {b} | {c} | {d} | {e} |" for a, b, c, d, e in SUBJECTS]
    out += ["", "## Stored state\n", "| where | key | value |", "|---|---|---|"]
    out += [f"| {a} | `{b}` | {c} |" for a, b, c in STORES]
    out += ["", "## Message schemas (JSON Schema)\n"]
    (schemas, components) = msgspec.json.schema_components(
        list(TYPES.values()), ref_template="#/$defs/{name}"
    )
    for name, schema in zip(TYPES, schemas, strict=True):
        body = json.dumps(_clean(schema), indent=2, sort_keys=True)
        out += [f"### {name}\n", "```json", body, "```", ""]
    out += [
        "### Definitions\n",
        "```json",
        json.dumps(_clean({"$defs": components}), indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
