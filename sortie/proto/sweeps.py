"""Hyperparameter sweeps on the wire: the search space, the sampler, the early-termination
policy and the limits a client submits (``SubmitRequest.sweep``), and what the scheduler keeps
on the sweep's run record (``RunRecord.sweep``) and on each trial's (``RunRecord.trial``).

Semantics follow the hosted platform's HyperDrive (SDK v1) as its reference documents them:
- a parameter's name is the script argument it becomes (``"learning_rate"`` and
  ``"--learning_rate"`` both give ``--learning_rate VALUE``; ``trial_arguments``);
- an *interval* is one report of the primary metric by a trial (its n-th ``Run.log`` of that
  name is interval n); a policy is applied at every multiple of ``evaluation_interval`` that
  is greater than or equal to ``delay_evaluation`` (v1's words);
- a trial's ``objective`` is the best value of the primary metric it reported (by the goal).

A sweep run has no attempt of its own: the scheduler's sweep controller
(``scheduler/sweeps/``) decides from the trials' states and metrics which trials to submit and
which to stop; a trial it stops ends ``Canceled`` with error kind ``early_terminated``.
"""

from __future__ import annotations

from typing import Literal

from sortie.proto.base import Message

ParamValue = float | int | str | bool
Goal = Literal["maximize", "minimize"]

MAX_TRIALS = 100_000  # max_total_trials at most


# --- parameter expressions (v1's azureml.train.hyperdrive.parameter_expressions) ----------


class ExpressionBase(Message, frozen=True, kw_only=True, tag_field="kind"):
    """How one parameter's values are drawn."""


class Choice(ExpressionBase, frozen=True, kw_only=True, tag="choice"):
    """One of ``values`` (the only expression grid sampling takes)."""

    values: list[ParamValue]


class RandInt(ExpressionBase, frozen=True, kw_only=True, tag="randint"):
    """An integer in ``[0, upper)``."""

    upper: int


class Uniform(ExpressionBase, frozen=True, kw_only=True, tag="uniform"):
    """Uniform between ``min_value`` and ``max_value``."""

    min_value: float
    max_value: float


class QUniform(ExpressionBase, frozen=True, kw_only=True, tag="quniform"):
    """``round(uniform(min_value, max_value) / q) * q``."""

    min_value: float
    max_value: float
    q: float


class LogUniform(ExpressionBase, frozen=True, kw_only=True, tag="loguniform"):
    """``exp(uniform(min_value, max_value))``: the bounds are in log space, as in v1."""

    min_value: float
    max_value: float


class QLogUniform(ExpressionBase, frozen=True, kw_only=True, tag="qloguniform"):
    """``round(exp(uniform(min_value, max_value)) / q) * q``."""

    min_value: float
    max_value: float
    q: float


class Normal(ExpressionBase, frozen=True, kw_only=True, tag="normal"):
    """Normal with mean ``mu`` and standard deviation ``sigma``."""

    mu: float
    sigma: float


class QNormal(ExpressionBase, frozen=True, kw_only=True, tag="qnormal"):
    """``round(normal(mu, sigma) / q) * q``."""

    mu: float
    sigma: float
    q: float


class LogNormal(ExpressionBase, frozen=True, kw_only=True, tag="lognormal"):
    """``exp(normal(mu, sigma))``."""

    mu: float
    sigma: float


class QLogNormal(ExpressionBase, frozen=True, kw_only=True, tag="qlognormal"):
    """``round(exp(normal(mu, sigma)) / q) * q``."""

    mu: float
    sigma: float
    q: float


Expression = (
    Choice
    | RandInt
    | Uniform
    | QUniform
    | LogUniform
    | QLogUniform
    | Normal
    | QNormal
    | LogNormal
    | QLogNormal
)


# --- samplers ------------------------------------------------------------------------------


class SamplingBase(Message, frozen=True, kw_only=True, tag_field="kind"):
    """How trials' parameters are chosen from the space."""


class GridSampling(SamplingBase, frozen=True, kw_only=True, tag="grid"):
    """Every combination of the ``Choice`` values exactly once, in a fixed order."""


class RandomSampling(SamplingBase, frozen=True, kw_only=True, tag="random"):
    """Independent draws; trial ``i``'s parameters depend only on ``(seed, i)``. The client
    picks the seed when the user gives none, so a restarted scheduler draws the same."""

    seed: int


