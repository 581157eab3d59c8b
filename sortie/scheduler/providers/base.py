"""The node provider protocol: how a cluster gets and gives back its nodes.

A provider makes nodes of a shape and a priority, stops them, and lists the ones it made. A
node is anything that ends up running a ``sortie agent`` for the cluster's target under the
node id as its agent id: a local process (``process``), later a VM over SSH, a cloud VM or a
Kubernetes pod. The scheduler core never sees a provider: the daemon turns the autoscaler's
decisions into calls here and the results back into events.

**Boundary:** a new provider is a new module with a class that satisfies ``NodeProvider`` and
one entry in ``_FACTORIES``; nothing in the scheduler core changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sortie.proto import messages as m

if TYPE_CHECKING:
    from sortie.bus.auth import Creds


@dataclass(frozen=True, kw_only=True)
class NodeRequest:
    """What to create: one node of ``shape`` serving the compute target ``cluster``."""

    node_id: str  # also the agent id of the node's agent (a subject-safe token)
    cluster: str  # the compute target the agent serves (--target)
    shape: m.NodeShape
    priority: m.NodePriority
    broker_url: str
    labels: dict[str, str] = field(default_factory=dict)
    # the node agent's own credentials (minted for node_id; the repr hides the secret) and the
    # CA that signed the broker's TLS certificate; None: the broker needs neither
    creds: Creds | None = None
    tls_ca: Path | None = None


@dataclass(frozen=True, kw_only=True)
class ProviderNode:
    """A node as the provider sees it (not as the scheduler does: no heartbeats here)."""

    node_id: str
    cluster: str
    alive: bool
    detail: str | None = None  # e.g. "exited with code 1: <last log line>"


class ProviderError(Exception):
    """A provider could not do what was asked. ``message`` says what failed and what to do.

    Codes: ``unknown_provider``, ``exists``, ``spawn_failed``, ``insufficient_gpus``,
    ``bad_request``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class NodeProvider(Protocol):
    name: str

    async def create_node(self, request: NodeRequest) -> None:
        """Start the node; return once it is started (its agent may not have registered yet).

        Raises ``ProviderError``.
        """
        ...

    async def stop_node(self, node_id: str, grace_s: float = 10.0) -> None:
        """Stop the node: ask nicely, wait ``grace_s``, then force. Unknown ids are fine."""
        ...

    async def list_nodes(self) -> list[ProviderNode]:
        """Every node this provider started and has not stopped."""
        ...

    async def close(self) -> None:
        """Stop every node this provider started (scheduler shutdown)."""
        ...


def _process(
    data_dir: Path, agent_command: list[str] | None, gpu_pool: Sequence[int]
) -> NodeProvider:
    from sortie.scheduler.providers.process import ProcessProvider

    return ProcessProvider(data_dir=data_dir, agent_command=agent_command, gpu_pool=gpu_pool)


_FACTORIES: dict[str, Callable[[Path, list[str] | None, Sequence[int]], NodeProvider]] = {
    "process": _process,
}

# "ssh" is made per cluster (its hosts and login) by ``make_ssh_provider`` below.
KNOWN_PROVIDERS = tuple(sorted([*_FACTORIES, "ssh"]))


def make_provider(
    name: str,
    *,
    data_dir: Path,
    agent_command: list[str] | None = None,
    gpu_pool: Sequence[int] = (),
) -> NodeProvider:
    """The provider called ``name``, keeping its files under ``data_dir``.

    ``agent_command`` is the argv prefix that starts ``sortie`` (default: this interpreter with
    ``-m sortie.cli``); ``gpu_pool`` lists host GPU indices nodes may be given (``process``).
    """
    factory = _FACTORIES.get(name)
    if name == "ssh":
        raise ProviderError(
            "bad_request", "the ssh provider is made per cluster: use make_ssh_provider"
        )
    if factory is None:
        raise ProviderError(
            "unknown_provider",
            f"no node provider called {name!r}; known providers: {', '.join(KNOWN_PROVIDERS)}",
        )
    return factory(data_dir, agent_command, gpu_pool)


def make_ssh_provider(data_dir: Path, compute: m.ComputeRecord) -> NodeProvider:
    """The ``ssh`` provider of one cluster: its pool of hosts and its login."""
    from sortie.scheduler.providers.ssh import SshPoolProvider

    cfg = compute.cluster
    if cfg.ssh is None or not cfg.hosts:
        raise ProviderError("bad_request", f"{compute.name} has no ssh hosts or login")
    return SshPoolProvider(
        data_dir=data_dir, cluster=compute.name, hosts=list(cfg.hosts), login=cfg.ssh
    )
