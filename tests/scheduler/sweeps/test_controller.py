"""``sweep_step`` as tables: admission (concurrency, total, grid, indexes from ``issued``),
the done reasons, cancel, max_duration, policy stops (once each, never the best so far), and
a restart: a fresh memo from the same trials and metrics decides the same."""

from __future__ import annotations

import copy

import pytest

from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState
from sortie.proto.sweeps import (
    Asha,
    Bandit,
    GridSampling,
    MedianStopping,
    ParamValue,
    TruncationSelection,
    trial_run_id,
)
from sortie.scheduler.sweeps.controller import (
    SweepMemo,
    best_trial,
    objective,
    sweep_step,
)
from sortie.scheduler.sweeps.space import grid_point, random_params
from tests.scheduler.sweeps.builders import GRID, SWEEP, SimSweep, make_spec, trial, view

R, Q, C, F, X = (
    RunState.RUNNING,
    RunState.QUEUED,
    RunState.COMPLETED,
    RunState.FAILED,
    RunState.CANCELED,
)


def _rid(i: int) -> str:
    return trial_run_id(SWEEP, i)


# (what, total, concurrent, issued, states of trials 0..issued-1 (None: not recorded yet),
#  indexes started, done)
ADMIT: list[tuple[str, int, int | None, int, list[RunState | None], list[int], str | None]] = [
    ("first step fills the places", 10, 3, 0, [], [0, 1, 2], None),
    ("one ended, one more", 10, 3, 3, [C, R, R], [3], None),
    ("a failed trial frees its place too", 10, 3, 3, [F, X, R], [3, 4], None),
    ("queued trials hold places", 10, 2, 2, [Q, Q], [], None),
    ("an unrecorded trial holds its place", 10, 3, 3, [R, R, None], [], None),
    ("no cap: everything at once", 5, None, 0, [], [0, 1, 2, 3, 4], None),
    ("never past the total", 5, 4, 3, [C, C, R], [3, 4], None),
    ("all issued, some running", 3, 3, 3, [C, R, C], [], None),
    ("all issued and ended", 3, 3, 3, [C, X, F], [], "max_total_trials reached"),
    ("unrecorded is not ended", 3, 3, 3, [C, C, None], [], None),
]


@pytest.mark.parametrize(
    ("total", "concurrent", "issued", "states", "started", "done"),
    [c[1:] for c in ADMIT],
    ids=[c[0] for c in ADMIT],
)
def test_admission(
    *,
    total: int,
    concurrent: int | None,
    issued: int,
    states: list[RunState | None],
    started: list[int],
    done: str | None,
) -> None:
    spec = make_spec(total=total, concurrent=concurrent)
    trials = [trial(i, s) for i, s in enumerate(states) if s is not None]
    out = sweep_step(view(spec, issued), trials, {}, 0.0, SweepMemo())
    assert [t.index for t in out.start] == started
    assert [t.params for t in out.start] == [random_params(spec.space, 7, i) for i in started]
    assert out.stop == []
    assert out.done == done


@pytest.mark.parametrize(
    ("total", "started", "done"),
    [(100, 6, "grid exhausted"), (6, 6, "grid exhausted"), (4, 4, "max_total_trials reached")],
)
def test_grid_runs_its_points_then_ends(total: int, started: int, done: str) -> None:
    spec = make_spec(space=GRID, sampling=GridSampling(), total=total)
    first = sweep_step(view(spec), [], {}, 0.0, SweepMemo())
    assert [t.params for t in first.start] == [grid_point(GRID, i) for i in range(started)]
    assert first.done is None
    ended = [trial(i, C) for i in range(started)]
    last = sweep_step(view(spec, started), ended, {}, 0.0, SweepMemo())
    assert (last.start, last.stop, last.done) == ([], [], done)


def test_grid_goes_on_from_issued() -> None:
    spec = make_spec(space=GRID, sampling=GridSampling(), concurrent=2)
    out = sweep_step(view(spec, 3), [trial(0, C), trial(1, C), trial(2, R)], {}, 0.0, SweepMemo())
    assert [(t.index, t.params) for t in out.start] == [(3, grid_point(GRID, 3))]


