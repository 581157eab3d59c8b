"""Configuration objects that refuse attribute names they do not have.

``rc.environment.python.conda_dependenciez = ...`` on a plain object would be stored and
ignored, and the run would fail later on a missing module. A class that mixes in
:class:`Strict` raises ``AttributeError`` instead, naming the close matches, for reads and
writes alike. Its known names are its dataclass fields, its slots, its properties and its
private (``_``-prefixed) names.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

_KNOWN: dict[type, frozenset[str]] = {}  # class -> its names, found once


def known_names(cls: type) -> frozenset[str]:
    """The public attribute names instances of ``cls`` may be given."""
    known = _KNOWN.get(cls)
    if known is None:
        names = set()
        if dataclasses.is_dataclass(cls):
            names = {f.name for f in dataclasses.fields(cls)}
        for klass in cls.__mro__:
            names.update(k for k, v in vars(klass).items() if isinstance(v, property))
            slots = getattr(klass, "__slots__", ())  # a class that sets them in __init__
            names.update(n for n in slots if not n.startswith("_"))
        known = _KNOWN[cls] = frozenset(names)
    return known


def unknown_attribute(cls: type, name: str) -> AttributeError:
    """The error for ``name`` on ``cls``: what it has that is close, and what it has."""
    known = sorted(known_names(cls))
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
    return AttributeError(
        f"{cls.__name__} has no attribute {name!r}{hint} (it has: {', '.join(known)})"
    )


class Strict:
    """Mixin: setting or reading an attribute the class does not have raises
    ``AttributeError`` naming the close matches."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name not in known_names(type(self)):
            raise unknown_attribute(type(self), name)
        object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # called only when normal lookup failed: the name is not an attribute
        if name.startswith("_"):
            raise AttributeError(name)
        raise unknown_attribute(type(self), name)
