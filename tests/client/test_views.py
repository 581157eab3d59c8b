"""The CLI's JSON views (``sortie.client.views``): each view's keys, in order, pinned, so a
script that parses ``--output json`` keeps working; and the gang rule both sides share.

The expected keys and values were captured from the dict-building code these views replaced.
"""

from __future__ import annotations

import json
from typing import Any

from sortie.cli.status import Observed, summarise
from sortie.client.client import SnapshotSummary
from sortie.client.views import (
    SubmittedView,
    View,
    agent_view,
    as_dict,
    compute_view,
    machine_view,
    run_summary_view,
    run_view,
    to_json,
)
from sortie.proto import messages as m
from sortie.proto.gang import agent_ids, members
from sortie.proto.leadership import Leadership
from sortie.proto.states import RunState
from sortie.proto.subjects import LEADER_KEY
from tests import builders as b

CAPACITY = m.Capacity(cpus=4.0, memory_mb=1024, gpus=2, gpu_type="H100")
GPU = m.GpuDevice(index=0, name="NVIDIA H100", uuid="GPU-1", memory_total_mb=80000)
RUN_SPEC = b.spec(
    target="gpu",
    arguments=["--lr", "0.1"],
    environment=m.Environment(
        python=m.PythonEnvironment(user_managed=False, pip=["numpy"]),
        docker=m.DockerSection(enabled=True, base_image="python:3.11", arguments=["--ipc=host"]),
    ),
    resources=m.Resources(cpus=2.0, gpus=1),
    snapshot_files=3,
    snapshot_bytes=1234,
    git=m.GitInfo(commit="abc123", branch="main", dirty=True, remote="git@x:y.git"),
    node_count=2,
    secret_env_names=["API_TOKEN"],
)
RUN = b.record(
    "run-1",
    RunState.FAILED,
    spec=RUN_SPEC,
    attempt=2,
    created_at=10.0,
    started_at=12.5,
    ended_at=20.25,
    exit_code=3,
    agent_id="a1",
    agent_incarnation="i1",
    error=m.RunError(kind="exit_code", message="the script exited with 3"),
    artifacts=[m.Artifact(path="outputs/model.pkl", size=5, sha256="f" * 64)],
    history=[
        m.StateChange(state=RunState.QUEUED, at=10.0, attempt=1),
        m.StateChange(state=RunState.FAILED, at=20.25, attempt=2, reason="exit 3"),
    ],
    retries_used=1,
    preemptions=0,
    gang=[
        m.GangMember(rank=0, agent_id="a1", incarnation="i1", state=RunState.FAILED),
        m.GangMember(rank=1, agent_id="a2", incarnation="i2", state=RunState.FAILED),
    ],
)
METRICS: dict[str, list[m.MetricValue]] = {"loss": [0.5, 0.25], "best": ["yes"]}
COMPUTE = m.ComputeInfo(
    compute=m.ComputeRecord(
        name="gpus",
        cluster=m.ProcessCluster(vm_size="gpu1", max_nodes=4, min_nodes=1),
        shape=m.NodeShape(name="gpu1", cpus=8.0, memory_mb=16384, gpus=1, gpu_type="H100"),
        provisioning_state="Succeeded",
        provisioning_errors=[m.ProvisioningError(at=1.0, code="quota", message="no room")],
        decisions=[m.ScaleDecision(at=2.0, action="scale_up", nodes=["n1"], reason="queued")],
        created_at=0.5,
    ),
    counts=m.NodeCounts(current=1, target=2, idle=0, busy=1),
    nodes=[
        m.NodeRecord(node_id="n1", cluster="gpus", state="running", created_at=1.0, changed_at=2.0)
    ],
)
VM = m.VmRecord(
    name="box",
    vm=m.VmConfig(
        address="10.0.0.5",
        ssh=m.SshLogin(username="me", ssh_port=2222, auth="key"),
        advertised_url="nats://10.0.0.1:4222",
    ),
    provisioning_state="Failed",
    provisioning_errors=[m.ProvisioningError(at=3.0, code="ssh", message="refused")],
    progress=["connecting", "installing"],
    created_at=1.5,
    link="reconnecting",
)
AGENT = m.AgentRecord(
    agent_id="a1",
    incarnation="i1",
    target="local",
    hostname="h",
    capacity=CAPACITY,
    state="ready",
    first_seen=0.0,
    last_seen=99.0,
    cordoned=True,
    labels={"zone": "a"},
    gpus=[GPU],
    container_engine="podman",
)

