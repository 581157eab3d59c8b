"""Node providers: where a cluster's nodes come from. See ``base`` for the protocol."""

from sortie.scheduler.providers.base import (
    KNOWN_PROVIDERS,
    NodeProvider,
    NodeRequest,
    ProviderError,
    ProviderNode,
    make_provider,
    make_ssh_provider,
)

__all__ = [
    "KNOWN_PROVIDERS",
    "NodeProvider",
    "NodeRequest",
    "ProviderError",
    "ProviderNode",
    "make_provider",
    "make_ssh_provider",
]
