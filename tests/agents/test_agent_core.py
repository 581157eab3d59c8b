"""The agent's pure core (agents.core) without NATS, processes or a clock: which attempts it
starts and stops, for each event, and invariants over any sequence of events."""

from __future__ import annotations

from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sortie.agents import core
from sortie.agents.engine_health import DOWN_AFTER
from sortie.agents.events import (
    Assigned,
    AttemptEnded,
    CancelAsked,
    Command,
    CommandRefused,
    EngineProbed,
    Event,
    LeaderSeen,
    LeaseLapsed,
    Note,
    PreemptNoticed,
    RemoveOrphans,
    StartAttempt,
    StopAttempt,
    Tick,
)
from sortie.proto import messages as m
from tests.builders import spec

ME = "inc-1"


def state() -> core.AgentState:
    return core.AgentState(incarnation=ME, finished_keep_s=600.0, finished_cap=200)


def assign(run_id: str = "r1", attempt: int = 1, incarnation: str = ME, epoch: int = 0) -> Assigned:
    return Assigned(
        assign=m.Assign(
            run_id=run_id, attempt=attempt, incarnation=incarnation, spec=spec(), epoch=epoch
        )
    )


def cancel(
    run_id: str = "r1",
    attempt: int = 1,
    reason: Literal["canceled", "stale", "early_terminated"] = "canceled",
    epoch: int = 0,
) -> CancelAsked:
    return CancelAsked(cancel=m.Cancel(run_id=run_id, attempt=attempt, reason=reason, epoch=epoch))


def ended(run_id: str = "r1", attempt: int = 1) -> AttemptEnded:
    return AttemptEnded(run_id=run_id, attempt=attempt)


def actions(commands: list[Command]) -> list[tuple[object, ...]]:
    """The commands that act, as short tuples (log notes left out)."""
    out: list[tuple[object, ...]] = []
    for c in commands:
        match c:
            case StartAttempt(assign=a, replaces=r):
                out.append(("start", a.run_id, a.attempt, r))
            case StopAttempt(run_id=run_id, attempt=attempt, reason=reason):
                out.append(("stop", run_id, attempt, reason))
            case RemoveOrphans(keep=keep):
                out.append(("orphans", tuple(sorted(keep))))
            case Note():
                pass
    return out


def run(events: list[Event], s: core.AgentState | None = None) -> list[tuple[object, ...]]:
    s = s or state()
    got: list[tuple[object, ...]] = []
    for i, e in enumerate(events):
        got.extend(actions(core.handle(s, e, float(i))))
    return got


LAPSE = LeaseLapsed(why="lease expired")

