"""Each early-termination policy as a table on known values, v1's worked examples among
them: when it is applied (``due``) and what it decides (``decide``)."""

from __future__ import annotations

import pytest

from sortie.proto.sweeps import (
    Asha,
    Bandit,
    MedianStopping,
    NoTermination,
    Policy,
    TruncationSelection,
)
from sortie.scheduler.sweeps.policies import Standing, decide, due, percentile
from tests.scheduler.sweeps.builders import stand

# (what, policy, intervals 1..12 at which it applies)
DUE: list[tuple[str, Policy, list[int]]] = [
    ("none never", NoTermination(), []),
    ("every interval", Bandit(slack_factor=0.1), list(range(1, 13))),
    # v1: "applied at every interval when metrics are reported, starting at evaluation
    # interval 5" for evaluation_interval=1, delay_evaluation=5
    ("v1 delay 5", Bandit(slack_factor=0.1, delay_evaluation=5), list(range(5, 13))),
    ("every 3rd", MedianStopping(evaluation_interval=3), [3, 6, 9, 12]),
    ("every 3rd from 7", MedianStopping(evaluation_interval=3, delay_evaluation=7), [9, 12]),
    (
        "every 4th from 4",
        TruncationSelection(truncation_percentage=20, evaluation_interval=4, delay_evaluation=4),
        [4, 8, 12],
    ),
    ("asha rungs 1,3,9", Asha(grace_period=1, reduction_factor=3), [1, 3, 9]),
    ("asha rungs 2,4,8", Asha(grace_period=2, reduction_factor=2), [2, 4, 8]),
    ("asha below max", Asha(grace_period=1, reduction_factor=2, max_interval=8), [1, 2, 4]),
]


@pytest.mark.parametrize(("policy", "expected"), [c[1:] for c in DUE], ids=[c[0] for c in DUE])
def test_due(policy: Policy, expected: list[int]) -> None:
    assert [n for n in range(1, 13) if due(policy, n)] == expected


def test_median_default_delay_is_v1s() -> None:
    assert MedianStopping().delay_evaluation == 0
    assert MedianStopping().evaluation_interval == 1


