"""What a running script says about its run beyond metrics, and how it reaches the scheduler.

A script (``sortie/client/run_context.py``) writes these as JSON lines on its metrics pipe,
beside metric points, told apart by ``kind``; its agent wraps each in a :class:`RunNote` and
publishes it on the agent's own report subject (``subjects.report``: durable, and only that
agent may publish there). The scheduler, the only writer of run records, applies a note only
when its agent holds the run's current attempt (``scheduler/run_notes.py``).

Clients tag a run through the API instead (:class:`RunTagRequest`).
"""

from __future__ import annotations

from typing import Literal

from sortie.proto.messages import ErrorReply, Message, RunRecord

# one tag or property key and value; a note stays within the pipe's atomic line
MAX_KEY = 256
MAX_VALUE = 1024


class ScriptNoteBase(Message, frozen=True, kw_only=True, tag_field="kind"):
    """One line of the script's pipe that is not a metric point."""


class TagsSet(ScriptNoteBase, frozen=True, kw_only=True, tag="tags"):
    run: str | None = None  # a child run's id; None: the script's own run
    tags: dict[str, str]


class PropertiesAdded(ScriptNoteBase, frozen=True, kw_only=True, tag="properties"):
    run: str | None = None
    properties: dict[str, str]


class ChildStarted(ScriptNoteBase, frozen=True, kw_only=True, tag="child"):
    id: str  # ``<parent>_<n>``: made by the script, checked by the scheduler
    name: str = ""


class ChildEnded(ScriptNoteBase, frozen=True, kw_only=True, tag="state"):
    run: str  # the child's id
    state: Literal["Completed", "Failed"]
    error: str | None = None  # Run.fail(error_details=...)


ScriptNote = TagsSet | PropertiesAdded | ChildStarted | ChildEnded


class RunNote(Message, frozen=True, kw_only=True, tag="note"):
    """Agent -> scheduler, on ``subjects.report(agent_id)``: what the script of the attempt
    ``(run_id, attempt)`` said. Durable like a ``RunReport``; refused unless the agent holds
    that attempt."""

    agent_id: str
    incarnation: str
    run_id: str
    attempt: int
    at: float
    seq: int  # per attempt, from 1: the order the script wrote them (and a dedup key)
    note: ScriptNote


class RunTagRequest(Message, frozen=True, kw_only=True, tag="run_tag"):
    """Client -> scheduler: add (or overwrite) tags and add properties of a run."""

    run_id: str
    tags: dict[str, str] = {}
    properties: dict[str, str] = {}


class RunTagged(Message, frozen=True, kw_only=True, tag="run_tagged"):
    record: RunRecord


RunTagReply = RunTagged | ErrorReply


def check_entries(what: str, entries: dict[str, str]) -> str | None:
    """Why these tags or properties cannot be kept (None: they can)."""
    for key, value in entries.items():
        if not isinstance(key, str) or not key or len(key) > MAX_KEY:
            return f"{what} key {key!r} must be a string of 1 to {MAX_KEY} characters"
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            return f"{what} {key!r}: the value must be a string of at most {MAX_VALUE} characters"
        if "\x00" in key or "\x00" in value:
            return f"{what} {key!r} contains a NUL character"
    return None
