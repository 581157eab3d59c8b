"""A pipeline survives its scheduler's kill -9: a real nats-server, a real scheduler and agent
as processes, and real step scripts passing data through ``PipelineData``.

The pipeline is a -> {b, c} -> d (a writes a number, b and c each derive one from it, d reads
both and logs their sum); c runs on its own target (box2, its own agent), the rest on box.
Each step pauses a little, so the scheduler is SIGKILLed while b and c run; it is started
again. The pipeline completes; every step has exactly one run (``step_run_id``), that ran
once, as attempt 1 (a ledger the scripts append to says so); b and c ran at the same time,
each on its target (both started before either ended); each step's status is completed with
its outputs, and d read what b and c wrote.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sortie.client.client import Client, NotFound
from sortie.client.pipeline_submit import PipelineOptions, StepConfig, submit_pipeline
from sortie.client.runconfig import RunConfiguration, ScriptRunConfig
from sortie.proto import pipelines as p
from sortie.proto.states import RunState
from tests.e2e.conftest import shared_dir
from tests.faults import Cluster, until

# One script for every step: appends "start RUN ATTEMPT" to the ledger, pauses, then writes
# its number (from its inputs' numbers) to its output directory and appends "end RUN
# ATTEMPT". d logs what it read.
STEP = """\
import argparse, os, pathlib, time
from sortie import Run

a = argparse.ArgumentParser()
a.add_argument("--step"); a.add_argument("--ledger"); a.add_argument("--pause", type=float)
a.add_argument("--read", nargs="*", default=[]); a.add_argument("--out", default="")
args = a.parse_args()
with open(args.ledger, "a") as f:
    f.write(f"start {os.environ['SORTIE_RUN_ID']} {os.environ['SORTIE_ATTEMPT']}\\n")
time.sleep(args.pause)
seen = [int(pathlib.Path(d, "n.txt").read_text()) for d in args.read]
n = {"a": lambda: 3, "b": lambda: 2 * seen[0], "c": lambda: seen[0] + 4}.get(
    args.step, lambda: sum(seen)
)()
if args.out:
    pathlib.Path(args.out, "n.txt").write_text(str(n))
with open(args.ledger, "a") as f:
    f.write(f"end {os.environ['SORTIE_RUN_ID']} {os.environ['SORTIE_ATTEMPT']}\\n")
if args.step == "d":
    Run.get_context().log("b", float(seen[0]))
    Run.get_context().log("c", float(seen[1]))
    Run.get_context().log("total", float(n))
