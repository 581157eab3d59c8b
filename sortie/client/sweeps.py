"""Hyperparameter sweeps in the SDK: samplings, early-termination policies, the goal and
``HyperDriveConfig``, with the names, signatures and defaults of the hosted platform's SDK
v1 (``azureml.train.hyperdrive``), each converting to the wire's ``SweepSpec``.

    space = {"learning_rate": loguniform(-6, -1), "batch": choice(16, 32, 64)}
    config = HyperDriveConfig(
        run_config=ScriptRunConfig(source_directory=".", script="train.py"),
        hyperparameter_sampling=RandomParameterSampling(space),
        policy=BanditPolicy(slack_factor=0.1),
        primary_metric_name="accuracy",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=20,
        max_concurrent_runs=4,
    )
    sweep = experiment.submit(config)  # a SweepRun: its trials are child runs

Bad input raises :class:`SweepConfigError` when the object is made (and again when it is
converted, for a value changed since), before anything is sent. Unknown attribute names are
refused (``strict.Strict``).
"""

from __future__ import annotations

import enum
import secrets
import warnings
from dataclasses import dataclass, field
from typing import Any

from sortie.client.runconfig import ScriptRunConfig
from sortie.client.strict import Strict
from sortie.client.sweep_space import SweepConfigError, as_space
from sortie.proto import sweeps as s

MAX_DURATION_MINUTES = 10080  # v1's default: a week
# v1's advice for Bayesian sampling (a warning, not a refusal)
RECOMMENDED_RUNS_PER_PARAMETER_BAYESIAN = 20
RECOMMENDED_MAX_CONCURRENT_BAYESIAN = 20


