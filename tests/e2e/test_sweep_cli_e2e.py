"""Sweeps from the user's side, end to end: the `sortie sweep` CLI (as a child process) and the
SDK with v1's imports, against a real nats-server, scheduler and agent (processes), with a real
trial script that logs its objective with ``Run.get_context().log``.

- `sweep submit -f sweep.yml` (a job file's ``sweep:`` section with a flag overriding it), then
  `sweep show|trials|list --output json` name the best trial and agree with each other;
- `sweep cancel` on a running sweep ends it Canceled, its trials with it;
- ``Experiment.submit(HyperDriveConfig)`` -> ``wait_for_completion`` ->
  ``get_best_run_by_primary_metric()`` is the trial with the best metric;
- ``HyperDriveRun.cancel()`` (v1) and ``SweepRun.cancel()`` (native) end a sweep Canceled;
  the best run and the sorted trials leave out failed, canceled or metric-less trials when
  asked to.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults import Cluster

# A trial: its objective grows with --x (a little noise per interval), logged --points times.
TRAIN = """\
import argparse, hashlib, time
from sortie import Run

p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
p.add_argument("--points", type=int, default=4)
p.add_argument("--pause", type=float, default=0.1)
a = p.parse_args()
run = Run.get_context()
for i in range(1, a.points + 1):
    h = hashlib.sha256(f"{a.x} {i}".encode()).digest()[0] / 255.0
    run.log("acc", round(a.x * (0.5 + 0.5 * i / a.points) + 0.01 * (h - 0.5), 6))
    time.sleep(a.pause)
"""

JOB = """\
source_directory: src
script: train.py
target: box
experiment: sweeps
sweep:
  space:
    x: uniform(0.05, 1.0)
  sampling: random
  seed: 4
  policy: bandit(slack_factor=0.2, delay_evaluation=1)
  primary_metric: acc
  goal: maximize
  max_total_trials: 8
  max_concurrent_trials: 3
