"""The pure bounds of one run (agents.limits), by table."""

from __future__ import annotations

import pytest

from sortie.agents.limits import (
    LogBudget,
    MetricBudget,
    RunLimits,
    human_bytes,
    plan_upload,
)
from sortie.proto import messages as m


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (999, "999 B"), (20_000, "20 kB"), (412_000_000, "412 MB"), (10**9, "1.0 GB")],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text


def _line(text: str) -> m.LogLine:
    return m.LogLine(t=0.0, stream="stdout", text=text)


@pytest.mark.parametrize(
    ("limits", "texts", "expected"),
    [
        # all fit: nothing cut, no tail
        ((10, 5, 100), ["ab", "cd"], (["ab", "cd"], [], 0)),
        # the limit is exact: a line that would pass it goes to the tail, and so do all later
        # ones, even short ones (the log is cut once, never resumed)
        ((4, 5, 100), ["ab", "cd", "efg", "h"], (["ab", "cd"], ["efg", "h"], 0)),
        # the ring keeps the last tail_lines lines
        ((0, 2, 100), ["a", "b", "c", "d"], ([], ["c", "d"], 2)),
        # and at most tail_bytes of text
        ((0, 9, 5), ["aaa", "bbb", "cc"], ([], ["bbb", "cc"], 1)),
    ],
)
def test_log_budget(
    limits: tuple[int, int, int], texts: list[str], expected: tuple[list[str], list[str], int]
) -> None:
    limit, tail_lines, tail_bytes = limits
    published, tail, dropped = expected
    budget = LogBudget(RunLimits(log_bytes=limit, tail_lines=tail_lines, tail_bytes=tail_bytes))
    assert [t for t in texts if budget.take(_line(t))] == published
    head, kept = budget.tail()
    assert [ln.text for ln in kept] == tail
    assert budget.dropped_lines == dropped
    assert (head is None) == (not tail)
    assert budget.tail() == (None, [])  # told once


def test_log_budget_counts_utf8_bytes() -> None:
    budget = LogBudget(RunLimits(log_bytes=4))
    assert budget.take(_line("é"))  # 2 bytes
    assert not budget.take(_line("éé"))  # 4 more: past 4


def _point(name: str, value: float) -> m.MetricPoint:
    return m.MetricPoint(name=name, value=value, t=0.0)


def test_metric_budget_keeps_the_last_point_of_each_name_past_the_limit() -> None:
    budget = MetricBudget(RunLimits(metric_points=2, metric_names_kept=2))
    points = [_point("a", 1), _point("b", 1), _point("a", 2), _point("c", 1), _point("a", 3)]
    assert [p for p in points if budget.take(p)] == points[:2]
    head, kept = budget.tail()
    # "c" and "a" are kept (two names at most); "a" moved to the end with its last value
    assert [(p.name, p.value) for p in kept] == [("c", 1), ("a", 3)]
    assert head is not None and "3 metric points" in head
    assert budget.tail() == (None, [])


@pytest.mark.parametrize(
    ("files", "limit", "upload", "left_out"),
    [
        ([], 10, [], []),
        ([("a", 4), ("b", 6)], 10, ["a", "b"], []),
        # a file that does not fit is left out; a later smaller one still goes
        ([("a", 4), ("b", 7), ("c", 6)], 10, ["a", "c"], ["b"]),
        ([("a", 11)], 10, [], ["a"]),
        ([("a", 0)], 0, ["a"], []),
    ],
)
def test_plan_upload(
    files: list[tuple[str, int]], limit: int, upload: list[str], left_out: list[str]
) -> None:
    plan = plan_upload(files, limit)
    assert [p for p, _ in plan.upload] == upload
    assert [p for p, _ in plan.left_out] == left_out
    assert plan.total <= limit
    assert (plan.notice(limit) is None) == (not left_out)
