"""``validate.problem`` as a table: each refusal and the piece of its message that says what
to change; accepted specs give None."""

from __future__ import annotations

import pytest

from sortie.proto.sweeps import (
    MAX_TRIALS,
    Asha,
    Bandit,
    BayesianSampling,
    Choice,
    GridSampling,
    LogNormal,
    LogUniform,
    MedianStopping,
    Normal,
    QLogUniform,
    QNormal,
    QUniform,
    RandInt,
    SweepSpec,
    TruncationSelection,
    Uniform,
)
from sortie.scheduler.sweeps.validate import problem
from tests.scheduler.sweeps.builders import GRID, make_spec

U = Uniform(min_value=0.0, max_value=1.0)
BAYES = BayesianSampling(seed=1)

CASES: list[tuple[str, SweepSpec, str | None]] = [
    ("random uniform", make_spec(), None),
    ("grid of choices", make_spec(space=GRID, sampling=GridSampling()), None),
    (
        "bayesian choice/uniform/quniform",
        make_spec(
            sampling=BAYES,
            space={
                "a": Choice(values=[1, 2]),
                "b": U,
                "c": QUniform(min_value=0, max_value=8, q=2),
            },
        ),
        None,
    ),
    ("every policy's defaults but truncation", make_spec(policy=MedianStopping()), None),
    ("asha", make_spec(policy=Asha(grace_period=2, reduction_factor=2, max_interval=16)), None),
    ("dashed name", make_spec(space={"--learning-rate.v2": U}), None),
    ("empty space", make_spec(space={}), "the search space is empty"),
    (
        "name with a space",
        make_spec(space={"learning rate": U}),
        "parameter name 'learning rate' is not valid: it becomes the script argument --NAME",
    ),
    ("empty name", make_spec(space={"": U}), "parameter name '' is not valid"),
    ("name of dashes only", make_spec(space={"--": U}), "parameter name '--' is not valid"),
    (
        "min = max",
        make_spec(space={"x": Uniform(min_value=1, max_value=1)}),
        "parameter 'x': min_value 1 is not below max_value 1: give min_value < max_value",
    ),
    (
        "min > max quniform",
        make_spec(space={"x": QUniform(min_value=2, max_value=1, q=1)}),
        "min_value 2 is not below max_value 1",
    ),
    (
        "q = 0",
        make_spec(space={"x": QUniform(min_value=0, max_value=1, q=0)}),
        "q is 0: give a rounding step above 0",
    ),
    ("q < 0 qnormal", make_spec(space={"x": QNormal(mu=0, sigma=1, q=-1)}), "q is -1"),
    (
        "sigma = 0",
        make_spec(space={"x": Normal(mu=0, sigma=0)}),
        "sigma is 0: give a standard deviation above 0",
    ),
    ("sigma < 0 lognormal", make_spec(space={"x": LogNormal(mu=0, sigma=-2)}), "sigma is -2"),
    ("randint 0", make_spec(space={"x": RandInt(upper=0)}), "randint upper is 0: give 1 or more"),
    ("empty choice", make_spec(space={"x": Choice(values=[])}), "choice() has no values"),
    (
        "nan bound",
        make_spec(space={"x": Uniform(min_value=float("nan"), max_value=1)}),
        "not a finite number",
    ),
    (
        "loguniform exponent too large",
        make_spec(space={"x": LogUniform(min_value=0, max_value=800)}),
        "max_value 800 is an exponent (exp(max_value)): give 709 or less",
    ),
    (
        "grid with uniform",
        make_spec(space={**GRID, "u": U}, sampling=GridSampling()),
        "grid sampling takes choice() only; parameter 'u' is uniform()",
    ),
    (
        "bayesian loguniform",
        make_spec(sampling=BAYES, space={"x": LogUniform(min_value=-3, max_value=0)}),
        "Bayesian sampling takes choice(), uniform() and quniform() only",
    ),
    (
        "bayesian randint",
        make_spec(sampling=BAYES, space={"x": RandInt(upper=3)}),
        "parameter 'x' is randint()",
    ),
    (
        "bayesian qloguniform",
        make_spec(sampling=BAYES, space={"x": QLogUniform(min_value=0, max_value=1, q=1)}),
        "qloguniform()",
    ),
    (
        "bayesian with bandit",
        make_spec(sampling=BAYES, policy=Bandit(slack_factor=0.1)),
        "Bayesian sampling takes no early-termination policy (as v1: it learns from whole"
        " trials), and the policy is Bandit",
    ),
    ("total 0", make_spec(total=0), f"max_total_trials is 0: give 1 to {MAX_TRIALS:,}"),
    ("total too many", make_spec(total=MAX_TRIALS + 1), "max_total_trials is 100001"),
    ("concurrent 0", make_spec(concurrent=0), "max_concurrent_trials is 0"),
    ("duration 0", make_spec(duration=0), "max_duration_s is 0: give a number of seconds"),
    ("duration negative", make_spec(duration=-5), "max_duration_s is -5"),
    ("no slack", make_spec(policy=Bandit()), "exactly one of slack_factor and slack_amount"),
    (
        "both slacks",
        make_spec(policy=Bandit(slack_factor=0.1, slack_amount=0.1)),
        "exactly one of slack_factor and slack_amount",
    ),
    (
        "negative slack",
        make_spec(policy=Bandit(slack_amount=-1)),
        "slack_amount is -1: give a finite number of 0 or more",
    ),
    (
        "truncation 0",
        make_spec(policy=TruncationSelection(truncation_percentage=0)),
        "truncation_percentage is 0: give a whole percentage from 1 to 99",
    ),
    (
        "truncation 100",
        make_spec(policy=TruncationSelection(truncation_percentage=100)),
        "truncation_percentage is 100",
    ),
    (
        "interval 0",
        make_spec(policy=MedianStopping(evaluation_interval=0)),
        "MedianStopping evaluation_interval is 0: give 1 or more",
    ),
    (
        "delay negative",
        make_spec(policy=Bandit(slack_factor=0.1, delay_evaluation=-1)),
        "Bandit delay_evaluation is -1: give 0 or more",
    ),
    (
        "asha factor 1",
        make_spec(policy=Asha(reduction_factor=1)),
        "asha reduction_factor is 1: give 2 or more",
    ),
    ("asha grace 0", make_spec(policy=Asha(grace_period=0)), "asha grace_period is 0"),
    (
        "empty metric",
        SweepSpec(
            space={"x": U}, sampling=BAYES, primary_metric=" ", goal="maximize", max_total_trials=3
        ),
        "primary_metric is empty",
    ),
]


@pytest.mark.parametrize(("spec", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_problem(spec: SweepSpec, expected: str | None) -> None:
    got = problem(spec)
    if expected is None:
        assert got is None
    else:
        assert got is not None and expected in got, got
