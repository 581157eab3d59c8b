"""History does not cost: restart and takeover with a long history and many active runs.

Issue O, item 6: a scheduler starting (or taking over) reads and decodes every run record
ever written, so its start and its memory grow with the history. The goal: both grow with
the *active* runs only (the leader stores a snapshot of its active runs, pointed at by
``_sortie.snapshot`` in ``sortie_runs``; a new leader loads it plus what was written after).

A real nats-server (fsync on) is filled with ``--runs`` records in atomic batches, of which
``--active`` are active: ``--running`` Running on ``--agents`` simulated agents
(tests/harness.py: the real protocol, no executor; they heartbeat the runs they hold), the
rest Queued: ``--placeable`` of those can be placed, the others are on a target no agent
serves (they stay queued, and count as active). Every other record is Completed. Half the
placeable runs are on the agents' target (scheduler A places them); the other half on a
target whose ``--late-agents`` agents start only once A is killed (what scheduler B places:
its first Assign is the "placing again" number).

Then, with real ``sortie scheduler`` processes (``--leader-lease 1``, a data dir each):

- A starts: process start -> its first Assign (the full read, the "before" number), its
  "state loaded" seconds, its RSS (``VmRSS``/``VmHWM`` from /proc) once placing and once it
  logs ``run index caught up`` (or after ``--index-wait``);
- the benchmark waits (``--snapshot-wait``) for ``_sortie.snapshot`` in ``sortie_runs``
  (skipped with ``--no-snapshot-wait``; a scheduler that never stores one times out, says
  so, and the rest is measured all the same);
- A is killed (-9) and B started (``--standby``: B was started before the kill as a
  standby, so this is a takeover): kill -> B's first Assign (epoch 2), B's process start ->
  that Assign, B's "state loaded", B's RSS once placing and after ``run index caught up``;
- checks: every Running run still Running as attempt 1, every placeable run placed.

Prints one JSON document on stdout and a short table on stderr. Target: placing again
<= 3 s after the kill with 1,000,000 records of which 100,000 active.

    .venv/bin/python -m benchmarks.history [--runs 1000000] [--active 100000]
        [--running 20000] [--placeable 200] [--agents 200] [--standby]
        [--snapshot-wait 300 | --no-snapshot-wait] [--index-wait 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nats.js.errors import KeyNotFoundError

from benchmarks.fill import write_batches
from benchmarks.restart import TARGET, record, running_disturbed, start_fakes
from benchmarks.takeover import Agent, logged, scheduler, until_logged, wall
from sortie.bus.broker import free_port, start_broker
from sortie.bus.connection import Bus, open_bus
from sortie.proto import codec, subjects
from sortie.proto.states import RunState
from sortie.scheduler import kvbatch
from tests.harness import FakeAgent

# the key the snapshotting scheduler writes (subjects.RUNS_SNAPSHOT_KEY once it exists)
SNAPSHOT_KEY: str = getattr(subjects, "RUNS_SNAPSHOT_KEY", f"{subjects.RESERVED_PREFIX}snapshot")
LATE_TARGET = "sim-late"  # served only once A is killed: what B places
NOWHERE = "sim-nowhere"  # no agent serves it: its runs stay queued (active)
SNAPSHOT_STORED = "runs snapshot stored"
INDEX_BUILT = "run index caught up"
TARGET_S = 3.0


class Shape:
    """Which record is what: ids are ``bench_{i:06d}`` (restart.record)."""

    def __init__(self, args: argparse.Namespace, agents: list[str]) -> None:
        if not 0 <= args.running + args.placeable <= args.active <= args.runs:
            raise SystemExit("need running + placeable <= active <= runs")
        if args.placeable < 2 or args.late_agents < 1 or args.agents < 1:
            raise SystemExit("need --placeable >= 2 (half for A, half for B), agents, late agents")
        self.args, self.agents = args, agents
        self.early = args.placeable - args.placeable // 2  # A places these
        self.late = args.placeable // 2  # B places these

    def of(self, i: int) -> tuple[RunState, str | None, str]:
        """Record ``i``'s state, agent and target."""
        a = self.args
        agent = self.agents[i % len(self.agents)]
        if i < a.running:
            return RunState.RUNNING, agent, TARGET
        q = i - a.running
        if q < self.early:
            return RunState.QUEUED, None, TARGET
        if q < self.early + self.late:
            return RunState.QUEUED, None, LATE_TARGET
        if i < a.active:
            return RunState.QUEUED, None, NOWHERE
        return RunState.COMPLETED, agent, TARGET

    def placeable(self) -> list[str]:
        first = self.args.running
        return [f"bench_{i:06d}" for i in range(first, first + self.early + self.late)]

    def held(self) -> dict[str, list[str]]:
        held: dict[str, list[str]] = {a: [] for a in self.agents}
        for i in range(self.args.running):
            held[self.agents[i % len(self.agents)]].append(f"bench_{i:06d}")
        return held

    def batches(self, size: int) -> Iterator[list[tuple[str, bytes, int]]]:
        now = time.time()
        for start in range(0, self.args.runs, size):
            items = []
            for i in range(start, min(start + size, self.args.runs)):
                state, agent, target = self.of(i)
                rec = record(i, state, agent, now, target=target)
                items.append((rec.run_id, codec.encode(rec), 0))
            yield items


