"""What the compute page shows, built from the scheduler's answers: data in, data out (no I/O;
not in the pure-decisions contract only because `client.views` sits beside the client).

A ``ComputeSnapshot`` is the page's whole state: one row per compute target (the scheduler's
targets, its clusters and its attached machines, by name), and each cluster and machine as
`sortie compute show --output json` shows it (``client.views``: no secret is in those).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from sortie.client.views import ComputeView, MachineView, compute_view, machine_view
from sortie.proto import messages as m
from sortie.proto.engines import Engine, SlurmEngine, SparkEngine

TargetKind = Literal["local", "cluster", "vm", "agents"]


class TargetRow(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    kind: TargetKind  # local: `sortie up`'s agent; vm: attached over SSH; agents: started alone
    detail: str  # what it is made of: "process pool of Standard_D2 (dedicated)", "me@host:22"
    state: str  # its provisioning state; "Ready" or "No agent" for the others
    agents: int  # live agents serving it
    nodes: str | None = None  # a cluster's "current/target (min-max)"
    error: str | None = None  # its latest provisioning error
    # an attached machine's engine: "slurm · partition debug", "spark · spark://h:7077"
    engine: str | None = None


class ComputeSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    at: float  # when it was read (epoch seconds)
    targets: list[TargetRow] = []
    clusters: list[ComputeView] = []
    machines: list[MachineView] = []
    error: str | None = None  # the scheduler did not answer the last read: why


def snapshot(
    targets: list[m.TargetInfo],
    computes: list[m.ComputeInfo],
    vms: list[m.VmRecord],
    at: float,
) -> ComputeSnapshot:
    live = {t.name: t.agents for t in targets}
    rows = {t.name: _plain_row(t) for t in targets}
    rows.update({c.compute.name: _cluster_row(c, live.get(c.compute.name, 0)) for c in computes})
    rows.update({v.name: _machine_row(v, live.get(v.name, 0)) for v in vms})
    return ComputeSnapshot(
        at=at,
        targets=[rows[name] for name in sorted(rows, key=lambda n: (n != "local", n))],
        clusters=[compute_view(c) for c in sorted(computes, key=lambda c: c.compute.name)],
        machines=[machine_view(v) for v in sorted(vms, key=lambda v: v.name)],
    )


def _plain_row(t: m.TargetInfo) -> TargetRow:
    detail = "this machine's agent (sortie up)" if t.kind == "local" else "agents started alone"
    return TargetRow(
        name=t.name,
        kind="local" if t.kind == "local" else "agents",
        detail=detail,
        state="Ready" if t.agents else "No agent",
        agents=t.agents,
    )


def _cluster_row(info: m.ComputeInfo, agents: int) -> TargetRow:
    c, n = info.compute, info.counts
    pool = "process" if c.cluster.provider == "process" else "SSH pool"
    errors = c.provisioning_errors
    return TargetRow(
        name=c.name,
        kind="cluster",
        detail=f"{pool} of {c.cluster.vm_size} ({c.cluster.vm_priority})",
        state=c.provisioning_state,
        agents=agents,
        nodes=f"{n.current}/{n.target} ({c.cluster.min_nodes}-{c.cluster.max_nodes})",
        error=errors[-1].message if errors else None,
    )


def engine_summary(engine: Engine) -> str:
    """The engine an attached machine hands its runs to, in a few words (the settings given;
    `sortie compute show` lists them all)."""
    match engine:
        case SlurmEngine():
            given = [
                f"{what} {value}"
                for what, value in (
                    ("partition", engine.partition),
                    ("account", engine.account),
                    ("qos", engine.qos),
                )
                if value
            ]
            return " · ".join(["slurm", *(given or ["default partition"])])
        case SparkEngine():
            return f"spark · {engine.master}"


def _machine_row(vm: m.VmRecord, agents: int) -> TargetRow:
    login = vm.vm.ssh
    errors = vm.provisioning_errors
    return TargetRow(
        name=vm.name,
        kind="vm",
        detail=f"{login.username}@{vm.vm.address}:{login.ssh_port} ({login.auth})",
        state=vm.provisioning_state,
        agents=agents,
        error=errors[-1].message if errors else None,
        engine=None if vm.vm.engine is None else engine_summary(vm.vm.engine),
    )
