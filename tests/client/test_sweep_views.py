"""What `sortie sweep show|trials --output json` and ``SweepRun`` read of a sweep, from built
records and metric points (``sortie.client.sweep_views``; pure: no broker): each trial's
objective, the ranking best first, the best trial, and why each stopped trial stopped."""

from __future__ import annotations

import pytest

from sortie.client.sweep_views import (
    NotASweep,
    TrialView,
    best_of,
    best_trial,
    ranked,
    sweep_view,
    trial_view,
    values_of,
)
from sortie.proto import messages as m
from sortie.proto import sweeps as sw
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState
from tests.builders import record

SPEC = sw.SweepSpec(
    space={"--x": sw.Uniform(min_value=0.0, max_value=1.0)},
    sampling=sw.RandomSampling(seed=3),
    policy=sw.Bandit(slack_factor=0.2, evaluation_interval=1, delay_evaluation=1),
    primary_metric="acc",
    goal="maximize",
    max_total_trials=6,
    max_concurrent_trials=2,
)
POLICY_SAID = "acc 0.41 at interval 2 is below the bandit's cutoff 0.6 (best 0.72, slack 0.2)"


def sweep_record(
    state: RunState = RunState.RUNNING, ended_at: float | None = None, **kw: object
) -> m.RunRecord:
    sweep = sw.Sweep(spec=SPEC, issued=4, **kw)  # type: ignore[arg-type]
    return record("hd_1", state, sweep=sweep, created_at=100.0, ended_at=ended_at)


def trial(
    index: int,
    state: RunState = RunState.COMPLETED,
    *,
    objective: float | None = None,
    intervals: int = 0,
    error: m.RunError | None = None,
) -> m.RunRecord:
    t = sw.Trial(index=index, params={"--x": index / 10}, objective=objective, intervals=intervals)
    return record(f"hd_1_{index}", state, parent_id="hd_1", trial=t, error=error)


def point(name: str, value: m.MetricValue, **kw: object) -> m.MetricPoint:
    return m.MetricPoint(name=name, value=value, t=1.0, **kw)  # type: ignore[arg-type]


def test_a_trials_reports_are_its_plain_finite_numbers_of_the_primary_metric() -> None:
    points = [
        point("acc", 0.5),
        point("loss", 0.1),  # another metric
        point("acc", 1),  # an int counts
        point("acc", True),  # a boolean does not
        point("acc", float("nan")),
        point("acc", float("inf")),
        point("acc", "high"),
        point("acc", 0.9, column="val"),  # a cell of a table named acc
        point("acc", 0.7, step=3),
    ]
    assert values_of(points, "acc") == [0.5, 1.0, 0.7]
    assert best_of([0.5, 1.0, 0.7], "maximize") == 1.0
    assert best_of([0.5, 1.0, 0.7], "minimize") == 0.5
    assert best_of([], "maximize") is None


def test_a_trials_objective_is_its_best_report_else_the_records() -> None:
    reported = trial_view(trial(0, objective=0.1, intervals=1), [0.3, 0.8, 0.5], "maximize")
    assert (reported.objective, reported.intervals) == (0.8, 3)
    assert trial_view(trial(0), [0.3, 0.8, 0.5], "minimize").objective == 0.3
    # nothing readable logged: the record's own objective and count stand
    stored = trial_view(trial(1, objective=0.42, intervals=5), [], "maximize")
    assert (stored.objective, stored.intervals) == (0.42, 5)
    nothing = trial_view(trial(2, RunState.RUNNING), [], "maximize")
    assert (nothing.objective, nothing.intervals) == (None, 0)
    assert (nothing.index, nothing.run_id, nothing.params) == (2, "hd_1_2", {"--x": 0.2})
    assert nothing.stop_reason is None and nothing.error is None


@pytest.mark.parametrize(
    ("state", "error", "reason"),
    [
        # the policy's own words
        (
            RunState.CANCELED,
            m.RunError(kind=ErrorKind.EARLY_TERMINATED, message=POLICY_SAID),
            POLICY_SAID,
        ),
        # the policy said nothing: still why
        (
            RunState.CANCELED,
            m.RunError(kind=ErrorKind.EARLY_TERMINATED, message=""),
            "stopped by the sweep's early-termination policy",
        ),
        # a user's cancel: its kind and message
        (
            RunState.CANCELED,
            m.RunError(kind=ErrorKind.CANCELED, message="canceled by alice"),
            "canceled: canceled by alice",
        ),
        # a failure is not a stop: its error says why
        (RunState.FAILED, m.RunError(kind=ErrorKind.EXIT_CODE, message="exited with 1"), None),
        (RunState.CANCELED, None, None),
        (RunState.COMPLETED, None, None),
    ],
)
def test_why_a_trial_stopped(state: RunState, error: m.RunError | None, reason: str | None) -> None:
    view = trial_view(trial(0, state, error=error), [0.5], "maximize")
    assert view.stop_reason == reason
    if error is None:
        assert view.error is None
    else:
        assert view.error is not None
        assert (view.error.kind, view.error.message) == (str(error.kind), error.message)