"""


def until(check: Any, timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something true (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("sweep-cli") / "c")
    c.start_broker()
    c.start_scheduler()
    c.start_agent("a1", "--target", "box", "--cpus", "3")
    try:
        until(lambda: _has_box(c), 60, "the agent of target box")
        yield c
    finally:
        c.close()


def _has_box(c: Cluster) -> bool:
    proc = c.cli("status", "--output", "json")
    return proc.returncode == 0 and '"box"' in proc.stdout


def cli_json(c: Cluster, *args: str, timeout: float = 120) -> Any:
    proc = c.cli(*args, "--output", "json", timeout=timeout)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return json.loads(proc.stdout)


def project(root: Path, job: str = JOB) -> Path:
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "train.py").write_text(TRAIN)
    (root / "sweep.yml").write_text(job)
    return root / "sweep.yml"


def test_sweep_submit_show_and_trials_name_the_best(cluster: Cluster, tmp_path: Path) -> None:
    job = project(tmp_path)
    # a flag overrides the file: 6 trials instead of 8. Seed 4 draws x = 0.70, 0.40, 0.95,
    # 0.76, 0.16, 0.56: the bandit (slack 0.2) stops at least 0.40 and 0.16, given the time to
    # (a report every 0.3 s)
    sub = cli_json(
        cluster, "sweep", "submit", "-f", str(job), "--max-total", "6", "--arg=--pause=0.3"
    )
    sweep_id = sub["run_id"]
    waited = cluster.cli("run", "wait", sweep_id, timeout=300)
    assert waited.returncode == 0, (waited.stdout, waited.stderr)

    show = cli_json(cluster, "sweep", "show", sweep_id)
    trials = cli_json(cluster, "sweep", "trials", sweep_id)
    assert show["state"] == "Completed"
    assert show["spec"]["max_total_trials"] == 6
    assert show["spec"]["policy"]["kind"] == "bandit"
    assert show["issued"] == 6
    assert sorted(t["index"] for t in trials) == list(range(6))
    scored = [t for t in trials if t["objective"] is not None]
    # sorted best first (maximize), trials without a metric after them
    assert [t["objective"] for t in scored] == sorted(
        (t["objective"] for t in scored), reverse=True
    )
    assert trials[: len(scored)] == scored
    best = scored[0]
    assert show["best"]["run_id"] == best["run_id"]
    assert show["best"]["objective"] == best["objective"]
    assert show["best"]["params"] == best["params"]
    assert best["state"] == "Completed"
    stopped = {t["run_id"]: t for t in trials if t["stop_reason"]}
    early = {t["run_id"] for t in trials if (t["error"] or {}).get("kind") == "early_terminated"}
    assert early, trials  # the policy stopped some trial
    assert [e["run_id"] for e in show["early_terminated"]] == sorted(
        early, key=lambda r: next(t["index"] for t in trials if t["run_id"] == r)
    )
    for entry in show["early_terminated"]:  # why each stopped trial stopped
        assert entry["reason"]
        assert stopped[entry["run_id"]]["state"] == "Canceled"
        assert stopped[entry["run_id"]]["error"]["kind"] == "early_terminated"
    listed = cli_json(cluster, "sweep", "list", "--experiment", "sweeps")
    assert sweep_id in [s["run_id"] for s in listed]
    row = next(s for s in listed if s["run_id"] == sweep_id)
    assert (row["sampling"], row["primary_metric"], row["goal"]) == ("random", "acc", "maximize")
    text = cluster.cli("sweep", "show", sweep_id)
    assert text.returncode == 0 and best["run_id"] in text.stdout


def test_sweep_cancel_ends_a_running_sweep_canceled(cluster: Cluster, tmp_path: Path) -> None:
    job = project(tmp_path)
    sub = cli_json(
        cluster,
        "sweep",
        "submit",
        "-f",
        str(job),
        "--policy",
        "none",
        "--arg=--points=200",
        "--arg=--pause=0.5",
    )
    sweep_id = sub["run_id"]

    def running() -> bool:
        return any(t["state"] == "Running" for t in cli_json(cluster, "sweep", "trials", sweep_id))

    until(running, 120, "a running trial")
    cancel = cli_json(cluster, "sweep", "cancel", sweep_id)
    assert cancel["run_id"] == sweep_id
    waited = cluster.cli("run", "wait", sweep_id, timeout=120)
    assert waited.returncode == 1  # it did not complete
    show = cli_json(cluster, "sweep", "show", sweep_id)
    assert show["state"] == "Canceled"
    trials = cli_json(cluster, "sweep", "trials", sweep_id)
    assert trials
    terminal = {"Completed", "Failed", "Canceled"}
    assert all(t["state"] in terminal for t in trials), trials
    assert any(t["state"] == "Canceled" for t in trials), trials
    # a run that is not a sweep is refused, saying what to use
    trial = trials[0]["run_id"]
    refused = cluster.cli("sweep", "show", trial)
    assert refused.returncode == 2 and "is not a sweep" in refused.stderr


def test_bad_sweep_input_is_refused_before_anything_is_sent(
    cluster: Cluster, tmp_path: Path
) -> None:
    job = project(tmp_path, JOB.replace("uniform(0.05, 1.0)", "uniform(1.0, 0.05)"))
    proc = cluster.cli("sweep", "submit", "-f", str(job))
    assert proc.returncode == 2
    assert "sweep.yml:7: sweep.space.x:" in proc.stderr and "min_value < max_value" in proc.stderr
    proc = cluster.cli("run", "submit", "-f", str(project(tmp_path)))
    assert proc.returncode == 2 and "sortie sweep submit -f" in proc.stderr
    proc = cluster.cli(
        "sweep",
        "submit",
        str(tmp_path / "src"),
        "--script",
        "train.py",
        "--param",
        "x=os.system('x')",
    )
    assert proc.returncode == 2 and "not of the form name(arguments)" in proc.stderr


def test_sdk_v1_submit_wait_and_best_run(cluster: Cluster, tmp_path: Path) -> None:
    from sortie.azureml.core import Experiment, Run, ScriptRunConfig, Workspace
    from sortie.azureml.train.hyperdrive import (
        GridParameterSampling,
        HyperDriveConfig,
        HyperDriveRun,
        PrimaryMetricGoal,
        choice,
    )

    project(tmp_path)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"url": cluster.url}))
    ws = Workspace.from_config(path=config)
    try:
        src = ScriptRunConfig(
            source_directory=str(tmp_path / "src"), script="train.py", compute_target="box"
        )
        hd_config = HyperDriveConfig(
            run_config=src,
            hyperparameter_sampling=GridParameterSampling({"--x": choice(0.2, 0.9, 0.5)}),
            primary_metric_name="acc",
            primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
            max_total_runs=3,
            max_concurrent_runs=2,
        )
        hd_run = Experiment(ws, "hd").submit(hd_config)
        assert isinstance(hd_run, HyperDriveRun)
        details = hd_run.wait_for_completion(show_output=True)
        assert details["state"] == "Completed"
        assert hd_run.get_status() == "Completed"

        best = hd_run.get_best_run_by_primary_metric()
        assert isinstance(best, Run)
        children = hd_run.get_children()
        assert len(children) == 3 and all(isinstance(c, Run) for c in children)
        params = hd_run.get_hyperparameters()
        assert set(params) == {c.id for c in children}
        assert json.loads(params[best.id]) == {"--x": 0.9}  # acc grows with x
        ranked = hd_run.get_children_sorted_by_primary_metric()
        assert ranked[0]["run_id"] == best.id
        assert [json.loads(r["hyperparameters"])["--x"] for r in ranked] == [0.9, 0.5, 0.2]
        assert ranked[0]["status"] == "Completed"
        assert (
            hd_run.get_children_sorted_by_primary_metric(top=1, reverse=True)[0]["run_id"]
            == ranked[-1]["run_id"]
        )
        metrics = hd_run.get_metrics()
        assert set(metrics) == {c.id for c in children}
        assert max(metrics[best.id]["acc"]) == ranked[0]["best_primary_metric"]
    finally:
        ws.close()


# A trial per outcome, by --x: 0.3 logs nothing, 0.5 completes, 0.9 (the best value) fails
# after logging it, 0.7 logs and goes on until it is canceled.
MIXED = """\
import argparse, sys, time
from sortie import Run

