"""Real daemons as separate processes, to kill, pause and restart: for fault tests and chaos.

A :class:`Cluster` owns a nats-server (restartable on the same port and store), a
``sortie scheduler`` process and any number of ``sortie agent`` processes, each logging to its
own file under ``root``. Every wait is bounded; ``close()`` stops everything that is left.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sortie.bus.broker import BrokerProcess, free_port, start_broker
from sortie.bus.errors import NotInitialised
from sortie.client.client import Client, NoScheduler
from tests.e2e.conftest import REPO, isolated_env

SORTIE = [sys.executable, "-m", "sortie.cli"]
T = TypeVar("T")


def processes() -> dict[int, str]:
    """pid -> command line of every process (from /proc: no procps needed)."""
    out = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out[int(cmdline.parent.name)] = text
    return out


async def until(
    pred: Callable[[], Awaitable[T | None]], timeout: float, interval: float = 0.1
) -> T:
    """Await ``pred`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {pred}")
        await asyncio.sleep(interval)


def listening(port: int, timeout_s: float = 60) -> None:
    """Once something (``sortie web``) listens on ``port`` of 127.0.0.1 (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listened on {port} within {timeout_s}s")


@dataclass
class Cluster:
    root: Path
    port: int = field(default_factory=free_port)
    broker: BrokerProcess | None = None
    scheduler: subprocess.Popen[bytes] | None = None
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # more `sortie scheduler` processes on the same broker (standbys), by name
    others: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    scheduler_args: list[str] = field(default_factory=list)
    agent_args: dict[str, list[str]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = isolated_env(self.root)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    # --- the broker ---------------------------------------------------------------------------

    def start_broker(self) -> None:
        # fsync on every write, as `sortie up` runs it: a kill -9 then loses nothing acked
        self.broker = start_broker(self.root / "nats", port=self.port, sync_always=True)

    def kill_broker(self) -> None:
        assert self.broker is not None
        self.broker.kill()

    def restart_broker(self, down_s: float = 0.0) -> None:
        """kill -9 the broker, wait ``down_s``, start it again on the same port and store."""
        self.kill_broker()
        time.sleep(down_s)
        self.start_broker()

    # --- the scheduler ------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the child's
        try:
            return subprocess.Popen(
                [*SORTIE, "--url", self.url, *argv],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
            )
        finally:
            log.close()

    def start_scheduler(self, *args: str) -> None:
        if args:
            self.scheduler_args = list(args)
        argv = ["scheduler", "--data-dir", str(self.root / "scheduler"), *self.scheduler_args]
        self.scheduler = self._spawn("scheduler", argv)

    def start_another_scheduler(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """One more scheduler, with a data directory of its own, logging to ``<name>.log``."""
        argv = ["scheduler", "--data-dir", str(self.root / name), *args]
        proc = self.others[name] = self._spawn(name, argv)
        return proc

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        self.scheduler.kill()
        self.scheduler.wait()

    # --- agents -------------------------------------------------------------------------------

    def start_agent(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        if args or name not in self.agent_args:
            self.agent_args[name] = list(args)
        argv = ["agent", "--name", name, "--data-dir", str(self.root / "agents" / name)]
        proc = self._spawn(f"agent-{name}", [*argv, *self.agent_args[name]])
        self.agents[name] = proc
        return proc

    def kill_agent(self, name: str) -> None:
        proc = self.agents[name]
        proc.kill()
        proc.wait()

    def pause_agent(self, name: str) -> None:
        os.kill(self.agents[name].pid, signal.SIGSTOP)

    def resume_agent(self, name: str) -> None:
        os.kill(self.agents[name].pid, signal.SIGCONT)

    async def client(self, timeout: float = 30.0) -> Client:
        """A client, once the scheduler has created Sortie's resources and answers."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = await Client.connect(self.url, name="fault-test")
            except NotInitialised:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
                continue
            while True:
                try:
                    await client.targets()
                    return client
                except NoScheduler:
                    if time.monotonic() > deadline:
                        await client.close()
                        raise
                    await asyncio.sleep(0.2)

    # --- the CLI ------------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SORTIE, "--url", self.url, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
        )

    # --- the end ------------------------------------------------------------------------------

    def close(self) -> None:
        procs = [
            p
            for p in [self.scheduler, *self.others.values(), *self.agents.values()]
            if p is not None
        ]
        for p in procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)  # a paused one must be able to stop
                p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.broker is not None:
            self.broker.stop()

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"