def test_cancel_stops_every_running_trial_once_and_starts_none() -> None:
    spec = make_spec(total=10, concurrent=4)
    trials = [trial(0, C), trial(1, R), trial(2, Q), trial(3, R)]
    memo = SweepMemo()
    out = sweep_step(view(spec, 4, cancel=True), trials, {}, 0.0, memo)
    assert out.start == []
    assert out.done == "canceled"
    assert [(s.run_id, s.kind) for s in out.stop] == [
        (_rid(1), ErrorKind.CANCELED),
        (_rid(2), ErrorKind.CANCELED),
        (_rid(3), ErrorKind.CANCELED),
    ]
    assert all(s.reason == "the sweep was canceled" for s in out.stop)
    again = sweep_step(view(spec, 4, cancel=True), trials, {}, 1.0, memo)
    assert (again.stop, again.done) == ([], "canceled")  # not sent twice


@pytest.mark.parametrize(("now", "ends"), [(159.9, False), (160.0, True), (500.0, True)])
def test_max_duration(now: float, ends: bool) -> None:
    spec = make_spec(total=10, concurrent=2, duration=60)
    trials = [trial(0, C), trial(1, R), trial(2, R)]
    out = sweep_step(view(spec, 3, started=100.0), trials, {}, now, SweepMemo())
    if ends:
        assert out.done == "max_duration reached"
        assert out.start == []
        assert [(s.run_id, s.kind) for s in out.stop] == [
            (_rid(1), ErrorKind.CANCELED),
            (_rid(2), ErrorKind.CANCELED),
        ]
        assert "max_duration_s (60 s)" in out.stop[0].reason
    else:
        assert out.done is None and out.stop == [] and out.start == []


def test_a_finished_sweep_past_its_duration_ends_as_finished() -> None:
    spec = make_spec(total=2, duration=60)
    out = sweep_step(view(spec, 2), [trial(0, C), trial(1, C)], {}, 1000.0, SweepMemo())
    assert out.done == "max_total_trials reached"


def test_objective_and_best_trial() -> None:
    spec_max, spec_min = make_spec(goal="maximize"), make_spec(goal="minimize")
    assert objective(spec_max, [0.1, 0.7, 0.3]) == 0.7
    assert objective(spec_min, [0.1, 0.7, 0.3]) == 0.1
    assert objective(spec_max, []) is None
    assert objective(spec_max, [float("nan"), 0.2, float("inf")]) == 0.2
    trials = [trial(0, C), trial(1, R), trial(2, R), trial(3, Q)]
    metrics = {_rid(0): [0.5], _rid(1): [0.9, 0.2], _rid(2): [0.9]}
    assert best_trial(spec_max, trials, metrics) == (_rid(1), 0.9)  # a tie: the lower index
    assert best_trial(spec_min, trials, metrics) == (_rid(1), 0.2)
    assert best_trial(spec_max, trials, {}) is None


def test_bandit_stops_once_with_the_reason_and_never_the_best() -> None:
    """v1's example: slack 10 %, applied from interval 5: the best has 0.8 at interval 5."""
    spec = make_spec(policy=Bandit(slack_factor=0.1, delay_evaluation=5), total=3)
    trials = [trial(0, R), trial(1, R), trial(2, R)]
    metrics = {
        _rid(0): [0.1, 0.2, 0.3, 0.5, 0.8],
        _rid(1): [0.1, 0.2, 0.3, 0.5, 0.72],
        _rid(2): [0.1, 0.2, 0.3, 0.5, 0.73],
    }
    memo = SweepMemo()
    early = {k: v[:4] for k, v in metrics.items()}  # before interval 5: nothing applies
    assert sweep_step(view(spec, 3), trials, early, 0.0, memo).stop == []
    out = sweep_step(view(spec, 3), trials, metrics, 1.0, memo)
    assert [(s.run_id, s.kind) for s in out.stop] == [(_rid(1), ErrorKind.EARLY_TERMINATED)]
    assert out.stop[0].reason == (
        f"bandit: 0.72 at interval 5 is outside the 10% slack of the best 0.8 (run {_rid(0)};"
        " bound 0.7273)"
    )
    assert sweep_step(view(spec, 3), trials, metrics, 2.0, memo).stop == []  # decided once


