"""What the run page shows of a record, as plain data: the header's and the timeline's
facts (also sent live as the record changes), and the details. Pure: a record in, JSON-able
dicts out. Secret variables appear by name only: a record holds no value of theirs."""

from __future__ import annotations

from typing import Any

from sortie.proto import messages as m
from sortie.proto.states import TERMINAL
from sortie.proto.waiting import describe_engine_job, engine_wait, shown_state

IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".gif", ".webp")


def agents(rec: m.RunRecord) -> list[dict[str, Any]]:
    """Where the run's current (or last) attempt ran: one entry per rank."""
    if rec.gang:
        return [{"rank": g.rank, "agent": g.agent_id, "host": g.hostname} for g in rec.gang]
    return [{"rank": 0, "agent": rec.agent_id, "host": ""}] if rec.agent_id else []


def live(rec: m.RunRecord, now: float) -> dict[str, Any]:
    """The facts that change while the page is open (the page redraws them from this), as of
    ``now`` (an engine job's "since ... (3 min ago)")."""
    return {
        "run_id": rec.run_id,
        "state": str(shown_state(rec)),
        "terminal": rec.state in TERMINAL,
        "attempt": rec.attempt,
        "created_at": rec.created_at,
        "started_at": rec.started_at,
        "ended_at": rec.ended_at,
        "exit_code": rec.exit_code,
        "cancel_requested": rec.cancel_requested,
        "agents": agents(rec),
        "history": [
            {"state": str(h.state), "at": h.at, "attempt": h.attempt, "reason": h.reason}
            for h in rec.history
        ],
        "error": None
        if rec.error is None
        else {"kind": str(rec.error.kind), "message": rec.error.message},
        "waiting": None if rec.waiting is None else rec.waiting.reason,
        # a run handed to Slurm or Spark: its job there, and its wait in that queue while
        # Starting ("slurm job 1234: PENDING (Resources) since ...", "waiting in slurm's queue:
        # Resources"), as `sortie run show|why` say them
        "engine_job": None if rec.engine_job is None else describe_engine_job(rec.engine_job, now),
        "engine_wait": engine_wait(rec),
        "retries_used": rec.retries_used,
        "preemptions": rec.preemptions,
        "artifacts": [{"path": a.path, "size": a.size} for a in rec.artifacts],
        "parent_id": rec.parent_id,
    }


def child(rec: m.RunRecord) -> dict[str, Any]:
    """A child run as its parent's page lists it."""
    return {
        "run_id": rec.run_id,
        "state": str(rec.state),
        "created_at": rec.created_at,
        "ended_at": rec.ended_at,
    }


def is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_TYPES)


def details(spec: m.RunSpec) -> list[tuple[str, str]]:
    """The configuration rows of the details card: (label, value), empty ones left out."""
    py, docker, res = spec.environment.python, spec.environment.docker, spec.resources
    if py.user_managed:
        python = "user-managed: " + (py.interpreter or "the agent's own Python")
    else:
        parts = [*py.pip, *(f"conda:{c}" for c in py.conda)]
        version = f" (Python {py.python_version})" if py.python_version else ""
        python = f"built{version}: {', '.join(parts) or 'no packages'}"
    rows = [
        ("script", spec.script),
        ("python", python),
        ("docker", _docker(docker)),
        ("resources", _resources(res, spec.node_count)),
        ("max duration", f"{spec.max_duration_s:g} s" if spec.max_duration_s else ""),
        ("queue timeout", f"{spec.queue_timeout_s:g} s" if spec.queue_timeout_s else ""),
        ("priority", str(spec.priority) if spec.priority else ""),
        ("retries", str(spec.max_retries) if spec.max_retries else ""),
        ("constraints", ", ".join(f"{k}={v}" for k, v in spec.constraints.items())),
        ("placement", "spread" if spec.strategy == "spread" else ""),
        ("dedicated only", "yes" if spec.dedicated_only else ""),
        (
            "snapshot",
            f"{spec.snapshot_id[:12]} ({spec.snapshot_files} files, {spec.snapshot_bytes} bytes)",
        ),
        ("submission id", spec.submission_id or ""),
    ]
    return [(k, v) for k, v in rows if v]


def _docker(docker: m.DockerSection) -> str:
    if not docker.enabled:
        return ""
    extra = [
        *(["GPUs"] if docker.gpu_support else []),
        *([f"shm {docker.shm_size}"] if docker.shm_size else []),
        *docker.arguments,
    ]
    image = docker.base_image or "(default image)"
    return f"{image} ({', '.join(extra)})" if extra else image


def _resources(res: m.Resources, nodes: int) -> str:
    parts = [f"{res.cpus:g} CPUs"]
    if res.memory_mb:
        parts.append(f"{res.memory_mb} MB")
    if res.gpus:
        parts.append(f"{res.gpus} GPUs" + (f" ({res.gpu_type})" if res.gpu_type else ""))
    if nodes > 1:
        parts.append(f"{nodes} nodes")
    return ", ".join(parts)
