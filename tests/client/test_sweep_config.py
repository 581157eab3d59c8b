"""The native sweep SDK without a broker: each configuration object converts to the wire's
``SweepSpec`` with v1's defaults, bad input is refused with a message that says what to do
(before anything is sent), and unknown attribute names are refused."""

from __future__ import annotations

import pytest

import sortie
from sortie.client import sweep_text
from sortie.client.runconfig import ScriptRunConfig
from sortie.client.sweep_space import (
    SweepConfigError,
    as_expression,
    choice,
    lognormal,
    loguniform,
    normal,
    qlognormal,
    qloguniform,
    qnormal,
    quniform,
    randint,
    uniform,
)
from sortie.client.sweeps import (
    AshaPolicy,
    BanditPolicy,
    BayesianParameterSampling,
    GridParameterSampling,
    HyperDriveConfig,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    PrimaryMetricGoal,
    RandomParameterSampling,
    TruncationSelectionPolicy,
)
from sortie.proto import sweeps as s

SRC = ScriptRunConfig(source_directory=".", script="train.py", arguments=["--epochs", 3])


def config(**over: object) -> HyperDriveConfig:
    given: dict[str, object] = {
        "run_config": SRC,
        "hyperparameter_sampling": RandomParameterSampling({"lr": uniform(0, 1)}, seed=7),
        "primary_metric_name": "accuracy",
        "primary_metric_goal": PrimaryMetricGoal.MAXIMIZE,
        "max_total_runs": 12,
    } | over
    return HyperDriveConfig(**given)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("made", "wire"),
    [
        (choice(1, 2, 3), s.Choice(values=[1, 2, 3])),
        (choice([1, 2, 3]), s.Choice(values=[1, 2, 3])),
        (choice(range(3)), s.Choice(values=[0, 1, 2])),
        (choice("adam", "sgd"), s.Choice(values=["adam", "sgd"])),
        (randint(5), s.RandInt(upper=5)),
        (uniform(0, 1), s.Uniform(min_value=0.0, max_value=1.0)),
        (quniform(0, 10, 2), s.QUniform(min_value=0.0, max_value=10.0, q=2.0)),
        (loguniform(-6, -1), s.LogUniform(min_value=-6.0, max_value=-1.0)),
        (qloguniform(0, 5, 1), s.QLogUniform(min_value=0.0, max_value=5.0, q=1.0)),
        (normal(0, 1), s.Normal(mu=0.0, sigma=1.0)),
        (qnormal(10, 2, 1), s.QNormal(mu=10.0, sigma=2.0, q=1.0)),
        (lognormal(0, 1), s.LogNormal(mu=0.0, sigma=1.0)),
        (qlognormal(0, 1, 1), s.QLogNormal(mu=0.0, sigma=1.0, q=1.0)),
        (as_expression("lr", ["uniform", [0.1, 0.5]]), s.Uniform(min_value=0.1, max_value=0.5)),
        (as_expression("b", ["choice", [[16, 32]]]), s.Choice(values=[16, 32])),
    ],
)
def test_expressions_become_the_wire_expressions(made: s.Expression, wire: s.Expression) -> None:
    assert made == wire


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: choice(), "at least one option"),
        (lambda: choice([]), "at least one option"),
        (lambda: choice([1], [2]), "not several lists"),
        (lambda: choice(1, "a"), "all the options are strings or none is"),
        (lambda: choice(None), "not a number, string or boolean"),
        (lambda: randint(0), "positive integer"),
        (lambda: randint(2.5), "positive integer"),
        (lambda: uniform(1, 1), "min_value < max_value"),
        (lambda: uniform(2, 1), "min_value < max_value"),
        (lambda: uniform("a", 1), "min_value must be a finite number"),
        (lambda: uniform(0, float("inf")), "max_value must be a finite number"),
        (lambda: loguniform(2, 1), "min_value <= max_value"),
        (lambda: quniform(0, 1, 0.5), "q must be a positive whole number"),
        (lambda: normal(0, -1), "sigma must not be negative"),
        (lambda: as_expression("x", 3), "is not a parameter expression"),
    ],
)
def test_bad_expressions_are_refused_saying_why(make: object, says: str) -> None:
    with pytest.raises(SweepConfigError, match=says):
        make()  # type: ignore[operator]


