"""Submit -> run process started, a burst of trivial runs, and a cached environment's cost.

Starts a real ``sortie up`` (broker with fsync, scheduler, one local agent) in a temporary
data directory and drives it with the client library (``sortie.client.Client``, what the
CLI and SDK use). Caches are warm: the snapshot's blobs are in the store, the agent's
snapshot cache holds them, the system-managed environment was built by a warm-up run.

- **latency**: ``--samples`` runs one after another of a one-line shell script that writes
  the time it started to a file; submit -> started = that time minus the time the
  ``submit`` call began (snapshot, validation, upload of nothing, submit, placement,
  Assign, materialise, start). p50 and p99.
- **burst**: ``--burst`` runs submitted at once (``--burst-window`` submits in flight),
  from the first submit to the end of the last run (its record Completed); runs/s.
- **env**: the same Python script (it writes ``time.time()`` first) in the agent's own
  interpreter (user-managed) and in a system-managed environment (``--env-pip``) that is
  already cached; the difference of the medians is what the cached environment costs.

With ``--ray`` the same three are measured on Ray Jobs (``ray start --head`` on this machine,
``JobSubmissionClient``) by ``benchmarks.peers`` run with ``--ray-python`` (a separate
environment with ``ray[default]``, never a project dependency), and the ratios are printed.
With ``--slurm`` ``peers.py slurm-latency`` starts a one-node Slurm cluster (``slurmctld`` and
``slurmd`` of Debian's ``slurm-wlm``, a config in a temporary directory; needs root and a
running ``munged``) and measures sbatch -> batch script started and the burst there.

Prints one JSON document on stdout and a short table on stderr.

    .venv/bin/python -m benchmarks.latency [--samples 100] [--burst 200] [--ray] [--slurm]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.peers import summary_ms  # stdlib-only: Ray's Python runs it too
from sortie.agents.isolation import ENV_RUN_WRITABLE
from sortie.bus.broker import free_port
from sortie.client.client import Client
from sortie.client.runconfig import (
    EnvironmentSection,
    PythonSection,
    RunConfiguration,
    ScriptRunConfig,
)

REPO = Path(__file__).resolve().parents[1]

STAMP_SH = 'date +%s.%N > "$STAMP"\n'
STAMP_PY = (
    "import os, time\n"
    "t = time.time()\n"
    "open(os.environ['STAMP'], 'w').write(repr(t))\n"
)  # fmt: skip


async def wait_stamp(path: Path, limit_s: float = 60) -> float:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            text = path.read_text().strip()  # noqa: ASYNC240 - a tiny local file, polled
            if text:
                return float(text)
        except FileNotFoundError:
            pass
        await asyncio.sleep(0.002)
    raise SystemExit(f"run never started (no {path})")


async def started_after_submit(
    client: Client, src: Path, stamps: Path, script: str, env: PythonSection, *, n: int
) -> list[float]:
    out = []
    for i in range(n):
        stamp = stamps / f"{script}-{env.user_managed_dependencies}-{i}-{time.time_ns()}"
        run_config = RunConfiguration(
            environment=EnvironmentSection(python=env), environment_variables={"STAMP": str(stamp)}
        )
        config = ScriptRunConfig(source_directory=src, script=script, run_config=run_config)
        t0 = time.time()
        sub = await client.submit(config, experiment="latency")
        began = await wait_stamp(stamp)
        out.append(began - t0)
        await client.wait(sub.run_id)  # one at a time: the next starts on an idle agent
    return out


async def burst(client: Client, src: Path, n: int, window: int) -> dict[str, Any]:
    sem = asyncio.Semaphore(window)
    ids: list[str] = []

    async def one() -> None:
        async with sem:
            config = ScriptRunConfig(source_directory=src, script="noop.sh")
            sub = await client.submit(config, experiment="burst")
            ids.append(sub.run_id)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    submitted = time.perf_counter() - t0
    states = [(await client.wait(r)).state for r in ids]
    elapsed = time.perf_counter() - t0
    return {
        "runs": n,
        "window": window,
        "submitted_s": round(submitted, 2),
        "first_submit_to_last_end_s": round(elapsed, 2),
        "runs_per_s": round(n / elapsed, 1),
        "completed": sum(1 for s in states if s == "Completed"),
    }


def start_up(root: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """`sortie up` under ``root`` (with ``extra`` options; no dashboard unless they ask for
    one), once it is ready; the profile it writes becomes this process's."""
    if "--dashboard-port" not in extra:
        extra = (*extra, "--dashboard-port", "0")
    env = dict(os.environ, PYTHONPATH=str(REPO), SORTIE_PROFILE=str(root / "profile.json"))
    # the runs write their stamps there: a run may write nothing else outside its own dirs
    env[ENV_RUN_WRITABLE] = str(root / "stamps")
    env.pop("SORTIE_URL", None)
    log = open(root / "up.log", "wb")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [sys.executable, "-m", "sortie.cli", "up", "--data-dir", str(root / "data"),
         "--port", str(port), *extra],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "Sortie ready" in (root / "up.log").read_text(errors="replace"):
            os.environ["SORTIE_PROFILE"] = env["SORTIE_PROFILE"]
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit("sortie up did not start:\n" + (root / "up.log").read_text()[-3000:])


