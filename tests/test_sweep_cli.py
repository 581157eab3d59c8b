"""`sortie sweep submit`'s command line and a job file's ``sweep:`` section, parsed in-process
(``_parser``, as tests/test_jobfile.py does): flags and file give the same ``SweepSpec``
through the SDK's ``HyperDriveConfig``, flags override the file, bad input names what was
wrong (and in a file, the line). The CLI itself runs as a child process in
tests/e2e/test_sweep_cli_e2e.py."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from sortie.cli.jobfile import JobFileError, load
from sortie.cli.main import UsageError, _parser, _with_job_file
from sortie.cli.output import ArgvError
from sortie.cli.submit import run_config_of
from sortie.cli.sweeps import hyperdrive_config
from sortie.client.sweep_space import SweepConfigError
from sortie.proto import sweeps as s

REPO = Path(__file__).resolve().parents[1]

JOB = """\
source_directory: src
script: train.py
arguments: [--epochs, 3]
target: box
sweep:
  space:
    lr: loguniform(-6, -1)
    batch: [16, 32]
    opt: choice('adam', 'sgd')
  sampling: random
  seed: 9
  policy: bandit(slack_factor=0.1, delay_evaluation=2)
  primary_metric: acc
  goal: maximize
  max_total_trials: 12
  max_concurrent_trials: 3
