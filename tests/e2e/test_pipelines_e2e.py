"""Pipelines end to end: a real nats-server, a real scheduler and two agents (targets box1
and box2) as processes, and real step scripts passing data through ``PipelineData``.

- prep (box1) writes a dataset, train (box2) reads it and writes a model, evaluate (box1)
  reads the model and logs a metric: the pipeline completes;
- submitted again, all three steps are reused (no new step run);
- with train.py edited, train and evaluate run again and prep is reused, each saying which
  part of its key changed;
- a step that fails skips its downstream and fails the pipeline; once the cause is gone,
  ``rerun_pipeline`` resumes: the completed step is reused, the failed one runs;
- a cycle is refused before anything is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sortie.client.client import Client, RequestRefused
from sortie.client.pipeline_submit import (
    PipelineOptions,
    StepConfig,
    rerun_pipeline,
    submit_pipeline,
)
from sortie.client.runconfig import RunConfiguration, ScriptRunConfig
from sortie.proto import messages as m
from sortie.proto import pipelines as p
from sortie.proto.states import RunState
from tests.e2e.conftest import shared_dir
from tests.faults import Cluster, until

PREP = """\
import argparse, pathlib
a = argparse.ArgumentParser(); a.add_argument("--out"); args = a.parse_args()
pathlib.Path(args.out, "data.txt").write_text("1 2 3 4")
"""

TRAIN = """\
import argparse, pathlib, sys
SCALE = 1
a = argparse.ArgumentParser()
a.add_argument("--data"); a.add_argument("--out"); a.add_argument("--needs", default="")
args = a.parse_args()
if args.needs and not pathlib.Path(args.needs).exists():
    sys.exit(f"{args.needs} is missing")
rows = [int(x) for x in pathlib.Path(args.data, "data.txt").read_text().split()]
pathlib.Path(args.out, "model.txt").write_text(str(SCALE * sum(rows)))
"""

EVALUATE = """\
import argparse, pathlib
from sortie import Run
a = argparse.ArgumentParser(); a.add_argument("--model"); args = a.parse_args()
Run.get_context().log("score", float(pathlib.Path(args.model, "model.txt").read_text()))
"""

NAMES = ("prep", "train", "evaluate")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path / "c")
    c.start_broker()
    c.start_scheduler()
    c.start_agent("a1", "--target", "box1", "--cpus", "2")
    c.start_agent("a2", "--target", "box2", "--cpus", "2")
    try:
        yield c
    finally:
        c.close()


def sources(root: Path) -> dict[str, Path]:
    """Each step's own source directory (so editing one script changes one snapshot)."""
    out: dict[str, Path] = {}
    for name, body in zip(NAMES, (PREP, TRAIN, EVALUATE), strict=True):
        src = root / name
        src.mkdir(parents=True, exist_ok=True)
        (src / f"{name}.py").write_text(body)
        out[name] = src
    return out


def pipeline(src: dict[str, Path], *, needs: str = "", cyclic: bool = False) -> list[StepConfig]:
    data, model = p.data_token("dataset"), p.data_token("model")

    def step(name: str, target: str, *arguments: str) -> ScriptRunConfig:
        return ScriptRunConfig(
            source_directory=src[name],
            script=f"{name}.py",
            arguments=list(arguments),
            run_config=RunConfiguration(target=target),
        )

    train_args = ["--data", data, "--out", model] + (["--needs", needs] if needs else [])
    return [
        StepConfig(
            name="prep",
            config=step("prep", "box1", "--out", data),
            outputs=["dataset"],
            inputs=["model"] if cyclic else [],
        ),
        StepConfig(
            name="train",
            config=step("train", "box2", *train_args),
            inputs=["dataset"],
            outputs=["model"],
        ),
        StepConfig(
            name="evaluate", config=step("evaluate", "box1", "--model", model), inputs=["model"]
        ),
    ]


async def _targets_up(client: Client) -> bool:
    return {"box1", "box2"} <= {t.name for t in await client.targets() if t.agents}


async def run_pipeline(client: Client, steps: list[StepConfig]) -> m.RunRecord:
    sub = await submit_pipeline(client, "etl", steps, PipelineOptions(experiment="pipe"))
    return await ended(client, sub.run_id)