OPAQUE = {"metrics", "labels", "ended_last_hour"}  # keys are data (metric names, labels)


def paths(data: Any, prefix: str = "") -> list[str]:
    """Every key of ``data`` as a dotted path, in order (a list by its first element)."""
    out: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            out.append(prefix + key)
            if key not in OPAQUE:
                out += paths(value, f"{prefix}{key}.")
    elif isinstance(data, list) and data:
        out += paths(data[0], prefix[:-1] + "[].")
    return out


def printed(view: View | list[View]) -> Any:
    """What a script reading ``--output json`` gets."""
    return json.loads(to_json(view))


RUN_KEYS = (
    "run_id",
    "state",
    "attempt",
    "exit_code",
    "experiment",
    "target",
    "script",
    "arguments",
    "agent_id",
    "created_at",
    "started_at",
    "ended_at",
    "git",
    "snapshot",
    "environment",
    "docker",
    "metrics",
    "artifacts",
    "error",
    "cancel_requested",
    "retries_used",
    "preemptions",
    "node_count",
    "secret_env",
    "nodes",
    "history",
    "tags",
    "properties",
    "parent_id",
    "children",
    "waiting",
    "engine_job",
)


def test_run_view_keys_and_values() -> None:
    assert printed(run_view(RUN, METRICS)) == {
        "run_id": "run-1",
        "state": "Failed",
        "attempt": 2,
        "exit_code": 3,
        "experiment": "exp",
        "target": "gpu",
        "script": "train.py",
        "arguments": ["--lr", "0.1"],
        "agent_id": "a1",
        "created_at": "1970-01-01T00:00:10.000Z",
        "started_at": "1970-01-01T00:00:12.500Z",
        "ended_at": "1970-01-01T00:00:20.250Z",
        "git": {"commit": "abc123", "branch": "main", "dirty": True, "remote": "git@x:y.git"},
        "snapshot": {"id": b.SNAP, "files": 3, "bytes": 1234},
        "environment": {
            "user_managed": False,
            "interpreter": None,
            "pip": ["numpy"],
            "conda": [],
            "python_version": None,
            "channels": [],
        },
        "docker": {
            "enabled": True,
            "base_image": "python:3.11",
            "gpu_support": False,
            "shm_size": None,
            "arguments": ["--ipc=host"],
        },
        "metrics": {"loss": [0.5, 0.25], "best": ["yes"]},
        "artifacts": ["outputs/model.pkl"],
        "error": {"kind": "exit_code", "message": "the script exited with 3"},
        "cancel_requested": False,
        "retries_used": 1,
        "preemptions": 0,
        "node_count": 2,
        "secret_env": ["API_TOKEN"],
        "nodes": [
            {"rank": 0, "agent_id": "a1", "state": "Failed"},
            {"rank": 1, "agent_id": "a2", "state": "Failed"},
        ],
        "history": [
            {"state": "Queued", "at": "1970-01-01T00:00:10.000Z", "attempt": 1, "reason": None},
            {"state": "Failed", "at": "1970-01-01T00:00:20.250Z", "attempt": 2, "reason": "exit 3"},
        ],
        "tags": {},
        "properties": {},
        "parent_id": None,
        "children": [],
        "waiting": None,
        "engine_job": None,
    }
    # key order too: the JSON is printed in this order
    assert list(printed(run_view(RUN, METRICS))) == list(RUN_KEYS)
    # a fresh run: no git, no error, nulls where nothing happened yet; same keys
    fresh = printed(run_view(b.record("r0"), {}))
    assert list(fresh) == list(RUN_KEYS)
    assert fresh["git"] == {"commit": None, "branch": None, "dirty": False, "remote": None}
    assert (fresh["error"], fresh["started_at"], fresh["nodes"]) == (None, None, [])
    waiting = b.record("r0", waiting=m.TargetWait(reason="attach failed: x", since=10.0))
    assert printed(run_view(waiting, {}))["waiting"] == {
        "reason": "attach failed: x",
        "since": "1970-01-01T00:00:10.000Z",
    }
    # the SDK's get_details returns the same data as plain dicts
    assert as_dict(run_view(RUN, METRICS)) == printed(run_view(RUN, METRICS))


