"""The dashboard's live logs: how soon a printed line reaches a page, and what 50 pages
following logs cost the scheduler.

Starts a real ``sortie up --dashboard-port P`` (broker with fsync, scheduler, one local agent,
the dashboard as its own process) in a temporary data directory. The pages are plain HTTP
server-sent-event clients (httpx) of ``/runs/{id}/logs/stream``, the endpoint a run page's
script follows, in this process; no browser.

- **latency**: a run prints ``time.time()`` every 100 ms (``--lines`` lines); one client
  follows its log from before it starts. For each line: the time it was received minus the
  time printed in it (same machine, same clock). p50 and p99; target p50 <= 300 ms.
- **followers**: a burst of ``--burst`` trivial runs (as ``benchmarks/latency.py``'s: first
  submit to the last run's end, and the placements per second from the records' times),
  with no page open and with ``--followers`` clients (in a process of their own) following
  a printing run's log, alternated ``--rounds`` times; medians. Both times that printing run
  is running, so the agent's room is the same. The placement rate should be unchanged: the
  dashboard is a broker client, not part of the scheduler.

Prints one JSON document on stdout and a short table on stderr, with the machine's load.

    .venv/bin/python -m benchmarks.web_logs [--lines 300] [--burst 100] [--followers 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from benchmarks.latency import start_up
from benchmarks.peers import summary_ms
from sortie.bus.broker import free_port
from sortie.client.client import Client
from sortie.client.runconfig import (
    EnvironmentSection,
    PythonSection,
    RunConfiguration,
    ScriptRunConfig,
)

REPO = Path(__file__).resolve().parents[1]

PRINTER = (
    "import sys, time\n"
    "for _ in range(int(sys.argv[1])):\n"
    "    print(f'T {time.time()!r}', flush=True)\n"
    "    time.sleep(0.1)\n"
)  # fmt: skip


async def dashboard_ready(base: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{base}/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise SystemExit(f"the dashboard at {base} never answered")


async def sse_lines(http: httpx.AsyncClient, url: str) -> AsyncIterator[tuple[float, list[str]]]:
    """(received at, the texts of one ``lines`` event) until the log's ``end``."""
    async with http.stream("GET", url, timeout=None) as response:
        name, data = "", ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
            elif line == "" and data:
                if name == "end":
                    return
                if name == "lines":
                    yield time.time(), [str(x[2]) for x in json.loads(data)["lines"]]
                name, data = "", ""


async def submit(client: Client, src: Path, script: str, *args: str) -> str:
    run_config = RunConfiguration(environment=EnvironmentSection(python=PythonSection()))
    config = ScriptRunConfig(
        source_directory=src, script=script, arguments=list(args), run_config=run_config
    )
    return (await client.submit(config, experiment="web-logs")).run_id


async def latency(client: Client, base: str, src: Path, lines: int) -> dict[str, Any]:
    run_id = await submit(client, src, "printer.py", str(lines))
    delays: list[float] = []
    async with httpx.AsyncClient() as http:
        async for received, texts in sse_lines(http, f"{base}/runs/{run_id}/logs/stream"):
            delays += [received - float(t[2:]) for t in texts if t.startswith("T ")]
    return summary_ms(delays) if delays else {"n": 0}


async def follow(http: httpx.AsyncClient, url: str, counts: list[int]) -> None:
    with contextlib.suppress(httpx.HTTPError):
        async for _, texts in sse_lines(http, url):
            counts.append(len(texts))


