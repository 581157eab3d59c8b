"""What run isolation adds to starting a run: the agent's spawn with and without the sandbox.

The process executor's own steps, in this process, on a run directory like an agent's: with
isolation, ``executors.sandbox.prepare_spawn`` (private tmp; as root, handing the workdir of
``--files`` files to the run user; the Landlock ruleset) and the child's pre-exec hook (ids,
parent-death signal, ``landlock_restrict_self``); without, the plain pre-exec hook. Each
sample starts ``/bin/true`` the way ``start_process`` does and waits for it; the difference of
the medians is what isolation adds to submit -> started (``benchmarks.latency`` measures
the whole path).

    .venv/bin/python -m benchmarks.isolation [--samples 200] [--files 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sortie.agents.executors import AttemptFiles
from sortie.agents.executors.sandbox import (
    NO_ISOLATION,
    Isolation,
    IsolationError,
    make_isolation,
    prepare_spawn,
)
from sortie.bus.children import die_with_parent


def attempt_files(root: Path, i: int, n_files: int) -> AttemptFiles:
    here = root / "runs" / f"r{i}"
    workdir = here / "1"
    (workdir / "outputs").mkdir(parents=True)
    for k in range(n_files):
        (workdir / f"f{k}.py").write_text("x = 1\n")
    runtime = root / "runtime"
    runtime.mkdir(exist_ok=True)
    return AttemptFiles(
        workdir=workdir,
        runtime_dir=runtime,
        metrics=here / "1.metrics",
        stop_reason=here / "1.stop-reason",
        hostfile=here / "1.hostfile",
        pid_file=here / "1.pid",
    )


async def one(isolation: Isolation, files: AttemptFiles) -> float:
    t0 = time.perf_counter()
    if isolation is NO_ISOLATION:
        preexec, release = die_with_parent, None
    else:
        spawn = prepare_spawn(isolation, files, sys.executable)
        preexec, release = spawn.preexec, spawn.release
    proc = await asyncio.create_subprocess_exec(
        "/bin/true", cwd=files.workdir, start_new_session=True, preexec_fn=preexec
    )
    await proc.wait()
    if release is not None:
        release()
    return (time.perf_counter() - t0) * 1000


async def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    try:
        isolation = make_isolation(run_user=None, run_uids=None)
    except IsolationError as exc:
        raise SystemExit(f"isolation: {exc}") from None
    samples: dict[str, list[float]] = {"plain": [], "isolated": []}
    for i in range(args.samples):
        for name, iso in (("plain", NO_ISOLATION), ("isolated", isolation)):
            files = attempt_files(root / name, i, args.files)
            samples[name].append(await one(iso, files))
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "mode": isolation.mode,
        "samples": args.samples,
        "files_per_run": args.files,
        "start_plain_p50_ms": round(med["plain"], 3),
        "start_isolated_p50_ms": round(med["isolated"], 3),
        "isolation_adds_ms": round(med["isolated"] - med["plain"], 3),
        "goal_ms": 5.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--files", type=int, default=100, help="files in each run's snapshot")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sortie-isolation-"))
    try:
        tmp.chmod(0o711)  # as root, the run user must pass it
        result = asyncio.run(measure(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result, indent=2))
    print(
        f"isolation ({result['mode']}) adds {result['isolation_adds_ms']} ms to a run's start "
        f"(p50 {result['start_plain_p50_ms']} -> {result['start_isolated_p50_ms']} ms)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
