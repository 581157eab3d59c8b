"""Hypothesis properties of the sweep controller, on simulated sweeps driven to their end:
concurrency and the total are never exceeded, indexes never repeat, the grid covers its space
exactly once, stops go to running trials only, and a policy never stops the best trial so
far."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import TERMINAL
from sortie.proto.sweeps import (
    Asha,
    Bandit,
    Choice,
    Expression,
    GridSampling,
    MedianStopping,
    NoTermination,
    ParamValue,
    Policy,
    RandomSampling,
    TruncationSelection,
)
from sortie.scheduler.sweeps.controller import SweepMemo, SweepStep, best_trial, sweep_step
from sortie.scheduler.sweeps.space import unit
from tests.scheduler.sweeps.builders import SimSweep, make_spec, trial, view

policies: st.SearchStrategy[Policy] = st.one_of(
    st.just(NoTermination()),
    st.builds(
        Bandit,
        slack_factor=st.floats(0.0, 0.5),
        evaluation_interval=st.integers(1, 3),
        delay_evaluation=st.integers(0, 4),
    ),
    st.builds(
        MedianStopping, evaluation_interval=st.integers(1, 3), delay_evaluation=st.integers(0, 4)
    ),
    st.builds(
        TruncationSelection,
        truncation_percentage=st.integers(1, 99),
        evaluation_interval=st.integers(1, 3),
        delay_evaluation=st.integers(0, 4),
        exclude_finished_jobs=st.booleans(),
    ),
    st.builds(Asha, grace_period=st.integers(1, 3), reduction_factor=st.integers(2, 4)),
)


def _noisy(seed: int) -> Callable[[dict[str, ParamValue], int], float]:
    """A learning curve per trial: its rate times a rising curve, plus seeded noise."""

    def curve(params: dict[str, ParamValue], n: int) -> float:
        lr = float(params["lr"])  # type: ignore[arg-type]
        return lr * (1 - 0.7**n) + 0.2 * unit(seed, n, str(lr))

    return curve


class Checked(SimSweep):
    """A simulated sweep that checks every step against the step's own inputs."""

    def step(self) -> SweepStep:
        trials = list(self.trials.values())
        leader = best_trial(self.spec, trials, self.metrics)
        live = {t.run_id for t in trials if t.state not in TERMINAL}
        out = super().step()
        for stop in out.stop:
            assert stop.run_id in live, "a stop goes to a running trial only"
            if stop.kind == ErrorKind.EARLY_TERMINATED:
                assert leader is None or stop.run_id != leader[0], "the best was stopped"
                assert stop.reason
        limit = self.spec.max_concurrent_trials
        running = sum(1 for t in self.trials.values() if t.state not in TERMINAL)
        assert limit is None or running <= limit
        assert self.issued <= self.spec.max_total_trials
        return out


@settings(max_examples=80, deadline=None)
@given(
    policy=policies,
    goal=st.sampled_from(["maximize", "minimize"]),
    total=st.integers(1, 25),
    concurrent=st.one_of(st.none(), st.integers(1, 6)),
    length=st.integers(1, 9),
    seed=st.integers(0, 2**31),
    duration=st.one_of(st.none(), st.floats(1.0, 40.0)),
)
def test_random_sweeps_keep_their_limits(
    *,
    policy: Policy,
    goal: str,
    total: int,
    concurrent: int | None,
    length: int,
    seed: int,
    duration: float | None,
) -> None:
    spec = make_spec(
        sampling=RandomSampling(seed=seed),
        policy=policy,
        goal=goal,  # type: ignore[arg-type]
        total=total,
        concurrent=concurrent,
        duration=duration,
    )
    sim = Checked(spec=spec, curve=_noisy(seed), length=length)
    done = sim.run(ticks=2_000)
    assert done in {"max_total_trials reached", "max_duration reached"}
    if done == "max_total_trials reached":
        assert sim.issued == total
        assert all(t.state in TERMINAL for t in sim.trials.values())
    assert sorted(sim.trials) == list(range(sim.issued))  # every index once, none skipped
    started = [n.index for s in sim.steps for n in s.start]
    assert started == list(range(sim.issued))


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    total=st.integers(1, 300),
    concurrent=st.one_of(st.none(), st.integers(1, 5)),
    policy=policies,
)
def test_the_grid_covers_its_space_once(
    sizes: list[int], total: int, concurrent: int | None, policy: Policy
) -> None:
    space: dict[str, Expression] = {
        f"p{k}": Choice(values=[f"v{k}.{j}" for j in range(size)]) for k, size in enumerate(sizes)
    }
    space["lr"] = Choice(values=[0.1, 0.5, 0.9])
    spec = make_spec(
        space=space, sampling=GridSampling(), policy=policy, total=total, concurrent=concurrent
    )
    sim = Checked(spec=spec, curve=_noisy(1), length=4)
    done = sim.run(ticks=5_000)
    product = [
        dict(zip(space, p, strict=True))
        for p in itertools.product(
            *(e.values for e in space.values())  # type: ignore[union-attr]
        )
    ]
    points = [sim.trials[i].params for i in sorted(sim.trials)]
    if total >= len(product):
        assert done == "grid exhausted"
        assert points == product  # every point once, in order
    else:
        assert done == "max_total_trials reached"
        assert points == product[:total]


@settings(max_examples=60, deadline=None)
@given(
    policy=policies,
    values=st.lists(
        st.lists(st.floats(-10, 10, allow_nan=False), min_size=0, max_size=8),
        min_size=1,
        max_size=8,
    ),
    goal=st.sampled_from(["maximize", "minimize"]),
)
def test_one_step_never_stops_the_best_trial_so_far(
    policy: Policy, values: list[list[float]], goal: str
) -> None:
    """Any reports, judged all at once by a fresh memo (a restart)."""
    spec = make_spec(policy=policy, goal=goal, total=len(values))  # type: ignore[arg-type]
    trials = [trial(i) for i in range(len(values))]
    metrics = {t.run_id: v for t, v in zip(trials, values, strict=True)}
    out = sweep_step(view(spec, len(values)), trials, metrics, 0.0, SweepMemo())
    leader = best_trial(spec, trials, metrics)
    assert leader is None or leader[0] not in {s.run_id for s in out.stop}
