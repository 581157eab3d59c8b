"""The base of every wire type (re-exported by ``messages``; modules that ``messages`` itself
imports, such as ``sweeps``, take it from here)."""

from __future__ import annotations

import msgspec


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every wire type."""