CASES: list[tuple[str, list[Event], list[tuple[object, ...]]]] = [
    ("an assign starts its attempt", [assign()], [("start", "r1", 1, None)]),
    ("a resend of the same assign is ignored", [assign(), assign()], [("start", "r1", 1, None)]),
    (
        "an assign for another incarnation is ignored",
        [assign(incarnation="inc-0")],
        [],
    ),
    (
        "a cancel racing a start stops the attempt it started",
        [assign(), cancel()],
        [("start", "r1", 1, None), ("stop", "r1", 1, "canceled")],
    ),
    (
        "an assign from an older leader epoch than one seen is refused",
        [assign(run_id="r0", epoch=2), assign(epoch=1)],
        [("start", "r0", 1, None)],
    ),
    (
        "after a new leader said its epoch, an older leader's assign is refused",
        [LeaderSeen(epoch=3), assign(epoch=2), assign(run_id="r2", epoch=3)],
        [("start", "r2", 1, None)],
    ),
    (
        "a cancel from an older leader epoch leaves the run going",
        [assign(epoch=2), cancel(epoch=1)],
        [("start", "r1", 1, None)],
    ),
    (
        "a newer leader's cancel is obeyed, and from then on its epoch is the floor",
        [assign(epoch=1), cancel(epoch=2), assign(run_id="r2", epoch=1)],
        [("start", "r1", 1, None), ("stop", "r1", 1, "canceled")],
    ),
    (
        "the same epoch again is the same leader",
        [assign(epoch=3), cancel(epoch=3)],
        [("start", "r1", 1, None), ("stop", "r1", 1, "canceled")],
    ),
    (
        "a sweep policy's cancel stops the attempt as early_terminated (what its script reads)",
        [assign(), cancel(reason="early_terminated")],
        [("start", "r1", 1, None), ("stop", "r1", 1, "early_terminated")],
    ),
    (
        "a cancel before its assign is for no attempt held",
        [cancel(), assign()],
        [("start", "r1", 1, None)],
    ),
    (
        "a cancel for an older attempt leaves the newer one running",
        [assign(attempt=2), cancel(attempt=1)],
        [("start", "r1", 2, None)],
    ),
    (
        "a stale cancel for a newer attempt stops the one held as disowned (reported)",
        [assign(attempt=1), cancel(attempt=2, reason="stale")],
        [("start", "r1", 1, None), ("stop", "r1", 1, "disowned")],
    ),
    (
        "a stale cancel for the attempt held stops it as disowned (its end is reported)",
        [assign(attempt=1), cancel(attempt=1, reason="stale")],
        [("start", "r1", 1, None), ("stop", "r1", 1, "disowned")],
    ),
    (
        "a lease lapse while preparing stops the attempt (fenced)",
        [assign(), assign(run_id="r2"), LAPSE],
        [
            ("start", "r1", 1, None),
            ("start", "r2", 1, None),
            ("stop", "r1", 1, "fenced"),
            ("stop", "r2", 1, "fenced"),
        ],
    ),
    (
        "an assign for an older attempt than the one held is ignored",
        [assign(attempt=3), assign(attempt=2)],
        [("start", "r1", 3, None)],
    ),
    (
        "two assigns for the same run: the newer replaces the older",
        [assign(attempt=1), assign(attempt=2)],
        [("start", "r1", 1, None), ("start", "r1", 2, 1)],
    ),
    (
        "an assign for an attempt that finished is a resend",
        [assign(), ended(), assign()],
        [("start", "r1", 1, None)],
    ),
    (
        "a preemption stops every run (again at a second notice) and refuses new ones",
        [
            assign(),
            PreemptNoticed(reason="spot"),
            assign(run_id="r2"),
            PreemptNoticed(reason="spot"),
        ],
        [("start", "r1", 1, None), ("stop", "r1", 1, "preempted"), ("stop", "r1", 1, "preempted")],
    ),
    (
        "the engine's first answer removes the containers of attempts not held",
        [assign(), EngineProbed(engine="podman 4.3.1"), EngineProbed(engine="podman 4.3.1")],
        [("start", "r1", 1, None), ("orphans", (("r1", 1),))],
    ),
    (
        "the engine answering again after it went down removes orphans again",
        [
            EngineProbed(engine="docker 24"),
            *[EngineProbed(engine=None)] * DOWN_AFTER,
            EngineProbed(engine="docker 24"),
        ],
        [("orphans", ()), ("orphans", ())],
    ),
    (
        "an engine that misses fewer probes in a row than it takes to be down stays up",
        [
            EngineProbed(engine="docker 24"),
            *[EngineProbed(engine=None)] * (DOWN_AFTER - 1),
            EngineProbed(engine="docker 24"),
        ],
        [("orphans", ())],
    ),
]


@pytest.mark.parametrize(("name", "events", "expected"), CASES, ids=[c[0] for c in CASES])
def test_events_give_these_commands(
    name: str, events: list[Event], expected: list[tuple[object, ...]]
) -> None:
    assert run(events) == expected, name


def test_an_older_attempt_ending_leaves_the_newer_one_held() -> None:
    s = state()
    run([assign(attempt=1), assign(attempt=2), ended(attempt=1)], s)
    assert s.running == {"r1": 2}
    assert list(s.finished) == [("r1", 1)]
    run([ended(attempt=2)], s)
    assert s.running == {} and list(s.finished) == [("r1", 1), ("r1", 2)]


def test_ignored_assigns_say_why_in_the_log() -> None:
    s = state()
    core.handle(s, assign(attempt=3), 0.0)
    for event, why in [
        (assign(incarnation="inc-0"), "assignment for another incarnation ignored"),
        (assign(attempt=2), "assignment older than the attempt running ignored"),
    ]:
        (note,) = core.handle(s, event, 1.0)
        assert isinstance(note, Note) and note.message == why


def test_bad_commands_are_counted_and_logged_a_bounded_number_of_times() -> None:
    s = state()
    notes = [core.handle(s, CommandRefused(error="x" * 1000, size=7), 0.0) for _ in range(30)]
    assert s.bad_commands == 30
    assert sum(len(n) for n in notes) == core.MAX_BAD_COMMANDS_LOGGED
    first = notes[0][0]
    assert isinstance(first, Note) and len(str(first.fields["error"])) == 300


def test_ticks_forget_what_finished_long_ago_and_keep_a_bounded_number() -> None:
    s = core.AgentState(incarnation=ME, finished_keep_s=10.0, finished_cap=3)
    for i in range(5):
        core.handle(s, ended(run_id=f"r{i}"), float(i))
    core.handle(s, Tick(), 5.0)
    assert list(s.finished) == [("r2", 1), ("r3", 1), ("r4", 1)]
    core.handle(s, Tick(), 13.5)
    assert list(s.finished) == [("r4", 1)]


# --- any sequence of events ---------------------------------------------------------------

RUNS = st.sampled_from(["r1", "r2", "r3"])
ATTEMPTS = st.integers(min_value=1, max_value=4)
EVENTS: st.SearchStrategy[Event] = st.one_of(
    st.builds(assign, RUNS, ATTEMPTS, st.sampled_from([ME, ME, "inc-0"])),
    st.builds(cancel, RUNS, ATTEMPTS, st.sampled_from(["canceled", "stale"])),
    st.builds(ended, RUNS, ATTEMPTS),
    st.builds(PreemptNoticed, reason=st.just("spot")),
    st.just(LAPSE),
    st.builds(EngineProbed, engine=st.sampled_from([None, "podman 4.3.1"])),
    st.just(Tick()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, max_size=40))