def _count(what: str, value: object, *, least: int = 0, most: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise SweepConfigError(f"{what} must be an integer of at least {least}, got {value!r}")
    if most is not None and value > most:
        raise SweepConfigError(f"{what} must be at most {most}, got {value!r}")
    return value


def new_seed() -> int:
    """A random sampler's seed, chosen by the client when the user gives none (so a restarted
    scheduler draws the same trials)."""
    return secrets.randbelow(2**31)


# --- samplings ---------------------------------------------------------------------------


@dataclass
class GridParameterSampling(Strict):
    """Every combination of the ``choice`` values, each once."""

    parameter_space: dict[str, Any]

    def __post_init__(self) -> None:
        self.to_spec()

    def to_spec(self) -> tuple[dict[str, s.Expression], s.Sampling]:
        space = as_space(self.parameter_space)
        for name, expr in space.items():
            if not isinstance(expr, s.Choice):
                raise SweepConfigError(
                    f"grid sampling takes only choice(...) values; parameter {name!r} is "
                    f"{expr.__struct_config__.tag}(...): use choice, or RandomParameterSampling"
                )
        return space, s.GridSampling()


@dataclass
class RandomParameterSampling(Strict):
    """Independent random draws. v1's ``properties={"rngseed": N}`` or ``seed=N`` make the
    draws repeatable; without either the client picks a seed, kept on the sweep."""

    parameter_space: dict[str, Any]
    properties: dict[str, Any] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.seed is None and "rngseed" not in (self.properties or {}):
            self.seed = new_seed()
        self.to_spec()

    def to_spec(self) -> tuple[dict[str, s.Expression], s.Sampling]:
        given = dict(self.properties or {})
        unknown = sorted(set(given) - {"rngseed"})
        if unknown:
            raise SweepConfigError(
                f"RandomParameterSampling properties {unknown}: only 'rngseed' is known"
            )
        seed = given.get("rngseed", self.seed)
        if self.seed is not None and "rngseed" in given and given["rngseed"] != self.seed:
            raise SweepConfigError("give the seed once: seed= or properties={'rngseed': N}")
        return as_space(self.parameter_space), s.RandomSampling(
            seed=_count("the random seed", seed)
        )


@dataclass
class BayesianParameterSampling(Strict):
    """Each new trial's parameters from the results so far (Optuna's TPE sampler). Takes
    ``choice``, ``uniform`` and ``quniform`` only, and no early-termination policy (as v1)."""

    parameter_space: dict[str, Any]
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.seed is None:
            self.seed = new_seed()
        self.to_spec()

    def to_spec(self) -> tuple[dict[str, s.Expression], s.Sampling]:
        space = as_space(self.parameter_space)
        for name, expr in space.items():
            if not isinstance(expr, s.Choice | s.Uniform | s.QUniform):
                raise SweepConfigError(
                    f"Bayesian sampling takes choice, uniform and quniform only; parameter "
                    f"{name!r} is {expr.__struct_config__.tag}(...)"
                )
        return space, s.BayesianSampling(seed=_count("the seed", self.seed))


HyperParameterSampling = GridParameterSampling | RandomParameterSampling | BayesianParameterSampling


# --- early-termination policies ------------------------------------------------------------


def _cadence(evaluation_interval: object, delay_evaluation: object) -> tuple[int, int]:
    return (
        _count("evaluation_interval", evaluation_interval, least=1),
        _count("delay_evaluation", delay_evaluation),
    )


@dataclass
class BanditPolicy(Strict):
    """Stop a trial whose best value at an evaluated interval is not within ``slack_factor``
    (a ratio) or ``slack_amount`` (an absolute distance) of the best trial's; exactly one of
    the two. Evaluated every ``evaluation_interval`` reports from ``delay_evaluation`` on."""

    evaluation_interval: int = 1
    slack_factor: float | None = None
    slack_amount: float | None = None
    delay_evaluation: int = 0

    def __post_init__(self) -> None:
        self.to_spec()

    def to_spec(self) -> s.Policy:
        if (self.slack_factor is None) == (self.slack_amount is None):
            raise SweepConfigError(
                "BanditPolicy needs exactly one of slack_factor (a ratio, e.g. 0.1) or "
                "slack_amount (an absolute distance, e.g. 0.2)"
            )
        slack = self.slack_factor if self.slack_factor is not None else self.slack_amount
        what = "slack_factor" if self.slack_factor is not None else "slack_amount"
        if isinstance(slack, bool) or not isinstance(slack, int | float) or not slack > 0:
            raise SweepConfigError(f"BanditPolicy: {what} must be a number above 0, got {slack!r}")
        every, delay = _cadence(self.evaluation_interval, self.delay_evaluation)
        return s.Bandit(
            evaluation_interval=every,
            delay_evaluation=delay,
            slack_factor=None if self.slack_factor is None else float(self.slack_factor),
            slack_amount=None if self.slack_amount is None else float(self.slack_amount),
        )


@dataclass
class MedianStoppingPolicy(Strict):
    """Stop a trial whose best value is worse than the median of the trials' running
    averages at that interval (v1's defaults: every interval, no delay; v1 suggests
    ``delay_evaluation=5`` as a conservative start)."""

    evaluation_interval: int = 1
    delay_evaluation: int = 0

    def __post_init__(self) -> None:
        self.to_spec()

    def to_spec(self) -> s.Policy:
        every, delay = _cadence(self.evaluation_interval, self.delay_evaluation)
        return s.MedianStopping(evaluation_interval=every, delay_evaluation=delay)


@dataclass
class TruncationSelectionPolicy(Strict):
    """At each evaluated interval stop the worst ``truncation_percentage`` % of the trials
    (1 to 99).

    ``exclude_finished_jobs`` is Sortie's extension, not v1's: v1's
    ``azureml.train.hyperdrive.TruncationSelectionPolicy(truncation_percentage,
    evaluation_interval=1, delay_evaluation=0)`` has no such parameter and ranks every trial
    that reached the interval. True leaves ended trials out of the ranking; the default
    (False) ranks them, as v1 does."""

    truncation_percentage: int
    evaluation_interval: int = 1
    delay_evaluation: int = 0
    exclude_finished_jobs: bool = False

    def __post_init__(self) -> None:
        self.to_spec()

    def to_spec(self) -> s.Policy:
        pct = _count("truncation_percentage", self.truncation_percentage, least=1, most=99)
        every, delay = _cadence(self.evaluation_interval, self.delay_evaluation)
        if not isinstance(self.exclude_finished_jobs, bool):
            raise SweepConfigError("exclude_finished_jobs must be True or False")
        return s.TruncationSelection(
            truncation_percentage=pct,
            evaluation_interval=every,
            delay_evaluation=delay,
            exclude_finished_jobs=self.exclude_finished_jobs,
        )


@dataclass
class NoTerminationPolicy(Strict):
    """Every trial runs to its end."""

    def to_spec(self) -> s.Policy:
        return s.NoTermination()


@dataclass
class AshaPolicy(Strict):
    """Asynchronous successive halving (Sortie's, beyond v1): at ``grace_period *
    reduction_factor**k`` reports a trial goes on only if it is in the top ``1 /
    reduction_factor`` of the trials that got there; from ``max_interval`` on, never stopped."""

    grace_period: int = 1
    reduction_factor: int = 3
    max_interval: int | None = None

    def __post_init__(self) -> None:
        self.to_spec()

    def to_spec(self) -> s.Policy:
        grace = _count("grace_period", self.grace_period, least=1)
        factor = _count("reduction_factor", self.reduction_factor, least=2)
        if self.max_interval is not None:
            _count("max_interval", self.max_interval, least=grace)
        return s.Asha(grace_period=grace, reduction_factor=factor, max_interval=self.max_interval)


EarlyTerminationPolicy = (
    BanditPolicy
    | MedianStoppingPolicy
    | TruncationSelectionPolicy
    | NoTerminationPolicy
    | AshaPolicy
)


class PrimaryMetricGoal(enum.Enum):
    """Whether a higher or a lower value of the primary metric is better."""

    MAXIMIZE = "MAXIMIZE"
    MINIMIZE = "MINIMIZE"

    @staticmethod
    def from_str(goal: str) -> PrimaryMetricGoal:
        for member in PrimaryMetricGoal:
            if isinstance(goal, str) and goal.lower() == member.name.lower():
                return member
        raise SweepConfigError(
            f"the primary metric goal must be 'maximize' or 'minimize', not {goal!r}"
        )


# --- the sweep ------------------------------------------------------------------------------


@dataclass
class HyperDriveConfig(Strict):
    """A sweep: ``run_config`` (a ``ScriptRunConfig``) run once per trial with the trial's
    parameters appended to its arguments (``--name value``), sampled by
    ``hyperparameter_sampling``, stopped early by ``policy``, judged by the primary metric
    (what the script logs with ``Run.get_context().log``). v1's signature; ``estimator``,
    ``pipeline``, ``resume_from`` and ``resume_child_runs`` are refused (say so)."""

    hyperparameter_sampling: HyperParameterSampling
    primary_metric_name: str
    primary_metric_goal: PrimaryMetricGoal | str
    max_total_runs: int
    max_concurrent_runs: int | None = None
    max_duration_minutes: float | None = MAX_DURATION_MINUTES
    policy: EarlyTerminationPolicy | None = None
    estimator: Any = None
    run_config: ScriptRunConfig | None = None
    resume_from: Any = None
    resume_child_runs: Any = None
    pipeline: Any = None
    debug_flag: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("estimator", "pipeline", "resume_from", "resume_child_runs"):
            if getattr(self, name) is not None:
                raise SweepConfigError(
                    f"HyperDriveConfig({name}=...) is not supported by Sortie: give "
                    "run_config=ScriptRunConfig(source_directory, script=..., arguments=...)"
                )
        spec = self.to_spec()
        if isinstance(spec.sampling, s.BayesianSampling):
            _bayesian_advice(len(spec.space), spec.max_total_trials, spec.max_concurrent_trials)

    @property
    def source_directory(self) -> str | None:
        return None if self.run_config is None else str(self.run_config.source_directory)

    def to_spec(self) -> s.SweepSpec:
        """The sweep as the scheduler receives it (the trials' template, ``run_config``, is
        submitted beside it)."""
        if not isinstance(self.run_config, ScriptRunConfig):
            raise SweepConfigError(
                "HyperDriveConfig needs run_config=ScriptRunConfig(source_directory, "
                f"script=...): the script each trial runs (got {type(self.run_config).__name__})"
            )
        sampling = self.hyperparameter_sampling
        if not hasattr(sampling, "to_spec") or not isinstance(sampling, Strict):
            raise SweepConfigError(
                "hyperparameter_sampling must be a GridParameterSampling, "
                f"RandomParameterSampling or BayesianParameterSampling, got {sampling!r}"
            )
        space, sampler = sampling.to_spec()
        policy = (self.policy or NoTerminationPolicy()).to_spec()
        if isinstance(sampler, s.BayesianSampling) and not isinstance(policy, s.NoTermination):
            raise SweepConfigError(
                "Bayesian sampling takes no early-termination policy (as in v1): give "
                "policy=None or NoTerminationPolicy(), or use RandomParameterSampling"
            )
        return s.SweepSpec(
            space=space,
            sampling=sampler,
            policy=policy,
            primary_metric=self._metric(),
            goal=self._goal(),
            max_total_trials=_count(
                "max_total_runs", self.max_total_runs, least=1, most=s.MAX_TRIALS
            ),
            max_concurrent_trials=None
            if self.max_concurrent_runs is None
            else _count("max_concurrent_runs", self.max_concurrent_runs, least=1),
            max_duration_s=self._duration_s(),
        )

    def _metric(self) -> str:
        name = self.primary_metric_name
        if not isinstance(name, str) or not name.strip():
            raise SweepConfigError(
                "primary_metric_name must name the metric the script logs (run.log(NAME, value))"
            )
        return name

    def _goal(self) -> s.Goal:
        goal = self.primary_metric_goal
        member = goal if isinstance(goal, PrimaryMetricGoal) else PrimaryMetricGoal.from_str(goal)
        return "maximize" if member is PrimaryMetricGoal.MAXIMIZE else "minimize"

    def _duration_s(self) -> float | None:
        minutes = self.max_duration_minutes
        if minutes is None:
            return None
        if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not minutes > 0:
            raise SweepConfigError(
                f"max_duration_minutes must be a number of minutes above 0 (or None: no limit), "
                f"got {minutes!r}"
            )
        return float(minutes) * 60


def _bayesian_advice(parameters: int, total: int, concurrent: int | None) -> None:
    """v1's warnings for a Bayesian sweep that is likely to learn little."""
    if total < RECOMMENDED_RUNS_PER_PARAMETER_BAYESIAN * parameters:
        warnings.warn(
            "for best results with Bayesian sampling give max_total_runs of at least "
            f"{RECOMMENDED_RUNS_PER_PARAMETER_BAYESIAN} per parameter "
            f"({RECOMMENDED_RUNS_PER_PARAMETER_BAYESIAN * parameters} here)",
            stacklevel=4,
        )
    if (concurrent or total) > RECOMMENDED_MAX_CONCURRENT_BAYESIAN:  # None: all at once
        warnings.warn(
            f"Bayesian sampling learns from finished trials: give max_concurrent_runs of "
            f"{RECOMMENDED_MAX_CONCURRENT_BAYESIAN} or fewer",
            stacklevel=4,
        )