def test_the_best_so_far_goes_on_when_its_early_intervals_are_judged_late() -> None:
    """Trial 1 was slow but is the best now: its early intervals, judged in one step, would
    stop it; the best trial so far is never stopped."""
    spec = make_spec(policy=Bandit(slack_factor=0.1), total=2)
    trials = [trial(0, R), trial(1, R)]
    metrics = {_rid(0): [0.5, 0.5, 0.5, 0.5], _rid(1): [0.1, 0.1, 0.1, 0.95]}
    out = sweep_step(view(spec, 2), trials, metrics, 0.0, SweepMemo())
    assert [s.run_id for s in out.stop] == [_rid(0)]  # 0.5 at interval 4 is outside 0.95's slack
    assert "bandit: 0.5 at interval 4" in out.stop[0].reason


def test_median_stopping_from_the_stream() -> None:
    spec = make_spec(policy=MedianStopping(delay_evaluation=2), total=3)
    trials = [trial(0, R), trial(1, R), trial(2, R)]
    metrics = {_rid(0): [0.5, 0.6], _rid(1): [0.6, 0.7], _rid(2): [0.2, 0.3]}
    out = sweep_step(view(spec, 3), trials, metrics, 0.0, SweepMemo())
    assert [s.run_id for s in out.stop] == [_rid(2)]
    assert "median stopping: best 0.3 up to interval 2 is worse than the median 0.55" in (
        out.stop[0].reason
    )


def test_truncation_selection_from_the_stream() -> None:
    """v1's example: ``TruncationSelectionPolicy(evaluation_interval=1,
    truncation_percentage=20, delay_evaluation=5)`` is applied at every interval from 5; a
    trial ends at interval 5 if its value there is in the lowest 20 % of all trials' at 5."""
    spec = make_spec(
        policy=TruncationSelection(truncation_percentage=20, delay_evaluation=5), total=5
    )
    trials = [trial(i, R) for i in range(5)]
    metrics = {_rid(i): [0.1, 0.2, 0.3, 0.4, 0.5 + i / 10] for i in range(5)}
    memo = SweepMemo()
    before = {k: [0.9 if k == _rid(3) else 0.1, *v[1:4]] for k, v in metrics.items()}
    # intervals 1 to 4 are not judged, however far behind a trial is there
    assert sweep_step(view(spec, 5), trials, before, 0.0, memo).stop == []
    out = sweep_step(view(spec, 5), trials, metrics, 1.0, memo)
    assert [(s.run_id, s.kind) for s in out.stop] == [(_rid(0), ErrorKind.EARLY_TERMINATED)]
    assert out.stop[0].reason == (
        "truncation selection: 0.5 at interval 5 ranks 5 of 5; the lowest 20% (1) are stopped"
    )
    assert sweep_step(view(spec, 5), trials, metrics, 2.0, memo).stop == []  # decided once
    # interval 6: four trials reached it (the stopped one did not); 20 % of 4 rounds down to
    # none, so the worst of them goes on
    trials[0] = trial(0, X)
    later = {k: [*v, 0.55 + int(k[-1]) / 10] if k != _rid(0) else v for k, v in metrics.items()}
    assert sweep_step(view(spec, 5), trials, later, 3.0, memo).stop == []


@pytest.mark.parametrize("exclude", [False, True])
def test_truncation_selection_with_finished_trials_excluded_or_not(exclude: bool) -> None:
    """``exclude_finished_jobs`` (Sortie's, beyond v1): a completed trial, the lowest at
    every interval, takes the lowest 25 % place itself, unless ended trials are not ranked;
    then the worst running trial is in it."""
    policy = TruncationSelection(truncation_percentage=25, exclude_finished_jobs=exclude)
    spec = make_spec(policy=policy, total=5)
    trials = [trial(0, C)] + [trial(i, R) for i in range(1, 5)]
    metrics = {_rid(i): [0.1 + i / 100, 0.2 + i / 100, 0.5 + i / 10] for i in range(5)}
    out = sweep_step(view(spec, 5), trials, metrics, 0.0, SweepMemo())
    if not exclude:
        assert out.stop == []
    else:
        assert [s.run_id for s in out.stop] == [_rid(1)]
        assert out.stop[0].reason == (
            "truncation selection: 0.11 at interval 1 ranks 4 of 4; the lowest 25% (1) are stopped"
        )


