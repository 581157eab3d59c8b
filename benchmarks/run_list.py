"""Listing runs with 100,000 in the store: the scheduler's run index against reading them all.

Fills a fresh broker's runs bucket with ``--runs`` realistic records (tests/builders.py's
shapes: 20 experiments, mostly ended, tags, latest metrics, git), written straight into the
bucket with the scheduler's rights, then starts a real ``sortie scheduler`` process (its
"state loaded" seconds: the index is filled by that load) and a real ``sortie web`` process
(open on loopback), and measures p50/p99 of:

- **query_first_page**: ``Client.query_runs`` of the first page (limit 50): one index query
  and 50 gets, from this process;
- **query_filtered**: the same with an experiment and a state filter (a scan of the index);
- **cli_wall**: ``sortie run list --limit 50`` as a child process, the whole wall time
  (interpreter start-up and imports included); **cli_python_start**: ``sortie --help``'s
  wall time, the part of it that is not the listing;
- **cli_in_process**: what that command does (``cli.run_list.listed``) timed in this process;
- **web_first_page**: an HTTP GET of the runs page (first page, 50 rows) from ``sortie web``;
- **full_read_once**: ``Client.list_runs`` (every record read), what ``run list`` did before.

Target: 300 ms each for the first page (issue K item 7). Prints one JSON document on stdout and a
short table on stderr; ``uptime`` says how loaded the machine was.

    .venv/bin/python -m benchmarks.run_list [--runs 100000] [--samples 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.restart import timings_from_log
from sortie.bus.broker import free_port, start_broker
from sortie.bus.connection import Bus, open_bus
from sortie.cli.run_list import listed
from sortie.client.client import Client
from sortie.proto import codec
from sortie.proto import messages as m
from sortie.proto import run_index as q
from sortie.proto.states import RunState
from tests.builders import record, spec

REPO = Path(__file__).resolve().parents[1]
SORTIE = [sys.executable, "-m", "sortie.cli"]
TARGET_S = 0.3
ENDED = [RunState.COMPLETED] * 8 + [RunState.FAILED, RunState.CANCELED]


def realistic(i: int, now: float) -> m.RunRecord:
    """Run ``i`` of a long-lived installation: mostly ended, a few tags, latest metrics."""
    state = ENDED[i % len(ENDED)]
    created = now - 86400 * 30 + i * 25.0  # a month of runs, oldest first
    return record(
        f"exp{i % 20:02d}_{int(created)}_{i:08x}",
        state,
        spec=spec(
            experiment=f"exp{i % 20:02d}",
            target="gpu" if i % 3 == 0 else "local",
            arguments=["--lr", str(0.001 * (1 + i % 7)), "--epochs", "10"],
            env_vars={"SEED": str(i)},
            git=m.GitInfo(commit=f"{i:040x}", branch="main", remote="git@example.com:x/y"),
        ),
        created_at=created,
        agent_id=f"agent-{i % 50}",
        started_at=created + 2,
        ended_at=created + 600,
        exit_code=0 if state is RunState.COMPLETED else 1,
        history=[
            m.StateChange(state=RunState.QUEUED, at=created, attempt=1),
            m.StateChange(state=RunState.RUNNING, at=created + 2, attempt=1),
            m.StateChange(state=state, at=created + 600, attempt=1),
        ],
        tags={"team": f"t{i % 4}", "sweep": str(i // 100)},
        metrics={"loss": 1.0 / (1 + i % 97), "accuracy": (i % 89) / 89, "epoch": 10.0},
    )


async def fill(bus: Bus, n: int) -> float:
    """Write ``n`` records, 256 in flight; seconds taken."""
    t = time.perf_counter()
    now = time.time()
    sem = asyncio.Semaphore(256)

    async def put(i: int) -> None:
        rec = realistic(i, now)
        async with sem:
            await bus.runs.put(rec.run_id, codec.encode(rec))

    for start in range(0, n, 5000):  # in batches: a bounded number of tasks at once
        await asyncio.gather(*(put(i) for i in range(start, min(n, start + 5000))))
    return time.perf_counter() - t


def spread(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "n": len(ordered),
    }


async def timed(n: int, once: Callable[[], Awaitable[object]]) -> dict[str, float]:
    await once()  # warm: connections, caches
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await once()
        samples.append(time.perf_counter() - t)
    return spread(samples)


def timed_process(n: int, argv: list[str], env: dict[str, str]) -> dict[str, float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        samples.append(time.perf_counter() - t)
        if proc.returncode != 0:
            raise SystemExit(f"{argv} failed: {proc.stderr[-2000:]}")
    return spread(samples)


async def wait_for_http(url: str, limit_s: float = 60) -> None:
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {limit_s}s")


async def wait_for_index(client: Client, runs: int, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            _, page = await client.query_runs(q.RunQuery(limit=1))
            if page.total >= runs:
                return
        except Exception:  # noqa: BLE001 - the scheduler is still starting: ask again
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"the scheduler's index did not hold {runs} runs within {limit_s}s")


def start_daemons(
    root: Path, log_path: Path, web_port: int, env: dict[str, str]
) -> list[subprocess.Popen[bytes]]:
    """The scheduler (which fills its index by loading) and ``sortie web``, logging to one
    file."""
    with open(log_path, "wb") as log:
        scheduler = [*SORTIE, "scheduler", "--data-dir", str(root / "scheduler")]
        web = [*SORTIE, "web", "--port", str(web_port), "--open-on-loopback"]
        return [
            subprocess.Popen(scheduler, stdout=log, stderr=subprocess.STDOUT, env=env),
            subprocess.Popen(web, stdout=subprocess.DEVNULL, stderr=log, env=env),
        ]


async def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    broker = start_broker(root / "nats", port=free_port(), sync_always=False)
    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ, PYTHONPATH=str(REPO), SORTIE_URL=broker.url)
    env.pop("SORTIE_CREDS", None)
    env["SORTIE_PROFILE"] = str(root / "profile.json")
    try:
        bus = await open_bus(broker.url, "bench", create=True)
        fill_s = await fill(bus, args.runs)
        await bus.close()
        log_path = root / "scheduler.log"
        web_port = free_port()
        wall0 = time.time()
        procs += start_daemons(root, log_path, web_port, env)
        async with await Client.connect(broker.url) as client:
            await wait_for_index(client, args.runs)
            load_s, ready_s = timings_from_log(log_path, wall0)
            page_url = f"http://127.0.0.1:{web_port}/runs"
            await wait_for_http(page_url)
            first = q.RunQuery(limit=50)
            narrow = q.RunQuery(limit=50, experiment="exp07", states=[RunState.FAILED])
            cli_args = argparse.Namespace(
                experiment=None, state=None, target=None, tag=None, search=None, since=None,
                limit=50,
            )  # fmt: skip
            results = {
                "query_first_page": await timed(args.samples, lambda: client.query_runs(first)),
                "query_filtered": await timed(args.samples, lambda: client.query_runs(narrow)),
                "cli_in_process": await timed(args.samples, lambda: listed(client, cli_args)),
            }
            async with httpx.AsyncClient() as http:

                async def get_page() -> None:
                    response = await http.get(page_url)
                    assert response.status_code == 200 and "runs-data" in response.text

                results["web_first_page"] = await timed(args.samples, get_page)
            # the commands before the full read, which leaves the broker busy for a while
            cli_n = max(5, args.samples // 2)
            argv = [*SORTIE, "run", "list", "--limit", "50"]
            results["cli_wall"] = timed_process(cli_n, argv, env)
            results["cli_python_start"] = timed_process(cli_n, [*SORTIE, "--help"], env)
            t = time.perf_counter()
            everything = await client.list_runs()
            full_read_s = time.perf_counter() - t
        return {
            "runs": args.runs,
            "fill_s": round(fill_s, 1),
            "scheduler_load_s": load_s,
            "scheduler_ready_s": ready_s,
            "full_read_once_s": round(full_read_s, 2),
            "full_read_runs": len(everything),
            **results,
            "target_ms": TARGET_S * 1000,
            "met": all(
                results[k]["p50_ms"] <= TARGET_S * 1000
                for k in ("query_first_page", "web_first_page", "cli_wall")
            ),
            "cpus": os.cpu_count(),
        }
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        broker.stop()


def table(result: dict[str, Any]) -> str:
    rows = [f"{'what':<18} {'p50 ms':>8} {'p99 ms':>8}"]
    for key in (
        "query_first_page", "query_filtered", "cli_in_process", "cli_wall", "cli_python_start",
        "web_first_page",
    ):  # fmt: skip
        rows.append(f"{key:<18} {result[key]['p50_ms']:>8} {result[key]['p99_ms']:>8}")
    rows.append(
        f"{result['runs']} runs; scheduler load {result['scheduler_load_s']} s; full read "
        f"{result['full_read_once_s']} s; {result['uptime']}"
    )
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=100_000)
    p.add_argument("--samples", type=int, default=30)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="sortie-runlist-") as tmp:
        result = asyncio.run(measure(args, Path(tmp)))
    result["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(json.dumps(result, indent=2))
    print(table(result), file=sys.stderr)
    return 0 if result["met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
