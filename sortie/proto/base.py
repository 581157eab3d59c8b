"""The base of every wire type (re-exported by ``messages``; modules that ``messages`` itself
imports, such as ``sweeps``, take it from here)."""

from __future__ import annotations

import msgspec


class Message(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Base of every wire type. Not tracked by the cyclic garbage collector (``gc=False``):
    a frozen message never refers back to itself, and a scheduler holding a million run
    records would otherwise have every full collection walk them all."""
