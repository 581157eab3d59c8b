"""Run records as a start holds them: what repeats from record to record is shared, not held
once per run. A million queued runs decode to about 2.4 KiB each, most of it copies of the same
environment, resources and strings and a dozen empty lists and dicts; shared, about 0.8 KiB.
And what placing adds to each run (``Shared``): its gang, its writers and its state change are
alike for every run a cycle places on the same agent, about 0.35 KiB a run when not shared.

Sharing is safe because records are frozen and never changed in place: every change is a new
record (``msgspec.structs.replace``), whose untouched fields stay shared. The empty containers
shared here must not be mutated; nothing in the scheduler mutates a record's containers.
Pure: no I/O.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable
from typing import Any, TypeVar, cast

import msgspec

from sortie.proto import codec
from sortie.proto import messages as m

S = TypeVar("S", bound=msgspec.Struct)
H = TypeVar("H", bound=Hashable)

_EMPTY_LIST: list[Any] = []
_EMPTY_DICT: dict[str, Any] = {}
_SPEC_STRINGS = ("experiment", "target", "script", "snapshot_id")
SHARED_MAX = 50_000  # distinct values ``Shared`` holds before it starts again


class Compactor:
    """Shares what repeats across the records it is given (keep one for a whole load)."""

    def __init__(self) -> None:
        self._environments: dict[bytes, m.Environment] = {}
        self._last_environment: m.Environment | None = None
        self._resources: dict[m.Resources, m.Resources] = {}

    def record(self, rec: m.RunRecord) -> m.RunRecord:
        """``rec`` with its repeated parts shared (equal to ``rec``)."""
        return _without_empties(rec, spec=self._spec(rec.spec))

    def _spec(self, spec: m.RunSpec) -> m.RunSpec:
        changes: dict[str, Any] = {name: sys.intern(getattr(spec, name)) for name in _SPEC_STRINGS}
        changes["environment"] = self._environment(spec.environment)
        changes["resources"] = self._resources.setdefault(spec.resources, spec.resources)
        return _without_empties(spec, **changes)

    def _environment(self, env: m.Environment) -> m.Environment:
        last = self._last_environment
        if last is not None and (env is last or env == last):
            return last
        shared = self._environments.setdefault(codec.encode(env), env)
        self._last_environment = shared
        return shared


def _without_empties(struct: S, **changes: Any) -> S:
    """``struct`` with ``changes``, and each empty list or dict replaced by a shared one."""
    for name in struct.__struct_fields__:
        if name in changes:
            continue
        value = getattr(struct, name)
        if not value and type(value) is list:
            changes[name] = _EMPTY_LIST
        elif not value and type(value) is dict:
            changes[name] = _EMPTY_DICT
    return msgspec.structs.replace(struct, **changes)


class Shared:
    """Equal frozen values made one object, and one-item lists of them one list (records'
    lists are never changed in place). Held for as long as they are used (a scheduler's
    state keeps one); forgotten past ``SHARED_MAX``: sharing is only a saving."""

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}
        self._lists: dict[Any, list[Any]] = {}

    def one(self, value: H) -> H:
        """The value held equal to ``value`` (``value`` itself the first time)."""
        if len(self._values) >= SHARED_MAX:
            self._values.clear()
        return cast(H, self._values.setdefault(value, value))

    def list_of(self, value: H) -> list[H]:
        """``[value]``, the same list for every equal ``value``: not to be changed."""
        held = self._lists.get(value)
        if held is None:
            if len(self._lists) >= SHARED_MAX:
                self._lists.clear()
            held = self._lists[value] = [self.one(value)]
        return held