async def followers_main(url: str, n: int) -> int:
    """``--follow URL``: ``n`` clients follow that log until SIGTERM; then the number of
    events they received on stdout. A process of its own, so that their work does not slow
    this process's submits (only the machine's CPUs are shared)."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    counts: list[int] = []
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=n + 5)) as http:
        tasks = [asyncio.create_task(follow(http, url, counts)) for _ in range(n)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(len(counts), flush=True)
    return 0


async def burst(client: Client, src: Path, n: int) -> dict[str, Any]:
    t0 = time.time()
    ids = await asyncio.gather(*(submit(client, src, "noop.sh") for _ in range(n)))
    recs = [await client.wait(r) for r in ids]
    elapsed = time.time() - t0
    assigned = sorted(r.assigned_at for r in recs if r.assigned_at is not None)
    span = (assigned[-1] - t0) if assigned else 0.0
    return {
        "runs": n,
        "first_submit_to_last_end_s": round(elapsed, 2),
        "runs_per_s": round(n / elapsed, 1),
        "placed_per_s": round(len(assigned) / span, 1) if span > 0 else None,
        "completed": sum(1 for r in recs if r.state == "Completed"),
    }


async def with_followers(
    client: Client, base: str, src: Path, n_runs: int, followers: int
) -> dict[str, Any]:
    """The burst while a printing run runs and ``followers`` clients (another process)
    follow its log."""
    printing = await submit(client, src, "printer.py", "100000")
    for _ in range(600):  # a minute at most
        if (await client.get_run(printing)).state == "Running":
            break
        await asyncio.sleep(0.1)
    url = f"{base}/runs/{printing}/logs/stream"
    cmd = [sys.executable, "-m", "benchmarks.web_logs", "--follow", url, "--followers"]
    pages = await asyncio.create_subprocess_exec(
        *cmd, str(followers), stdout=asyncio.subprocess.PIPE, cwd=REPO
    )
    await asyncio.sleep(3.0)  # every follower connected and caught up
    try:
        result = await burst(client, src, n_runs)
    finally:
        pages.send_signal(signal.SIGTERM)
        out, _ = await pages.communicate()
    await client.cancel(printing)
    await client.wait(printing)
    result["followers"] = followers
    result["events_received"] = int(out.decode().strip() or 0)
    return result


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("runs_per_s", "placed_per_s", "first_submit_to_last_end_s", "events_received")
    out: dict[str, Any] = {
        k: statistics.median(r[k] for r in rounds if r[k] is not None) for k in keys
    }
    out["followers"] = rounds[0]["followers"]
    out["rounds"] = rounds
    return out


async def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    src = root / "src"
    src.mkdir()
    (src / "printer.py").write_text(PRINTER)
    (src / "noop.sh").write_text("true\n")
    web_port = free_port()
    base = f"http://127.0.0.1:{web_port}"
    proc = start_up(root, free_port(), "--dashboard-port", str(web_port))
    try:
        await dashboard_ready(base)
        client = await Client.connect()
        await burst(client, src, 3)  # warm-up: blobs stored and in the agent's cache
        result: dict[str, Any] = {"client": "plain HTTP SSE (httpx), no browser"}
        result["log_line_to_page"] = await latency(client, base, src, args.lines)
        alone, crowd = [], []
        for _ in range(args.rounds):  # alternated, so that the machine's load hits both
            alone.append(await with_followers(client, base, src, args.burst, 0))
            crowd.append(await with_followers(client, base, src, args.burst, args.followers))
        result["burst_alone"] = medians(alone)
        result["burst_with_followers"] = medians(crowd)
        await client.close()
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    args = _parse_args()
    if args.follow:
        return asyncio.run(followers_main(args.follow, args.followers))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sortie-web-logs-") as tmp:
        Path(tmp).chmod(0o711)  # as root, runs start as sortie-run, who must pass it
        result = asyncio.run(measure(args, Path(tmp)))
    result["machine"] = {
        "cpus": os.cpu_count(),
        "load_1_5_15_before": [round(x, 2) for x in load_before],
        "load_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
    }
    lat = result["log_line_to_page"]
    alone, crowd = result["burst_alone"], result["burst_with_followers"]
    result["targets"] = {"log_p50_ms": 300}
    result["met"] = {"log_p50": lat.get("p50_ms", 1e9) <= 300}
    print(json.dumps(result, indent=2))
    print(
        f"{'printed -> on the page p50 / p99 (ms)':<44} {lat.get('p50_ms')} / {lat.get('p99_ms')}"
        f"   (n={lat.get('n')}, target p50 <= 300)\n"
        f"{'burst runs/s, placed/s: no page':<44} {alone['runs_per_s']}, {alone['placed_per_s']}\n"
        f"{'burst runs/s, placed/s: ' + str(crowd['followers']) + ' following':<44} "
        f"{crowd['runs_per_s']}, {crowd['placed_per_s']}"
        f"   ({crowd['events_received']} log events delivered meanwhile)\n"
        f"{'load (1, 5, 15 min) before / after':<44} {result['machine']['load_1_5_15_before']}"
        f" / {result['machine']['load_1_5_15_after']} on {os.cpu_count()} CPUs",
        file=sys.stderr,
    )
    return 0


def _parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--lines", type=int, default=300, help="lines printed, one per 100 ms")
    p.add_argument("--burst", type=int, default=100, help="runs in each burst")
    p.add_argument("--followers", type=int, default=50, help="clients following a log")
    p.add_argument("--rounds", type=int, default=3, help="bursts of each kind, alternated")
    p.add_argument("--follow", metavar="URL", help=argparse.SUPPRESS)  # the followers' process
    return p.parse_args()


if __name__ == "__main__":
    sys.exit(main())
