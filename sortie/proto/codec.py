"""Encoders and the one decoder per message type, made once.

``decode`` turns bytes into a typed message or raises :class:`BadMessage` with a message a
person can act on; callers answer that with an ``ErrorReply(code="bad_request")``.
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

import msgspec

from sortie.proto import compat
from sortie.proto import messages as m

T = TypeVar("T")

_encoder = msgspec.json.Encoder()
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


class BadMessage(ValueError):
    """Bytes that do not decode as the expected message."""


def encode(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)


@overload
def decoder(kind: type[T]) -> msgspec.json.Decoder[T]: ...
@overload
def decoder(kind: Any) -> msgspec.json.Decoder[Any]: ...  # a union alias such as AgentCommand


def decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    dec = _decoders.get(kind)
    if dec is None:
        dec = _decoders[kind] = msgspec.json.Decoder(kind)
    return dec


@overload
def decode(kind: type[T], data: bytes) -> T: ...
@overload
def decode(kind: Any, data: bytes) -> Any: ...  # a union alias such as AgentCommand


def decode(kind: Any, data: bytes) -> Any:
    try:
        msg = decoder(kind).decode(data)
        upgrade = compat.UPGRADES.get(kind)
        return msg if upgrade is None else upgrade(msg, data)
    except msgspec.DecodeError as exc:
        name = getattr(kind, "__name__", str(kind))
        raise BadMessage(f"could not decode {name}: {exc}") from None
    except UnicodeDecodeError as exc:
        # msgspec raises this (not a DecodeError) for invalid UTF-8 in a tag, an enum or a
        # literal: it must be refused like any other bad message, not escape the caller
        name = getattr(kind, "__name__", str(kind))
        raise BadMessage(
            f"could not decode {name}: invalid UTF-8 at byte {exc.start} of a string"
        ) from None


def error(code: m.ErrorCode, message: str) -> bytes:
    return encode(m.ErrorReply(code=code, message=message))


# The decoders of the daemons' hot paths, built by :func:`warm` when a daemon starts (not at
# import: a CLI command that decodes two types would pay about 10 ms for all of them).
HOT = (
    m.SubmitRequest,
    m.SubmitReply,
    m.CancelRequest,
    m.CancelReply,
    m.TargetsRequest,
    m.TargetsReplyOrError,
    m.Heartbeat,
    m.AgentCommand,
    m.RunReport,
    m.RunRecord,
    m.AgentRecord,
    m.Manifest,
    m.LogBatch,
    m.MetricBatch,
)


def warm(kinds: tuple[Any, ...] = HOT) -> None:
    """Build the decoders of ``kinds`` now, before the first message needs one."""
    for kind in kinds:
        decoder(kind)