def test_run_summary_keys() -> None:
    assert printed([run_summary_view(RUN)]) == [
        {
            "run_id": "run-1",
            "experiment": "exp",
            "target": "gpu",
            "state": "Failed",
            "attempt": 2,
            "created_at": "1970-01-01T00:00:10.000Z",
            "ended_at": "1970-01-01T00:00:20.250Z",
            "parent_id": None,
            "tags": {},
        }
    ]


def test_submitted_view_keys() -> None:
    snapshot = SnapshotSummary(id="s", files=3, bytes=30, uploaded_files=1, uploaded_bytes=10)
    assert printed(SubmittedView(run_id="run-1", snapshot=snapshot)) == {
        "run_id": "run-1",
        "snapshot": {"id": "s", "files": 3, "bytes": 30, "uploaded_files": 1, "uploaded_bytes": 10},
    }


def test_compute_view_keys() -> None:
    shown = printed(compute_view(COMPUTE))
    assert paths(shown) == [
        "name",
        "type",
        "vm_size",
        "vm_priority",
        "min_nodes",
        "max_nodes",
        "idle_seconds_before_scaledown",
        "provider",
        "shape",
        "shape.name",
        "shape.cpus",
        "shape.memory_mb",
        "shape.gpus",
        "shape.gpu_type",
        "provisioning_state",
        "provisioning_errors",
        "provisioning_errors[].at",
        "provisioning_errors[].code",
        "provisioning_errors[].message",
        "nodes",
        "nodes.current",
        "nodes.target",
        "nodes.idle",
        "nodes.busy",
        "nodes.preempted",
        "node_list",
        "node_list[].node_id",
        "node_list[].cluster",
        "node_list[].state",
        "node_list[].priority",
        "node_list[].created_at",
        "node_list[].changed_at",
        "node_list[].message",
        "decisions",
        "decisions[].at",
        "decisions[].action",
        "decisions[].nodes",
        "decisions[].reason",
        "created_at",
    ]
    assert (shown["type"], shown["provider"], shown["created_at"]) == (
        "cluster",
        "process",
        "1970-01-01T00:00:00.500Z",
    )
    assert shown["nodes"] == {"current": 1, "target": 2, "idle": 0, "busy": 1, "preempted": 0}


def test_machine_view_keys() -> None:
    assert printed(machine_view(VM)) == {
        "name": "box",
        "type": "vm",
        "address": "10.0.0.5",
        "ssh_port": 2222,
        "username": "me",
        "auth": "key",
        "advertised_url": "nats://10.0.0.1:4222",
        "agent_env": {},
        "provisioning_state": "Failed",
        "provisioning_errors": [
            {"at": "1970-01-01T00:00:03.000Z", "code": "ssh", "message": "refused"}
        ],
        "link": "reconnecting",
        "progress": ["connecting", "installing"],
        "created_at": "1970-01-01T00:00:01.500Z",
        "engine": None,
    }


def test_agent_view_keys() -> None:
    shown = printed([agent_view(AGENT)])[0]
    assert paths(shown) == [
        "agent_id",
        "incarnation",
        "target",
        "hostname",
        "capacity",
        "capacity.cpus",
        "capacity.memory_mb",
        "capacity.gpus",
        "capacity.gpu_type",
        "state",
        "first_seen",
        "last_seen",
        "cordoned",
        "draining",
        "labels",
        "priority",
        "gpus",
        "gpus[].index",
        "gpus[].name",
        "gpus[].uuid",
        "gpus[].memory_total_mb",
        "gpus[].memory_used_mb",
        "gpus[].utilization_pct",
        "gpus[].run_id",
        "container_engine",
        "isolation",
        "engine",
    ]
    assert (shown["last_seen"], shown["labels"]) == ("1970-01-01T00:01:39.000Z", {"zone": "a"})


LEADER = Leadership(
    holder="h1", epoch=2, host="s1", pid=7, acquired_at=0.0, renewed_at=97.0, lease_s=10.0
)


