"""Bayesian sampling (Optuna's TPE through ask/tell): on a smooth objective later trials beat
the first ones; the same seed and results give the same suggestions, whether the memo was
kept, dropped (a restart) or rebuilt after trials ended out of order; values stay in the
space with v1's rounding."""

from __future__ import annotations

import statistics

from sortie.proto.states import RunState
from sortie.proto.sweeps import BayesianSampling, Choice, ParamValue, QUniform, Uniform
from sortie.scheduler.sweeps import bayes
from sortie.scheduler.sweeps.controller import SweepMemo, objective, sweep_step
from tests.scheduler.sweeps.builders import SimSweep, make_spec, trial, view

SPACE = {"lr": Uniform(min_value=0.0, max_value=1.0)}


def _smooth(params: dict[str, ParamValue], n: int) -> float:
    x = float(params["lr"])  # type: ignore[arg-type]
    return 1.0 - (x - 0.3) ** 2


def _sweep(concurrent: int, total: int = 30, seed: int = 11) -> SimSweep:
    spec = make_spec(
        space=SPACE, sampling=BayesianSampling(seed=seed), total=total, concurrent=concurrent
    )
    return SimSweep(spec=spec, curve=_smooth, length=1)


def _objectives(sim: SimSweep) -> list[float]:
    out = []
    for i in sorted(sim.trials):
        value = objective(sim.spec, sim.metrics.get(sim.trials[i].run_id, []))
        assert value is not None
        out.append(value)
    return out


def test_later_trials_beat_the_first_ones_on_a_smooth_objective() -> None:
    sim = _sweep(concurrent=1)
    assert sim.run() == "max_total_trials reached"
    values = _objectives(sim)
    first, last = statistics.fmean(values[:10]), statistics.fmean(values[-10:])
    assert last > first
    assert max(values) > 0.999  # it found the top (x near 0.3)
    xs = [float(sim.trials[i].params["lr"]) for i in range(20, 30)]  # type: ignore[arg-type]
    assert statistics.median(abs(x - 0.3) for x in xs) < 0.1


def test_same_seed_same_sweep_other_seed_other_sweep() -> None:
    a, b, c = _sweep(2, total=14), _sweep(2, total=14), _sweep(2, total=14, seed=12)
    for sim in (a, b, c):
        sim.run()
    assert a.trials == b.trials
    assert a.trials != c.trials


def test_a_fresh_memo_asks_what_the_kept_one_asks() -> None:
    """Three at a time, so trials end out of index order; at every step a fresh memo (a
    restarted scheduler) starts the same trials with the same parameters."""
    sim = _sweep(concurrent=3, total=16)
    sim.length = 2
    for _ in range(60):
        fresh = sweep_step(
            view(sim.spec, sim.issued), sim.views(), sim.metrics, sim.now, SweepMemo()
        )
        kept = sim.step()
        assert fresh == kept
        if kept.done:
            break
        sim.tick()
    assert sim.issued == 16


def test_out_of_order_ends_rebuild_the_study_in_index_order() -> None:
    spec = make_spec(space=SPACE, sampling=BayesianSampling(seed=3), total=20, concurrent=20)
    first = sweep_step(view(spec), [], {}, 0.0, SweepMemo()).start  # 20 random starts
    params = {t.index: t.params for t in first}
    ends = [2, 0, 5, 1, 3, 4, 7, 6, 9, 8, 11, 10]
    spec = make_spec(space=SPACE, sampling=BayesianSampling(seed=3), total=30, concurrent=20)
    memo = SweepMemo()
    done: set[int] = set()
    for i in ends:
        done.add(i)
        trials = [
            trial(j, RunState.COMPLETED if j in done else RunState.RUNNING, **params[j])
            for j in range(20)
        ]
        metrics = {t.run_id: [_smooth(t.params, 1)] for t in trials if t.index in done}
        kept = sweep_step(view(spec, 20), trials, metrics, 0.0, memo)
        fresh = sweep_step(view(spec, 20), trials, metrics, 0.0, SweepMemo())
        assert kept == fresh
        assert len(kept.start) == min(len(done), 10)  # 30 in all
    assert memo.study is not None and memo.study.told == sorted(ends)


def test_values_stay_in_the_space() -> None:
    space = {
        "batch": Choice(values=[16, 32, 64]),
        "drop": QUniform(min_value=0.05, max_value=0.5, q=0.1),
        "lr": Uniform(min_value=0.001, max_value=0.1),
    }
    study = bayes.study_for(None, space, "maximize", [])
    for i in range(30):
        p = bayes.suggest(study, space, 5, i)
        assert p["batch"] in {16, 32, 64}
        assert p["drop"] in {0.0, 0.1, 0.2, 0.3, 0.4, 0.5}
        assert 0.001 <= float(p["lr"]) <= 0.1  # type: ignore[arg-type]
        ended = [bayes.Ended(index=i, params=p, objective=float(p["batch"]))]  # type: ignore[arg-type]
        study = bayes.study_for(study, space, "maximize", [*_told(study), *ended])


def _told(study: bayes.Study) -> list[bayes.Ended]:
    trials = [t for t in study.study.trials if t.value is not None]
    return [
        bayes.Ended(index=i, params=dict(t.params), objective=t.value)
        for i, t in zip(study.told, trials, strict=True)
    ]
