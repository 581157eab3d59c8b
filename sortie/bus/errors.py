"""What can go wrong when opening the bus, as exceptions whose messages say what to do."""

from __future__ import annotations


class BrokerUnreachable(RuntimeError):
    """No NATS server answered at the given URL."""


class AccessDenied(RuntimeError):
    """The broker refused our credentials (or wanted some); the message says what to do."""


class NotInitialised(RuntimeError):
    """The broker answers but Sortie's streams and buckets do not exist yet."""


class ReplicasUnavailable(NotInitialised):
    """The broker cannot keep Sortie's resources with the replica count asked for."""