def test_invariants_over_any_sequence(events: list[Event]) -> None:
    """Whatever arrives: one attempt per run is held; an attempt starts at most once, only
    for this incarnation, never while preempting, never older than one held or finished;
    only attempts held are stopped; a start names the attempt it replaces."""
    s = state()
    started: set[tuple[str, int]] = set()
    ended_: set[tuple[str, int]] = set()
    for i, event in enumerate(events):
        held_before = dict(s.running)
        preempting = s.preempting
        for c in core.handle(s, event, float(i)):
            match c:
                case StartAttempt(assign=a, replaces=replaces):
                    key = (a.run_id, a.attempt)
                    assert a.incarnation == ME and not preempting
                    assert key not in started and key not in ended_
                    assert replaces == held_before.get(a.run_id)
                    assert replaces is None or replaces < a.attempt
                    started.add(key)
                case StopAttempt(run_id=run_id, attempt=attempt):
                    assert held_before.get(run_id) == attempt
                case _:
                    pass
        if isinstance(event, AttemptEnded):
            ended_.add((event.run_id, event.attempt))
        assert all((r, a) in started for r, a in s.running.items())
        if s.preempting:
            assert set(s.running.items()) <= set(held_before.items())


def test_a_command_from_an_older_leader_is_refused_with_a_note_saying_both_epochs() -> None:
    s = state()
    core.handle(s, assign(epoch=4), 0.0)
    out = core.handle(s, cancel(epoch=3), 1.0)
    assert out == [
        Note(
            level="warning",
            message="cancel from an older leader refused",
            fields={"run_id": "r1", "attempt": 1, "epoch": 3, "leader_epoch": 4},
        )
    ]
    assert s.running == {"r1": 1} and s.epoch == 4


def test_heartbeats_list_in_full_until_the_leader_reads_short_ones() -> None:
    """A short heartbeat (its listing by digest only) goes out only while the newest leader
    said it reads them: an older scheduler, never told, would take it as holding nothing."""
    s = state()
    core.handle(s, assign(), 0.0)
    first = core.heartbeat_listing(s, asked=False)
    assert first.listed and first.running == [m.RunRef(run_id="r1", attempt=1)]
    assert core.heartbeat_listing(s, asked=False).listed  # no leader said so yet
    core.handle(s, LeaderSeen(epoch=2, short_heartbeats=True), 0.0)
    short = core.heartbeat_listing(s, asked=False)
    assert (short.listed, short.running, short.digest) == (False, [], first.digest)
    # an older leader's word changes nothing; a newer one that does not read them does
    core.handle(s, LeaderSeen(epoch=1, short_heartbeats=False), 0.0)
    assert not core.heartbeat_listing(s, asked=False).listed
    core.handle(s, assign(run_id="r2", epoch=3), 0.0)  # an Assign without the flag
    assert core.heartbeat_listing(s, asked=False).listed


def test_a_short_heartbeat_gives_way_to_a_full_one_on_change_when_asked_and_every_few() -> None:
    s = state()
    core.handle(s, assign(), 0.0)
    core.handle(s, LeaderSeen(epoch=1, short_heartbeats=True), 0.0)
    assert core.heartbeat_listing(s, asked=False).listed  # the first: nothing sent in full yet
    assert not core.heartbeat_listing(s, asked=False).listed
    assert core.heartbeat_listing(s, asked=True).listed  # a new leader asks
    core.handle(s, ended(), 1.0)  # r1 ends: the listing changes (it is finished now)
    changed = core.heartbeat_listing(s, asked=False)
    assert changed.listed and changed.finished == [m.RunRef(run_id="r1", attempt=1)]
    shorts = [core.heartbeat_listing(s, asked=False).listed for _ in range(30)]
    every = core.FULL_LISTING_EVERY
    assert shorts == ([False] * (every - 1) + [True]) * (30 // every) + [False] * (30 % every)


def test_a_listing_digest_is_the_same_for_the_same_listing_in_any_order() -> None:
    a, b = m.RunRef(run_id="a", attempt=1), m.RunRef(run_id="b", attempt=2)
    assert core.listing_digest([a, b], []) != core.listing_digest([a], [b])
    s1, s2 = state(), state()
    for event in (assign(run_id="a"), assign(run_id="b")):
        core.handle(s1, event, 0.0)
    for event in (assign(run_id="b"), assign(run_id="a")):
        core.handle(s2, event, 0.0)
    one, two = core.heartbeat_listing(s1, asked=False), core.heartbeat_listing(s2, asked=False)
    assert one.digest == two.digest and one.running == two.running
