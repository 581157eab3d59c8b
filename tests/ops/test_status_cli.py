"""`sortie status` against a real `sortie up` (text and JSON), its metrics endpoint, and the
pure halves (``sortie.status.summarise`` / ``render``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sortie.cli.status import Observed, duration, render, summarise
from sortie.client.views import to_json
from sortie.proto import messages as m
from sortie.proto.leadership import Leadership
from sortie.proto.states import RunState
from sortie.proto.subjects import LEADER_KEY
from tests import builders as b
from tests.e2e.conftest import wait_until
from tests.ops.conftest import Up
from tests.ops.scrape import scrape_sync

SLEEPER = "import time\nprint('started', flush=True)\ntime.sleep(120)\n"


def submit(up: Up, src: Path, *extra: str) -> str:
    out = up.json("run", "submit", str(src), "--script", "s.py", *extra)
    assert isinstance(out, dict)
    return str(out["run_id"])


def state(up: Up, run_id: str) -> str:
    out = up.json("run", "show", run_id)
    assert isinstance(out, dict)
    return str(out["state"])


def test_status_shows_agents_queue_and_active_runs(up: Up, tmp_path: Path) -> None:
    empty = up.json("status")
    assert isinstance(empty, dict)
    assert empty["queue"] == {"total": 0, "by_target": []}
    assert [a["state"] for a in empty["agents"]] == ["ready"]
    agent = empty["agents"][0]
    assert agent["target"] == "local" and agent["runs"] == 0

    src = tmp_path / "src"
    src.mkdir()
    (src / "s.py").write_text(SLEEPER)
    cpus = str(agent["cpus"])  # the whole agent: the second run must wait
    running = submit(up, src, "--cpus", cpus, "--experiment", "ops")
    wait_until(lambda: state(up, running) == "Running", timeout=60)
    queued = submit(up, src, "--cpus", cpus, "--priority", "3", "--experiment", "ops")
    try:
        status = up.json("status")
        assert isinstance(status, dict)
        assert status["queue"]["total"] == 1
        (group,) = status["queue"]["by_target"]
        assert group["target"] == "local" and group["priority"] == 3 and group["queued"] == 1
        (run,) = status["runs"]
        assert run["run_id"] == running and run["state"] == "Running"
        assert run["agents"] == [agent["agent_id"]]
        (a,) = status["agents"]
        assert a["runs"] == 1 and a["cpus_used"] == agent["cpus"]
        local = next(t for t in status["targets"] if t["name"] == "local")
        assert local == {
            "name": "local",
            "kind": "local",
            "agents": 1,
            "queued": 1,
            "active": 1,
            "waiting": None,  # its agent is there, only busy
        }

        text = up.cli("status", check=True).stdout
        assert f"Sortie at {up.url}: 1 agents (1 ready), 1 queued, 1 active" in text
        for header in ("TARGET", "AGENT", "QUEUED FOR", "ACTIVE RUN"):
            assert header in text
        assert running in text and agent["agent_id"] in text

        # the same picture on the scheduler's metrics endpoint (`sortie up --metrics-port`)
        metrics = scrape_sync(up.metrics_url)
        assert metrics.value("sortie_runs", state="Running", target="local") == 1
        assert metrics.value("sortie_queue_depth", target="local", priority="3") == 1
        assert metrics.value("sortie_agents", target="local", state="ready") == 1
        assert metrics.value("sortie_runs_submitted_total", target="local") == 2
        assert metrics.value("sortie_submit_to_start_seconds_count") == 1
    finally:
        up.cli("run", "cancel", queued)
        up.cli("run", "cancel", running)
    wait_until(lambda: state(up, running) == "Canceled", timeout=60)
    after = up.json("status")
    assert isinstance(after, dict)
    assert after["runs"] == [] and after["queue"]["total"] == 0
    assert after["ended_last_hour"]["Canceled"] == 2


def test_status_without_a_broker_says_so(tmp_path: Path) -> None:
    import subprocess

    from sortie.bus.broker import free_port
    from tests.e2e.conftest import SORTIE

    env = {**os.environ, "SORTIE_PROFILE": str(tmp_path / "none.json")}
    env.pop("SORTIE_URL", None)
    proc = subprocess.run(
        [*SORTIE, "--url", f"nats://127.0.0.1:{free_port()}", "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("sortie: ") and "Traceback" not in proc.stderr


# --- pure --------------------------------------------------------------------------------------


def observed(**kw: Any) -> Observed:
    base: dict[str, Any] = {
        "url": "nats://x:4222",
        "targets": [m.TargetInfo(name="local", kind="local", agents=1)],
        "computes": [],
        "vms": [],
        "agents": [
            m.AgentRecord(
                agent_id="a1",
                incarnation="i",
                target="local",
                hostname="h",
                capacity=m.Capacity(cpus=4, memory_mb=1024, gpus=2, gpu_type="H100"),
                state="ready",
                first_seen=0.0,
                last_seen=0.0,
                cordoned=True,
            )
        ],
        "runs": [],
    }
    base.update(kw)
    return Observed(**base)


def test_summary_counts_and_render() -> None:
    member = m.GangMember(rank=0, agent_id="a1", incarnation="i", state=RunState.RUNNING)
    runs = [
        b.record(
            "run-a",
            RunState.RUNNING,
            spec=b.spec(resources=m.Resources(cpus=2, gpus=1)),
            gang=[member],
            agent_id="a1",
            history=[m.StateChange(state=RunState.RUNNING, at=40.0, attempt=1)],
        ),
        b.record("q1", created_at=10.0, spec=b.spec(priority=1)),
        b.record("q2", created_at=50.0, spec=b.spec(target="gpu")),
        b.record("old", RunState.COMPLETED, ended_at=90.0),
        b.record("older", RunState.FAILED, ended_at=-5000.0),
    ]
    s = summarise(observed(runs=runs), now=100.0)
    assert s.queue.total == 2
    assert [(q.target, q.priority, q.waiting_s) for q in s.queue.by_target] == [
        ("gpu", 0, 50.0),
        ("local", 1, 90.0),
    ]
    assert [t.name for t in s.targets] == ["gpu", "local"]
    (a,) = s.agents
    assert (a.runs, a.cpus_used, a.gpus_used, a.cordoned) == (1, 2.0, 1, True)
    assert s.runs[0].in_state_s == 60.0
    assert s.ended_last_hour == {"Canceled": 0, "Completed": 1, "Failed": 0}
    assert json.loads(to_json(s))["queue"]["total"] == 2  # plain JSON
    text = "\n".join(render(s))
    assert "1 agents (0 ready), 2 queued, 1 active; ended in the last hour: 1 Completed" in text
    assert "2/4" in text and "1/2 H100" in text and "cordoned" in text
    assert "1m00s" in text  # run-a has been Running for 60 s


def test_render_with_nothing_there() -> None:
    s = summarise(observed(agents=[], targets=[]), now=0.0)
    text = "\n".join(render(s))
    assert "No agents: start one" in text
    assert "QUEUED FOR" not in text and "ACTIVE RUN" not in text


def test_status_says_when_runs_are_not_isolated() -> None:
    def agent(agent_id: str, isolation: m.RunIsolation) -> m.AgentRecord:
        return m.AgentRecord(
            agent_id=agent_id,
            incarnation="i",
            target="local",
            hostname="h",
            capacity=m.Capacity(cpus=4, memory_mb=1024),
            state="ready",
            first_seen=0.0,
            last_seen=0.0,
            isolation=isolation,
        )

    exposed = summarise(observed(agents=[agent("a1", "none"), agent("a2", "landlock")]), 0.0)
    assert [a.isolation for a in exposed.agents] == ["none", "landlock"]
    text = "\n".join(render(exposed))
    assert "runs are not isolated on a1:" in text and "a2" not in text.split("not isolated")[1]
    guarded = summarise(observed(agents=[agent("a2", "user+landlock")]), 0.0)
    assert "not isolated" not in "\n".join(render(guarded))


def test_durations() -> None:
    assert [duration(x) for x in (0, 59.9, 61, 3600, 3725, 90000)] == [
        "0s",
        "59s",
        "1m01s",
        "1h00m",
        "1h02m",
        "1d01h",
    ]


def test_status_says_why_a_target_has_no_agent_and_shows_stopped_nodes() -> None:
    lost = m.AgentRecord(
        agent_id="pool-1",
        incarnation="i",
        target="pool",
        hostname="h",
        capacity=m.Capacity(cpus=2, memory_mb=1024),
        state="lost",
        first_seen=0.0,
        last_seen=50.0,
    )
    compute = m.ComputeInfo(
        compute=m.ComputeRecord(
            name="pool",
            cluster=m.ProcessCluster(vm_size="LOCAL_SMALL", max_nodes=1),
            shape=m.NodeShape(name="LOCAL_SMALL", cpus=2, memory_mb=1024),
            created_at=0.0,
        ),
        counts=m.NodeCounts(),
        nodes=[
            m.NodeRecord(
                node_id="pool-1", cluster="pool", state="stopped", created_at=0, changed_at=60
            )
        ],
    )
    wait = m.TargetWait(reason="its only node was stopped by the autoscaler", since=60.0)
    queued = b.record("q1", spec=b.spec(target="pool"), waiting=wait)
    s = summarise(observed(agents=[lost], computes=[compute], runs=[queued]), now=240.0)
    assert [a.state for a in s.agents] == ["stopped"]
    (pool,) = [t for t in s.targets if t.name == "pool"]
    assert pool.waiting is not None
    assert pool.waiting.startswith(
        "target pool has no agent: its only node was stopped by the autoscaler (since 00:01:00 UTC"
    )
    assert pool.waiting.endswith("3 min ago)")
    text = "\n".join(render(s))
    assert pool.waiting in text and "stopped" in text


def test_status_lists_the_leader_then_live_standbys() -> None:
    def lease(holder: str, pid: int, renewed_at: float, **kw: Any) -> Leadership:
        return Leadership(
            holder=holder,
            epoch=kw.pop("epoch", 3),
            host="h",
            pid=pid,
            acquired_at=10.0,
            renewed_at=renewed_at,
            lease_s=10.0,
            **kw,
        )

    stored = [
        ("standby.s2", lease("s2", 12, 95.0)),
        ("standby.gone", lease("gone", 13, 60.0)),  # killed as a standby: 40 s unrenewed
        (LEADER_KEY, lease("l1", 11, 97.5, epoch=4)),
        ("standby.l1", lease("l1", 11, 90.0)),  # its presence from before it led
    ]
    s = summarise(observed(schedulers=stored), now=100.0)
    assert [(x.role, x.pid, x.epoch, x.lease_age_s) for x in s.schedulers] == [
        ("leader", 11, 4, 2.5),
        ("standby", 12, 3, 5.0),
    ]
    assert json.loads(to_json(s))["schedulers"][0]["role"] == "leader"
    text = "\n".join(render(s))
    assert [line.split() for line in text.splitlines() if " pid " in line] == [
        ["h", "pid", "11", "leader", "4", "2.5s", "l1"],
        ["h", "pid", "12", "standby", "3", "5s", "s2"],
    ]
    # a leader that stopped cleanly gave its lease up: only the standby is left
    released = [(LEADER_KEY, lease("l1", 11, 97.5, released=True)), stored[0]]
    s = summarise(observed(schedulers=released), now=100.0)
    assert [(x.role, x.pid) for x in s.schedulers] == [("standby", 12)]
