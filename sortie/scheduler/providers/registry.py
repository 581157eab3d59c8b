"""The node providers a scheduler knows: one entry per cluster variant (``m.ClusterConfig``).

**Boundary:** adding a provider is a variant of ``m.ClusterConfig`` in proto (its own
settings), a module here with a class that satisfies ``base.NodeProvider`` and a
``from_config`` that makes it, and one entry in :data:`PROVIDERS`. Nothing else names a
provider: the daemon asks this table, and the core never sees one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sortie.proto import messages as m
from sortie.scheduler.providers import process, ssh
from sortie.scheduler.providers.base import NodeProvider, ProviderContext

C = TypeVar("C", bound=m.ClusterBase)


@dataclass(frozen=True, kw_only=True)
class ProviderEntry(Generic[C]):
    """How the daemon makes and keeps the provider of clusters of one variant."""

    # (what every provider gets, the cluster's name, its settings) -> the provider
    make: Callable[[ProviderContext, str, C], NodeProvider]
    # one provider per cluster (its own hosts and login), or one shared by every cluster of
    # this variant (and so by their nodes' resources, such as the host's GPUs)
    per_cluster: bool
    # the provider's nodes keep running when the scheduler stops; when False they were its
    # children, and a restarted scheduler finds them gone
    nodes_outlive_scheduler: bool


PROVIDERS: dict[type[m.ClusterBase], ProviderEntry[Any]] = {
    m.ProcessCluster: ProviderEntry[m.ProcessCluster](
        make=process.from_config, per_cluster=False, nodes_outlive_scheduler=False
    ),
    m.SshPoolCluster: ProviderEntry[m.SshPoolCluster](
        make=ssh.from_config, per_cluster=True, nodes_outlive_scheduler=True
    ),
}

# the names the scheduler offers (the variants' ``provider`` tags)
KNOWN_PROVIDERS = frozenset(str(kind.__struct_config__.tag) for kind in PROVIDERS)


def entry(cfg: m.ClusterConfig) -> ProviderEntry[Any]:
    return PROVIDERS[type(cfg)]


def provider_key(cluster: str, cfg: m.ClusterConfig) -> str:
    """Under which key the daemon keeps the provider of ``cluster``."""
    return f"{cfg.provider}:{cluster}" if entry(cfg).per_cluster else cfg.provider


def make_provider(ctx: ProviderContext, cluster: str, cfg: m.ClusterConfig) -> NodeProvider:
    """A new provider for ``cluster``'s nodes. Raises ``ProviderError``."""
    return entry(cfg).make(ctx, cluster, cfg)
