"""The agents page's rows, without a browser: what ``agent_row`` makes of an agent with GPUs
(each one's utilisation, memory and run), and of a draining, lost or stopped one; and the
same states from a scheduler that sends no usage (older than ``AgentListReply.usage``)."""

from __future__ import annotations

import pytest

from sortie.proto import messages as m
from sortie.web.views.agents import agent_row, agents_json

GPUS = [
    m.GpuDevice(
        index=0, name="NVIDIA H100", uuid="GPU-a", memory_total_mb=81_559,
        memory_used_mb=40_000, utilization_pct=87, run_id="r-train",
    ),
    m.GpuDevice(index=1, name="NVIDIA H100", uuid="GPU-b", memory_total_mb=81_559),
]  # fmt: skip


def agent(**fields: object) -> m.AgentRecord:
    base: dict[str, object] = {
        "agent_id": "gpu-box-1", "incarnation": "i1", "target": "gpu", "hostname": "gpu-box",
        "capacity": m.Capacity(cpus=32, memory_mb=256_000, gpus=2, gpu_type="H100"),
        "state": "ready", "first_seen": 100.0, "last_seen": 200.0, "gpus": GPUS,
    }  # fmt: skip
    return m.AgentRecord(**{**base, **fields})  # type: ignore[arg-type]  # test builder


def usage(status: m.AgentStatus, gpus: int = 1) -> m.AgentUsage:
    return m.AgentUsage(
        agent_id="gpu-box-1",
        status=status,
        used=m.Capacity(cpus=8, memory_mb=64_000, gpus=gpus),
        runs=["r-train"] if gpus else [],
    )


def test_a_gpu_agent_shows_each_gpu_with_its_utilisation_memory_and_run() -> None:
    row = agent_row(agent(), usage("ready"))
    assert row["status"] == "ready"
    assert row["capacity"] == {"cpus": 32, "memory_mb": 256_000, "gpus": 2, "gpu_type": "H100"}
    assert row["used"] == {"cpus": 8, "memory_mb": 64_000, "gpus": 1}
    assert row["free"] == {"cpus": 24, "memory_mb": 192_000, "gpus": 1}
    busy, idle = row["gpus"]
    assert busy == {
        "index": 0, "name": "NVIDIA H100", "uuid": "GPU-a", "memory_total_mb": 81_559,
        "memory_used_mb": 40_000, "utilization_pct": 87, "run_id": "r-train",
    }  # fmt: skip
    assert (idle["utilization_pct"], idle["memory_used_mb"], idle["run_id"]) == (None, 0, None)
    assert row["runs"] == ["r-train"]


def test_free_never_goes_below_zero() -> None:
    """A run that asked for more than an agent now reports (a GPU fell off the bus)."""
    row = agent_row(
        agent(capacity=m.Capacity(cpus=4, memory_mb=1000, gpus=1)),
        m.AgentUsage(
            agent_id="gpu-box-1", status="ready",
            used=m.Capacity(cpus=8, memory_mb=2000, gpus=2), runs=["r-train"],
        ),
    )  # fmt: skip
    assert row["free"] == {"cpus": 0.0, "memory_mb": 0, "gpus": 0}


@pytest.mark.parametrize("status", ["draining", "lost", "stopped", "cordoned", "reconnecting"])
def test_the_scheduler_s_word_for_the_agent_is_the_row_s_state(status: m.AgentStatus) -> None:
    # the record's own flags do not override it: the scheduler weighs them (and more)
    record = agent(state="lost" if status == "lost" else "ready", draining=status == "draining")
    row = agent_row(record, usage(status, gpus=0))
    assert row["status"] == status
    assert row["used"]["gpus"] == 0 and row["free"]["gpus"] == 2 and row["runs"] == []


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"state": "lost", "draining": True}, "lost"),
        ({"draining": True, "cordoned": True}, "draining"),
        ({"cordoned": True}, "cordoned"),
        ({}, "ready"),
    ],
)
def test_without_usage_the_state_comes_from_the_record(
    fields: dict[str, object], status: str
) -> None:
    row = agent_row(agent(**fields), None)
    assert row["status"] == status
    assert row["used"] == {"cpus": 0, "memory_mb": 0, "gpus": 0}
    assert row["free"]["gpus"] == 2 and row["runs"] == []
    assert [g["utilization_pct"] for g in row["gpus"]] == [87, None]


def test_the_page_s_json_pairs_each_agent_with_its_own_usage() -> None:
    other = agent(agent_id="cpu-box", gpus=[], capacity=m.Capacity(cpus=4, memory_mb=8000))
    reply = m.AgentListReply(
        agents=[agent(), other],
        usage=[
            m.AgentUsage(agent_id="cpu-box", status="stopped",
                         used=m.Capacity(cpus=0, memory_mb=0)),
            usage("draining"),
        ],
    )  # fmt: skip
    shown = agents_json(reply, now=250.0)
    assert shown["now"] == 250.0
    assert [(a["agent_id"], a["status"]) for a in shown["agents"]] == [
        ("gpu-box-1", "draining"),
        ("cpu-box", "stopped"),
    ]
