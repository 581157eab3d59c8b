"""Sweeps end to end: a real nats-server, a real scheduler and agent as processes, and real
trial scripts that log their objective with ``Run.get_context().log``.

- a random sweep under Bandit: the poor trials are stopped (their scripts' ``stop_reason()``
  says ``early_terminated``) and end Canceled with ``early_terminated`` and a reason, the
  sweep completes and names the best trial; a user's cancel of a trial, or of the sweep,
  still says ``canceled``;
- a Bayesian sweep on a smooth objective: its later trials beat its first ones;
- the scheduler killed with SIGKILL mid-sweep: every trial index exists once, none ran a
  second attempt because of the restart, the sweep finishes; a grid sweep under Bandit so
  killed runs every grid point once, and the policy, fed the trials' metrics again from the
  stream, still stops the poor trials issued after the restart.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sortie.client.client import Client
from sortie.client.runconfig import RunConfiguration, ScriptRunConfig
from sortie.proto import messages as m
from sortie.proto import sweeps as sw
from sortie.proto.run_errors import ErrorKind
from sortie.proto.states import RunState
from tests.e2e.conftest import shared_dir
from tests.faults import Cluster, until

# A trial: its objective is a function of --x, logged once per interval (a little noise on
# the way up), as a training script logs its accuracy per epoch. With --stopped it writes what
# Run.stop_reason() says when it gets SIGTERM there, as a script that checkpoints would.
NOISY = """\
import argparse, hashlib, os, signal, sys, time
from sortie import Run

p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
p.add_argument("--points", type=int, default=10)
p.add_argument("--pause", type=float, default=0.2)
p.add_argument("--ledger", default="")
p.add_argument("--stopped", default="")
a = p.parse_args()
run = Run.get_context()
if a.stopped:
    def stop(*_):
        with open(a.stopped, "a") as f:
            f.write(f"{os.environ['SORTIE_RUN_ID']} {run.stop_reason()}\\n")
        sys.exit(143)
    signal.signal(signal.SIGTERM, stop)
if a.ledger:
    with open(a.ledger, "a") as f:
        f.write(f"start {os.environ['SORTIE_RUN_ID']} {os.environ['SORTIE_ATTEMPT']}\\n")
for i in range(1, a.points + 1):
    h = hashlib.sha256(f"{a.x} {i}".encode()).digest()[0] / 255.0
    run.log("acc", round(a.x * (0.5 + 0.5 * i / a.points) + 0.02 * (h - 0.5), 6))
    time.sleep(a.pause)
"""

SMOOTH = """\
import argparse
from sortie import Run