def status_of(runs: list[m.RunRecord]) -> Any:
    seen = Observed(
        url="nats://x:4222",
        targets=[m.TargetInfo(name="local", kind="local", agents=1)],
        computes=[COMPUTE],
        vms=[VM],
        agents=[AGENT],
        runs=runs,
        schedulers=[(LEADER_KEY, LEADER)],
    )
    return printed(summarise(seen, now=100.0))


def test_status_view_keys() -> None:
    running = b.record(
        "run-a",
        RunState.RUNNING,
        gang=[m.GangMember(rank=0, agent_id="a1", incarnation="i1", state=RunState.RUNNING)],
        agent_id="a1",
        agent_incarnation="i1",
    )
    status = status_of([running, b.record("q1"), b.record("old", RunState.FAILED, ended_at=90.0)])
    assert paths(status) == [
        "broker",
        "targets",
        "targets[].name",
        "targets[].kind",
        "targets[].agents",
        "targets[].queued",
        "targets[].active",
        "targets[].waiting",
        "computes",
        "computes[].name",
        "computes[].type",
        "computes[].vm_size",
        "computes[].vm_priority",
        "computes[].provisioning_state",
        "computes[].min_nodes",
        "computes[].max_nodes",
        "computes[].nodes",
        "computes[].nodes.current",
        "computes[].nodes.target",
        "computes[].nodes.idle",
        "computes[].nodes.busy",
        "computes[].nodes.preempted",
        "agents",
        "agents[].agent_id",
        "agents[].target",
        "agents[].state",
        "agents[].cordoned",
        "agents[].draining",
        "agents[].priority",
        "agents[].cpus",
        "agents[].cpus_used",
        "agents[].memory_mb",
        "agents[].gpus",
        "agents[].gpus_used",
        "agents[].gpu_type",
        "agents[].runs",
        "agents[].last_seen",
        "agents[].isolation",
        "queue",
        "queue.total",
        "queue.by_target",
        "queue.by_target[].target",
        "queue.by_target[].priority",
        "queue.by_target[].queued",
        "queue.by_target[].oldest_queued_at",
        "queue.by_target[].waiting_s",
        "runs",
        "runs[].run_id",
        "runs[].experiment",
        "runs[].target",
        "runs[].state",
        "runs[].attempt",
        "runs[].agents",
        "runs[].started_at",
        "runs[].in_state_s",
        "ended_last_hour",
        "schedulers",
        "schedulers[].role",
        "schedulers[].epoch",
        "schedulers[].lease_age_s",
        "schedulers[].lease_s",
        "schedulers[].host",
        "schedulers[].pid",
        "schedulers[].holder",
        "schedulers[].since",
    ]
    assert status["computes"][1] == {  # an attached machine: its own, shorter shape
        "name": "box",
        "type": "vm",
        "address": "10.0.0.5",
        "provisioning_state": "Failed",
        "link": "reconnecting",
    }
    assert status["ended_last_hour"] == {"Canceled": 0, "Completed": 0, "Failed": 1}
    assert status["schedulers"] == [
        {
            "role": "leader",
            "epoch": 2,
            "lease_age_s": 3.0,
            "lease_s": 10.0,
            "host": "s1",
            "pid": 7,
            "holder": "h1",
            "since": "1970-01-01T00:00:00.000Z",
        }
    ]
    (agent,) = status["agents"]
    assert (agent["cpus_used"], agent["gpus_used"], agent["runs"]) == (1.0, 0, 1)


def test_gang_rule_is_one_rule() -> None:
    """A record from before gangs (agent_id only) is a gang of one, for the scheduler (which
    imports ``members``) and for what `sortie status` shows alike."""
    legacy = b.record("old", RunState.RUNNING, agent_id="a1", agent_incarnation="i1")
    assert [(g.rank, g.agent_id, g.incarnation) for g in members(legacy)] == [(0, "a1", "i1")]
    assert agent_ids(legacy) == ["a1"]
    assert members(b.record("q")) == []
    assert agent_ids(RUN) == ["a1", "a2"]  # a gang: by rank
    (run,) = status_of([legacy])["runs"]
    assert run["agents"] == ["a1"]
    assert status_of([legacy])["agents"][0]["runs"] == 1