async def fill_fast(bus: Bus, shape: Shape, in_flight: int) -> dict[str, Any]:
    """Every record, in atomic batches of 1,000 with ``in_flight`` of them at once (one put
    at a time, 64 in flight, where the server cannot batch). The store's size after."""
    atomic = await kvbatch.enable_atomic(bus.js, subjects.KV_RUNS)
    t = time.perf_counter()
    size = kvbatch.BATCH_MAX if atomic else 64
    await write_batches(
        bus, shape.batches(size), atomic=atomic, in_flight=in_flight if atomic else 64
    )
    fill_s = time.perf_counter() - t
    info = await bus.js.stream_info(subjects.kv_stream(subjects.KV_RUNS))
    return {
        "fill_s": round(fill_s, 2),
        "records_per_s": round(shape.args.runs / fill_s),
        "atomic_batches": atomic,
        "store_messages": info.state.messages,
        "store_mb": round(info.state.bytes / 2**20, 1),
    }


def memory(proc: subprocess.Popen[bytes]) -> dict[str, float] | None:
    """The process's resident memory now and its peak (MiB), from /proc."""
    try:
        text = Path(f"/proc/{proc.pid}/status").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {
        "rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
        "hwm_mb": round(int(fields["VmHWM"].split()[0]) / 1024, 1),
    }


async def first_of_epoch(first_assign: dict[int, float], epoch: int, limit_s: float) -> float:
    """Wall time of the first Assign of ``epoch`` to reach an agent."""
    deadline = time.monotonic() + limit_s
    while epoch not in first_assign:
        if time.monotonic() > deadline:
            raise SystemExit(f"no Assign of epoch {epoch} within {limit_s:.0f} s")
        await asyncio.sleep(0.005)
    return first_assign[epoch]


async def index_built(log: Path, limit_s: float) -> dict[str, Any] | None:
    """The scheduler's ``run index caught up`` event (None: not within ``limit_s``)."""
    with contextlib.suppress(SystemExit):
        return await until_logged(log, INDEX_BUILT, limit_s)
    return None


async def snapshot_stored(
    bus: Bus, log: Path, limit_s: float, a_start: float
) -> dict[str, Any] | None:
    """Wait until ``_sortie.snapshot`` is in the runs bucket; what the entry says. None, with a
    message on stderr, if it never appeared within ``limit_s``."""
    deadline = time.monotonic() + limit_s
    t = time.perf_counter()
    while time.monotonic() < deadline:
        try:
            entry = await bus.runs.get(SNAPSHOT_KEY)
        except KeyNotFoundError:
            await asyncio.sleep(0.5)
            continue
        event = await asyncio.to_thread(logged, log, SNAPSHOT_STORED)
        return {
            "waited_s": round(time.perf_counter() - t, 2),
            "after_a_start_s": round(time.time() - a_start, 2),
            "revision": entry.revision,
            "pointer_bytes": len(entry.value or b""),
            "logged": {k: v for k, v in (event or {}).items() if k not in ("timestamp", "level")},
        }
    print(
        f"history: no {SNAPSHOT_KEY!r} in {subjects.KV_RUNS} within {limit_s:.0f} s: this "
        "scheduler does not store a runs snapshot (issue O item 6 not in this code?); "
        "B does the full read. --no-snapshot-wait skips this wait.",
        file=sys.stderr,
    )
    return None


def since(event: dict[str, Any] | None, at: float) -> float | None:
    return round(wall(event) - at, 3) if event is not None else None


