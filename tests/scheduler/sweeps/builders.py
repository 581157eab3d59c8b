"""Small builders for the sweep controller's tests: specs, views, and a simulated sweep that
drives ``sweep_step`` the way the scheduler does (submit what it starts, stop what it stops,
feed the trials' reports), with a clock passed in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sortie.proto.states import RunState
from sortie.proto.sweeps import (
    Choice,
    Expression,
    Goal,
    NoTermination,
    ParamValue,
    Policy,
    RandomSampling,
    Sampling,
    SweepSpec,
    Uniform,
    trial_run_id,
)
from sortie.scheduler.sweeps.controller import (
    SweepMemo,
    SweepStep,
    SweepView,
    TrialView,
    sweep_step,
)
from sortie.scheduler.sweeps.policies import Standing

SWEEP = "sw1"


def make_spec(
    *,
    space: dict[str, Expression] | None = None,
    sampling: Sampling | None = None,
    policy: Policy | None = None,
    goal: Goal = "maximize",
    total: int = 10,
    concurrent: int | None = None,
    duration: float | None = None,
) -> SweepSpec:
    return SweepSpec(
        space=space if space is not None else {"lr": Uniform(min_value=0.0, max_value=1.0)},
        sampling=sampling or RandomSampling(seed=7),
        policy=policy or NoTermination(),
        primary_metric="acc",
        goal=goal,
        max_total_trials=total,
        max_concurrent_trials=concurrent,
        max_duration_s=duration,
    )


def view(
    spec: SweepSpec, issued: int = 0, *, started: float = 0.0, cancel: bool = False
) -> SweepView:
    return SweepView(
        run_id=SWEEP, spec=spec, started_at=started, issued=issued, cancel_requested=cancel
    )


def trial(index: int, state: RunState = RunState.RUNNING, **params: ParamValue) -> TrialView:
    return TrialView(
        run_id=trial_run_id(SWEEP, index), index=index, params=dict(params), state=state
    )


def stand(
    index: int,
    best: float,
    average: float | None = None,
    *,
    reached: bool = True,
    ended: bool = False,
) -> Standing:
    return Standing(
        run_id=f"t{index}",
        index=index,
        best=best,
        average=best if average is None else average,
        reached=reached,
        ended=ended,
    )


GRID = {"a": Choice(values=[1, 2, 3]), "b": Choice(values=["x", "y"])}


@dataclass
class SimSweep:
    """A sweep driven step by step: started trials run, report the values ``curve(params,
    n)`` one interval per tick for ``length`` ticks (or ``length_of(index)``), then complete;
    stopped ones end ``Canceled`` on the next tick. ``step`` calls ``sweep_step`` once per
    tick with everything reported since the last one."""

    spec: SweepSpec
    curve: Callable[[dict[str, ParamValue], int], float]
    length: int = 5
    length_of: Callable[[int], int] | None = None
    now: float = 0.0
    memo: SweepMemo = field(default_factory=SweepMemo)
    trials: dict[int, TrialView] = field(default_factory=dict)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    stopping: set[str] = field(default_factory=set)
    issued: int = 0
    cancel: bool = False
    steps: list[SweepStep] = field(default_factory=list)
    max_running: int = 0

    def step(self) -> SweepStep:
        out = self.decide(
            view(self.spec, self.issued, cancel=self.cancel),
            list(self.trials.values()),
            self.metrics,
            self.now,
            self.memo,
        )
        for new in out.start:
            assert new.index == self.issued, (new.index, self.issued)
            self.trials[new.index] = trial(new.index, RunState.QUEUED, **new.params)
            self.issued += 1
        self.stopping.update(s.run_id for s in out.stop)
        self.steps.append(out)
        running = sum(1 for t in self.trials.values() if t.state not in _ENDED)
        self.max_running = max(self.max_running, running)
        return out

    def decide(self, *args: Any) -> SweepStep:
        """``sweep_step`` (a benchmark times it by overriding this)."""
        return sweep_step(*args)

    def tick(self) -> None:
        """One interval passes for every live trial."""
        self.now += 1.0
        for index, t in list(self.trials.items()):
            if t.state in _ENDED:
                continue
            if t.run_id in self.stopping:
                self.trials[index] = replace(t, state=RunState.CANCELED)
                continue
            values = self.metrics.setdefault(t.run_id, [])
            length = self.length if self.length_of is None else self.length_of(index)
            if len(values) >= length:
                self.trials[index] = replace(t, state=RunState.COMPLETED)
                continue
            values.append(self.curve(t.params, len(values) + 1))
            self.trials[index] = replace(t, state=RunState.RUNNING)

    def run(self, ticks: int = 10_000) -> str | None:
        """Step and tick until the sweep is done (bounded)."""
        for _ in range(ticks):
            out = self.step()
            if out.done is not None:
                return out.done
            self.tick()
        return None

    def views(self) -> Sequence[TrialView]:
        return list(self.trials.values())


_ENDED = {RunState.COMPLETED, RunState.FAILED, RunState.CANCELED}