async def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    src = root / "src"
    src.mkdir()
    (src / "stamp.sh").write_text(STAMP_SH)
    (src / "stamp.py").write_text(STAMP_PY)
    (src / "noop.sh").write_text("true\n")
    stamps = root / "stamps"
    stamps.mkdir()
    stamps.chmod(0o1777)  # as root, the runs are another user's
    proc = start_up(root, free_port())
    try:
        client = await Client.connect()
        user = PythonSection()
        managed = PythonSection(user_managed_dependencies=False, pip_packages=list(args.env_pip))
        # warm-up: blobs in the store and the agent's cache, the environment built
        await started_after_submit(client, src, stamps, "stamp.sh", user, n=3)
        await started_after_submit(client, src, stamps, "stamp.py", managed, n=1)
        result: dict[str, Any] = {}
        lat = await started_after_submit(client, src, stamps, "stamp.sh", user, n=args.samples)
        result["submit_to_started"] = summary_ms(lat)
        n = args.env_samples
        plain = await started_after_submit(client, src, stamps, "stamp.py", user, n=n)
        cached = await started_after_submit(client, src, stamps, "stamp.py", managed, n=n)
        result["env"] = {
            "pip": list(args.env_pip),
            "user_managed": summary_ms(plain),
            "system_managed_cached": summary_ms(cached),
            "overhead_ms": round((statistics.median(cached) - statistics.median(plain)) * 1000, 1),
        }
        if args.burst:
            result["burst"] = await burst(client, src, args.burst, args.burst_window)
        await client.close()
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def ray_side(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        args.ray_python, "-m", "benchmarks.peers", "ray-latency",
        "--samples", str(args.samples), "--env-samples", str(args.env_samples),
        "--burst", str(args.burst), "--burst-window", str(args.burst_window),
        "--env-pip", *args.env_pip,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False, cwd=REPO)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return dict(json.loads(done.stdout))


def slurm_side(args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "benchmarks.peers", "slurm-latency",
        "--samples", str(args.samples), "--burst", str(args.burst),
        "--sched-params", args.slurm_sched_params,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False, cwd=REPO)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    return dict(json.loads(done.stdout))


def main() -> int:
    args = _parse_args()
    with tempfile.TemporaryDirectory(prefix="sortie-latency-") as tmp:
        Path(tmp).chmod(0o711)  # as root, runs start as sortie-run, who must pass it
        result: dict[str, Any] = {"sortie": asyncio.run(measure(args, Path(tmp)))}
    if args.ray:
        result["ray"] = ray_side(args)
    if args.slurm:
        result["slurm"] = slurm_side(args)
    s = result["sortie"]
    targets = {
        "p50_ms": 50,
        "p99_ms": 150,
        "burst_runs_per_s": 20,
        "env_overhead_ms": 50,
    }
    result["targets"] = targets
    result["met"] = {
        "p50": s["submit_to_started"]["p50_ms"] <= 50,
        "p99": s["submit_to_started"]["p99_ms"] <= 150,
        "burst": "burst" not in s or s["burst"]["runs_per_s"] >= 20,
        "env": s["env"]["overhead_ms"] <= 50,
    }
    print(json.dumps(result, indent=2))
    print("\n".join(_comparison_lines(result)), file=sys.stderr)
    return 0


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--env-samples", type=int, default=30)
    p.add_argument("--env-pip", nargs="+", default=["six"])
    p.add_argument("--burst", type=int, default=200, help="0: skip")
    p.add_argument("--burst-window", type=int, default=200)
    p.add_argument("--ray", action="store_true", help="measure Ray Jobs side by side")
    p.add_argument("--ray-python", default="/tmp/ray-venv/bin/python")
    p.add_argument("--slurm", action="store_true", help="measure a one-node Slurm side by side")
    p.add_argument("--slurm-sched-params", default="", help="Slurm SchedulerParameters")
    return p.parse_args()


def _comparison_lines(result: dict[str, Any]) -> list[str]:
    """Sortie's numbers beside each peer's (Ray, Slurm) that was measured, one line each."""
    s = result["sortie"]
    rows = [
        ("submit -> started p50 / p99 (ms)", s["submit_to_started"], "p50_ms", "p99_ms"),
    ]
    lines = []
    peers = [(k, result[k]) for k in ("ray", "slurm") if k in result]
    for name, d, a, b in rows:
        line = f"{name:<40} sortie {d[a]} / {d[b]}"
        for k, r in peers:
            if "submit_to_started" in r:
                rr = r["submit_to_started"]
                line += f"   {k} {rr[a]} / {rr[b]}   {k}/sortie p50 x{rr[a] / d[a]:.1f}"
        lines.append(line)
    if "burst" in s:
        sb = s["burst"]["runs_per_s"]
        line = f"{'burst runs/s':<40} sortie {sb}"
        for k, r in peers:
            if "burst" in r:
                rb = r["burst"]["runs_per_s"]
                line += f"   {k} {rb}   sortie/{k} x{sb / rb:.1f}"
        lines.append(line)
    line = f"{'cached env overhead (ms)':<40} sortie {s['env']['overhead_ms']}"
    for k, r in peers:
        if "env" in r:
            line += f"   {k} {r['env']['overhead_ms']}"
        if "env_error" in r:
            line += f"   {k} env failed (see JSON)"
    lines.append(line)
    for k, r in peers:
        if "error" in r:
            lines.append(f"{k} failed: {r['error'][-300:]}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