"""

SPEC = s.SweepSpec(
    space={
        "lr": s.LogUniform(min_value=-6.0, max_value=-1.0),
        "batch": s.Choice(values=[16, 32]),
        "opt": s.Choice(values=["adam", "sgd"]),
    },
    sampling=s.RandomSampling(seed=9),
    policy=s.Bandit(slack_factor=0.1, delay_evaluation=2),
    primary_metric="acc",
    goal="maximize",
    max_total_trials=12,
    max_concurrent_trials=3,
    max_duration_s=10080 * 60.0,
)


def parsed(argv: list[str]) -> argparse.Namespace:
    return _with_job_file(_parser().parse_args(argv), argv)


def spec_of(argv: list[str]) -> s.SweepSpec:
    args = parsed(argv)
    return hyperdrive_config(args, run_config_of(args, [])).to_spec()


@pytest.fixture
def src(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.py").write_text("print('hi')\n")
    (tmp_path / "job.yml").write_text(JOB)
    return tmp_path


FLAGS = [
    "--script=train.py",
    "--arg=--epochs",
    "--arg=3",
    "--target=box",
    "--param=lr=loguniform(-6, -1)",
    "--param=batch=choice(16, 32)",
    "--param",
    "opt=choice('adam', 'sgd')",
    "--seed=9",
    "--policy=bandit(slack_factor=0.1, delay_evaluation=2)",
    "--metric=acc",
    "--goal=maximize",
    "--max-total=12",
    "--max-concurrent=3",
]


NO_SEED = [f for f in FLAGS if not f.startswith("--seed")]


def test_flags_and_job_file_give_the_same_sweep(src: Path) -> None:
    from_flags = spec_of(["sweep", "submit", str(src / "src"), *FLAGS])
    from_file = spec_of(["sweep", "submit", "-f", str(src / "job.yml")])
    assert from_flags == from_file == SPEC
    args = parsed(["sweep", "submit", "-f", str(src / "job.yml")])
    config = run_config_of(args, [])
    assert (config.script, config.arguments) == ("train.py", ["--epochs", "3"])


def test_flags_override_the_file(src: Path) -> None:
    spec = spec_of(
        [
            "sweep",
            "submit",
            "-f",
            str(src / "job.yml"),
            "--param=lr=uniform(0, 1)",  # a name given again: the flag wins
            "--param=extra=quniform(0, 4, 1)",
            "--policy=none",
            "--sampling=bayesian",
            "--max-total=80",
            "--max-duration-minutes=30",
        ]
    )
    assert spec.space["lr"] == s.Uniform(min_value=0.0, max_value=1.0)
    assert spec.space["extra"] == s.QUniform(min_value=0.0, max_value=4.0, q=1.0)
    assert spec.space["batch"] == s.Choice(values=[16, 32])
    assert spec.policy == s.NoTermination()
    assert spec.sampling == s.BayesianSampling(seed=9)
    assert (spec.max_total_trials, spec.max_duration_s) == (80, 1800.0)


def test_a_seed_is_chosen_when_none_is_given(src: Path) -> None:
    spec = spec_of(["sweep", "submit", str(src / "src"), *NO_SEED])
    assert isinstance(spec.sampling, s.RandomSampling) and spec.sampling.seed >= 0


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--param=lr"], "not NAME=EXPRESSION"),
        (["--param=lr=eval('1')"], "'eval' is not one of"),
        (["--param=lr=uniform(x, 1)"], "is not a literal"),
        (["--policy=bandit()"], "exactly one of slack_factor"),
        (["--policy=__import__('os')"], "'__import__' is not one of none, bandit"),
        (["--policy=os.system('x')"], "not of the form"),
        (["--sampling=sobol"], "invalid choice"),
        (["--goal=up"], "invalid choice"),
    ],
)
def test_bad_flags_are_refused_by_argparse(src: Path, extra: list[str], says: str) -> None:
    with pytest.raises(ArgvError, match=says):
        parsed(["sweep", "submit", str(src / "src"), *FLAGS, *extra])


@pytest.mark.parametrize(
    ("drop", "says"),
    [
        ("--metric=acc", "a sweep needs --metric"),
        ("--max-total=12", "a sweep needs --max-total"),
    ],
)
def test_a_sweep_missing_a_setting_is_refused_naming_it(src: Path, drop: str, says: str) -> None:
    argv = ["sweep", "submit", str(src / "src"), *(f for f in FLAGS if f != drop)]
    with pytest.raises(SweepConfigError, match=says):
        spec_of(argv)
    with pytest.raises(SweepConfigError, match="grid sampling takes only choice"):
        spec_of(["sweep", "submit", str(src / "src"), *NO_SEED, "--sampling=grid"])


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        ("lr: loguniform(-6, -1)", "lr: loguniform(-1, -6)", "job.yml:7: sweep.space.lr:"),
        ("lr: loguniform(-6, -1)", "lr: open('x')", "job.yml:7: sweep.space.lr:"),
        ("policy: bandit(", "policy: bandid(", "job.yml:12: sweep.policy: policy 'bandid"),
        ("goal: maximize", "goal: up", "job.yml:14: sweep.goal: expected one of"),
        ("max_total_trials: 12", "max_total_trials: 0", "job.yml:15: sweep.max_total_trials"),
        ("  seed: 9", "  sed: 9", "did you mean seed"),
    ],
)
def test_a_bad_sweep_section_names_the_line(src: Path, old: str, new: str, says: str) -> None:
    (src / "job.yml").write_text(JOB.replace(old, new))
    with pytest.raises(JobFileError, match=says.replace("(", "\\(")):
        load(src / "job.yml")


def test_run_submit_refuses_a_job_file_with_a_sweep(src: Path) -> None:
    with pytest.raises(UsageError, match="sortie sweep submit -f"):
        parsed(["run", "submit", "-f", str(src / "job.yml")])


def test_the_example_sweep_loads() -> None:
    spec = spec_of(["sweep", "submit", "-f", str(REPO / "examples" / "sweep.yml")])
    assert spec.primary_metric == "accuracy" and set(spec.space) == {"C", "gamma"}


def test_other_sweep_commands_parse() -> None:
    for argv in (
        ["sweep", "list", "--experiment", "e", "--limit", "3", "-o", "json"],
        ["sweep", "show", "S", "-o", "yaml"],
        ["sweep", "trials", "S"],
        ["sweep", "cancel", "S", "--output", "json"],
    ):
        assert _parser().parse_args(argv).sweep_command == argv[1]
