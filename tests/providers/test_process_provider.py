"""The ``process`` provider: real ``sortie agent`` processes against a real nats-server.

Tests that only need "a process" (lifecycle, GPU bookkeeping, failures) run a tiny Python
stand-in for the agent that records its argv and sleeps, so they take well under a second;
the heartbeat test runs the real agent.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import typing
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.msg import Msg

from sortie.bus.broker import BrokerProcess
from sortie.bus.connection import Bus
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.scheduler.providers import registry
from sortie.scheduler.providers.base import NodeRequest, ProviderContext, ProviderError
from sortie.scheduler.providers.process import ProcessProvider, agent_argv, child_env, pick_gpus
from sortie.scheduler.sizes import BUILTIN, load_catalog, lookup

pytestmark = pytest.mark.timeout(30)

SMALL = BUILTIN["LOCAL_SMALL"]
ONE_GPU = m.NodeShape(name="GPU1", cpus=4, memory_mb=4096, gpus=1, gpu_type="A100")

# Stands in for `python -m sortie.cli`: writes its argv next to its log and sleeps.
# With IGNORE_TERM in the environment it ignores SIGTERM (to exercise SIGKILL).
STAND_IN = """\
import json, os, signal, sys, time
out = os.environ["STAND_IN_DIR"]
name = sys.argv[sys.argv.index("--name") + 1]
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
path = os.path.join(out, name + ".argv.json")
with open(path + ".tmp", "w") as fh:
    json.dump(sys.argv[1:], fh)
