import pytest
from hypothesis import given
from hypothesis import strategies as st

from sortie.proto.states import TERMINAL, TRANSITIONS, IllegalTransition, RunState, transition

CASES = [
    (RunState.QUEUED, RunState.PREPARING, True),
    (RunState.QUEUED, RunState.CANCELED, True),
    (RunState.QUEUED, RunState.RUNNING, False),
    (RunState.PREPARING, RunState.QUEUED, True),
    (RunState.RUNNING, RunState.FINALIZING, True),
    (RunState.FINALIZING, RunState.QUEUED, True),  # retry of a failed attempt (core decides)
    (RunState.FINALIZING, RunState.COMPLETED, True),
    (RunState.COMPLETED, RunState.QUEUED, False),
    (RunState.CANCELED, RunState.RUNNING, False),
]


@pytest.mark.parametrize(("current", "target", "ok"), CASES)
def test_transition_table(current: RunState, target: RunState, ok: bool) -> None:
    if ok:
        assert transition(current, target) is target
    else:
        with pytest.raises(IllegalTransition, match=f"{current}.*{target}"):
            transition(current, target)


def test_every_state_has_an_entry_and_terminals_are_the_three_ends() -> None:
    assert set(TRANSITIONS) == set(RunState)
    assert {RunState.COMPLETED, RunState.FAILED, RunState.CANCELED} == TERMINAL


@given(st.sampled_from(sorted(TERMINAL)), st.sampled_from(list(RunState)))
def test_terminal_states_absorb(end: RunState, target: RunState) -> None:
    with pytest.raises(IllegalTransition):
        transition(end, target)


@given(st.lists(st.sampled_from(list(RunState)), max_size=30))
def test_any_walk_through_the_table_stays_in_it(steps: list[RunState]) -> None:
    state = RunState.QUEUED
    for nxt in steps:
        if nxt in TRANSITIONS[state]:
            state = transition(state, nxt)
    assert state in TRANSITIONS