async def ended(client: Client, run_id: str) -> m.RunRecord:
    rec = await asyncio.wait_for(client.wait(run_id), 300)
    assert rec.pipeline is not None
    return rec


def step_states(rec: m.RunRecord) -> dict[str, p.StepState]:
    assert rec.pipeline is not None
    return {n: s.state for n, s in rec.pipeline.steps.items()}


async def test_a_pipeline_runs_on_two_targets_then_is_reused_then_reruns_what_changed(
    cluster: Cluster, tmp_path: Path
) -> None:
    src = sources(tmp_path / "src")
    async with await cluster.client() as client:
        await until(lambda: _targets_up(client), 60)
        first = await run_pipeline(client, pipeline(src))
        steps = {c.step: c for c in await client.children(first.run_id)}
        assert first.state is RunState.COMPLETED, (first.error, step_states(first))
        assert set(step_states(first).values()) == {p.StepState.COMPLETED}
        assert steps.keys() == set(NAMES)
        assert {n: r.agent_id for n, r in steps.items()} == {
            "prep": "a1",
            "train": "a2",
            "evaluate": "a1",
        }
        assert steps["train"].spec.data_inputs == steps["prep"].data_outputs
        assert steps["evaluate"].spec.data_inputs == steps["train"].data_outputs
        assert steps["evaluate"].metrics.get("score") == 10.0

        again = await run_pipeline(client, pipeline(src))
        assert again.state is RunState.COMPLETED, again.error
        assert again.pipeline is not None
        for name, reused in again.pipeline.steps.items():
            assert reused.state is p.StepState.REUSED, (name, reused)
            assert reused.run_id == steps[name].run_id
        assert await client.children(again.run_id) == []  # no step ran

        (src["train"] / "train.py").write_text(TRAIN.replace("SCALE = 1", "SCALE = 2"))
        edited = await run_pipeline(client, pipeline(src))
        assert edited.state is RunState.COMPLETED, edited.error
        assert edited.pipeline is not None
        status = edited.pipeline.steps
        assert step_states(edited) == {
            "prep": p.StepState.REUSED,
            "train": p.StepState.COMPLETED,
            "evaluate": p.StepState.COMPLETED,
        }
        assert status["prep"].run_id == steps["prep"].run_id
        assert status["train"].changed == ["snapshot_id"]
        assert status["evaluate"].changed == ["inputs.model"]  # a new model: new content
        children = {c.step: c for c in await client.children(edited.run_id)}
        assert sorted(c or "" for c in children) == ["evaluate", "train"]
        assert children["evaluate"].metrics.get("score") == 20.0


async def test_a_failed_step_skips_its_downstream_and_a_rerun_resumes(
    cluster: Cluster, tmp_path: Path
) -> None:
    src = sources(tmp_path / "src")
    flag = shared_dir(cluster.root) / "ready"
    async with await cluster.client() as client:
        await until(lambda: _targets_up(client), 60)
        with pytest.raises(RequestRefused, match="cycle"):
            await submit_pipeline(
                client, "etl", pipeline(src, cyclic=True), PipelineOptions(experiment="pipe")
            )
        failed = await run_pipeline(client, pipeline(src, needs=str(flag)))
        assert failed.state is RunState.FAILED
        assert step_states(failed) == {
            "prep": p.StepState.COMPLETED,
            "train": p.StepState.FAILED,
            "evaluate": p.StepState.SKIPPED,
        }
        assert failed.error is not None and "train" in failed.error.message

        flag.write_text("")
        resumed = await ended(client, await rerun_pipeline(client, failed.run_id))
        assert resumed.state is RunState.COMPLETED, resumed.error
        assert resumed.pipeline is not None and resumed.pipeline.rerun_of == failed.run_id
        assert step_states(resumed) == {
            "prep": p.StepState.REUSED,
            "train": p.StepState.COMPLETED,
            "evaluate": p.StepState.COMPLETED,
        }
        assert resumed.pipeline.steps["prep"].run_id == p.step_run_id(failed.run_id, "prep")
        ran = sorted(c.step or "" for c in await client.children(resumed.run_id))
        assert ran == ["evaluate", "train"]
