"""What the sweep views show, from records and metric points (pure: no broker)."""

from __future__ import annotations

import math

import pytest

from sortie.proto import messages as m
from sortie.proto import sweeps as sw
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState
from sortie.web import sweep_data
from tests.builders import record

SPEC = sw.SweepSpec(
    space={
        "learning_rate": sw.LogUniform(min_value=-6.0, max_value=-1.0),
        "--optimizer": sw.Choice(values=["sgd", "adam", "rmsprop"]),
        "layers": sw.Choice(values=[1, 2, 4]),
    },
    sampling=sw.RandomSampling(seed=7),
    policy=sw.Bandit(slack_factor=0.1, evaluation_interval=1, delay_evaluation=5),
    primary_metric="accuracy",
    goal="maximize",
    max_total_trials=12,
    max_concurrent_trials=3,
)


def sweep_record(**kw: object) -> m.RunRecord:
    sweep = sw.Sweep(
        spec=SPEC,
        issued=3,
        best_run_id="hd_1_1",
        best_objective=0.9,
        **kw,  # type: ignore[arg-type]
    )
    return record("hd_1", RunState.RUNNING, sweep=sweep, created_at=100.0)


def trial(
    index: int,
    objective: float | None,
    state: RunState = RunState.COMPLETED,
    error: m.RunError | None = None,
    **params: sw.ParamValue,
) -> m.RunRecord:
    t = sw.Trial(index=index, params=params, objective=objective, intervals=index + 1)
    return record(f"hd_1_{index}", state, parent_id="hd_1", trial=t, error=error)


def test_a_spec_is_written_as_calls_of_its_variants() -> None:
    facts = sweep_data.spec_facts(SPEC)
    assert facts["space"] == [
        {
            "name": "learning_rate",
            "argument": "--learning_rate",
            "expression": "loguniform(min_value=-6, max_value=-1)",
        },
        {
            "name": "--optimizer",
            "argument": "--optimizer",
            "expression": 'choice(values=["sgd", "adam", "rmsprop"])',
        },
        {"name": "layers", "argument": "--layers", "expression": "choice(values=[1, 2, 4])"},
    ]
    assert facts["sampling"] == "random(seed=7)"
    # the unset slack (None) is left out
    assert facts["policy"] == "bandit(evaluation_interval=1, delay_evaluation=5, slack_factor=0.1)"
    assert sweep_data.call_text(sw.GridSampling()) == "grid()"
    assert sweep_data.call_text(sw.NoTermination()) == "none()"


def test_the_summary_says_progress_best_and_why_it_ended() -> None:
    row = sweep_data.summary(sweep_record(ended_because="max_total_trials reached"))
    assert row["issued"] == 3 and row["max_total_trials"] == 12
    assert (row["best_run_id"], row["best_objective"]) == ("hd_1_1", 0.9)
    assert (row["primary_metric"], row["goal"]) == ("accuracy", "maximize")
    assert (row["sampling"], row["policy"]) == ("random", "bandit")
    assert row["ended_because"] == "max_total_trials reached"
    assert row["terminal"] is False


def test_a_nan_best_objective_is_no_value() -> None:
    rec = record(
        "hd_2",
        sweep=sw.Sweep(spec=SPEC, best_run_id="hd_2_0", best_objective=math.nan),
    )
    assert sweep_data.summary(rec)["best_objective"] is None


def test_trial_rows_are_by_index_and_say_why_a_stopped_one_stopped() -> None:
    stopped = m.RunError(
        kind=ErrorKind.EARLY_TERMINATED,
        message="bandit at interval 6: 0.41 is outside 0.1 of the best (0.9)",
    )
    kids = [
        trial(2, 0.41, RunState.CANCELED, stopped, learning_rate=0.01),
        trial(0, None, RunState.RUNNING, learning_rate=0.001),
        record("hd_1_child", RunState.COMPLETED, parent_id="hd_1"),  # a child, not a trial
        trial(1, 0.9, learning_rate=0.1),
    ]
    rows = sweep_data.trial_rows(kids)
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert rows[2]["early_terminated"] is True
    assert rows[2]["error"] == {"kind": "early_terminated", "message": stopped.message}
    assert rows[1]["error"] is None and rows[1]["early_terminated"] is False
    assert rows[0]["objective"] is None and rows[0]["terminal"] is False
    assert rows[1]["params"] == {"learning_rate": 0.1}


@pytest.mark.parametrize(
    ("goal", "order"),
    [("maximize", ["hd_1_1", "hd_1_2", "hd_1_3", "hd_1_0"]),
     ("minimize", ["hd_1_2", "hd_1_3", "hd_1_1", "hd_1_0"])],
)  # fmt: skip
def test_curves_are_the_best_trials_by_the_goal_ties_to_the_lower_index(
    goal: sw.Goal, order: list[str]
) -> None:
    rows = sweep_data.trial_rows([trial(0, None), trial(1, 0.9), trial(2, 0.5), trial(3, 0.5)])
    assert sweep_data.curve_runs(rows, goal) == order
    assert sweep_data.curve_runs(rows, goal, most=2) == order[:2]


def test_the_scatter_has_a_point_per_scored_trial_and_categories_keep_their_order() -> None:
    rows = sweep_data.trial_rows(
        [
            trial(0, 0.5, learning_rate=0.01, **{"--optimizer": "adam", "layers": 2}),
            trial(1, 0.7, learning_rate=0.001, **{"--optimizer": "sgd", "layers": 4}),
            trial(2, None, RunState.RUNNING, learning_rate=0.1, **{"--optimizer": "sgd"}),
        ]
    )
    by_name = {p["name"]: p for p in sweep_data.scatter(SPEC, rows)}
    lr = by_name["learning_rate"]
    assert lr["categories"] is None
    assert (lr["x"], lr["y"], lr["runs"]) == ([0.01, 0.001], [0.5, 0.7], ["hd_1_0", "hd_1_1"])
    opt = by_name["--optimizer"]
    assert opt["categories"] == ['"sgd"', '"adam"', '"rmsprop"']  # the Choice's order
    assert opt["x"] == [1, 0]
    layers = by_name["layers"]
    assert layers["categories"] is None and layers["x"] == [2.0, 4.0]


def test_a_curve_is_the_metric_in_log_order_with_gaps_for_what_is_no_number() -> None:
    points = [
        m.MetricPoint(name="accuracy", value=0.5, t=1.0),
        m.MetricPoint(name="loss", value=2.0, t=1.5),
        m.MetricPoint(name="accuracy", value=math.nan, t=2.0),
        m.MetricPoint(name="accuracy", value=1, t=3.0),
        m.MetricPoint(name="accuracy", value="n/a", t=3.5),
        m.MetricPoint(name="accuracy", value=0.2, t=4.0, column="epoch"),  # a table cell
        m.MetricPoint(name="accuracy", value=0.75, t=5.0),
    ]
    assert sweep_data.curve(points, "accuracy") == [0.5, None, 1.0, None, 0.75]


def test_the_best_is_the_sweeps_own_with_its_trials_row() -> None:
    rows = sweep_data.trial_rows([trial(1, 0.9, learning_rate=0.1)])
    head = sweep_data.summary(sweep_record())
    found = sweep_data.best(head, rows)
    assert found is not None
    assert found["run_id"] == "hd_1_1" and found["objective"] == 0.9
    assert found["trial"]["params"] == {"learning_rate": 0.1}
    none_yet = sweep_data.summary(record("hd_3", sweep=sw.Sweep(spec=SPEC)))
    assert sweep_data.best(none_yet, rows) is None
