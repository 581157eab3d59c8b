"""Hypothesis strategies for hostile bus input, derived from proto's own types.

``values(T)`` walks ``msgspec.inspect.type_info(T)`` and draws plain JSON-able values shaped
like ``T``: every field present or absent as the schema allows, strings from the nasty end
(empty, ``..``, ``/``, subject wildcards, NUL, long, non-ASCII), integers to the edges of
int64 and beyond, floats to the edges of double. With ``junk=True`` any node may instead be
a value of the wrong type, a struct may lose required fields or gain unknown ones, and a
tag may be wrong. ``wire_bytes(T)`` adds arbitrary bytes and damaged encodings of valid
messages.
"""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.inspect as mi
from hypothesis import strategies as st

from sortie.proto import messages as m
from sortie.proto import notes, run_index, subjects
from sortie.proto.queue import QueueReplyOrError

NASTY_TEXT = (
    "",
    " ",
    ".",
    "..",
    "../x",
    "a/../../x",
    "/etc/passwd",
    "a.b",
    "*",
    ">",
    "sortie.api.submit",
    "x" * 300,
    "\x00",
    "a\x00b",
    "ü-名前-🚀",
    "local",
    "0" * 64,
    "-",
    "SORTIE_RUN_ID",
    "a\\b",
    "\n",
)
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=24), st.sampled_from(NASTY_TEXT)
)
INTS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from(
        [0, -1, 1, 2, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 10**30, -(10**30)]
    ),
)
FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, -1.0, 1e-300, 1e308, -1e308, 2.0**63]),
)
JUNK: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    FLOATS,
    TEXT,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(TEXT, st.integers(), max_size=3),
)
MAX_DEPTH = 4
# What the client reads back on each API subject (an ErrorReply is one of each).
REPLY_TYPES: dict[str, Any] = {
    subjects.API_SUBMIT: m.SubmitReply,
    subjects.API_CANCEL: m.CancelReply,
    subjects.API_TARGETS: m.TargetsReplyOrError,
    subjects.API_COMPUTE: m.ComputeReplyOrError,
    subjects.API_AGENTS: m.AgentReplyOrError,
    subjects.API_WHY: m.WhyReplyOrError,
    subjects.API_QUEUE: QueueReplyOrError,
    subjects.API_RUN_TAG: notes.RunTagReply,
    subjects.API_MODELS: m.ModelReplyOrError,
    subjects.API_HOST_KEY: m.HostKeyReplyOrError,
    subjects.API_RUNS_QUERY: run_index.RunPageOrError,
    subjects.API_EXPERIMENTS: run_index.ExperimentListOrError,
}


Hints = dict[str, st.SearchStrategy[Any]]


def values(
    t: Any, *, junk: bool = False, hints: Hints | None = None, depth: int = 0
) -> st.SearchStrategy[Any]:
    """Plain values shaped like type ``t`` (a proto type, a union alias or an inspect.Type).

    ``hints`` maps a field name to values that mean something to the receiver (a known run
    id, a real vm size): such a field draws from its hint half of the time, so that the
    fuzzing reaches past the first lookup that fails.
    """
    info = t if isinstance(t, mi.Type) else mi.type_info(t)
    valid = _shaped(info, junk, hints or {}, depth)
    return st.one_of(valid, valid, JUNK) if junk else valid


def _shaped(t: mi.Type, junk: bool, hints: Hints, depth: int) -> st.SearchStrategy[Any]:
    deeper = depth + 1
    many = 0 if depth >= MAX_DEPTH else 3
    if isinstance(t, mi.StructType):
        return _struct(t, junk, hints, deeper)
    if isinstance(t, mi.UnionType):
        return st.one_of([values(u, junk=junk, hints=hints, depth=deeper) for u in t.types])
    if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return st.lists(values(t.item_type, junk=junk, hints=hints, depth=deeper), max_size=many)
    if isinstance(t, mi.TupleType):
        return st.tuples(*(values(i, junk=junk, hints=hints, depth=deeper) for i in t.item_types))
    if isinstance(t, mi.DictType):
        return st.dictionaries(
            values(t.key_type, depth=deeper),
            values(t.value_type, junk=junk, hints=hints, depth=deeper),
            max_size=many,
        )
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.EnumType):
        return st.sampled_from([e.value for e in t.cls])
    return _scalar(t)


def _scalar(t: mi.Type) -> st.SearchStrategy[Any]:
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.IntType):
        return INTS
    if isinstance(t, mi.FloatType):
        return st.one_of(FLOATS, INTS.filter(lambda i: abs(i) < 2**63))
    if isinstance(t, mi.StrType):
        return TEXT
    raise TypeError(f"no strategy for {t!r}: teach tests/security/wire.py about it")


def _struct(t: mi.StructType, junk: bool, hints: Hints, depth: int) -> st.SearchStrategy[Any]:
    def field(f: mi.Field) -> st.SearchStrategy[Any]:
        drawn = values(f.type, junk=junk, hints=hints, depth=depth)
        hint = hints.get(f.name)
        return drawn if hint is None else st.one_of(hint, drawn)

    required = {f.encode_name: field(f) for f in t.fields if f.required}
    optional = {f.encode_name: field(f) for f in t.fields if not f.required}
    if t.tag_field is not None:
        tag = st.one_of(st.just(t.tag), TEXT) if junk else st.just(t.tag)
        required[t.tag_field] = tag
    shaped = st.fixed_dictionaries(required, optional=optional)
    if not junk:
        return shaped
    names = sorted(required)

    def damage(d: dict[str, Any], drop: set[str], extra: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in d.items() if k not in drop}
        out.update(extra)
        return out

    return st.builds(
        damage,
        shaped,
        st.sets(st.sampled_from(names), max_size=2) if names else st.just(set()),
        st.dictionaries(TEXT, JUNK, max_size=2),
    )


def encoded(t: Any, *, junk: bool = False, hints: Hints | None = None) -> st.SearchStrategy[bytes]:
    return values(t, junk=junk, hints=hints).map(msgspec.json.encode)


def _damage_bytes(data: bytes, cut: int, pos: int, insert: bytes) -> bytes:
    if not data:
        return insert
    cut %= len(data) + 1
    pos %= len(data)
    return data[:pos] + insert + data[pos:cut] if cut > pos else data[:cut] + insert


def wire_bytes(t: Any, hints: Hints | None = None) -> st.SearchStrategy[bytes]:
    """Anything a hostile or broken peer could put on a subject that expects ``t``."""
    return st.one_of(
        st.binary(max_size=256),
        encoded(t, junk=True, hints=hints),
        st.builds(
            _damage_bytes,
            encoded(t, hints=hints),
            st.integers(0, 10_000),
            st.integers(0, 10_000),
            st.binary(max_size=4),
        ),
        st.sampled_from(
            [b"", b"null", b"{}", b"[]", b"0", b'""', b"\xff\xfe", b"{" * 10_000, b'{"type":1}']
        ),
    )


def typed(t: Any, hints: Hints | None = None) -> st.SearchStrategy[Any]:
    """Messages that decode as ``t`` (whatever their values mean)."""
    dec = msgspec.json.Decoder(t)
    return encoded(t, hints=hints).map(dec.decode)
