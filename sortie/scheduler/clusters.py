"""Compute targets (managed clusters): checking requests and building records. Pure."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

import msgspec

from sortie.proto import messages as m
from sortie.scheduler.model import BUILTIN_TARGETS

NAME_RULE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,15}$")
KEEP_DECISIONS = 20
KEEP_ERRORS = 20
# One cluster's ceiling: the autoscaler creates nodes one by one in a cycle, so an absurd
# max_nodes (a typo, or a hostile request) must be refused rather than stall the scheduler.
MAX_NODES = 1000


def check_compute_name(name: str) -> str | None:
    if NAME_RULE.match(name):
        return None
    return (
        f"compute name {name!r} is not valid: use 2 to 16 characters, letters, digits and "
        "hyphens, starting with a letter"
    )


def check_cluster(
    cfg: m.ClusterConfig, catalog: Mapping[str, m.NodeShape], providers: Collection[str]
) -> m.ErrorReply | None:
    problem = (
        _size_problem(cfg, catalog)
        or _node_count_problem(cfg)
        or _ssh_pool_problem(cfg)
        or _provider_problem(cfg, providers)
    )
    return None if problem is None else m.ErrorReply(code="bad_request", message=problem)


def _size_problem(cfg: m.ClusterConfig, catalog: Mapping[str, m.NodeShape]) -> str | None:
    if cfg.vm_size.upper() not in catalog:
        return (
            f"unknown vm size {cfg.vm_size!r}: `sortie compute sizes` lists the sizes "
            "(operators add their own with SORTIE_SIZES_FILE)"
        )
    return None


def _node_count_problem(cfg: m.ClusterConfig) -> str | None:
    if cfg.max_nodes < 1:
        return "max_nodes must be at least 1"
    if cfg.max_nodes > MAX_NODES:
        return (
            f"max_nodes ({cfg.max_nodes}) is more than one cluster may have ({MAX_NODES}): "
            "split the pool into several computes"
        )
    if cfg.min_nodes < 0:
        return "min_nodes must not be negative"
    if cfg.min_nodes > cfg.max_nodes:
        return f"min_nodes ({cfg.min_nodes}) is greater than max_nodes ({cfg.max_nodes})"
    if cfg.idle_seconds_before_scaledown < 0:
        return "idle_seconds_before_scaledown must not be negative"
    return None


def _ssh_pool_problem(cfg: m.ClusterConfig) -> str | None:
    if not isinstance(cfg, m.SshPoolCluster):
        return None
    if not cfg.hosts:
        return "an ssh pool needs its machines: --hosts h1,h2,..."
    if cfg.max_nodes > len(cfg.hosts):
        return (
            f"max_nodes ({cfg.max_nodes}) is more than the pool's {len(cfg.hosts)} "
            "host(s): one node per host"
        )
    return None


def _provider_problem(cfg: m.ClusterConfig, providers: Collection[str]) -> str | None:
    if cfg.provider not in providers:
        return (
            f"unknown node provider {cfg.provider!r}; known providers: "
            f"{', '.join(sorted(providers))}"
        )
    return None


def new_compute(
    req: m.ComputeCreate,
    existing: Collection[str],
    catalog: Mapping[str, m.NodeShape],
    providers: Collection[str],
    now: float,
) -> m.ComputeRecord | m.ErrorReply:
    if (why := check_compute_name(req.name)) is not None:
        return m.ErrorReply(code="bad_request", message=why)
    if req.name in BUILTIN_TARGETS or req.name in existing:
        return m.ErrorReply(code="conflict", message=f"a compute target named {req.name!r} exists")
    if (problem := check_cluster(req.cluster, catalog, providers)) is not None:
        return problem
    cfg = msgspec.structs.replace(req.cluster, vm_size=req.cluster.vm_size.upper())
    return m.ComputeRecord(
        name=req.name,
        cluster=cfg,
        shape=catalog[cfg.vm_size],
        provisioning_state="Creating",
        created_at=now,
    )


def updated_compute(
    rec: m.ComputeRecord,
    req: m.ComputeUpdate,
    catalog: Mapping[str, m.NodeShape],
    providers: Collection[str],
) -> m.ComputeRecord | m.ErrorReply:
    if rec.provisioning_state == "Deleting":
        return m.ErrorReply(code="invalid_state", message=f"compute {rec.name} is being deleted")
    changes: dict[str, object] = {}
    if req.min_nodes is not None:
        changes["min_nodes"] = req.min_nodes
    if req.max_nodes is not None:
        changes["max_nodes"] = req.max_nodes
    if req.idle_seconds_before_scaledown is not None:
        changes["idle_seconds_before_scaledown"] = req.idle_seconds_before_scaledown
    if not changes:
        return m.ErrorReply(
            code="bad_request",
            message="nothing to update: give min_nodes, max_nodes or idle_seconds_before_scaledown",
        )
    cfg = msgspec.structs.replace(rec.cluster, **changes)
    if (problem := check_cluster(cfg, catalog, providers)) is not None:
        return problem
    if rec.provisioning_state == "Failed":
        # an update is the way to try a Failed cluster again: provisioning starts over
        return msgspec.structs.replace(
            rec, cluster=cfg, provisioning_state="Creating", error_streak=0, backoff_until=None
        )
    return msgspec.structs.replace(rec, cluster=cfg)


def with_decision(rec: m.ComputeRecord, decision: m.ScaleDecision) -> m.ComputeRecord:
    return msgspec.structs.replace(rec, decisions=[*rec.decisions, decision][-KEEP_DECISIONS:])


def with_error(rec: m.ComputeRecord, error: m.ProvisioningError, now: float) -> m.ComputeRecord:
    """Record a provider error and back off: 5 s, doubling per consecutive error, up to 5 min."""
    streak = rec.error_streak + 1
    return msgspec.structs.replace(
        rec,
        provisioning_errors=[*rec.provisioning_errors, error][-KEEP_ERRORS:],
        error_streak=streak,
        backoff_until=now + min(300.0, 5.0 * 2 ** (streak - 1)),
        provisioning_state="Failed"
        if rec.provisioning_state == "Creating"
        else rec.provisioning_state,
    )