os.replace(path + ".tmp", path)  # whole or not at all: the test polls for it
time.sleep(120)
"""


def request(
    node_id: str, shape: m.NodeShape = SMALL, url: str = "nats://127.0.0.1:1"
) -> NodeRequest:
    return NodeRequest(
        node_id=node_id,
        cluster="cpu-pool",
        shape=shape,
        priority="lowpriority",
        broker_url=url,
        labels={"team": "vision"},
    )


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def until(cond: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    monkeypatch.setenv("STAND_IN_DIR", str(tmp_path))
    return [sys.executable, str(script)]


@pytest.fixture
async def new_provider() -> AsyncIterator[Callable[..., ProcessProvider]]:
    """Makes ProcessProviders and closes them all at teardown, so a failing test leaks nothing."""
    made: list[ProcessProvider] = []

    def make(**kwargs: Any) -> ProcessProvider:
        made.append(ProcessProvider(**kwargs))
        return made[-1]

    yield make
    await asyncio.gather(*(p.close(grace_s=1.0) for p in made))


@pytest.fixture
async def stand_in_provider(
    tmp_path: Path, stand_in: list[str], new_provider: Callable[..., ProcessProvider]
) -> ProcessProvider:
    return new_provider(data_dir=tmp_path / "data", agent_command=stand_in, gpu_pool=[0, 1])


def recorded_argv(tmp_path: Path, node_id: str) -> list[str]:
    f = tmp_path / f"{node_id}.argv.json"
    return json.loads(f.read_text()) if f.exists() else []


# --- pure parts ---------------------------------------------------------------------------------


def test_agent_argv_for_a_cpu_node(tmp_path: Path) -> None:
    argv = agent_argv(request("n1", url="nats://h:4222"), data_dir=tmp_path, agent_command=["S"])
    assert argv == [
        "S", "--url", "nats://h:4222", "--log-level", "warning", "agent",
        "--target", "cpu-pool", "--name", "n1", "--data-dir", str(tmp_path / "nodes" / "n1"),
        "--cpus", "1", "--memory-mb", "1024", "--priority", "lowpriority",
        "--label", "cluster=cpu-pool", "--label", "team=vision",
    ]  # fmt: skip


def test_agent_argv_defaults_to_this_interpreter_and_passes_gpus(tmp_path: Path) -> None:
    half = m.NodeShape(name="H", cpus=0.5, memory_mb=512, gpus=2, gpu_type="A100")
    argv = agent_argv(request("n1", half), data_dir=tmp_path, gpus=[2, 3])
    assert argv[:3] == [sys.executable, "-m", "sortie.cli"]
    assert argv[argv.index("--gpus") + 1] == "2,3"
    assert argv[argv.index("--cpus") + 1] == "0.5"


def test_pick_gpus_takes_the_lowest_free_or_none() -> None:
    assert pick_gpus([0, 1, 2, 3], {0, 2}, 2) == [1, 3]
    assert pick_gpus([0, 1], {0}, 2) is None
    assert pick_gpus([], set(), 0) == []


def test_child_env_puts_the_checkout_on_pythonpath() -> None:
    root = str(Path(__file__).resolve().parents[2])
    env = child_env({"PYTHONPATH": "/x", "KEEP": "1"})
    assert env["PYTHONPATH"].split(os.pathsep) == [root, "/x"]
    assert env["KEEP"] == "1"
    assert child_env(env)["PYTHONPATH"] == env["PYTHONPATH"]  # not added twice


def test_the_registry_has_one_provider_per_cluster_variant(tmp_path: Path) -> None:
    assert set(registry.PROVIDERS) == set(typing.get_args(m.ClusterConfig))
    assert {"process", "ssh"} == registry.KNOWN_PROVIDERS
    ctx = ProviderContext(data_dir=tmp_path, gpu_pool=(0, 1))
    local = m.ProcessCluster(vm_size="S", max_nodes=2)
    p = registry.make_provider(ctx, "pool", local)
    assert isinstance(p, ProcessProvider) and p.name == "process"
    assert p.data_dir == tmp_path / "providers" / "process" and p.gpu_pool == [0, 1]
    # every process cluster shares one provider (and so the host's GPUs); a pool has its own
    assert registry.provider_key("pool", local) == registry.provider_key("other", local)
    login = m.SshLogin(username="u", auth="key")
    pool = m.SshPoolCluster(vm_size="S", max_nodes=1, hosts=["h1"], ssh=login)
    assert registry.provider_key("a", pool) != registry.provider_key("b", pool)
    made = registry.make_provider(ctx, "a", pool)
    assert made.name == "ssh"
    with pytest.raises(ProviderError) as info:
        registry.make_provider(ctx, "b", msgspec.structs.replace(pool, hosts=[]))
    assert info.value.code == "bad_request" and "no ssh hosts" in info.value.message
    # nodes that are the scheduler's children do not outlive it; a pool's agents do
    assert not registry.entry(local).nodes_outlive_scheduler
    assert registry.entry(pool).nodes_outlive_scheduler


def test_a_provider_name_that_no_variant_has_is_refused_when_read() -> None:
    raw = b'{"provider":"kubernetes","vm_size":"S","max_nodes":1}'
    with pytest.raises(codec.BadMessage) as info:
        codec.decode(m.ClusterConfig, raw)
    assert "'kubernetes'" in str(info.value) and "provider" in str(info.value)


# --- real agents ----------------------------------------------------------------------------------


async def start_and_hear(
    provider: ProcessProvider, bus: Bus, url: str, ids: list[str]
) -> dict[str, m.Heartbeat]:
    """Create LOCAL_SMALL nodes (looked up by a lower-case name) and wait for a heartbeat each."""
    shape = lookup(load_catalog(None), "local_small")
    assert shape is not None
    seen: dict[str, m.Heartbeat] = {}

    async def on_hb(msg: Msg) -> None:
        hb = codec.decode(m.Heartbeat, msg.data)
        seen[hb.agent_id] = hb

    for node_id in ids:
        await bus.nc.subscribe(subjects.heartbeat(node_id), cb=on_hb)
    for node_id in ids:
        await provider.create_node(request(node_id, shape, url))
    await until(lambda: len(seen) == len(ids), timeout=15)
    return seen


async def test_two_real_agents_heartbeat_with_the_node_shape(
    broker: BrokerProcess, bus: Bus, tmp_path: Path, new_provider: Callable[..., ProcessProvider]
) -> None:
    provider = new_provider(data_dir=tmp_path / "data")
    ids = ["cpu-pool-n1", "cpu-pool-n2"]
    try:
        seen = await start_and_hear(provider, bus, broker.url, ids)
        for node_id in ids:
            hb = seen[node_id]
            assert hb.target == "cpu-pool"
            assert (hb.capacity.cpus, hb.capacity.memory_mb) == (1, 1024)
            assert hb.priority == "lowpriority"
            assert hb.labels == {"cluster": "cpu-pool", "team": "vision"}
        nodes = await provider.list_nodes()
        assert sorted((n.node_id, n.cluster, n.alive) for n in nodes) == [
            ("cpu-pool-n1", "cpu-pool", True),
            ("cpu-pool-n2", "cpu-pool", True),
        ]

        # stop one: its process is gone and it is forgotten; the other keeps beating
        pid1 = provider.pid("cpu-pool-n1")
        assert pid1 is not None
        t0 = time.monotonic()
        await provider.stop_node("cpu-pool-n1", grace_s=10)
        # it stopped before its 10 s grace ran out: SIGTERM did it, SIGKILL was not needed
        assert time.monotonic() - t0 < 10, "the agent should stop on SIGTERM, not need SIGKILL"
        assert gone(pid1)
        assert [n.node_id for n in await provider.list_nodes()] == ["cpu-pool-n2"]
        await provider.stop_node("cpu-pool-n1")  # twice is fine
        await provider.stop_node("never-was")

        seen.clear()
        await until(lambda: "cpu-pool-n2" in seen, timeout=5)

        # close() stops the rest
        pid2 = provider.pid("cpu-pool-n2")
        assert pid2 is not None
        await provider.close()
        assert gone(pid2)
        assert await provider.list_nodes() == []
    finally:
        await provider.close(grace_s=1)
    assert (tmp_path / "data" / "nodes" / "cpu-pool-n1.log").is_file()
    assert (tmp_path / "data" / "nodes" / "cpu-pool-n1").is_dir()


async def test_an_agent_killed_from_outside_is_listed_dead_with_its_exit(
    broker: BrokerProcess, bus: Bus, tmp_path: Path, new_provider: Callable[..., ProcessProvider]
) -> None:
    provider = new_provider(data_dir=tmp_path / "data")
    try:
        await provider.create_node(request("cpu-pool-k", SMALL, broker.url))
        pid = provider.pid("cpu-pool-k")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)

        async def dead() -> bool:
            return not (await provider.list_nodes())[0].alive

        deadline = time.monotonic() + 10
        while not await dead():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        (node,) = await provider.list_nodes()
        assert node.node_id == "cpu-pool-k" and node.cluster == "cpu-pool"
        assert node.detail is not None and "SIGKILL" in node.detail and "-9" in node.detail
        await provider.stop_node("cpu-pool-k")  # stopping a dead node reaps and forgets it
        assert await provider.list_nodes() == []
    finally:
        await provider.close(grace_s=1)


# --- lifecycle with a stand-in agent --------------------------------------------------------------


async def test_an_agent_that_exits_by_itself_shows_code_and_last_log_line(
    tmp_path: Path, new_provider: Callable[..., ProcessProvider]
) -> None:
    failing = [sys.executable, "-c", "import sys; print('first'); sys.exit('cannot reach broker')"]
    provider = new_provider(data_dir=tmp_path, agent_command=failing)
    await provider.create_node(request("n1"))
    await until(lambda: provider.pid("n1") is not None and gone(provider.pid("n1") or 0))
    deadline = time.monotonic() + 5
    while (await provider.list_nodes())[0].alive:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    (node,) = await provider.list_nodes()
    assert node.detail == "exited with code 1: cannot reach broker"
    await provider.close()


async def test_gpu_pool_gives_each_node_its_own_gpus(
    stand_in_provider: ProcessProvider, tmp_path: Path
) -> None:
    p = stand_in_provider
    await p.create_node(request("g1", ONE_GPU))
    await p.create_node(request("g2", ONE_GPU))
    await until(lambda: recorded_argv(tmp_path, "g1") and recorded_argv(tmp_path, "g2"))
    for node_id, gpu in [("g1", "0"), ("g2", "1")]:
        argv = recorded_argv(tmp_path, node_id)
        assert argv[argv.index("--gpus") + 1] == gpu
        assert argv[argv.index("--name") + 1] == node_id
    assert (p.gpus_of("g1"), p.gpus_of("g2")) == ([0], [1])

    with pytest.raises(ProviderError) as info:
        await p.create_node(request("g3", ONE_GPU))
    assert info.value.code == "insufficient_gpus"
    assert "0 of the 2" in info.value.message
    assert "g3" not in [n.node_id for n in await p.list_nodes()]

    # a CPU node needs no GPU and gets no --gpus
    await p.create_node(request("c1", SMALL))
    await until(lambda: recorded_argv(tmp_path, "c1"))
    assert "--gpus" not in recorded_argv(tmp_path, "c1")

    # stopping a GPU node gives its GPU back
    await p.stop_node("g1", grace_s=2)
    await p.create_node(request("g3", ONE_GPU))
    assert p.gpus_of("g3") == [0]


async def test_existing_id_is_refused(stand_in_provider: ProcessProvider) -> None:
    await stand_in_provider.create_node(request("n1"))
    with pytest.raises(ProviderError) as info:
        await stand_in_provider.create_node(request("n1"))
    assert info.value.code == "exists"
    assert len(await stand_in_provider.list_nodes()) == 1


async def test_bad_node_id_is_refused(stand_in_provider: ProcessProvider) -> None:
    with pytest.raises(ProviderError) as info:
        await stand_in_provider.create_node(request("has.dot"))
    assert info.value.code == "bad_request"


async def test_spawn_failure_names_the_command(
    tmp_path: Path, new_provider: Callable[..., ProcessProvider]
) -> None:
    provider = new_provider(data_dir=tmp_path, agent_command=["/no/such/sortie-agent"])
    with pytest.raises(ProviderError) as info:
        await provider.create_node(request("n1"))
    assert info.value.code == "spawn_failed"
    assert "/no/such/sortie-agent" in info.value.message
    assert await provider.list_nodes() == []


async def test_an_agent_ignoring_sigterm_is_killed_after_the_grace(
    stand_in: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    new_provider: Callable[..., ProcessProvider],
) -> None:
    monkeypatch.setenv("IGNORE_TERM", "1")
    provider = new_provider(data_dir=tmp_path / "data", agent_command=stand_in)
    await provider.create_node(request("stubborn"))
    await until(lambda: recorded_argv(tmp_path, "stubborn"))  # SIGTERM handler installed
    pid = provider.pid("stubborn")
    assert pid is not None
    t0 = time.monotonic()
    # two concurrent stops share one stop
    await asyncio.gather(
        provider.stop_node("stubborn", grace_s=0.5), provider.stop_node("stubborn", grace_s=0.5)
    )
    assert time.monotonic() - t0 > 0.4  # SIGKILL only after the 0.5 s grace
    assert gone(pid)
    assert await provider.list_nodes() == []


async def test_close_stops_all_nodes_concurrently(
    stand_in: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    new_provider: Callable[..., ProcessProvider],
) -> None:
    monkeypatch.setenv("IGNORE_TERM", "1")
    provider = new_provider(data_dir=tmp_path / "data", agent_command=stand_in)
    ids = [f"n{i}" for i in range(4)]
    for node_id in ids:
        await provider.create_node(request(node_id))
    await until(lambda: all(recorded_argv(tmp_path, n) for n in ids))
    pids = [provider.pid(n) for n in ids]
    t0 = time.monotonic()
    await provider.close(grace_s=1.0)
    assert time.monotonic() - t0 < 3, "4 nodes x 1 s grace should take ~1 s, not ~4 s"
    assert all(pid is not None and gone(pid) for pid in pids)
    assert await provider.list_nodes() == []