p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
a = p.parse_args()
run = Run.get_context()
if a.x != 0.3:
    run.log("acc", a.x)
if a.x == 0.9:
    sys.exit(1)
if a.x == 0.7:
    time.sleep(600)
"""


def test_sdk_v1_cancel_and_the_best_run_without_failed_or_canceled_trials(
    cluster: Cluster, tmp_path: Path
) -> None:
    from sortie.azureml.core import Experiment, ScriptRunConfig, Workspace
    from sortie.azureml.exceptions import ActivityFailedException
    from sortie.azureml.train.hyperdrive import (
        GridParameterSampling,
        HyperDriveConfig,
        PrimaryMetricGoal,
        choice,
    )

    project(tmp_path)
    (tmp_path / "src" / "train.py").write_text(MIXED)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"url": cluster.url}))
    ws = Workspace.from_config(path=config)
    try:
        src = ScriptRunConfig(
            source_directory=str(tmp_path / "src"), script="train.py", compute_target="box"
        )
        hd_config = HyperDriveConfig(
            run_config=src,
            hyperparameter_sampling=GridParameterSampling({"--x": choice(0.3, 0.5, 0.9, 0.7)}),
            primary_metric_name="acc",
            primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
            max_total_runs=4,
            max_concurrent_runs=3,
        )
        hd_run = Experiment(ws, "hd-cancel").submit(hd_config)

        def x_of(row: dict[str, Any]) -> float:
            return float(json.loads(row["hyperparameters"])["--x"])

        def settled() -> dict[float, tuple[str, float | None]] | None:
            rows = hd_run.get_children_sorted_by_primary_metric()
            seen = {x_of(r): (r["status"], r["best_primary_metric"]) for r in rows}
            want = {
                0.3: ("Completed", None),
                0.5: ("Completed", 0.5),
                0.9: ("Failed", 0.9),
                0.7: ("Running", 0.7),
            }
            return seen if seen == want else None

        # on a fresh agent the three first trials wait on one environment build together
        until(settled, 100, "three ended trials and 0.7 running with its metric")
        assert hd_run.cancel() is True
        with pytest.raises(ActivityFailedException, match="Canceled"):
            hd_run.wait_for_completion()
        assert hd_run.get_status() == "Canceled"
        rows = hd_run.get_children_sorted_by_primary_metric()
        by_x = {x_of(r): r for r in rows}
        assert by_x[0.7]["status"] == "Canceled"
        assert [x_of(r) for r in rows] == [0.9, 0.7, 0.5, 0.3]  # no metric: last
        assert rows[-1]["best_primary_metric"] is None
        kept = hd_run.get_children_sorted_by_primary_metric(discard_no_metric=True)
        assert [x_of(r) for r in kept] == [0.9, 0.7, 0.5]
        worst = hd_run.get_children_sorted_by_primary_metric(reverse=True, discard_no_metric=True)
        assert [x_of(r) for r in worst] == [0.5, 0.7, 0.9]

        def best(**flags: bool) -> str | None:
            run = hd_run.get_best_run_by_primary_metric(**flags)
            return None if run is None else run.id

        assert best() == by_x[0.9]["run_id"]  # failed, but the best value
        assert best(include_failed=False) == by_x[0.7]["run_id"]  # canceled
        assert best(include_canceled=False) == by_x[0.9]["run_id"]
        assert best(include_failed=False, include_canceled=False) == by_x[0.5]["run_id"]
    finally:
        ws.close()


def test_sdk_native_sweep_run_cancel(cluster: Cluster, tmp_path: Path) -> None:
    from sortie import (
        Experiment,
        GridParameterSampling,
        HyperDriveConfig,
        PrimaryMetricGoal,
        ScriptRunConfig,
        SweepRun,
        Workspace,
        choice,
    )

    project(tmp_path)
    (tmp_path / "src" / "train.py").write_text(MIXED)
    ws = Workspace.connect(cluster.url)
    try:
        config = HyperDriveConfig(
            run_config=ScriptRunConfig(
                source_directory=str(tmp_path / "src"), script="train.py", compute_target="box"
            ),
            hyperparameter_sampling=GridParameterSampling({"--x": choice(0.7)}),
            primary_metric_name="acc",
            primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
            max_total_runs=1,
        )
        sweep = Experiment(ws, "native-cancel").submit(config)
        assert isinstance(sweep, SweepRun)

        def running() -> bool:
            rows = sweep.get_children_sorted_by_primary_metric()
            return [(r["status"], r["best_primary_metric"]) for r in rows] == [("Running", 0.7)]

        until(running, 100, "the trial running with its metric")
        assert sweep.cancel() in {"Running", "Canceled"}  # the state once the cancel is accepted
        details = sweep.wait_for_completion(raise_on_error=False)
        assert details["state"] == "Canceled"
        assert details["ended_because"] == "canceled"
        assert sweep.get_status() == "Canceled"
        (trial,) = sweep.get_children()
        assert trial.get_status() == "Canceled"
    finally:
        ws.close()