"""

NAMES = ("a", "b", "c", "d")
PAUSE = {"a": 1.0, "b": 4.0, "c": 4.0, "d": 1.0}
TARGET = {"a": "box", "b": "box", "c": "box2", "d": "box"}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path / "c")
    c.start_broker()
    c.start_scheduler()
    c.start_agent("a1", "--target", "box", "--cpus", "3")
    c.start_agent("a2", "--target", "box2", "--cpus", "1")
    try:
        yield c
    finally:
        c.close()


def steps(src: Path, ledger: Path) -> list[StepConfig]:
    (src / "step.py").write_text(STEP)

    def step(name: str, read: list[str], out: str | None) -> StepConfig:
        arguments = ["--step", name, "--ledger", str(ledger), "--pause", str(PAUSE[name])]
        arguments += ["--read", *(p.data_token(r) for r in read)] if read else []
        arguments += ["--out", p.data_token(out)] if out else []
        config = ScriptRunConfig(
            source_directory=src,
            script="step.py",
            arguments=arguments,
            run_config=RunConfiguration(target=TARGET[name]),
        )
        return StepConfig(name=name, config=config, inputs=read, outputs=[out] if out else [])

    return [
        step("a", [], "from_a"),
        step("b", ["from_a"], "from_b"),
        step("c", ["from_a"], "from_c"),
        step("d", ["from_b", "from_c"], None),
    ]


async def _has_box(client: Client) -> bool:
    return {"box", "box2"} <= {t.name for t in await client.targets() if t.agents}


async def test_a_scheduler_killed_mid_pipeline_runs_each_step_once_and_completes(
    cluster: Cluster, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    ledger = shared_dir(cluster.root) / "ledger"
    async with await cluster.client() as client:
        await until(lambda: _has_box(client), 60)
        sub = await submit_pipeline(
            client, "diamond", steps(src, ledger), PipelineOptions(experiment="restart")
        )
        pid = sub.run_id
        ids = {n: p.step_run_id(pid, n) for n in NAMES}

        async def b_and_c_running() -> bool:
            for name in ("b", "c"):
                try:
                    rec = await client.get_run(ids[name])
                except NotFound:  # not written yet
                    return False
                if rec.state is not RunState.RUNNING:
                    return False
            return True

        await until(b_and_c_running, 120)
        pipe = await client.get_run(pid)
        assert pipe.state not in (RunState.COMPLETED, RunState.FAILED), pipe
        with pytest.raises(NotFound):  # d waits for b and c: the kill lands mid-pipeline
            await client.get_run(ids["d"])
        cluster.kill_scheduler()
        await asyncio.sleep(1.0)
        cluster.start_scheduler()

        try:
            rec = await asyncio.wait_for(client.wait(pid), 300)
        except TimeoutError:
            raise AssertionError(
                f"{await client.get_run(pid)}\n{cluster.log_tail('scheduler')}"
            ) from None
        children = await client.children(pid)
        runs = {n: await client.get_run(ids[n]) for n in NAMES}

    def where() -> str:
        return (
            "\n".join(
                f"{r.run_id} {r.state} attempt={r.attempt} history={r.history}"
                for r in runs.values()
            )
            + f"\npipeline: {rec.pipeline}\n{cluster.log_tail('scheduler')}"
        )

    assert rec.state is RunState.COMPLETED, (rec.error, where())
    assert rec.pipeline is not None
    status = rec.pipeline.steps

    # every step has exactly one run, the one step_run_id names, and it ran once, as attempt 1
    assert sorted(c.run_id for c in children) == sorted(ids.values()), where()
    assert {c.step for c in children} == set(NAMES)
    for name, run in runs.items():
        assert (run.state, run.attempt, run.step) == (RunState.COMPLETED, 1, name), where()
        assert {h.attempt for h in run.history} == {1}, where()
        assert run.parent_id == pid
    lines = [line.split() for line in ledger.read_text().splitlines()]
    starts = [rest for what, *rest in lines if what == "start"]
    assert sorted(starts) == sorted([ids[n], "1"] for n in NAMES), starts

    # b and c, independent, ran at once, each on its own target: both started before either
    # ended (the ledger's lines are in the order the scripts wrote them)
    order = [(what, run_id) for what, run_id, _ in lines]
    started = max(order.index(("start", ids[n])) for n in ("b", "c"))
    first_end = min(order.index(("end", ids[n])) for n in ("b", "c"))
    assert started < first_end, order
    assert {n: runs[n].spec.target for n in NAMES} == TARGET
    assert (runs["b"].agent_id, runs["c"].agent_id) == ("a1", "a2"), where()

    # each step's status: completed, its own run, its outputs as its run stored them
    for name in NAMES:
        assert status[name].state is p.StepState.COMPLETED, (name, status[name])
        assert status[name].run_id == ids[name], (name, status[name])
        assert status[name].outputs == runs[name].data_outputs, (name, status[name])
    assert set(status["a"].outputs) == {"from_a"}
    assert set(status["b"].outputs) == {"from_b"}
    assert set(status["c"].outputs) == {"from_c"}
    assert status["d"].outputs == {}

    # the data went where it should: d got b's and c's content, b and c got a's
    assert runs["b"].spec.data_inputs == status["a"].outputs
    assert runs["c"].spec.data_inputs == status["a"].outputs
    assert runs["d"].spec.data_inputs == {**status["b"].outputs, **status["c"].outputs}
    assert runs["d"].metrics == {"b": 6.0, "c": 7.0, "total": 13.0}, runs["d"].metrics
