"""Runs side by side (``web/comparison.py``): arguments read as names and values, rows marked
where the runs differ, secrets named but never valued, one series per run in every chart."""

from __future__ import annotations

import pytest

from sortie.proto import messages as m
from sortie.web import comparison
from tests.builders import record, spec

# (arguments, (name, value) pairs)
ARGUMENT_CASES = [
    (["--lr", "0.1", "--epochs=3"], [("--lr", "0.1"), ("--epochs", "3")]),
    (["--fast", "--lr", "-0.5"], [("--fast", "true"), ("--lr", "-0.5")]),
    (["data.csv", "--verbose"], [("arg 1", "data.csv"), ("--verbose", "true")]),
    (["-n", "4", "x", "y"], [("-n", "4"), ("arg 1", "x"), ("arg 2", "y")]),
    ([], []),
]


@pytest.mark.parametrize(("arguments", "pairs"), ARGUMENT_CASES)
def test_arguments_become_names_and_values(
    arguments: list[str], pairs: list[tuple[str, str]]
) -> None:
    assert comparison.argument_pairs(arguments) == pairs


@pytest.mark.parametrize(
    ("raw", "ids"),
    [("a,b,c", ["a", "b", "c"]), (" a , ,b,a", ["a", "b"]), ("", [])],
)
def test_run_ids_are_read_in_order_once_each(raw: str, ids: list[str]) -> None:
    assert comparison.run_ids(raw) == ids


def test_more_runs_than_a_page_can_show_are_refused_with_the_bound() -> None:
    assert comparison.too_many([str(i) for i in range(10)]) is None
    assert comparison.too_many([str(i) for i in range(11)]) == (
        "11 runs asked for: compare at most 10 at once (remove some from the list)"
    )


def point(name: str, value: m.MetricValue, step: int | None = None) -> m.MetricPoint:
    return m.MetricPoint(name=name, value=value, t=0.0, step=step)


def test_rows_mark_differences_and_secrets_show_no_value() -> None:
    a = record(
        "a",
        spec=spec(arguments=["--lr", "0.1"], env_vars={"MODE": "slow"}, secret_env_names=["KEY"]),
    )
    b = record("b", spec=spec(arguments=["--lr", "0.3"], env_vars={"MODE": "slow", "X": "1"}))
    data = comparison.compare(
        [a, b],
        [
            [point("loss", 1.0, 0), point("loss", 0.5, 1), point("note", "ok")],
            [point("loss", 0.9, 0), point("acc", True)],
        ],
    )
    rows = {(r["group"], r["name"]): (r["values"], r["differs"]) for r in data["rows"]}
    assert rows[("arguments", "--lr")] == (["0.1", "0.3"], True)
    assert rows[("environment variables", "MODE")] == (["slow", "slow"], False)
    assert rows[("environment variables", "X")] == ([None, "1"], True)
    assert rows[("environment variables", "KEY")] == (["(secret)", None], True)
    assert rows[("run", "target")] == (["local", "local"], False)
    assert rows[("final metrics", "loss")] == (["0.5", "0.9"], True)
    assert rows[("final metrics", "acc")] == ([None, "True"], True)
    groups = [r["group"] for r in data["rows"]]
    assert groups == sorted(groups, key=comparison.GROUPS.index)
    # numeric metrics only, a series per run in every chart (empty where it has none)
    assert data["charts"] == [
        {
            "name": "loss",
            "series": [
                {"label": "a", "x": [0.0, 1.0], "y": [1.0, 0.5]},
                {"label": "b", "x": [0.0], "y": [0.9]},
            ],
        }
    ]


def test_points_without_steps_are_charted_in_log_order() -> None:
    assert comparison.series([point("x", 3), point("x", 1.5), point("x", 2, step=9)]) == {
        "x": {"x": [0.0, 1.0, 2.0], "y": [3.0, 1.5, 2.0]}
    }
