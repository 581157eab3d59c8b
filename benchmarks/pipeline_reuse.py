"""A fully reused pipeline: submit -> pipeline run Completed, every step reused.

A real nats-server (fsync on), the real scheduler and one real agent as processes
(``tests/faults.py``'s ``Cluster``). A chain of ``--steps`` trivial steps (each writes one
small file into its ``PipelineData`` output; each after the first reads the one before) is
submitted once and runs for real, filling the step cache; then it is submitted
``--repeats`` more times through the client library (``submit_pipeline``: the snapshot
checked and found uploaded, the request checked, then submitted), each time waiting for the
pipeline run to end. Every step of those is reused (asserted), so what is timed is the
client's submit, the scheduler's admission, one controller pass that reuses every step and
ends the pipeline, the store writes, and the client seeing the end. Target: p50 <= 1 s.

Prints one JSON document on stdout and a short line on stderr.

    .venv/bin/python -m benchmarks.pipeline_reuse [--steps 20] [--repeats 7]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sortie.client.client import Client
from sortie.client.pipeline_submit import PipelineOptions, StepConfig, submit_pipeline
from sortie.client.runconfig import RunConfiguration, ScriptRunConfig
from sortie.proto import messages as m
from sortie.proto import pipelines as p
from sortie.proto.states import RunState
from tests.faults import Cluster, until

STEP = """\
import pathlib, sys
out = pathlib.Path(sys.argv[1])
previous = pathlib.Path(sys.argv[2]).joinpath("v.txt").read_text() if len(sys.argv) > 2 else ""
out.joinpath("v.txt").write_text(previous + "x")
"""


def chain(src: Path, steps: int) -> list[StepConfig]:
    out: list[StepConfig] = []
    for i in range(steps):
        arguments = [p.data_token(f"d{i}")] + ([p.data_token(f"d{i - 1}")] if i else [])
        config = ScriptRunConfig(
            source_directory=src,
            script="step.py",
            arguments=arguments,
            run_config=RunConfiguration(target="bench"),
        )
        out.append(
            StepConfig(
                name=f"s{i}",
                config=config,
                inputs=[f"d{i - 1}"] if i else [],
                outputs=[f"d{i}"],
            )
        )
    return out


async def submit_and_wait(client: Client, steps: list[StepConfig]) -> m.RunRecord:
    sub = await submit_pipeline(client, "chain", steps, PipelineOptions(experiment="bench"))
    return await asyncio.wait_for(client.wait(sub.run_id), 900)


async def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    src = root / "src"
    src.mkdir(parents=True)
    (src / "step.py").write_text(STEP)
    steps = chain(src, args.steps)
    cluster = Cluster(root / "c")
    cluster.start_broker()
    cluster.start_scheduler()
    cluster.start_agent("a1", "--target", "bench", "--cpus", "2")
    try:
        async with await cluster.client() as client:

            async def up() -> bool:
                return any(t.name == "bench" and t.agents for t in await client.targets())

            try:
                await until(up, 60)
            except AssertionError:
                raise SystemExit("no agent came up:\n" + cluster.log_tail("agent-a1")) from None
            t0 = time.perf_counter()
            first = await submit_and_wait(client, steps)
            fill_s = time.perf_counter() - t0
            if first.state is not RunState.COMPLETED:
                raise SystemExit(f"the first submission ended {first.state}: {first.error}")
            times: list[float] = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                rec = await submit_and_wait(client, steps)
                times.append(time.perf_counter() - t0)
                assert rec.state is RunState.COMPLETED and rec.pipeline is not None
                reused = [s for s in rec.pipeline.steps.values() if s.state is p.StepState.REUSED]
                assert len(reused) == args.steps, rec.pipeline.steps
    finally:
        cluster.close()
    return {
        "steps": args.steps,
        "repeats": args.repeats,
        "first_run_s": round(fill_s, 2),
        "reused_p50_s": round(statistics.median(times), 3),
        "reused_max_s": round(max(times), 3),
        "reused_min_s": round(min(times), 3),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sortie-pipeline-bench-") as tmp:
        Path(tmp).chmod(0o711)  # passable by the agent's run user (the tests do the same)
        out = asyncio.run(measure(args, Path(tmp)))
    print(json.dumps(out))
    print(
        f"{out['steps']}-step pipeline fully reused: submit -> Completed p50 "
        f"{out['reused_p50_s']} s (max {out['reused_max_s']} s, {out['repeats']} resubmits; "
        f"first run for real {out['first_run_s']} s; load {out['load_avg_1m']} on "
        f"{out['cpus']} CPUs)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