async def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    broker = start_broker(root / "nats", port=free_port(), sync_always=True)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    fakes: list[FakeAgent] = []
    bus = await open_bus(broker.url, "bench", create=True)
    keys = ("runs", "active", "running", "placeable", "agents", "standby", "leader_lease")
    result: dict[str, Any] = {k: getattr(args, k) for k in keys}
    try:
        names = [f"sim-{i}" for i in range(args.agents)]
        shape = Shape(args, names)
        result["fill"] = await fill_fast(bus, shape, args.in_flight)
        print(f"history: filled {result['fill']}", file=sys.stderr)

        first_assign, setup = agents_noting_epochs()
        await start_fakes(bus, names, shape.held(), fakes, kind=Agent, setup=setup)

        # A: the first start, which reads everything
        a_log = root / "a.log"
        a_start = time.time()
        procs["a"] = scheduler(broker.url, root, "a", args.leader_lease)
        a_first = await first_of_epoch(first_assign, 1, args.place_limit)
        wait = args.index_wait
        result["a"] = await observe(
            procs["a"], a_log, start=a_start, first=a_first, zero=a_start, index_wait=wait
        )
        print(f"history: A {result['a']}", file=sys.stderr)

        b_log = root / "b.log"
        if args.standby:
            b_start = time.time()
            procs["b"] = scheduler(broker.url, root, "b", args.leader_lease)
            await until_logged(b_log, "standby: leader is", args.place_limit)
            result["b_standby_memory"] = memory(procs["b"])

        if args.no_snapshot_wait:
            result["snapshot"] = "not waited for (--no-snapshot-wait)"
        else:
            result["snapshot"] = await snapshot_stored(bus, a_log, args.snapshot_wait, a_start)

        killed_at = time.time()
        os.kill(procs["a"].pid, signal.SIGKILL)
        await asyncio.to_thread(procs["a"].wait)
        late = [f"late-{i}" for i in range(args.late_agents)]
        await start_fakes(bus, late, {}, fakes, kind=Agent, target=LATE_TARGET, setup=setup)
        if not args.standby:  # a restart in A's place (its data directory), as systemd's
            b_start = time.time()
            procs["b"] = scheduler(broker.url, root, "b", args.leader_lease, seat="a")
        b_first = await first_of_epoch(first_assign, 2, args.place_limit)
        result["b"] = {
            "placed_again_s": round(b_first - killed_at, 3),  # the number
            "lease_taken_s": since(logged(b_log, "leader: epoch 2"), killed_at),
            **await observe(
                procs["b"], b_log, start=b_start, first=b_first, zero=killed_at, index_wait=wait
            ),
        }
        print(f"history: B {result['b']}", file=sys.stderr)

        await asyncio.sleep(2.0)  # a few heartbeats and cycles under B
        result.update(await checks(bus, shape, fakes))
        result["target_s"] = TARGET_S
        result["placed_again_met"] = result["b"]["placed_again_s"] <= TARGET_S
        result["met"] = met(result)
        return result
    finally:
        await stop_all(fakes, bus, procs)
        broker.stop()


def met(result: dict[str, Any]) -> bool:
    """Placing again within the target, nothing disturbed or left, and a snapshot stored."""
    return bool(
        result["b"]["placed_again_s"] <= TARGET_S
        and result["running_disturbed"] == 0
        and result["placeable_not_placed"] == 0
        and isinstance(result["snapshot"], dict)
    )


def agents_noting_epochs() -> tuple[dict[int, float], Callable[[FakeAgent], None]]:
    """Epoch -> wall time of its first Assign (filled by every ``Agent`` set up with the
    setup returned, which also makes them note each run's first Assign in ``assigned_at``)."""
    first_assign: dict[int, float] = {}
    new_leader = asyncio.Event()

    def setup(fake: FakeAgent) -> None:
        assert isinstance(fake, Agent)
        fake.first_assign, fake.new_leader = first_assign, new_leader
        fake.assigned_at = {}  # run id -> first Assign; nothing queued

    return first_assign, setup


async def observe(
    proc: subprocess.Popen[bytes],
    log: Path,
    *,
    start: float,
    first: float,
    zero: float,
    index_wait: float,
) -> dict[str, Any]:
    """A scheduler that has just placed its first run (at wall time ``first``; its process
    started at ``start``): its memory now, its load from its log (seconds since ``zero``),
    and its memory once its run index is built (or ``index_wait`` passed)."""
    placing = memory(proc)
    loaded = await until_logged(log, "state loaded", 10)
    index = await index_built(log, index_wait)
    return {
        "first_assign_from_start_s": round(first - start, 3),
        "state_loaded_s": since(loaded, zero),
        "load_seconds_logged": loaded.get("seconds"),
        "records_read": loaded.get("runs"),
        "active_loaded": loaded.get("active"),
        "memory_placing": placing,
        "index_built_s": since(index, start),
        "memory_after_index": memory(proc),
    }


