"""`sortie up`: a local broker, the scheduler and one agent for the `local` target."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import structlog

from agents.config import AgentConfig, default_agent_id
from agents.daemon import run_agent
from scheduler.daemon import SchedulerConfig, run_scheduler
from sortie.broker import BrokerError, start_broker
from sortie.profile import profile_path, remove_profile_if_ours, write_profile

log = structlog.get_logger("sortie.up")


async def serve(
    url: str,
    data_dir: Path,
    stop: asyncio.Event,
    *,
    agent: bool = True,
    gpu_pool: tuple[int, ...] = (),
) -> None:
    """Run the scheduler (and a local agent) against ``url`` until ``stop`` is set."""
    ready = asyncio.Event()
    sched = SchedulerConfig(url=url, data_dir=data_dir / "scheduler", gpu_pool=gpu_pool)
    tasks = [asyncio.create_task(run_scheduler(sched, stop, ready))]
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({tasks[0], waiter}, return_when=asyncio.FIRST_COMPLETED)
    if tasks[0] in done:
        waiter.cancel()
        tasks[0].result()  # raises what stopped the scheduler
        return
    if agent:
        config = AgentConfig(
            url=url,
            agent_id=default_agent_id("local"),
            target="local",
            data_dir=data_dir / "agent",
            gpu_indices=local_gpus(gpu_pool),
        )
        tasks.append(asyncio.create_task(run_agent(config, stop)))
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()


def local_gpus(gpu_pool: tuple[int, ...]) -> list[int] | None:
    """GPUs the embedded local agent serves: all, or those not lent to cluster nodes (a GPU is
    never advertised by two agents)."""
    if not gpu_pool:
        return None
    from agents.gpus import probe_gpus

    return [d.index for d in probe_gpus() if d.index not in gpu_pool]


def up(
    data_dir: Path,
    host: str,
    port: int,
    *,
    sync_always: bool = True,
    gpu_pool: tuple[int, ...] = (),
) -> int:
    """Start everything, print one ready line, run until Ctrl-C or SIGTERM."""
    data_dir = data_dir.expanduser().resolve()
    try:
        broker = start_broker(data_dir / "nats", host=host, port=port, sync_always=sync_always)
    except BrokerError as exc:
        print(f"sortie up: {exc}", flush=True)
        return 2
    pid = os.getpid()
    try:
        write_profile(broker.url, data_dir, pid)

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            runner = asyncio.create_task(serve(broker.url, data_dir, stop, gpu_pool=gpu_pool))
            # Announce once the scheduler answers: then `sortie run submit` works.
            await _await_ready(broker.url, runner)
            print(
                f"Sortie ready at {broker.url} (data {data_dir}, profile {profile_path()}); "
                "Ctrl-C stops it",
                flush=True,
            )
            await runner

        _run(main())
    finally:
        remove_profile_if_ours(pid)
        broker.stop()
        print("Sortie stopped", flush=True)
    return 0


async def _await_ready(url: str, runner: asyncio.Task[None]) -> None:
    from sortie.client import Client, ClientError

    while not runner.done():
        with contextlib.suppress(ClientError, OSError, RuntimeError):
            async with await Client.connect(url, name="sortie-up-probe") as c:
                await c.targets()
                return
        await asyncio.sleep(0.1)
    runner.result()


def _run(coro: object) -> None:
    """asyncio.run with uvloop (chosen here, in the entry point only)."""
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]
