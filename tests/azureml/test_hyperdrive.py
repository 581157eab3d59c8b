"""v1's ``azureml.train.hyperdrive`` under ``sortie.azureml``: its module paths and names, its
signatures and defaults, its exceptions, and a v1-style script's configuration converting to
the wire's ``SweepSpec`` (without a broker)."""

from __future__ import annotations

import inspect

import pytest

from sortie.azureml.core import ScriptRunConfig
from sortie.azureml.core.experiment import Experiment
from sortie.azureml.core.run import Run
from sortie.azureml.exceptions import AzureMLException
from sortie.azureml.train.hyperdrive import (
    BanditPolicy,
    BayesianParameterSampling,
    EarlyTerminationPolicy,
    GridParameterSampling,
    HyperDriveConfig,
    HyperDriveConfigException,
    HyperDriveRun,
    HyperDriveScenarioNotSupportedException,
    HyperParameterSampling,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    PrimaryMetricGoal,
    RandomParameterSampling,
    TruncationSelectionPolicy,
    choice,
    loguniform,
    uniform,
)
from sortie.client.sweep_space import SweepConfigError
from sortie.proto import sweeps as s


def test_v1_module_paths_hold_v1_names() -> None:
    from sortie.azureml.train.hyperdrive import parameter_expressions, policy, run, runconfig
    from sortie.azureml.train.hyperdrive import sampling as sampling_module

    assert parameter_expressions.choice is choice
    assert {
        "choice",
        "randint",
        "uniform",
        "quniform",
        "loguniform",
        "qloguniform",
        "normal",
        "qnormal",
        "lognormal",
        "qlognormal",
    } <= set(parameter_expressions.__all__)
    assert sampling_module.RandomParameterSampling is RandomParameterSampling
    assert policy.BanditPolicy is BanditPolicy
    assert runconfig.HyperDriveConfig is HyperDriveConfig
    assert runconfig.PrimaryMetricGoal is PrimaryMetricGoal
    assert run.HyperDriveRun is HyperDriveRun
    assert issubclass(HyperDriveRun, Run)


def _params(fn: object) -> list[tuple[str, object]]:
    return [
        (p.name, p.default)
        for p in inspect.signature(fn).parameters.values()  # type: ignore[arg-type]
    ]


E = inspect.Parameter.empty


def test_v1_signatures_and_defaults() -> None:
    assert _params(BanditPolicy)[:4] == [
        ("evaluation_interval", 1),
        ("slack_factor", None),
        ("slack_amount", None),
        ("delay_evaluation", 0),
    ]
    assert _params(MedianStoppingPolicy) == [("evaluation_interval", 1), ("delay_evaluation", 0)]
    # v1's three parameters, in v1's order; then Sortie's extension (not v1's), after them
    # and off by default, so v1 calls (positional ones too) mean what they meant there
    truncation = _params(TruncationSelectionPolicy)
    assert truncation[:3] == [
        ("truncation_percentage", E),
        ("evaluation_interval", 1),
        ("delay_evaluation", 0),
    ]
    assert truncation[3:] == [("exclude_finished_jobs", False)]
    assert _params(RandomParameterSampling)[:2] == [("parameter_space", E), ("properties", None)]
    assert _params(GridParameterSampling) == [("parameter_space", E)]
    assert _params(BayesianParameterSampling)[0] == ("parameter_space", E)
    assert _params(HyperDriveConfig)[:9] == [
        ("hyperparameter_sampling", E),
        ("primary_metric_name", E),
        ("primary_metric_goal", E),
        ("max_total_runs", E),
        ("max_concurrent_runs", None),
        ("max_duration_minutes", 10080),
        ("policy", None),
        ("estimator", None),
        ("run_config", None),
    ]
    assert _params(HyperDriveRun)[:3] == [
        ("experiment", E),
        ("run_id", E),
        ("hyperdrive_config", None),
    ]
    best = _params(HyperDriveRun.get_best_run_by_primary_metric)[1:]
    assert best == [
        ("include_failed", True),
        ("include_canceled", True),
        ("include_resume_from_runs", True),
    ]
    assert _params(HyperDriveRun.get_children_sorted_by_primary_metric)[1:] == [
        ("top", 0),
        ("reverse", False),
        ("discard_no_metric", False),
    ]
    assert PrimaryMetricGoal.from_str("Maximize") is PrimaryMetricGoal.MAXIMIZE
    assert PrimaryMetricGoal.MINIMIZE.value == "MINIMIZE"


