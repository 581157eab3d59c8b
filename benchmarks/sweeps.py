"""The sweep controller's overhead: ``scheduler.sweeps.controller.sweep_step`` alone, no I/O.

A ``--trials``-trial sweep (1,000) on simulated trials (``tests/scheduler/sweeps/builders.py``'s
``SimSweep``): ``--concurrent`` (50) run at once, each reports a noisy learning curve of 5 to
20 intervals (by its index) and completes unless the policy stops it; the controller is
stepped once per simulated interval with everything reported since. Each sampler (grid,
random, Bayesian) with each policy it takes (Bayesian takes none, as v1) is timed: the time
spent in ``sweep_step`` per trial and per step (mean, p99), and how many trials the policy
stopped. Bayesian runs ``--bayes-trials`` (1,000) trials: its cost grows with the trials it was
told (TPE reads them all at every ask).

Also the cost of importing Optuna (a fresh interpreter; best of 3), and whether importing the
controller imports it (it must not: only a Bayesian sweep's first ask does).

Prints one JSON document on stdout and a short table on stderr.

    .venv/bin/python -m benchmarks.sweeps [--trials 1000] [--concurrent 50] [--bayes-trials 1000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from sortie.proto.sweeps import (
    Asha,
    Bandit,
    BayesianSampling,
    Choice,
    Expression,
    GridSampling,
    MedianStopping,
    NoTermination,
    ParamValue,
    Policy,
    RandomSampling,
    Sampling,
    TruncationSelection,
    Uniform,
)
from sortie.scheduler.sweeps.controller import SweepStep
from sortie.scheduler.sweeps.space import unit
from tests.scheduler.sweeps.builders import SimSweep, make_spec

POLICIES: dict[str, Policy] = {
    "none": NoTermination(),
    "bandit": Bandit(slack_factor=0.15, delay_evaluation=3),
    "median": MedianStopping(delay_evaluation=3),
    "truncation": TruncationSelection(truncation_percentage=20, delay_evaluation=3),
    "asha": Asha(grace_period=2, reduction_factor=3),
}


def _space(sampling: str, trials: int) -> dict[str, Expression]:
    if sampling == "grid":  # 10 x 10 x 10 = 1,000 points (more with --trials above)
        side = max(2, round(trials ** (1 / 3)) + 1)
        return {
            "lr": Choice(values=[round((i + 1) / side, 4) for i in range(side)]),
            "depth": Choice(values=list(range(side))),
            "width": Choice(values=list(range(side))),
        }
    return {
        "lr": Uniform(min_value=0.0, max_value=1.0),
        "momentum": Uniform(min_value=0.5, max_value=0.99),
    }


def _curve(params: dict[str, ParamValue], n: int) -> float:
    """A rising curve whose ceiling is the trial's learning rate, with seeded noise."""
    lr = float(params["lr"])  # type: ignore[arg-type]
    return lr * (1 - 0.75**n) + 0.1 * unit(0, n, repr(sorted(params.items())))


def _length(index: int) -> int:
    return 5 + hashlib.sha256(str(index).encode()).digest()[0] % 16


class Timed(SimSweep):
    """The simulated sweep, timing each ``sweep_step``."""

    times: list[float]

    def decide(self, *args: Any) -> SweepStep:
        t = time.perf_counter()
        out = super().decide(*args)
        self.times.append(time.perf_counter() - t)
        return out


def measure(sampling: str, policy: str, trials: int, concurrent: int) -> dict[str, Any]:
    samplings: dict[str, Sampling] = {
        "grid": GridSampling(),
        "random": RandomSampling(seed=1),
        "bayesian": BayesianSampling(seed=1),
    }
    spec = make_spec(
        space=_space(sampling, trials),
        sampling=samplings[sampling],
        policy=POLICIES[policy],
        total=trials,
        concurrent=concurrent,
    )
    sim = Timed(spec=spec, curve=_curve, length_of=_length)
    sim.times = []
    done = sim.run(ticks=100_000)
    stopped = sum(1 for step in sim.steps for s in step.stop if s.kind.value == "early_terminated")
    total = sum(sim.times)
    ordered = sorted(sim.times)
    return {
        "sampling": sampling,
        "policy": policy,
        "trials": sim.issued,
        "done": done,
        "steps": len(sim.times),
        "early_terminated": stopped,
        "seconds_in_sweep_step": round(total, 4),
        "ms_per_trial": round(total / max(sim.issued, 1) * 1000, 4),
        "ms_per_step_mean": round(statistics.fmean(sim.times) * 1000, 4),
        "ms_per_step_p99": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 4),
    }


def optuna_import() -> dict[str, Any]:
    """Seconds to import optuna in a fresh interpreter (best of 3), and whether importing
    the controller alone brings it in."""
    code = "import time; t = time.perf_counter(); import optuna; print(time.perf_counter() - t)"
    seconds = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(3)
    ]
    check = (
        "import sys, sortie.scheduler.sweeps.controller, sortie.scheduler.sweeps.validate;"
        " print('optuna' in sys.modules)"
    )
    pulled = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    ).stdout.strip()
    return {"seconds_best": round(min(seconds), 3), "controller_imports_optuna": pulled == "True"}


def main() -> int:
    args = _parse_args()
    rows = []
    for sampling in ("grid", "random", "bayesian"):
        for policy in POLICIES if sampling != "bayesian" else ("none",):
            trials = args.bayes_trials if sampling == "bayesian" else args.trials
            rows.append(measure(sampling, policy, trials, args.concurrent))
            print(f"  {sampling} x {policy}: done", file=sys.stderr)
    result = {"concurrent": args.concurrent, "runs": rows, "optuna_import": optuna_import()}
    print(json.dumps(result, indent=2))
    _print_summary(result)
    return 0


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--bayes-trials", type=int, default=1000)
    p.add_argument("--concurrent", type=int, default=50)
    return p.parse_args()


def _print_summary(result: dict[str, Any]) -> None:
    """The headline numbers, one line per sampler x policy, on stderr."""
    print(
        f"{'sampler x policy':<22} {'trials':>6} {'stopped':>7} {'ms/trial':>9}"
        f" {'ms/step':>8} {'p99 ms':>8}",
        file=sys.stderr,
    )
    for r in result["runs"]:
        name = f"{r['sampling']} x {r['policy']}"
        print(
            f"{name:<22} {r['trials']:>6} {r['early_terminated']:>7} {r['ms_per_trial']:>9}"
            f" {r['ms_per_step_mean']:>8} {r['ms_per_step_p99']:>8}",
            file=sys.stderr,
        )
    imp = result["optuna_import"]
    print(
        f"import optuna: {imp['seconds_best']} s; the controller imports it:"
        f" {imp['controller_imports_optuna']}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