def test_asha_stops_at_rungs_against_the_trials_that_reached_them_so_far() -> None:
    """Grace 1, reduction 3: rungs at intervals 1 and 3 (9 is ``max_interval``). A trial goes
    on from a rung only if its value there is in the top third of the other trials that
    reached the rung so far (above their 2/3 quantile); the first at a rung always goes on."""
    spec = make_spec(policy=Asha(grace_period=1, reduction_factor=3, max_interval=9), total=4)
    memo = SweepMemo()
    trials = [trial(0, R), trial(1, R), trial(2, R), trial(3, R)]
    metrics: dict[str, list[float]] = {_rid(0): [0.5]}
    assert sweep_step(view(spec, 4), trials, metrics, 0.0, memo).stop == []  # first at rung 1
    # trial 0 reaches rung 3 alone; trial 1 reaches rung 1 below trial 0's 0.5 there
    metrics = {_rid(0): [0.5, 0.55, 0.7], _rid(1): [0.2]}
    out = sweep_step(view(spec, 4), trials, metrics, 1.0, memo)
    assert [s.run_id for s in out.stop] == [_rid(1)]
    assert out.stop[0].reason == (
        "asha: 0.2 at rung 1 is not in the top 1/3 of 2 trials there (cutoff 0.5)"
    )
    # trials 2 and 3 pass rung 1 (0.65 and 0.6 over the others' 2/3 quantile); at rung 3
    # trial 2's best, 0.65, is under that of 0.7 and 0.8 (0.7667) and it stops; trial 3
    # leads there
    trials[1] = trial(1, X)
    metrics = {
        _rid(0): [0.5, 0.55, 0.7],
        _rid(1): [0.2],
        _rid(2): [0.65, 0.5, 0.6],
        _rid(3): [0.6, 0.7, 0.8],
    }
    out = sweep_step(view(spec, 4), trials, metrics, 2.0, memo)
    assert [s.run_id for s in out.stop] == [_rid(2)]
    assert out.stop[0].reason == (
        "asha: 0.65 at rung 3 is not in the top 1/3 of 3 trials there (cutoff 0.7667)"
    )


def _curve(params: dict[str, ParamValue], n: int) -> float:
    lr = float(params["lr"])  # type: ignore[arg-type]
    return lr * (1 - 0.5**n)


@pytest.mark.parametrize("at", [0, 1, 3, 5, 8])
def test_restart_with_a_fresh_memo_decides_the_same(at: int) -> None:
    """The same sweep run straight through, and with its memo dropped (a scheduler restart)
    after ``at`` ticks: the same trials start with the same parameters, the same ones are
    stopped for the same reasons, and it ends for the same reason."""
    spec = make_spec(policy=Bandit(slack_factor=0.2, delay_evaluation=2), total=8)
    straight = SimSweep(spec=spec, curve=_curve, length=6)
    done = straight.run()
    restarted = SimSweep(spec=spec, curve=_curve, length=6)
    for _ in range(at):
        restarted.step()
        restarted.tick()
    restarted.memo = SweepMemo()
    assert restarted.run() == done == "max_total_trials reached"
    assert restarted.trials == straight.trials
    assert _stops(restarted) == _stops(straight)
    assert any(s[1] == ErrorKind.EARLY_TERMINATED for s in _stops(straight))


def _stops(sim: SimSweep) -> set[tuple[str, ErrorKind, str]]:
    return {(s.run_id, s.kind, s.reason) for step in sim.steps for s in step.stop}


def test_same_inputs_same_step() -> None:
    spec = make_spec(policy=Bandit(slack_factor=0.2), total=8, concurrent=3)
    sim = SimSweep(spec=spec, curve=_curve)
    for _ in range(4):
        sim.step()
        sim.tick()
    args = (view(spec, sim.issued), sim.views(), sim.metrics, sim.now)
    first = sweep_step(*args, SweepMemo())
    assert sweep_step(*copy.deepcopy(args), SweepMemo()) == first
