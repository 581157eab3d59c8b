"""One table per store bucket: the scheduler's rows of one kind, and which of them changed.

Every change goes through ``put``, ``touch`` or ``delete``, and each marks its key; the daemon
takes the marks once per cycle (``take_changes``) and writes exactly those keys. A change can
therefore not be left unwritten by a forgotten mark, and a cycle costs O(changed), not
O(rows). Reads are those of a read-only mapping, at dict speed where the decision code loops.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Generic, TypeVar, overload

V = TypeVar("V")
D = TypeVar("D")


@dataclass(frozen=True, slots=True)
class Changes(Generic[V]):
    """A table's changes since the last take: rows to write (current values) and keys to
    delete, each in key order (writes land in the same order every time)."""

    written: list[tuple[str, V]]
    deleted: list[str]


class Table(Mapping[str, V]):
    """Rows by key (a bucket's key: a string), with the keys changed since the daemon last
    wrote them."""

    __slots__ = ("_changed", "_deleted", "_rows")

    def __init__(self, rows: Mapping[str, V] | None = None) -> None:
        self._rows: dict[str, V] = dict(rows or {})
        self._changed: set[str] = set()
        self._deleted: set[str] = set()

    # --- reads: the dict's own methods (the decision code's loops run through these) -------

    def __getitem__(self, key: str) -> V:
        return self._rows[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    @overload
    def get(self, key: str, /) -> V | None: ...
    @overload
    def get(self, key: str, default: V | D, /) -> V | D: ...
    def get(self, key: str, default: object = None) -> object:
        return self._rows.get(key, default)

    def keys(self) -> KeysView[str]:
        return self._rows.keys()

    def values(self) -> ValuesView[V]:
        return self._rows.values()

    def items(self) -> ItemsView[str, V]:
        return self._rows.items()

    def __eq__(self, other: object) -> bool:
        """Rows and marks equal another table's; rows equal a plain mapping's."""
        if isinstance(other, Table):
            return (self._rows, self._changed, self._deleted) == (
                other._rows,
                other._changed,
                other._deleted,
            )
        if isinstance(other, Mapping):
            return self._rows == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like dict

    def __repr__(self) -> str:
        return f"Table({self._rows!r}, changed={self._changed!r}, deleted={self._deleted!r})"

    @property
    def changed(self) -> AbstractSet[str]:
        """Keys put or touched since the last take (read-only: marks come from writes)."""
        return self._changed

    @property
    def deleted(self) -> AbstractSet[str]:
        """Keys deleted since the last take."""
        return self._deleted

    # --- writes: each marks its key ---------------------------------------------------------

    def put(self, key: str, value: V) -> None:
        """Set a row; it is written at the end of the cycle."""
        self._rows[key] = value
        self._changed.add(key)
        self._deleted.discard(key)

    def touch(self, key: str) -> None:
        """The row at ``key`` was changed in place (a mutable view): write it again."""
        if key in self._rows:
            self._changed.add(key)

    def delete(self, key: str) -> None:
        """Remove a row here and from the store."""
        self._rows.pop(key, None)
        self._changed.discard(key)
        self._deleted.add(key)

    # --- not changes: the store already holds these ---------------------------------------

    def load(self, key: str, value: V) -> None:
        """Set a row to what the store holds (at start, or after another writer's change)."""
        self._rows[key] = value
        self._changed.discard(key)
        self._deleted.discard(key)

    def forget(self, key: str) -> None:
        """Drop a row from memory only: the store keeps it (a finished run, once stored)."""
        self._rows.pop(key, None)
        self._changed.discard(key)

    def take_changes(self) -> Changes[V]:
        """The changes to write, and the marks cleared (the daemon writes them now)."""
        rows = self._rows
        written = [(k, rows[k]) for k in sorted(self._changed)]
        deleted = sorted(self._deleted)
        self._changed = set()
        self._deleted = set()
        return Changes(written=written, deleted=deleted)
