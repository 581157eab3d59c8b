"""The node provider protocol: how a cluster gets and gives back its nodes.

A provider makes nodes of a shape and a priority, stops them, and lists the ones it made. A
node is anything that ends up running a ``sortie agent`` for the cluster's target under the
node id as its agent id: a local process, an agent installed over SSH, later a cloud VM or a
Kubernetes pod. The scheduler core never sees a provider: the daemon turns the autoscaler's
decisions into calls here and the results back into events.

This module names no provider: each is a module of its own, registered in ``registry``.
"""

from __future__ import annotations

from collections.abc import Sequence
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

    Codes: ``exists``, ``spawn_failed``, ``insufficient_gpus``, ``bad_request``, and the
    ssh pool's ``pool_exhausted``, ``no_credentials`` and SSH error codes.
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


@dataclass(frozen=True, kw_only=True)
class ProviderContext:
    """What the scheduler gives every provider it makes."""

    data_dir: Path  # the scheduler's data directory; each provider keeps its files under it
    gpu_pool: Sequence[int] = ()  # host GPU indices that local nodes may be given