async def checks(bus: Bus, shape: Shape, fakes: list[FakeAgent]) -> dict[str, int]:
    """Running runs disturbed (no longer Running, or a new attempt), placeable runs never
    placed."""
    placed: set[str] = set()
    for fake in fakes:
        placed.update(fake.assigned_at or ())
    return {
        "running_disturbed": await running_disturbed(bus, shape.held()),
        "placeable_not_placed": len(set(shape.placeable()) - placed),
    }


async def stop_all(
    fakes: list[FakeAgent], bus: Bus, procs: dict[str, subprocess.Popen[bytes]]
) -> None:
    for fake in fakes:
        await fake.stop()
    await bus.close()
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)


def mem(m: dict[str, float] | None) -> str:
    return f"{m['rss_mb']:.0f} / {m['hwm_mb']:.0f}" if m else "-"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=1_000_000, help="records in the store")
    p.add_argument("--active", type=int, default=100_000, help="of them Running or Queued")
    p.add_argument("--running", type=int, default=20_000, help="of the active, Running")
    p.add_argument("--placeable", type=int, default=200, help="queued runs agents can take")
    p.add_argument("--agents", type=int, default=200)
    p.add_argument("--late-agents", type=int, default=10, help="started at the kill (for B)")
    p.add_argument("--leader-lease", type=float, default=1.0)
    p.add_argument("--standby", action="store_true", help="B stands by before the kill")
    p.add_argument("--snapshot-wait", type=float, default=300.0, help="s; for _sortie.snapshot")
    p.add_argument("--no-snapshot-wait", action="store_true", help="kill A without waiting")
    p.add_argument("--index-wait", type=float, default=300.0, help="s; for 'run index caught up'")
    p.add_argument("--place-limit", type=float, default=600.0, help="s; each first Assign")
    p.add_argument("--in-flight", type=int, default=4, help="batches of 1,000 being written")
    p.add_argument("--keep", type=Path, help="keep the schedulers' logs and the store here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="sortie-history-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(measure(args, root))
    result["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps(result, indent=2))
    a, b, fill = result["a"], result["b"], result["fill"]
    snap = result["snapshot"]
    rows = [
        ("records / active / running", f"{result['runs']} / {result['active']} / "
         f"{result['running']}"),
        ("fill (s) / store (MiB)", f"{fill['fill_s']} / {fill['store_mb']}"),
        ("A: start -> first Assign (s)", a["first_assign_from_start_s"]),
        ("A: start -> state loaded (s)", a["state_loaded_s"]),
        ("A: state loaded (s, logged)", a["load_seconds_logged"]),
        ("A: RSS / peak placing (MiB)", mem(a["memory_placing"])),
        ("A: RSS / peak after index (MiB)", f"{mem(a['memory_after_index'])}"
         f"{'' if a['index_built_s'] is not None else ' (not logged)'}"),
        ("A: start -> snapshot seen (s)", snap["after_a_start_s"] if isinstance(snap, dict)
         else snap or "none: timed out"),
        ("B: " + ("takeover" if result["standby"] else "restart"), ""),
        ("B: RSS / peak as standby (MiB)", mem(result.get("b_standby_memory"))),
        ("B: kill -> placing again (s)", b["placed_again_s"]),
        ("B: process start -> first Assign (s)", b["first_assign_from_start_s"]),
        ("B: kill -> state loaded (s)", b["state_loaded_s"]),
        ("B: state loaded (s, logged)", b["load_seconds_logged"]),
        ("B: RSS / peak placing (MiB)", mem(b["memory_placing"])),
        ("B: RSS / peak after index (MiB)", f"{mem(b['memory_after_index'])}"
         f"{'' if b['index_built_s'] is not None else ' (not logged)'}"),
        ("running disturbed / placeable left", f"{result['running_disturbed']} / "
         f"{result['placeable_not_placed']}"),
        (f"placing again <= {TARGET_S:g} s", result["placed_again_met"]),
        ("met (with a snapshot, nothing lost)", result["met"]),
        ("load average", " ".join(result["loadavg"])),
    ]  # fmt: skip
    for name, value in rows:
        print(f"{name:<40} {value}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