# (what, policy, goal, me, field without me, stopped?, a piece of the reason)
Case = tuple[str, Policy, str, Standing, list[Standing], bool, str]
BANDIT_V1 = Bandit(slack_factor=0.1, evaluation_interval=1, delay_evaluation=5)
CASES: list[Case] = [
    # v1's how-to: best 0.8 at interval 10, maximize: a run below 0.8 / 1.1 = 0.727 ends
    (
        "v1 bandit: 0.72 < 0.727",
        BANDIT_V1,
        "maximize",
        stand(2, 0.72),
        [stand(1, 0.8)],
        True,
        "0.72 at interval 10 is outside the 10% slack of the best 0.8 (run t1; bound 0.7273)",
    ),
    ("v1 bandit: 0.73 kept", BANDIT_V1, "maximize", stand(2, 0.73), [stand(1, 0.8)], False, ""),
    # v1's reference: slack_factor 0.2, best AUC 0.8: Y ends when Y + Y * 0.2 < 0.8
    (
        "v1 bandit 0.2: 0.66 ends",
        Bandit(slack_factor=0.2),
        "maximize",
        stand(2, 0.66),
        [stand(1, 0.8)],
        True,
        "20% slack",
    ),
    (
        "v1 bandit 0.2: 0.67 kept",
        Bandit(slack_factor=0.2),
        "maximize",
        stand(2, 0.67),
        [stand(1, 0.8)],
        False,
        "",
    ),
    # minimize: the bound is best * (1 + s)
    (
        "bandit minimize: 1.11 ends",
        Bandit(slack_factor=0.1),
        "minimize",
        stand(2, 1.11),
        [stand(1, 1.0)],
        True,
        "bound 1.1",
    ),
    (
        "bandit minimize: 1.09 kept",
        Bandit(slack_factor=0.1),
        "minimize",
        stand(2, 1.09),
        [stand(1, 1.0)],
        False,
        "",
    ),
    (
        "bandit amount",
        Bandit(slack_amount=0.2),
        "maximize",
        stand(2, 0.59),
        [stand(1, 0.8)],
        True,
        "outside the 0.2 slack",
    ),
    (
        "bandit amount kept",
        Bandit(slack_amount=0.2),
        "maximize",
        stand(2, 0.61),
        [stand(1, 0.8)],
        False,
        "",
    ),
    (
        "bandit: the best itself",
        Bandit(slack_factor=0.0),
        "maximize",
        stand(1, 0.8),
        [stand(2, 0.5)],
        False,
        "",
    ),
    (
        "bandit negative metric",
        Bandit(slack_factor=0.1),
        "maximize",
        stand(1, -1.0),
        [stand(2, -1.2)],
        False,
        "",
    ),
    (
        "bandit negative, outside",
        Bandit(slack_factor=0.1),
        "maximize",
        stand(2, -1.2),
        [stand(1, -1.0)],
        True,
        "bound -1.091",
    ),
    # median of running averages (0.5, 0.6, 0.7, and me 0.2) is 0.55; my best 0.5 is below
    (
        "median: below",
        MedianStopping(),
        "maximize",
        stand(4, 0.5, 0.2),
        [stand(1, 0.6, 0.5), stand(2, 0.7, 0.6), stand(3, 0.9, 0.7)],
        True,
        "best 0.5 up to interval 10 is worse than the median 0.55 of the running averages of 4",
    ),
    (
        "median: above",
        MedianStopping(),
        "maximize",
        stand(4, 0.56, 0.2),
        [stand(1, 0.6, 0.5), stand(2, 0.7, 0.6), stand(3, 0.9, 0.7)],
        False,
        "",
    ),
    (
        "median: trials short of n are not counted",
        MedianStopping(),
        "maximize",
        stand(4, 0.5, 0.5),
        [stand(1, 0.9, 0.9, reached=False)],
        False,
        "",
    ),
    (
        "median: minimize",
        MedianStopping(),
        "minimize",
        stand(3, 2.0, 3.0),
        [stand(1, 1.0, 1.0), stand(2, 1.0, 1.5)],
        True,
        "worse than the median 1.5",
    ),
    ("median: alone", MedianStopping(), "maximize", stand(1, 0.1, 0.0), [], False, ""),
    # v1: lowest 20% at interval 5 of all runs at interval 5; 5 trials: 1 stopped
    (
        "truncation 20% of 5: last",
        TruncationSelection(truncation_percentage=20),
        "maximize",
        stand(5, 0.1),
        [stand(i, 0.5 + i / 10) for i in range(1, 5)],
        True,
        "ranks 5 of 5; the lowest 20% (1) are stopped",
    ),
    (
        "truncation 20% of 5: 4th kept",
        TruncationSelection(truncation_percentage=20),
        "maximize",
        stand(5, 0.65),
        [stand(i, 0.5 + i / 10) for i in range(1, 5)],
        False,
        "",
    ),
    (
        "truncation 20% of 4: none",
        TruncationSelection(truncation_percentage=20),
        "maximize",
        stand(4, 0.1),
        [stand(i, 0.5 + i / 10) for i in range(1, 4)],
        False,
        "",
    ),
    (
        "truncation 50% of 4: 3rd",
        TruncationSelection(truncation_percentage=50),
        "minimize",
        stand(4, 0.7),
        [stand(1, 0.5), stand(2, 0.6), stand(3, 0.9)],
        True,
        "ranks 3 of 4",
    ),
    (
        "truncation ties: later index lower",
        TruncationSelection(truncation_percentage=50),
        "maximize",
        stand(2, 0.5),
        [stand(1, 0.5)],
        True,
        "ranks 2 of 2",
    ),
    (
        "truncation ties: earlier index kept",
        TruncationSelection(truncation_percentage=50),
        "maximize",
        stand(1, 0.5),
        [stand(2, 0.5)],
        False,
        "",
    ),
    (
        "truncation excludes finished",
        TruncationSelection(truncation_percentage=50, exclude_finished_jobs=True),
        "maximize",
        stand(2, 0.1),
        [stand(1, 0.9, ended=True)],
        False,
        "",
    ),
    (
        "truncation counts finished",
        TruncationSelection(truncation_percentage=50),
        "maximize",
        stand(2, 0.1),
        [stand(1, 0.9, ended=True)],
        True,
        "",
    ),
    # ASHA, rf 3: continue only in the top third of those at the rung
    ("asha first at rung goes on", Asha(), "maximize", stand(1, 0.1), [], False, ""),
    (
        "asha below the 2/3 quantile",
        Asha(),
        "maximize",
        stand(4, 0.5),
        [stand(1, 0.4), stand(2, 0.6), stand(3, 0.8)],
        True,
        "not in the top 1/3 of 4 trials",
    ),
    (
        "asha above the 2/3 quantile",
        Asha(),
        "maximize",
        stand(4, 0.7),
        [stand(1, 0.4), stand(2, 0.6), stand(3, 0.8)],
        False,
        "",
    ),
    (
        "asha minimize",
        Asha(reduction_factor=2),
        "minimize",
        stand(3, 0.9),
        [stand(1, 0.4), stand(2, 0.6)],
        True,
        "cutoff 0.5",
    ),
]


@pytest.mark.parametrize(
    ("policy", "goal", "me", "others", "stopped", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decide(
    *, policy: Policy, goal: str, me: Standing, others: list[Standing], stopped: bool, reason: str
) -> None:
    got = decide(policy, goal, 10, me, [*others, me])  # type: ignore[arg-type]
    assert (got is not None) == stopped, got
    if stopped:
        assert reason in got  # type: ignore[operator]


def test_percentile_is_numpys_linear() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([0.4, 0.6, 0.8], 2 / 3) == pytest.approx(0.6 + 0.2 / 3)
    assert percentile([5.0], 0.9) == 5.0
