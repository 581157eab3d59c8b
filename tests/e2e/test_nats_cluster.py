"""Sortie on the 3-node NATS cluster of deploy/nats/: replicated resources, a server lost.

The cluster runs the shipped ``deploy/nats/nats.conf`` unchanged. Each server gets the
values of its ``nats-N.env`` file, with the addresses, ports and store directory replaced by
free local ones (the files name three hosts that all use 4222/6222; here all three share
127.0.0.1).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sortie.bus.broker import BrokerProcess, free_port, nats_server_binary
from sortie.bus.connection import open_bus, split_urls
from sortie.bus.resources import ensure_resources, sortie_streams
from tests.e2e.conftest import REPO, SORTIE, isolated_env, wait_until

DEPLOY = REPO / "deploy" / "nats"
RUN = ("--target", "box", "--wait", "--output", "json", "--")  # then the script's argument
CONF = DEPLOY / "nats.conf"
LOCAL = {  # what differs from the shipped env files when all three run on this machine
    "SORTIE_NATS_CLIENT_LISTEN",
    "SORTIE_NATS_CLUSTER_LISTEN",
    "SORTIE_NATS_MONITOR_LISTEN",
    "SORTIE_NATS_STORE_DIR",
    "SORTIE_NATS_ROUTE_1",
    "SORTIE_NATS_ROUTE_2",
    "SORTIE_NATS_ROUTE_3",
}


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def conf_variables() -> set[str]:
    body = "\n".join(x.split("#", 1)[0] for x in CONF.read_text().splitlines())
    return set(re.findall(r"\$(\w+)", body))


@dataclass
class Node:
    name: str
    url: str
    monitor: str
    process: subprocess.Popen[bytes]
    log: Path

    def jsz(self) -> dict[str, object] | None:
        try:
            with urllib.request.urlopen(f"http://{self.monitor}/jsz", timeout=2) as resp:
                data: dict[str, object] = json.loads(resp.read())
                return data
        except OSError:
            return None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_cluster(root: Path) -> list[Node]:
    cluster_ports = [free_port() for _ in range(3)]
    routes = [f"nats-route://127.0.0.1:{p}" for p in cluster_ports]
    nodes = []
    for i in range(1, 4):
        values = read_env_file(DEPLOY / f"nats-{i}.env")
        client, monitor = free_port(), free_port()
        local = {
            "SORTIE_NATS_CLIENT_LISTEN": f"127.0.0.1:{client}",
            "SORTIE_NATS_CLUSTER_LISTEN": f"127.0.0.1:{cluster_ports[i - 1]}",
            "SORTIE_NATS_MONITOR_LISTEN": f"127.0.0.1:{monitor}",
            "SORTIE_NATS_STORE_DIR": str(root / f"nats-{i}"),
            "SORTIE_NATS_ROUTE_1": routes[0],
            "SORTIE_NATS_ROUTE_2": routes[1],
            "SORTIE_NATS_ROUTE_3": routes[2],
        }
        assert set(local) == LOCAL
        log = root / f"nats-{i}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(CONF)],
                env={**os.environ, **values, **local},
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        nodes.append(
            Node(
                name=values["SORTIE_NATS_NAME"],
                url=f"nats://127.0.0.1:{client}",
                monitor=f"127.0.0.1:{monitor}",
                process=proc,
                log=log,
            )
        )
    return nodes


def meta_leader(nodes: list[Node], *, peers: int) -> str | None:
    """The meta leader every live server agrees on, once ``peers`` of them are current."""
    leaders = set()
    for node in nodes:
        if node.process.poll() is not None:
            continue
        meta = (node.jsz() or {}).get("meta_cluster")
        if not isinstance(meta, dict) or not meta.get("leader"):
            return None
        leaders.add(meta["leader"])
        if node.name == meta["leader"]:
            current = [r for r in meta.get("replicas", []) if r.get("current")]
            if len(current) + 1 < peers:
                return None
    return leaders.pop() if len(leaders) == 1 else None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[Node]]:
    nodes = start_cluster(tmp_path)
    try:
        wait_until(lambda: meta_leader(nodes, peers=3), timeout=20)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def test_a_url_lists_the_servers_of_a_cluster() -> None:
    assert split_urls("nats://a:4222, nats://b:4222,") == ["nats://a:4222", "nats://b:4222"]
    assert split_urls("nats://a:4222") == ["nats://a:4222"]


def test_the_env_files_set_exactly_what_the_config_reads() -> None:
    wanted = conf_variables()
    assert {"SORTIE_NATS_NAME", *LOCAL} == wanted
    names = set()
    for i in range(1, 4):
        values = read_env_file(DEPLOY / f"nats-{i}.env")
        assert set(values) == wanted, f"nats-{i}.env"
        names.add(values["SORTIE_NATS_NAME"])
    assert len(names) == 3, "server names must differ"
    assert "sync_interval: always" in CONF.read_text()


def _replicas(url: str) -> dict[str, tuple[int, int]]:
    """Per stream: (configured replicas, peers the leader reports beside itself)."""

    async def go() -> dict[str, tuple[int, int]]:
        bus = await open_bus(url, "test-replicas")
        try:
            out = {}
            for name in sortie_streams():
                info = await bus.js.stream_info(name)
                peers = len(info.cluster.replicas or []) if info.cluster else 0
                out[name] = (info.config.num_replicas or 1, peers)
            return out
        finally:
            await bus.close()

    return asyncio.run(go())


def _create_single_copy(url: str) -> None:
    """Resources as an earlier, unreplicated deployment left them."""

    async def go() -> None:
        bus = await open_bus(url, "test-setup", create=True, replicas=1)
        await bus.close()

    asyncio.run(go())


def _ensure_default(url: str) -> None:
    async def go() -> None:
        bus = await open_bus(url, "test-default")
        try:
            await ensure_resources(bus.js)  # no count given: keep what exists
        finally:
            await bus.close()

    asyncio.run(go())


def test_replicated_on_three_servers_and_survives_losing_the_meta_leader(
    cluster: list[Node], tmp_path: Path
) -> None:
    urls = ",".join(n.url for n in cluster)
    env = isolated_env(tmp_path)
    _create_single_copy(cluster[0].url)
    assert {r for r, _ in _replicas(urls).values()} == {1}

    logs = {name: tmp_path / f"{name}.log" for name in ("scheduler", "agent", "scheduler-2")}
    procs: list[subprocess.Popen[bytes]] = []

    def daemon(name: str, *args: str) -> None:
        with open(logs[name], "wb") as fh:
            procs.append(
                subprocess.Popen([*SORTIE, "--url", urls, *args], env=env, stderr=fh, cwd=REPO)
            )

    src = tmp_path / "src"
    src.mkdir()
    (src / "t.py").write_text("import sys\nprint('hello from', sys.argv[1])\n")

    def submit(tag: str, timeout: float = 40) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SORTIE, "--url", urls, "run", "submit", str(src), "--script", "t.py", *RUN, tag],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SORTIE, "--url", urls, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
        )

    try:
        lease = ("--leader-lease", "3")
        daemon(
            "scheduler", "scheduler", "--replicas", "3", "--data-dir", str(tmp_path / "s"), *lease
        )
        daemon("agent", "agent", "--target", "box", "--data-dir", str(tmp_path / "agent"))
        # the target exists once the agent's first heartbeat has arrived
        first = wait_until(
            lambda: (r := submit("first", timeout=30)).returncode == 0 and r,
            timeout=40,
            interval=0.5,
        )
        first_id = json.loads(first.stdout.splitlines()[0])["run_id"]
        # a second scheduler (another data directory: another host in production) stands by
        daemon(
            "scheduler-2", "scheduler", "--replicas", "3", "--data-dir", str(tmp_path / "s2"),
            *lease,
        )  # fmt: skip

        # the scheduler changed every existing resource to three copies, in place
        replicas = _replicas(urls)
        assert replicas == dict.fromkeys(sortie_streams(), (3, 2)), replicas
        _ensure_default(urls)  # a later start without --replicas shrinks nothing
        assert {r for r, _ in _replicas(urls).values()} == {3}

        leader = meta_leader(cluster, peers=3)
        victim = next(n for n in cluster if n.name == leader)
        victim.kill()
        survivors = [n for n in cluster if n is not victim]
        # the survivors name the dead leader until they notice; then they elect another
        wait_until(lambda: meta_leader(survivors, peers=2) not in (None, leader), timeout=30)

        second = submit("second")
        assert second.returncode == 0, second.stderr
        submitted, outcome = (json.loads(line) for line in second.stdout.splitlines())
        assert outcome["state"] == "Completed"  # --wait -o json: the outcome, a second line
        second_id = submitted["run_id"]
        assert outcome["run_id"] == second_id
        logged = cli("run", "logs", second_id)
        assert logged.returncode == 0, logged.stderr
        assert "hello from second" in logged.stdout
        shown = cli("run", "show", first_id, "--output", "json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["state"] == "Completed"
        logged = cli("run", "logs", first_id)
        assert logged.returncode == 0, logged.stderr
        assert "hello from first" in logged.stdout
        assert all(p.poll() is None for p in procs), "a daemon died with the server"

        # now the leading scheduler's host dies: the standby leads at epoch 2 and places
        def roles() -> list[tuple[str, int, int]]:
            out = cli("status", "--output", "json")
            assert out.returncode == 0, out.stderr
            return [(s["role"], s["epoch"], s["pid"]) for s in json.loads(out.stdout)["schedulers"]]

        wait_until(lambda: roles() == [("leader", 1, procs[0].pid), ("standby", 1, procs[2].pid)])
        procs[0].kill()
        procs[0].wait()
        third = submit("third", timeout=90)
        assert third.returncode == 0, third.stderr
        assert json.loads(third.stdout.splitlines()[1])["state"] == "Completed"
        assert roles()[0] == ("leader", 2, procs[2].pid)
        shown = cli("run", "show", second_id, "--output", "json")
        assert json.loads(shown.stdout)["state"] == "Completed"  # what the first one wrote
        assert procs[1].poll() is None and procs[2].poll() is None
    except BaseException:
        for name, path in logs.items():
            print(f"--- {name}\n{path.read_text(errors='replace')[-12000:]}")
        raise
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    # the killed leader aside, every daemon stopped cleanly
    assert [p.returncode for p in procs] == [-signal.SIGKILL, 0, 0]


def test_scheduler_refuses_replicas_a_single_server_cannot_keep(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), SORTIE_PROFILE=str(tmp_path / "p.json"))
    proc = subprocess.run(
        [*SORTIE, "--url", broker.url, "scheduler", "--replicas", "3", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    assert "3 replicas" in proc.stderr and "deploy/nats/" in proc.stderr
    assert "Traceback" not in proc.stderr