p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
a = p.parse_args()
Run.get_context().log("score", -((a.x - 0.7) ** 2))
"""


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path / "c")
    c.start_broker()
    c.start_scheduler()
    c.start_agent("a1", "--target", "box", "--cpus", "3")
    try:
        yield c
    finally:
        c.close()


def config(tmp_path: Path, body: str, *arguments: str) -> ScriptRunConfig:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "train.py").write_text(body)
    return ScriptRunConfig(
        source_directory=src,
        script="train.py",
        arguments=list(arguments),
        run_config=RunConfiguration(target="box"),
    )


async def _has_box(client: Client) -> bool:
    return "box" in {t.name for t in await client.targets()}


async def finished(client: Client, sweep_id: str, timeout: float) -> m.RunRecord:
    rec = await asyncio.wait_for(client.wait(sweep_id), timeout)
    assert rec.sweep is not None
    return rec


async def test_a_random_sweep_under_bandit_stops_the_poor_trials_and_names_the_best(
    cluster: Cluster, tmp_path: Path
) -> None:
    sweep = sw.SweepSpec(
        space={"x": sw.Uniform(min_value=0.05, max_value=1.0)},
        sampling=sw.RandomSampling(seed=11),
        policy=sw.Bandit(slack_factor=0.15, evaluation_interval=1, delay_evaluation=2),
        primary_metric="acc",
        goal="maximize",
        max_total_trials=12,
        max_concurrent_trials=3,
    )
    said = shared_dir(cluster.root) / "stopped"
    async with await cluster.client() as client:
        await until(lambda: _has_box(client), 30)
        sub = await client.submit(config(tmp_path, NOISY, "--stopped", str(said)), sweep=sweep)
        rec = await finished(client, sub.run_id, 300)
        trials = await client.children(sub.run_id)
    assert rec.state is RunState.COMPLETED, rec
    assert rec.sweep is not None and rec.sweep.issued == 12
    assert sorted(t.trial.index for t in trials if t.trial) == list(range(12))
    stopped = [
        t for t in trials if t.error is not None and t.error.kind is ErrorKind.EARLY_TERMINATED
    ]
    assert stopped, [(t.run_id, t.state, t.trial) for t in trials]
    for t in stopped:
        assert t.state is RunState.CANCELED and t.error is not None and t.error.message
    # each stopped trial's script was told why on SIGTERM; no other trial got one
    told = dict(line.split() for line in said.read_text().splitlines())
    assert told == {t.run_id: "early_terminated" for t in stopped}, told
    objectives = {t.run_id: t.trial.objective for t in trials if t.trial and t.trial.objective}
    best = max(objectives, key=lambda r: objectives[r])
    assert rec.sweep.best_run_id == best
    assert rec.sweep.best_objective == objectives[best]
    assert all(objectives.get(t.run_id, 0.0) < objectives[best] for t in stopped)
    assert next(t for t in trials if t.run_id == best).state is RunState.COMPLETED


async def test_a_bayesian_sweep_s_later_trials_beat_its_first_ones(
    cluster: Cluster, tmp_path: Path
) -> None:
    # TPE draws its first 10 points at random, then models what ended: 21 trials, 2 at once
    sweep = sw.SweepSpec(
        space={"x": sw.Uniform(min_value=0.0, max_value=1.0)},
        sampling=sw.BayesianSampling(seed=5),
        primary_metric="score",
        goal="maximize",
        max_total_trials=21,
        max_concurrent_trials=2,
    )
    async with await cluster.client() as client:
        await until(lambda: _has_box(client), 30)
        sub = await client.submit(config(tmp_path, SMOOTH), sweep=sweep)
        rec = await finished(client, sub.run_id, 420)
        trials = await client.children(sub.run_id)
    assert rec.state is RunState.COMPLETED, rec
    by_index = sorted((t.trial.index, t.trial.objective) for t in trials if t.trial)
    assert [i for i, _ in by_index] == list(range(21))
    values = [v for _, v in by_index]
    assert all(v is not None for v in values), by_index
    first = statistics.mean(v for v in values[:7] if v is not None)
    last = statistics.mean(v for v in values[-7:] if v is not None)
    assert last > first, by_index
    assert rec.sweep is not None and rec.sweep.best_objective == max(
        v for v in values if v is not None
    )


async def test_a_scheduler_killed_mid_sweep_loses_no_trial_and_runs_none_twice(
    cluster: Cluster, tmp_path: Path
) -> None:
    ledger = shared_dir(cluster.root) / "ledger"
    total = 8
    sweep = sw.SweepSpec(
        space={"x": sw.Uniform(min_value=0.1, max_value=1.0)},
        sampling=sw.RandomSampling(seed=3),
        primary_metric="acc",
        goal="maximize",
        max_total_trials=total,
        max_concurrent_trials=2,
    )
    opts = config(tmp_path, NOISY, "--ledger", str(ledger), "--points", "8", "--pause", "0.25")
    async with await cluster.client() as client:
        await until(lambda: _has_box(client), 30)
        sub = await client.submit(opts, sweep=sweep)

        async def mid_sweep() -> bool:
            rec = await client.get_run(sub.run_id)
            return rec.sweep is not None and 3 <= rec.sweep.issued < total

        await until(mid_sweep, 120)
        cluster.kill_scheduler()
        await asyncio.sleep(1.0)
        cluster.start_scheduler()
        rec = await finished(client, sub.run_id, 300)
        trials = await client.children(sub.run_id)
    assert rec.state is RunState.COMPLETED, rec
    assert rec.sweep is not None and rec.sweep.issued == total
    assert sorted(t.trial.index for t in trials if t.trial) == list(range(total))
    assert len({t.run_id for t in trials}) == total
    assert all((t.state, t.attempt) == (RunState.COMPLETED, 1) for t in trials), [
        (t.run_id, t.state, t.attempt) for t in trials
    ]
    # the best is judged on every trial's metrics, those read again from the stream too
    objectives = [t.trial.objective for t in trials if t.trial and t.trial.objective]
    assert len(objectives) == total and rec.sweep.best_objective == max(objectives)
    starts = [line.split()[1:] for line in ledger.read_text().splitlines()]
    assert sorted(r for r, _ in starts) == sorted(t.run_id for t in trials), starts
    assert {a for _, a in starts} == {"1"}


async def test_a_grid_sweep_under_bandit_killed_mid_sweep_runs_every_point_once_and_still_stops(
    cluster: Cluster, tmp_path: Path
) -> None:
    ledger = shared_dir(cluster.root) / "ledger"
    # four good points first, then two poor ones: the kill comes before the poor ones are
    # issued, so the policy that stops them judges them against trials of before the restart
    xs = [1.0, 0.98, 0.96, 0.94, 0.15, 0.1]
    sweep = sw.SweepSpec(
        space={"x": sw.Choice(values=list(xs))},
        sampling=sw.GridSampling(),
        policy=sw.Bandit(slack_factor=0.15, evaluation_interval=1, delay_evaluation=2),
        primary_metric="acc",
        goal="maximize",
        max_total_trials=10,  # more than the grid: it ends when the grid is exhausted
        max_concurrent_trials=2,
    )
    opts = config(tmp_path, NOISY, "--ledger", str(ledger), "--points", "8", "--pause", "0.25")
    async with await cluster.client() as client:
        await until(lambda: _has_box(client), 30)
        sub = await client.submit(opts, sweep=sweep)

        async def mid_sweep() -> bool:
            rec = await client.get_run(sub.run_id)
            return rec.sweep is not None and 3 <= rec.sweep.issued <= 4

        await until(mid_sweep, 120)
        cluster.kill_scheduler()
        killed_at = time.time()
        await asyncio.sleep(1.0)
        cluster.start_scheduler()
        rec = await finished(client, sub.run_id, 300)
        trials = await client.children(sub.run_id)
    assert rec.state is RunState.COMPLETED, rec
    assert rec.sweep is not None
    assert (rec.sweep.issued, rec.sweep.ended_because) == (len(xs), "grid exhausted")
    by_index = {t.trial.index: t for t in trials if t.trial}
    assert len(trials) == len(by_index) == len({t.run_id for t in trials}) == len(xs)
    # every grid point ran, each once, at its place in the grid
    assert [by_index[i].trial.params for i in range(len(xs)) if by_index[i].trial] == [
        {"x": x} for x in xs
    ]
    starts = [line.split()[1:] for line in ledger.read_text().splitlines()]
    assert sorted(r for r, _ in starts) == sorted(t.run_id for t in trials), starts
    assert {a for _, a in starts} == {"1"}
    seen = [(i, t.state, t.attempt, t.error) for i, t in sorted(by_index.items())]
    for i in range(4):
        assert (by_index[i].state, by_index[i].attempt) == (RunState.COMPLETED, 1), seen
    for i in (4, 5):
        poor = by_index[i]
        assert poor.created_at > killed_at, seen  # issued by the restarted scheduler
        assert (poor.state, poor.attempt) == (RunState.CANCELED, 1), seen
        assert poor.error is not None and poor.error.kind is ErrorKind.EARLY_TERMINATED, seen
        assert poor.error.message.startswith("bandit: "), seen
    assert rec.sweep.best_run_id == by_index[0].run_id


async def test_a_user_s_cancel_of_a_trial_or_of_the_sweep_says_canceled_to_the_script(
    cluster: Cluster, tmp_path: Path
) -> None:
    ledger = shared_dir(cluster.root) / "ledger"
    said = shared_dir(cluster.root) / "stopped"
    sweep = sw.SweepSpec(
        space={"x": sw.Choice(values=[0.5, 0.52])},  # close: the policy stops neither
        sampling=sw.GridSampling(),
        policy=sw.Bandit(slack_factor=0.15, evaluation_interval=1, delay_evaluation=2),
        primary_metric="acc",
        goal="maximize",
        max_total_trials=2,
    )
    # long trials (about 30 s each): they are still running when canceled
    opts = config(
        tmp_path, NOISY, "--ledger", str(ledger), "--stopped", str(said), "--points", "300",
        "--pause", "0.1",
    )  # fmt: skip
    async with await cluster.client() as client:
        await until(lambda: _has_box(client), 30)
        sub = await client.submit(opts, sweep=sweep)

        async def both_started() -> bool:
            return ledger.exists() and len(ledger.read_text().splitlines()) == 2

        await until(both_started, 120)
        trials = sorted(await client.children(sub.run_id), key=lambda t: t.run_id)
        await client.cancel(trials[0].run_id)  # one trial, by the user
        await asyncio.wait_for(client.wait(trials[0].run_id), 60)
        await client.cancel(sub.run_id)  # then the whole sweep
        rec = await finished(client, sub.run_id, 120)
        trials = await client.children(sub.run_id)
    assert rec.state is RunState.CANCELED, rec
    assert [
        (t.state, t.error.kind if t.error else None) for t in sorted(trials, key=lambda t: t.run_id)
    ] == [(RunState.CANCELED, ErrorKind.CANCELED)] * 2
    told = dict(line.split() for line in said.read_text().splitlines())
    assert told == {t.run_id: "canceled" for t in trials}, told