def test_v1_defaults_and_conversion() -> None:
    spec = config(
        policy=BanditPolicy(slack_factor=0.1),
        hyperparameter_sampling=RandomParameterSampling(
            {"--lr": loguniform(-6, -1), "batch": choice(16, 32)}, properties={"rngseed": 42}
        ),
    ).to_spec()
    assert spec == s.SweepSpec(
        space={
            "--lr": s.LogUniform(min_value=-6.0, max_value=-1.0),
            "batch": s.Choice(values=[16, 32]),
        },
        sampling=s.RandomSampling(seed=42),
        policy=s.Bandit(evaluation_interval=1, delay_evaluation=0, slack_factor=0.1),
        primary_metric="accuracy",
        goal="maximize",
        max_total_trials=12,
        max_concurrent_trials=None,  # v1: None, as many as the target takes
        max_duration_s=10080 * 60.0,  # v1's default: a week
    )
    assert config().to_spec().policy == s.NoTermination()  # policy=None: none
    assert MedianStoppingPolicy().to_spec() == s.MedianStopping(
        evaluation_interval=1, delay_evaluation=0
    )
    assert TruncationSelectionPolicy(20).to_spec() == s.TruncationSelection(
        truncation_percentage=20, evaluation_interval=1, delay_evaluation=0
    )
    assert AshaPolicy().to_spec() == s.Asha(grace_period=1, reduction_factor=3)
    assert config(primary_metric_goal="minimize").to_spec().goal == "minimize"
    assert config(max_duration_minutes=None).to_spec().max_duration_s is None


def test_a_random_seed_is_chosen_once_when_none_is_given() -> None:
    sampling = RandomParameterSampling({"lr": uniform(0, 1)})
    first = config(hyperparameter_sampling=sampling).to_spec().sampling
    assert isinstance(first, s.RandomSampling)
    assert config(hyperparameter_sampling=sampling).to_spec().sampling == first  # kept
    bayes = BayesianParameterSampling({"lr": uniform(0, 1)}, seed=3)
    with pytest.warns(UserWarning, match="max_total_runs of at least 20"):
        spec = config(hyperparameter_sampling=bayes, max_concurrent_runs=2).to_spec()
    assert spec.sampling == s.BayesianSampling(seed=3)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: BanditPolicy(), "exactly one of slack_factor"),
        (lambda: BanditPolicy(slack_factor=0.1, slack_amount=0.2), "exactly one of"),
        (lambda: BanditPolicy(slack_factor=-1), "above 0"),
        (lambda: BanditPolicy(slack_factor=0.1, evaluation_interval=0), "evaluation_interval"),
        (lambda: MedianStoppingPolicy(delay_evaluation=-1), "delay_evaluation"),
        (lambda: TruncationSelectionPolicy(0), "truncation_percentage must be an integer"),
        (lambda: TruncationSelectionPolicy(100), "at most 99"),
        (lambda: AshaPolicy(reduction_factor=1), "reduction_factor"),
        (lambda: GridParameterSampling({"lr": uniform(0, 1)}), "grid sampling takes only choice"),
        (lambda: GridParameterSampling({}), "non-empty dict"),
        (lambda: BayesianParameterSampling({"x": normal(0, 1)}), "choice, uniform and quniform"),
        (lambda: RandomParameterSampling({"a b": uniform(0, 1)}), "without spaces"),
        (
            lambda: RandomParameterSampling({"lr": uniform(0, 1), "--lr": uniform(0, 1)}),
            "the same script argument twice",
        ),
        (lambda: RandomParameterSampling({"x": choice(1)}, properties={"x": 1}), "rngseed"),
        (lambda: config(run_config=None), "needs run_config=ScriptRunConfig"),
        (lambda: config(estimator=object()), r"estimator=\.\.\.\) is not supported"),
        (lambda: config(max_total_runs=0), "max_total_runs must be an integer of at least 1"),
        (lambda: config(max_total_runs=s.MAX_TRIALS + 1), "at most"),
        (lambda: config(max_concurrent_runs=0), "max_concurrent_runs"),
        (lambda: config(max_duration_minutes=0), "max_duration_minutes"),
        (lambda: config(primary_metric_name=""), "primary_metric_name"),
        (lambda: config(primary_metric_goal="up"), "'maximize' or 'minimize'"),
        (
            lambda: config(
                hyperparameter_sampling=BayesianParameterSampling({"x": uniform(0, 1)}),
                policy=BanditPolicy(slack_factor=0.1),
            ),
            "Bayesian sampling takes no early-termination policy",
        ),
    ],
)
def test_bad_configurations_are_refused_saying_what_to_do(make: object, says: str) -> None:
    with pytest.raises(SweepConfigError, match=says):
        make()  # type: ignore[operator]