class BayesianSampling(SamplingBase, frozen=True, kw_only=True, tag="bayesian"):
    """Optuna's TPE sampler (seeded), told every ended trial's objective; rebuilt from the
    stored trials after a restart."""

    seed: int


Sampling = GridSampling | RandomSampling | BayesianSampling


# --- early-termination policies ------------------------------------------------------------


class PolicyBase(Message, frozen=True, kw_only=True, tag_field="kind"):
    """When a running trial is stopped early."""


class NoTermination(PolicyBase, frozen=True, kw_only=True, tag="none"):
    """Every trial runs to its end."""


class Bandit(PolicyBase, frozen=True, kw_only=True, tag="bandit"):
    """Stop a trial whose best value at an evaluated interval is outside the slack of the best
    trial's value at that interval (``slack_factor``: a ratio; ``slack_amount``: an absolute
    distance; exactly one is given)."""

    evaluation_interval: int = 1
    delay_evaluation: int = 0
    slack_factor: float | None = None
    slack_amount: float | None = None


class MedianStopping(PolicyBase, frozen=True, kw_only=True, tag="median"):
    """Stop a trial whose best value is worse than the median of the trials' running
    averages at that interval."""

    evaluation_interval: int = 1
    delay_evaluation: int = 0  # v1's default


class TruncationSelection(PolicyBase, frozen=True, kw_only=True, tag="truncation"):
    """At each evaluated interval stop the trials in the worst ``truncation_percentage`` %
    (by the value at that interval; ``exclude_finished_jobs``: ended trials are not ranked)."""

    truncation_percentage: int
    evaluation_interval: int = 1
    delay_evaluation: int = 0
    exclude_finished_jobs: bool = False


class Asha(PolicyBase, frozen=True, kw_only=True, tag="asha"):
    """Asynchronous successive halving (beyond v1): rungs at ``grace_period *
    reduction_factor**k`` intervals; a trial reaching a rung goes on only if its value there
    is in the top ``1 / reduction_factor`` of the trials that reached that rung so far.
    ``max_interval``: trials reaching it are never stopped."""

    grace_period: int = 1
    reduction_factor: int = 3
    max_interval: int | None = None


Policy = NoTermination | Bandit | MedianStopping | TruncationSelection | Asha


# --- a sweep -------------------------------------------------------------------------------


class SweepSpec(Message, frozen=True, kw_only=True):
    """What the user asked for (v1's ``HyperDriveConfig``). Immutable once accepted."""

    space: dict[str, Expression]
    sampling: Sampling
    policy: Policy = NoTermination()
    primary_metric: str
    goal: Goal
    max_total_trials: int  # an upper bound: a grid smaller than this ends sooner
    max_concurrent_trials: int | None = None  # None: as many as the target takes
    max_duration_s: float | None = None  # then running trials are canceled and the sweep ends


class Sweep(Message, frozen=True, kw_only=True):
    """A sweep's spec and progress, on the sweep's run record."""

    spec: SweepSpec
    issued: int = 0  # trials submitted so far: indexes 0 .. issued - 1
    best_run_id: str | None = None  # the trial with the best objective so far
    best_objective: float | None = None
    # why no more trials are submitted (None while it goes on): "max_total_trials reached",
    # "grid exhausted", "max_duration reached", "canceled"
    ended_because: str | None = None


class Trial(Message, frozen=True, kw_only=True):
    """One trial of a sweep, on its run record (``parent_id`` names the sweep)."""

    index: int  # 0, 1, ...: its place in the sweep (its run id is ``trial_run_id``)
    params: dict[str, ParamValue]
    objective: float | None = None  # its best value of the primary metric so far
    intervals: int = 0  # how many times it reported the primary metric


def trial_run_id(sweep_run_id: str, index: int) -> str:
    """A trial's run id: the sweep's and its index (as v1's ``HD_<id>_<n>``), so a trial
    submitted again after a restart is the same run, never a second one."""
    return f"{sweep_run_id}_{index}"


def argument_name(param: str) -> str:
    """The script argument a parameter becomes: ``lr`` and ``--lr`` both give ``--lr``."""
    return param if param.startswith("-") else f"--{param}"


def trial_arguments(params: dict[str, ParamValue]) -> list[str]:
    """A trial's parameters as script arguments, in the space's order (appended to the
    template's own arguments)."""
    out: list[str] = []
    for name, value in params.items():
        out += [argument_name(name), str(value)]
    return out
