"""What a person or a program sees of runs, computes and machines: the JSON shapes of the CLI's
``--output json`` and of the SDK's ``get_details``/``serialize``, in one module."""

from __future__ import annotations

from typing import Any

import msgspec

from sortie.proto import messages as m


def run_to_dict(rec: m.RunRecord, metrics: dict[str, list[m.MetricValue]]) -> dict[str, Any]:
    """The JSON shape of `sortie run show --output json` (and the SDK's get_details)."""
    spec = rec.spec
    git = spec.git or m.GitInfo()
    return {
        "run_id": rec.run_id,
        "state": str(rec.state),
        "attempt": rec.attempt,
        "exit_code": rec.exit_code,
        "experiment": spec.experiment,
        "target": spec.target,
        "script": spec.script,
        "arguments": list(spec.arguments),
        "agent_id": rec.agent_id,
        "created_at": iso(rec.created_at),
        "started_at": iso(rec.started_at),
        "ended_at": iso(rec.ended_at),
        "git": {
            "commit": git.commit,
            "branch": git.branch,
            "dirty": git.dirty,
            "remote": git.remote,
        },
        "snapshot": {
            "id": spec.snapshot_id,
            "files": spec.snapshot_files,
            "bytes": spec.snapshot_bytes,
        },
        "environment": msgspec.to_builtins(spec.environment.python),
        "docker": msgspec.to_builtins(spec.environment.docker),
        "metrics": metrics,
        "artifacts": [a.path for a in rec.artifacts],
        "error": None
        if rec.error is None
        else {"kind": rec.error.kind, "message": rec.error.message},
        "cancel_requested": rec.cancel_requested,
        "retries_used": rec.retries_used,
        "preemptions": rec.preemptions,
        "node_count": spec.node_count,
        "secret_env": list(spec.secret_env_names),  # names only: values are never stored
        "nodes": [
            {"rank": g.rank, "agent_id": g.agent_id, "state": str(g.state)} for g in rec.gang
        ],
        "history": [
            {"state": str(h.state), "at": iso(h.at), "attempt": h.attempt, "reason": h.reason}
            for h in rec.history
        ],
    }


def compute_to_dict(info: m.ComputeInfo) -> dict[str, Any]:
    c = info.compute
    return {
        "name": c.name,
        "type": c.type,
        "vm_size": c.cluster.vm_size,
        "vm_priority": c.cluster.vm_priority,
        "min_nodes": c.cluster.min_nodes,
        "max_nodes": c.cluster.max_nodes,
        "idle_seconds_before_scaledown": c.cluster.idle_seconds_before_scaledown,
        "provider": c.cluster.provider,
        "shape": msgspec.to_builtins(c.shape),
        "provisioning_state": c.provisioning_state,
        "provisioning_errors": [msgspec.to_builtins(e) for e in c.provisioning_errors],
        "nodes": msgspec.to_builtins(info.counts),
        "node_list": [msgspec.to_builtins(n) for n in info.nodes],
        "decisions": [msgspec.to_builtins(d) for d in c.decisions],
        "created_at": iso(c.created_at),
    }


def vm_to_dict(vm: m.VmRecord) -> dict[str, Any]:
    return {
        "name": vm.name,
        "type": "vm",
        "address": vm.vm.address,
        "ssh_port": vm.vm.ssh.ssh_port,
        "username": vm.vm.ssh.username,
        "auth": vm.vm.ssh.auth,
        "advertised_url": vm.vm.advertised_url,
        "provisioning_state": vm.provisioning_state,
        "provisioning_errors": [msgspec.to_builtins(e) for e in vm.provisioning_errors],
        "link": vm.link,
        "progress": list(vm.progress),
        "created_at": iso(vm.created_at),
    }


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
