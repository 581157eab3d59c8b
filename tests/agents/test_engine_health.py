"""The engine's advertised state through probes that answer, miss, and miss in a row."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sortie.agents.engine_health import DOWN_AFTER, EngineHealth, next_probe_s, probed

UP = "podman 4.3.1"


def advertised(answers: list[str | None], down_after: int = DOWN_AFTER) -> list[str | None]:
    health, out = EngineHealth(), []
    for answer in answers:
        health = probed(health, answer, down_after)
        out.append(health.advertised)
    return out


CASES: list[tuple[str, list[str | None], list[str | None]]] = [
    ("an answer is advertised", [UP], [UP]),
    ("an engine never seen is not advertised", [None, None], [None, None]),
    ("one miss keeps the last answer", [UP, None], [UP, UP]),
    ("misses in a row up to the limit make it down", [UP, None, None, None], [UP, UP, UP, None]),
    (
        "an answer between misses starts the count again",
        [UP, None, None, UP, None, None],
        [UP, UP, UP, UP, UP, UP],
    ),
    (
        "after down it stays down until it answers",
        [UP, None, None, None, None, UP],
        [UP, UP, UP, None, None, UP],
    ),
    ("a new answer replaces the old one", [UP, "docker 24"], [UP, "docker 24"]),
]


@pytest.mark.parametrize(("name", "answers", "expected"), CASES, ids=[c[0] for c in CASES])
def test_advertised_after_each_probe(
    name: str, answers: list[str | None], expected: list[str | None]
) -> None:
    assert DOWN_AFTER == 3
    assert advertised(answers) == expected, name


def test_unknown_probes_sooner_known_states_at_the_interval() -> None:
    assert next_probe_s(EngineHealth(), 30.0) == 30.0
    assert next_probe_s(EngineHealth(advertised=UP), 30.0) == 30.0
    unknown = probed(EngineHealth(advertised=UP), None)
    assert unknown.unknown
    assert next_probe_s(unknown, 30.0, retry_s=5.0) == 5.0
    assert next_probe_s(unknown, 2.0, retry_s=5.0) == 2.0  # never slower than the interval
    down = probed(probed(unknown, None), None)
    assert not down.unknown and down.advertised is None
    assert next_probe_s(down, 30.0) == 30.0


@given(st.lists(st.sampled_from([None, UP]), max_size=30), st.integers(1, 5))
def test_down_only_after_enough_misses_in_a_row(answers: list[str | None], down_after: int) -> None:
    """None is advertised exactly when no answer came yet, or the last ``down_after`` probes
    all missed; otherwise the last answer is."""
    for i, got in enumerate(advertised(answers, down_after)):
        seen = answers[: i + 1]
        last_answer = next((a for a in reversed(seen) if a is not None), None)
        tail = seen[-down_after:]
        down = last_answer is None or (len(tail) == down_after and all(a is None for a in tail))
        assert got == (None if down else last_answer)
