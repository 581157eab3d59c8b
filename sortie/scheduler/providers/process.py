"""The ``process`` provider: each node is a real ``sortie agent`` process on this machine.

A node advertises exactly its shape's CPUs and memory, so one machine can pretend to be a pool
of small nodes, and a big multi-GPU host can be split into per-GPU nodes: give the provider a
``gpu_pool`` of host GPU indices and a node whose shape has N GPUs gets N of them
(``--gpus i,j``) until it stops.

Files, under the provider's ``data_dir``:

- ``nodes/<node_id>/``: the agent's data directory (caches, run directories), with
  ``agent.creds``: the agent's own broker credentials (0600) when the broker requires them;
- ``nodes/<node_id>.log``: the agent's stdout and stderr, appended to.

Agents start in their own session, so a Ctrl-C aimed at the scheduler does not reach them
directly: the scheduler's ``close()`` stops them (SIGTERM, then SIGKILL after the grace
period), which lets each agent stop its runs in order. If the scheduler dies without
``close()`` (SIGKILL), each agent notices its parent is gone (``--exit-with-parent``), stops
its runs and exits: no node outlives the scheduler that started it. Stopped nodes are
forgotten: they no longer appear in ``list_nodes``. A node whose agent exited by itself
stays listed, with ``alive=False`` and its exit code, until ``stop_node`` is called for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sortie.bus.auth import write_private
from sortie.bus.connection import ENV_CREDS
from sortie.proto import messages as m
from sortie.proto.subjects import check_token
from sortie.scheduler.providers.base import (
    NodeRequest,
    ProviderContext,
    ProviderError,
    ProviderNode,
)

# The repository root when running from a source checkout (scheduler/providers/process.py).
_REPO_ROOT = Path(__file__).resolve().parents[3]


def default_agent_command() -> list[str]:
    return [sys.executable, "-m", "sortie.cli"]


def agent_argv(
    request: NodeRequest,
    *,
    data_dir: Path,
    agent_command: Sequence[str] | None = None,
    gpus: Sequence[int] = (),
    parent_pid: int | None = None,
    creds_path: Path | None = None,
) -> list[str]:
    """The argv that starts the node's agent (pure: no I/O).

    ``gpus`` are the host GPU indices given to this node; none means ``--gpus`` is left out.
    ``parent_pid`` (the scheduler's pid): the agent exits when that process is gone.
    """
    argv = [*(agent_command or default_agent_command())]
    argv += ["--url", request.broker_url]
    if creds_path is not None:
        argv += ["--creds", str(creds_path)]
    if request.tls_ca is not None:
        argv += ["--tls-ca", str(request.tls_ca)]
    argv += ["--log-level", "warning", "agent"]
    argv += ["--target", request.cluster, "--name", request.node_id]
    argv += ["--data-dir", str(node_data_dir(data_dir, request.node_id))]
    argv += ["--cpus", _number(request.shape.cpus), "--memory-mb", str(request.shape.memory_mb)]
    if gpus:
        argv += ["--gpus", ",".join(str(i) for i in gpus)]
    argv += ["--priority", request.priority]
    if parent_pid is not None:
        argv += ["--exit-with-parent", str(parent_pid)]
    labels = {"cluster": request.cluster, **request.labels}
    for key, value in labels.items():
        argv += ["--label", f"{key}={value}"]
    return argv


def pick_gpus(pool: Sequence[int], taken: set[int], count: int) -> list[int] | None:
    """The lowest ``count`` free indices of ``pool``, or None if there are not enough."""
    free = [i for i in pool if i not in taken]
    return free[:count] if len(free) >= count else None


def node_data_dir(data_dir: Path, node_id: str) -> Path:
    return data_dir / "nodes" / node_id


def node_creds_path(data_dir: Path, node_id: str) -> Path:
    """The node agent's own credentials (0600), minted by the scheduler for its id."""
    return node_data_dir(data_dir, node_id) / "agent.creds"


def node_log_path(data_dir: Path, node_id: str) -> Path:
    return data_dir / "nodes" / f"{node_id}.log"


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` with the source checkout on ``PYTHONPATH``, so the agent imports this code.

    Outside a checkout (an installed package) nothing is added: the installed one is found.
    """
    env = dict(os.environ if base is None else base)
    # never the scheduler's own credentials: a node gets its own (--creds) or none
    env.pop(ENV_CREDS, None)
    root = str(_REPO_ROOT)
    if (_REPO_ROOT / "sortie" / "cli" / "main.py").is_file():
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if root not in parts:
            env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    return env


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass
class _Node:
    cluster: str
    gpus: list[int]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None  # None while it is being spawned
    stopping: asyncio.Task[None] | None = None


class ProcessProvider:
    """Nodes as local ``sortie agent`` processes. See the module docstring."""

    name = "process"

    def __init__(
        self,
        *,
        data_dir: Path,
        agent_command: Sequence[str] | None = None,
        gpu_pool: Sequence[int] = (),
    ) -> None:
        self.data_dir = data_dir
        self.agent_command = list(agent_command or default_agent_command())
        if len(set(gpu_pool)) != len(gpu_pool):
            raise ProviderError("bad_request", f"gpu_pool lists an index twice: {list(gpu_pool)}")
        self.gpu_pool = list(gpu_pool)
        self._nodes: dict[str, _Node] = {}

    def pid(self, node_id: str) -> int | None:
        """The agent process id of a node, if it was started (for operators and tests)."""
        node = self._nodes.get(node_id)
        return node.proc.pid if node is not None and node.proc is not None else None

    def gpus_of(self, node_id: str) -> list[int]:
        """The host GPU indices given to a node (empty for CPU nodes and unknown ids)."""
        node = self._nodes.get(node_id)
        return list(node.gpus) if node is not None else []

    def _taken_gpus(self) -> set[int]:
        return {i for node in self._nodes.values() for i in node.gpus}

    async def create_node(self, request: NodeRequest) -> None:
        self._check_new(request)
        gpus = self._pick_gpus(request)
        # Reserve the id and the GPUs before the first await, so concurrent creates see them.
        node = _Node(request.cluster, gpus, node_log_path(self.data_dir, request.node_id))
        self._nodes[request.node_id] = node
        try:
            await self._spawn(request, node)
        except BaseException as exc:
            # spawn failed or the caller was cancelled mid-spawn: forget the reservation
            del self._nodes[request.node_id]
            if not isinstance(exc, OSError):
                raise
            raise ProviderError(
                "spawn_failed",
                f"could not start the agent for node {request.node_id!r} with "
                f"{' '.join(self.agent_command)!r}: {exc}; check that the command exists and "
                f"that {self.data_dir} is writable",
            ) from exc

    def _check_new(self, request: NodeRequest) -> None:
        """Refuse a malformed id or cluster name, and an id already in use."""
        try:
            check_token("node id", request.node_id)
            check_token("cluster", request.cluster)
        except ValueError as exc:
            raise ProviderError("bad_request", str(exc)) from None
        if request.node_id in self._nodes:
            raise ProviderError(
                "exists",
                f"node {request.node_id!r} already exists; stop it first or pick another id",
            )

    def _pick_gpus(self, request: NodeRequest) -> list[int]:
        """Free pool GPUs for the node's shape (none for a CPU node), or ProviderError."""
        if request.shape.gpus <= 0:
            return []
        picked = pick_gpus(self.gpu_pool, self._taken_gpus(), request.shape.gpus)
        if picked is None:
            free = len(self.gpu_pool) - len(self._taken_gpus())
            raise ProviderError(
                "insufficient_gpus",
                f"node {request.node_id!r} of size {request.shape.name} needs "
                f"{request.shape.gpus} GPU(s) but {free} of the {len(self.gpu_pool)} in "
                "this host's GPU pool are free; stop a GPU node, add GPUs to the pool, "
                "or pick a smaller size",
            )
        return picked

    async def _spawn(self, request: NodeRequest, node: _Node) -> None:
        """Write the node's credentials and start its agent, logging to the node's log file."""
        creds_path = None
        if request.creds is not None:
            creds_path = node_creds_path(self.data_dir, request.node_id)
        argv = agent_argv(
            request,
            data_dir=self.data_dir,
            agent_command=self.agent_command,
            gpus=node.gpus,
            parent_pid=os.getpid(),
            creds_path=creds_path,
        )
        node_data_dir(self.data_dir, request.node_id).mkdir(parents=True, exist_ok=True)
        if request.creds is not None and creds_path is not None:
            write_private(creds_path, request.creds.text())
        with open(node.log_path, "ab") as log:
            node.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=child_env(),
                start_new_session=True,
            )

    async def stop_node(self, node_id: str, grace_s: float = 10.0) -> None:
        node = self._nodes.get(node_id)
        if node is None:
            return
        if node.stopping is None:
            node.stopping = asyncio.create_task(self._stop(node_id, node, grace_s))
        # shield: a caller that gives up waiting must not leave a half-stopped node behind
        await asyncio.shield(node.stopping)

    async def _stop(self, node_id: str, node: _Node, grace_s: float) -> None:
        try:
            proc = node.proc
            if proc is not None:
                await _terminate(proc, grace_s)
        finally:
            if self._nodes.get(node_id) is node:
                del self._nodes[node_id]

    async def list_nodes(self) -> list[ProviderNode]:
        out = []
        for node_id, node in self._nodes.items():
            code = node.proc.returncode if node.proc is not None else None
            detail = None
            if code is not None:
                detail = f"{_describe_exit(code)}: {_last_line(node.log_path) or '(no output)'}"
            out.append(
                ProviderNode(
                    node_id=node_id, cluster=node.cluster, alive=code is None, detail=detail
                )
            )
        return out

    async def close(self, grace_s: float = 10.0) -> None:
        await asyncio.gather(*(self.stop_node(n, grace_s) for n in list(self._nodes)))


def from_config(ctx: ProviderContext, cluster: str, cfg: m.ProcessCluster) -> ProcessProvider:
    """The one process provider of a scheduler (every process cluster shares its GPU pool)."""
    return ProcessProvider(data_dir=ctx.data_dir / "providers" / "process", gpu_pool=ctx.gpu_pool)


async def _terminate(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM, wait ``grace_s``, SIGKILL; always reaps the process."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    await proc.wait()


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} (exit code {code})"
    return f"exited with code {code}"


def _last_line(path: Path, tail_bytes: int = 4096) -> str | None:
    """The last non-empty line of a log file, or None."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - tail_bytes))
            data = fh.read()
    except OSError:
        return None
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:500] if lines else None