def test_a_value_changed_after_construction_is_checked_at_conversion() -> None:
    hd = config(policy=BanditPolicy(slack_factor=0.1))
    assert hd.policy is not None
    hd.policy.slack_factor = None  # type: ignore[union-attr]
    with pytest.raises(SweepConfigError, match="exactly one of"):
        hd.to_spec()


def test_unknown_attributes_are_refused_naming_the_close_match() -> None:
    hd = config()
    with pytest.raises(AttributeError, match="did you mean 'max_total_runs'"):
        hd.max_totl_runs = 3  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="did you mean 'slack_factor'"):
        BanditPolicy(slack_factor=0.1).slak_factor = 0.2  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="did you mean 'parameter_space'"):
        print(RandomParameterSampling({"x": choice(1)}).parameter_spce)  # type: ignore[attr-defined]


def test_native_names_are_exported_from_sortie() -> None:
    for name in (
        "HyperDriveConfig",
        "RandomParameterSampling",
        "GridParameterSampling",
        "BayesianParameterSampling",
        "BanditPolicy",
        "MedianStoppingPolicy",
        "TruncationSelectionPolicy",
        "NoTerminationPolicy",
        "AshaPolicy",
        "PrimaryMetricGoal",
        "SweepRun",
        "choice",
        "uniform",
        "loguniform",
    ):
        assert name in sortie.__all__
        assert getattr(sortie, name) is not None
    assert sortie.NoTerminationPolicy is NoTerminationPolicy


# --- text (the CLI's and the job file's) -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("lr=loguniform(-6,-1)", ("lr", s.LogUniform(min_value=-6.0, max_value=-1.0))),
        ("b=choice(16, 32)", ("b", s.Choice(values=[16, 32]))),
        ("b=choice([16, 32])", ("b", s.Choice(values=[16, 32]))),
        ("opt=choice('adam', \"sgd\")", ("opt", s.Choice(values=["adam", "sgd"]))),
        ("n=choice(range(1, 4))", ("n", s.Choice(values=[1, 2, 3]))),
        ("x=uniform(min_value=0, max_value=+1)", ("x", s.Uniform(min_value=0.0, max_value=1.0))),
        ("--lr=quniform(0, 10, 1)", ("--lr", s.QUniform(min_value=0.0, max_value=10.0, q=1.0))),
    ],
)
def test_parameter_text_is_parsed(text: str, wire: tuple[str, s.Expression]) -> None:
    assert sweep_text.param(text) == wire


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("lr", "not NAME=EXPRESSION"),
        ("lr=", "not of the form"),
        ("lr=__import__('os').system('x')", "not of the form name"),
        ("lr=exec('1')", "'exec' is not one of"),
        ("lr=uniform(a, 1)", "is not a literal"),
        ("lr=uniform(1, 2, 3, 4)", "positional argument"),
        ("lr=uniform(2, 1)", "min_value < max_value"),
        ("lr=choice(**{'a': 1})", "\\*\\* is not accepted"),
        ("lr=choice(range(1.5))", "range\\(\\) takes one to three integers"),
    ],
)
def test_bad_parameter_text_is_refused_without_evaluating_it(text: str, says: str) -> None:
    with pytest.raises(SweepConfigError, match=says):
        sweep_text.param(text)


def test_policy_and_sampling_text() -> None:
    assert sweep_text.policy("none").to_spec() == s.NoTermination()
    assert sweep_text.policy("bandit(slack_amount=0.2, delay_evaluation=3)").to_spec() == (
        s.Bandit(slack_amount=0.2, delay_evaluation=3)
    )
    assert sweep_text.policy("median()").to_spec() == s.MedianStopping()
    assert sweep_text.policy("truncation(30)").to_spec() == s.TruncationSelection(
        truncation_percentage=30
    )
    with pytest.raises(SweepConfigError, match="'hyperband' is not one of"):
        sweep_text.policy("hyperband()")
    with pytest.raises(SweepConfigError, match="unexpected keyword argument 'slack'"):
        sweep_text.policy("bandit(slack=1)")
    space = {"b": s.Choice(values=[1, 2])}
    assert isinstance(sweep_text.sampling("grid", space, None), GridParameterSampling)
    with pytest.raises(SweepConfigError, match="give no seed with grid"):
        sweep_text.sampling("grid", space, 3)
    random = sweep_text.sampling("random", space, 9)
    assert isinstance(random, RandomParameterSampling)
    assert random.to_spec()[1] == s.RandomSampling(seed=9)
    assert isinstance(sweep_text.sampling("bayesian", space, 1), BayesianParameterSampling)
    assert isinstance(NoTerminationPolicy(), NoTerminationPolicy)