def views(goal: sw.Goal = "maximize") -> list[TrialView]:
    """Five trials: 2 and 3 tie, 1 and 4 reported nothing."""
    reports: dict[int, list[float]] = {0: [0.2, 0.5], 1: [], 2: [0.7], 3: [0.3, 0.7], 4: []}
    return [trial_view(trial(i), reports[i], goal) for i in (4, 3, 2, 1, 0)]


def test_ranked_best_first_ties_by_index_and_no_metric_last_by_index() -> None:
    assert [t.index for t in ranked(views(), "maximize")] == [2, 3, 0, 1, 4]
    # reversed: worst first, but still the trials without a metric after them
    assert [t.index for t in ranked(views(), "maximize", reverse=True)] == [0, 3, 2, 1, 4]
    assert [t.index for t in ranked(views("minimize"), "minimize")] == [0, 3, 2, 1, 4]
    assert ranked([], "maximize") == []


def test_the_best_trial_is_the_first_ranked_with_an_objective() -> None:
    best = best_trial(views(), "maximize")
    assert best is not None
    assert (best.run_id, best.index, best.params, best.objective) == (
        "hd_1_2",
        2,
        {"--x": 0.2},
        0.7,
    )
    minimum = best_trial(views("minimize"), "minimize")
    assert minimum is not None and (minimum.index, minimum.objective) == (0, 0.2)
    assert best_trial([trial_view(trial(0), [], "maximize")], "maximize") is None
    assert best_trial([], "maximize") is None


def test_the_sweep_view_counts_names_the_best_and_says_why_each_stopped_trial_stopped() -> None:
    early = m.RunError(kind=ErrorKind.EARLY_TERMINATED, message=POLICY_SAID)
    user = m.RunError(kind=ErrorKind.CANCELED, message="canceled by alice")
    trials = [
        trial_view(trial(3, RunState.CANCELED, error=early), [0.41], "maximize"),
        trial_view(trial(0), [0.6, 0.72], "maximize"),
        trial_view(trial(1, RunState.CANCELED, error=user), [0.9], "maximize"),
        trial_view(
            trial(
                2, RunState.CANCELED, error=m.RunError(kind=ErrorKind.EARLY_TERMINATED, message="")
            ),
            [],
            "maximize",
        ),
        trial_view(trial(4, RunState.RUNNING), [], "maximize"),
    ]
    view = sweep_view(sweep_record(RunState.CANCELED, 160.5, ended_because="canceled"), trials)
    # only the policy's stops, by index, each with its reason (a user's cancel is not one)
    assert [(s.run_id, s.index, s.reason) for s in view.early_terminated] == [
        ("hd_1_2", 2, "stopped by the sweep's early-termination policy"),
        ("hd_1_3", 3, POLICY_SAID),
    ]
    assert view.trials_by_state == {"Canceled": 3, "Completed": 1, "Running": 1}
    assert view.best is not None and (view.best.run_id, view.best.objective) == ("hd_1_1", 0.9)
    # more trials seen than the record counted (written before it): the larger
    assert view.issued == 5
    assert (view.run_id, view.experiment, view.state) == ("hd_1", "exp", RunState.CANCELED)
    assert view.ended_because == "canceled"
    assert view.created_at == "1970-01-01T00:01:40.000Z"
    assert view.ended_at == "1970-01-01T00:02:40.500Z"
    assert view.spec == SPEC
    # while it runs: no end time, no stopped trial, no best yet
    running = sweep_view(sweep_record(), [trial_view(trial(0, RunState.RUNNING), [], "maximize")])
    assert running.ended_at is None and running.best is None and running.early_terminated == []
    assert running.issued == 4


def test_a_run_that_is_not_a_sweep_is_refused_saying_where_to_look() -> None:
    with pytest.raises(NotASweep, match="run r-1 is not a sweep: `sortie sweep list`"):
        sweep_view(record("r-1", RunState.RUNNING), [])
