"""What fsync on every JetStream write costs (``sync_interval: always``, `sortie up`'s default).

Starts the embedded broker (``sortie.broker.start_broker``) twice, with and without
``sync_interval: always`` (`sortie up --no-fsync`), each in a fresh store directory, and
measures against each:

- **publish**: JetStream publish-with-ack of real, encoded ``RunReport`` messages into
  Sortie's reports stream: one at a time (latency p50/p99, and the rate that gives) and with a
  window of publishes in flight (rate).
- **kv**: compare-and-set updates (``update(key, value, last=revision)``) of real, encoded
  ``RunRecord`` values in Sortie's runs bucket: one key at a time (latency), and many keys with
  a window in flight, as the scheduler writes a cycle's changed runs (rate).
- **e2e** (``--e2e-runs``, 0 to skip): the real scheduler and one real agent (`sortie
  scheduler`, `sortie agent` processes) run trivial scripts submitted through the client:
  submits accepted per second, and runs completed per second.

Prints one JSON document on stdout (``--json`` for nothing else) and a short table on stderr.

    .venv/bin/python -m benchmarks.durability [--messages 5000] [--window 64] [--e2e-runs 40]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sortie.bus.broker import free_port, start_broker
from sortie.bus.connection import open_bus
from sortie.bus.resources import kv_stream
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.states import RunState

REPO = Path(__file__).resolve().parents[1]

MODES = {"fsync": True, "no_fsync": False}


# --- real messages -------------------------------------------------------------------------


def report(i: int) -> bytes:
    """A report as an agent sends it when a run ends."""
    return codec.encode(
        m.RunReport(
            agent_id="gpu-box-01",
            incarnation="6f23b890c91f6a17",
            run_id=f"default_1795381072_{i:08x}",
            attempt=1,
            state=RunState.COMPLETED,
            at=1795381072.25 + i,
            exit_code=0,
            artifacts=[m.Artifact(path="outputs/model.pkl", sha256="ab" * 32, size=123456)],
        )
    )


def record(run_id: str, step: int) -> bytes:
    """A run record as the scheduler stores it, ``step`` state changes into its life."""
    spec = m.RunSpec(
        experiment="digits",
        target="gpu-box",
        script="train.py",
        arguments=["--epochs", "10", "--lr", "0.01"],
        env_vars={"SEED": "1"},
        snapshot_id="cd" * 32,
        snapshot_files=12,
        snapshot_bytes=48_213,
        git=m.GitInfo(commit="1" * 40, branch="main", dirty=False),
        submission_id="e3b0c44298fc1c149afbf4c8996fb924",
    )
    states = [RunState.QUEUED, RunState.PREPARING, RunState.STARTING, RunState.RUNNING]
    history = [
        m.StateChange(state=states[k % len(states)], at=1795381072.0 + k, attempt=1)
        for k in range(step % 8 + 1)
    ]
    return codec.encode(
        m.RunRecord(
            run_id=run_id,
            spec=spec,
            state=history[-1].state,
            attempt=1,
            created_at=1795381072.0,
            agent_id="gpu-box-01",
            agent_incarnation="6f23b890c91f6a17",
            assigned_at=1795381072.5,
            history=history,
        )
    )


# --- measuring -----------------------------------------------------------------------------


def summary(latencies_s: list[float], elapsed_s: float) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies_s)
    return {
        "ops": len(ms),
        "per_s": round(len(ms) / elapsed_s, 1),
        "p50_ms": round(ms[len(ms) // 2], 3),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


async def sequential(n: int, op: Callable[[int], Awaitable[object]]) -> dict[str, float]:
    latencies = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await op(i)
        latencies.append(time.perf_counter() - t)
    return summary(latencies, time.perf_counter() - start)


async def windowed(n: int, window: int, op: Callable[[int], Awaitable[object]]) -> dict[str, float]:
    """``n`` operations with up to ``window`` in flight (``window`` workers taking the next)."""
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(window)))
    return summary(latencies, time.perf_counter() - start)


async def bench_broker(url: str, args: argparse.Namespace) -> dict[str, Any]:
    bus = await open_bus(url, "bench-durability", create=True)
    try:
        js = bus.js
        reports = [report(i) for i in range(args.messages)]
        subject = subjects.report("gpu-box-01")
        await js.publish(subject, reports[0])  # warm up the connection and the stream

        async def publish(i: int) -> None:
            await js.publish(subject, reports[i], timeout=30)

        out: dict[str, Any] = {"report_bytes": len(reports[0])}
        out["publish_1"] = await sequential(args.messages, publish)
        out[f"publish_{args.window}"] = await windowed(args.messages, args.window, publish)

        runs = bus.runs
        keys = [f"default_1795381072_{k:08x}" for k in range(args.keys)]
        revisions: dict[str, int] = {}
        for key in keys:
            revisions[key] = await runs.create(key, record(key, 0))
        out["record_bytes"] = len(record(keys[0], 7))

        async def update_one(i: int) -> None:
            key = keys[0]
            revisions[key] = await runs.update(key, record(key, i + 1), last=revisions[key])

        out["kv_cas_1"] = await sequential(args.updates, update_one)

        async def update_many(i: int) -> None:
            # each worker owns keys i % window, so no two writes to one key are in flight
            key = keys[i % len(keys)]
            revisions[key] = await runs.update(key, record(key, i + 1), last=revisions[key])

        out[f"kv_cas_{args.window}"] = await windowed(
            args.updates, min(args.window, len(keys)), update_many
        )
        # the scheduler of the end-to-end part must not see these made-up reports and runs
        await js.purge_stream(subjects.STREAM_REPORTS)
        await js.purge_stream(kv_stream(subjects.KV_RUNS))
        return out
    finally:
        await bus.close()


# --- end to end ----------------------------------------------------------------------------


def _daemon(url: str, log: Path, *argv: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO), SORTIE_PROFILE=str(log.parent / "profile"))
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "sortie.cli", "--url", url, "--log-level", "warning", *argv],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=fh,
            cwd=REPO,
        )


async def bench_e2e(url: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from sortie.client.client import Client
    from sortie.client.runconfig import RunConfiguration, ScriptRunConfig

    src = root / "src"
    src.mkdir()
    (src / "t.py").write_text("print('ok')\n")
    procs = [
        _daemon(url, root / "scheduler.log", "scheduler", "--data-dir", str(root / "sched")),
        _daemon(
            url,
            root / "agent.log",
            "agent",
            "--target",
            "bench",
            "--data-dir",
            str(root / "agent"),
        ),
    ]
    try:
        client = await Client.connect(url)
        try:
            await _wait_for_target(client, "bench", root)
            options = ScriptRunConfig(
                source_directory=src, script="t.py", run_config=RunConfiguration(target="bench")
            )
            await client.wait((await client.submit(options)).run_id)  # warm up
            submits, elapsed = await _submit_and_wait_all(client, options, args)
        finally:
            await client.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
    return {
        "runs": args.e2e_runs,
        "submits_in_flight": args.e2e_window,
        "submit": submits,  # snapshot check, validation, upload of nothing new, submit
        "runs_completed_per_s": round(args.e2e_runs / elapsed, 2),  # first submit to last end
    }


async def _wait_for_target(client: Any, name: str, root: Path) -> None:
    """Until an agent serving ``name`` has joined (60 s at most)."""
    deadline = time.monotonic() + 60
    while not any(t.name == name for t in await _targets(client)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agent did not join; see {root}/agent.log")
        await asyncio.sleep(0.2)


async def _submit_and_wait_all(
    client: Any, options: Any, args: argparse.Namespace
) -> tuple[dict[str, Any], float]:
    """``--e2e-runs`` submits, ``--e2e-window`` in flight; each must complete. The submit
    timings, and seconds from the first submit to the last end."""
    run_ids: list[str] = []
    ended: list[float] = []

    async def submit(_: int) -> None:
        run_ids.append((await client.submit(options)).run_id)

    async def wait(i: int) -> None:
        rec = await client.wait(run_ids[i])
        if rec.state != RunState.COMPLETED:
            raise RuntimeError(f"run {run_ids[i]} ended {rec.state}")
        ended.append(time.perf_counter())

    start = time.perf_counter()
    submits = await windowed(args.e2e_runs, args.e2e_window, submit)
    await asyncio.gather(*(wait(i) for i in range(len(run_ids))))
    return submits, max(ended) - start


async def _targets(client: Any) -> list[m.TargetInfo]:
    with contextlib.suppress(Exception):  # no scheduler answering yet
        targets: list[m.TargetInfo] = await client.targets()
        return targets
    return []


# --- one mode ------------------------------------------------------------------------------


def run_mode(name: str, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    broker = start_broker(root / name / "nats", port=free_port(), sync_always=MODES[name])
    try:
        result = asyncio.run(bench_broker(broker.url, args))
        if args.e2e_runs:
            e2e_root = root / name / "e2e"
            e2e_root.mkdir()
            result["e2e"] = asyncio.run(bench_e2e(broker.url, e2e_root, args))
        return result
    finally:
        broker.stop()


def machine(store: Path) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    # the filesystem the stores live on: the longest mount point that holds them
    with contextlib.suppress(OSError):
        best = ("", "", "")
        resolved = str(store.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, point, fstype = line.split()[:3]
            if resolved.startswith(point.rstrip("/") + "/") and len(point) > len(best[1]):
                best = (dev, point, fstype)
        info["store_device"], info["store_mount"], info["store_fs"] = best
    with contextlib.suppress(OSError):
        from subprocess import check_output

        info["nats_server"] = check_output([str(_nats_server()), "--version"], text=True).strip()
    return info


def _nats_server() -> str:
    from sortie.bus.broker import nats_server_binary

    return nats_server_binary()


def table(result: dict[str, Any], window: int) -> str:
    rows = [
        ("publish, 1 in flight", "publish_1"),
        (f"publish, {window} in flight", f"publish_{window}"),
        ("KV CAS, 1 in flight", "kv_cas_1"),
        (f"KV CAS, {window} in flight", f"kv_cas_{window}"),
    ]
    head = f"{'per s':>14}{'p50 ms':>8}{'p99 ms':>8}"
    lines = [f"{'':28}{'fsync':>30}{'no fsync':>30}", f"{'':28}{head}{head}"]
    for label, key in rows:
        cells = ""
        for mode in MODES:
            r = result["modes"][mode][key]
            cells += f"{r['per_s']:>14.0f}{r['p50_ms']:>8.2f}{r['p99_ms']:>8.2f}"
        lines.append(f"{label:28}{cells}")
    if all("e2e" in result["modes"][mode] for mode in MODES):
        cells = runs = ""
        for mode in MODES:
            e = result["modes"][mode]["e2e"]
            sub = e["submit"]
            cells += f"{sub['per_s']:>14.1f}{sub['p50_ms']:>8.1f}{sub['p99_ms']:>8.1f}"
            runs += f"{e['runs_completed_per_s']:>14.1f}{'':16}"
        lines.append(f"{'submit (e2e)':28}{cells}")
        lines.append(f"{'trivial runs completed (e2e)':28}{runs}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=5000, help="reports published per mode")
    p.add_argument("--updates", type=int, default=3000, help="KV compare-and-sets per mode")
    p.add_argument("--keys", type=int, default=256, help="run records the KV test spreads over")
    p.add_argument("--window", type=int, default=64, help="operations in flight (windowed)")
    p.add_argument("--e2e-runs", type=int, default=40, help="trivial runs end to end (0: skip)")
    p.add_argument("--e2e-window", type=int, default=8, help="runs submitted at once")
    p.add_argument(
        "--store", type=Path, default=None, help="where the brokers store (default: a temp dir)"
    )
    p.add_argument("--json", action="store_true", help="print the JSON only")
    p.add_argument(
        "--modes", nargs="+", choices=list(MODES), default=list(MODES), help="which to run"
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sortie-durability-", dir=args.store) as tmp:
        root = Path(tmp)
        result: dict[str, Any] = {
            "benchmark": "durability",
            "machine": machine(root),
            "params": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "modes": {},
        }
        for mode in args.modes:
            result["modes"][mode] = run_mode(mode, root, args)
    print(json.dumps(result, indent=2))
    if not args.json and set(args.modes) == set(MODES):
        print(table(result, args.window), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