def test_a_v1_style_script_converts_to_the_sweep_spec() -> None:
    # as the hosted platform's how-to writes it, with only the imports changed
    src = ScriptRunConfig(source_directory=".", script="train.py", arguments=["--epochs", 5])
    param_sampling = RandomParameterSampling(
        {"--learning_rate": uniform(0.0005, 0.005), "--batch_size": choice(16, 32, 64, 128)},
        properties={"rngseed": 11},
    )
    early_termination_policy = BanditPolicy(slack_factor=0.1, evaluation_interval=2)
    hd_config = HyperDriveConfig(
        run_config=src,
        hyperparameter_sampling=param_sampling,
        policy=early_termination_policy,
        primary_metric_name="validation_acc",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=20,
        max_concurrent_runs=4,
    )
    assert hd_config.run_config is src
    assert hd_config.source_directory == "."
    assert hd_config.to_spec() == s.SweepSpec(
        space={
            "--learning_rate": s.Uniform(min_value=0.0005, max_value=0.005),
            "--batch_size": s.Choice(values=[16, 32, 64, 128]),
        },
        sampling=s.RandomSampling(seed=11),
        policy=s.Bandit(evaluation_interval=2, slack_factor=0.1),
        primary_metric="validation_acc",
        goal="maximize",
        max_total_trials=20,
        max_concurrent_trials=4,
        max_duration_s=10080 * 60.0,
    )
    assert isinstance(param_sampling, HyperParameterSampling)
    assert isinstance(early_termination_policy, EarlyTerminationPolicy)
    assert isinstance(NoTerminationPolicy(), EarlyTerminationPolicy)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: uniform(5, 1), "min_value < max_value"),
        (lambda: loguniform("a", 1), "finite number"),
        (lambda: choice(), "at least one option"),
        (lambda: BanditPolicy(), "exactly one of slack_factor"),
        (lambda: TruncationSelectionPolicy(120), "at most 99"),
        (lambda: GridParameterSampling({"x": uniform(0, 1)}), "only choice"),
        (
            lambda: HyperDriveConfig(
                hyperparameter_sampling=RandomParameterSampling({"x": choice(1, 2)}),
                primary_metric_name="m",
                primary_metric_goal=PrimaryMetricGoal.MINIMIZE,
                max_total_runs=2,
            ),
            "needs run_config=ScriptRunConfig",
        ),
    ],
)
def test_bad_input_raises_v1s_exception(make: object, says: str) -> None:
    with pytest.raises(HyperDriveConfigException, match=says) as err:
        make()  # type: ignore[operator]
    assert isinstance(err.value, AzureMLException)
    assert isinstance(err.value, SweepConfigError)  # and the native one (a ValueError)
    assert err.value.message


def test_a_policy_with_bayesian_sampling_is_not_supported_as_in_v1() -> None:
    src = ScriptRunConfig(source_directory=".", script="train.py")
    with pytest.raises(HyperDriveScenarioNotSupportedException, match="no early-termination"):
        HyperDriveConfig(
            run_config=src,
            hyperparameter_sampling=BayesianParameterSampling({"x": uniform(0, 1)}),
            policy=MedianStoppingPolicy(),
            primary_metric_name="m",
            primary_metric_goal=PrimaryMetricGoal.MINIMIZE,
            max_total_runs=40,
            max_concurrent_runs=2,
        )


def test_experiment_submit_takes_a_hyperdrive_config() -> None:
    hints = inspect.signature(Experiment.submit).parameters["config"].annotation
    assert "HyperDriveConfig" in str(hints)
