"""A bounded chaos harness: real daemons, short numbered runs, faults on a schedule.

Runs whose scripts append to a ledger are submitted at a steady rate while the scheduler is
killed (-9), agents are killed (-9) and paused (SIGSTOP), and nats-server is killed and
restarted. With ``--schedulers 2`` (or more) the scheduler faults are aimed at the leader:
it is killed (-9) or paused past its lease (SIGSTOP), a standby takes over, and the old one,
started again when it exits as a supervisor would, stands by; the report gives the longest
time without a leader (from a leader's kill or pause to the next epoch's lease).

Then every fault is healed and the harness checks, from the ledger and the run records, that:

- every accepted submission has exactly one run, and it reached a terminal state;
- no run's script completed twice;
- no agent ever ran more runs at once than its capacity;
- nothing stayed stuck (all of it within a bounded wait).

The CI setting (tests/e2e/test_chaos.py) is small; a larger one runs from the command line:

    .venv/bin/python -m tests.chaos --runs 400 --seconds 240 --agents 4 --seed 7

and with two schedulers, about 20 leader kills among the other faults:

    .venv/bin/python -m tests.chaos --runs 400 --seconds 240 --agents 4 --seed 7 \
        --schedulers 2 --fault-every 1.5 --leader-kill-weight 3

Every loop is bounded in count and time; everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nats.errors

from sortie.bus.errors import BrokerUnreachable, NotInitialised
from sortie.client.client import Client, ClientError
from sortie.client.runconfig import RunConfiguration, ScriptRunConfig
from sortie.proto import codec, subjects
from sortie.proto import messages as m
from sortie.proto.leadership import Leadership
from sortie.proto.states import TERMINAL, RunState
from tests.faults import Cluster

LEASE_S = 4.0
KILL_GRACE_S = 3.0
LEADER_LEASE_S = 3.0  # with several schedulers: a standby takes over after this
SLOTS = 2  # runs each agent holds at once (cpus 2, each run asks for 1)

SCRIPT = """\
import os, sys, time
from pathlib import Path
ledger = sys.argv[1]
n, attempt = os.environ["CHAOS_N"], os.environ["SORTIE_ATTEMPT"]
parts = Path.cwd().parts
agent = parts[parts.index("agents") + 1]  # .../agents/<name>/runs/<run>/<attempt>
slots = Path(ledger).parent / "slots" / agent
slots.mkdir(parents=True, exist_ok=True)
(slots / str(os.getpid())).touch()
live = 0
for f in slots.iterdir():
    try:
        os.kill(int(f.name), 0)
        live += 1
    except PermissionError:  # alive, in another run's sandbox (agents.isolation)
        live += 1
    except (ProcessLookupError, ValueError):
        pass
with open(ledger, "a") as fh:
    fh.write(f"start {n} {attempt} {agent} {live}\\n")
time.sleep(float(os.environ["CHAOS_SLEEP"]))
with open(ledger, "a") as fh:
    fh.write(f"done {n} {attempt} {agent}\\n")
"""


@dataclass
class Settings:
    runs: int = 40
    seconds: float = 45.0  # faults are injected for this long
    agents: int = 3
    seed: int = 1
    submit_every_s: float | None = None  # None: spread the runs over ``seconds``
    fault_every_s: float = 4.0
    settle_s: float = 180.0  # bound on the wait for every run to end afterwards
    schedulers: int = 1  # more: one leads, the faults aim at it
    leader_kill_weight: int = 1  # with several schedulers: a leader kill is drawn this many
    # times as often as each other fault (to reach many kills in a bounded run)


@dataclass
class Report:
    settings: dict[str, object]
    submitted: int = 0
    accepted: int = 0
    refused: list[str] = field(default_factory=list)
    faults: dict[str, int] = field(default_factory=dict)
    states: dict[str, int] = field(default_factory=dict)
    rerun: int = 0  # runs that needed more than one attempt
    attempts_started: int = 0
    double_completions: list[str] = field(default_factory=list)
    duplicate_runs: list[str] = field(default_factory=list)
    missing_runs: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    max_concurrent: int = 0
    over_capacity: list[str] = field(default_factory=list)
    seconds: float = 0.0
    leader_epochs: int = 0  # the last leader epoch (several schedulers)
    longest_leaderless_s: float = 0.0  # from a leader's kill or pause to the next epoch

    @property
    def ok(self) -> bool:
        return not (
            self.double_completions
            or self.duplicate_runs
            or self.missing_runs
            or self.stuck
            or self.over_capacity
        )


class Chaos:
    def __init__(self, root: Path, settings: Settings) -> None:
        self.root = root
        self.s = settings
        self.rng = random.Random(settings.seed)
        self.cluster = Cluster(root / "cluster")
        # the runs write it: in the dir the cluster's agents share with every run
        self.ledger = root / "cluster" / "shared" / "ledger" / "ledger.txt"
        self.src = root / "src"
        self.faults: Counter[str] = Counter()
        self.accepted: dict[str, str] = {}  # submission id -> run id
        self.refused: list[str] = []
        self.names = [f"a{i}" for i in range(settings.agents)]
        self.schedulers = [f"scheduler-{i + 1}" for i in range(settings.schedulers)]
        self.leaderless: list[float] = []  # each leader fault's time to the next epoch

    # --- setup ------------------------------------------------------------------------------

    def start(self) -> None:
        self.ledger.parent.mkdir(parents=True)
        self.ledger.parent.chmod(0o1777)
        self.src.mkdir()
        (self.src / "train.py").write_text(SCRIPT)
        c = self.cluster
        c.start_broker()
        timing = ("--lease", str(LEASE_S), "--kill-grace", str(KILL_GRACE_S))
        if self.s.schedulers == 1:
            c.start_scheduler(*timing)
        for name in self.schedulers if self.s.schedulers > 1 else []:
            c.start_another_scheduler(name, *timing, "--leader-lease", str(LEADER_LEASE_S))
        for name in self.names:
            c.start_agent(name, "--target", "box", "--cpus", str(SLOTS), "--lease", str(LEASE_S))

    # --- the submitter ----------------------------------------------------------------------

    async def submit_all(self) -> None:
        client: Client | None = None
        for n in range(self.s.runs):
            sid = f"chaos-{self.s.seed}-{n}"
            config = ScriptRunConfig(
                source_directory=self.src,
                script="train.py",
                arguments=[str(self.ledger)],
                run_config=RunConfiguration(
                    target="box",
                    cpus=1,
                    environment_variables={
                        "CHAOS_N": str(n),
                        "CHAOS_SLEEP": f"{self.rng.uniform(0.3, 2.0):.2f}",
                    },
                ),
            )
            for _ in range(5):  # the broker may be restarting under us: reconnect and retry
                try:
                    if client is None:
                        client = await self.cluster.client()
                    sub = await client.submit(config, submission_id=sid)
                    self.accepted[sid] = sub.run_id
                    break
                except (
                    ClientError,
                    nats.errors.Error,
                    OSError,
                    BrokerUnreachable,
                    NotInitialised,
                ) as exc:
                    if client is not None:
                        await _close(client)
                        client = None
                    last = f"{sid}: {exc}"
                    await asyncio.sleep(1.0)
            else:
                self.refused.append(last)
            every = self.s.submit_every_s
            await asyncio.sleep(self.s.seconds / self.s.runs if every is None else every)
        if client is not None:
            await _close(client)

    # --- faults -----------------------------------------------------------------------------

    async def inject(self, until: float) -> None:
        c = self.cluster
        while time.monotonic() < until:
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * self.s.fault_every_s)
            kinds = ["scheduler", "agent", "pause", "broker"]
            if self.s.schedulers > 1:
                kinds[0:1] = ["leader_kill"] * self.s.leader_kill_weight + ["leader_pause"]
            fault = self.rng.choice(kinds)
            if fault.startswith("leader_"):
                if await self.leader_fault(fault):
                    self.faults[fault] += 1
                continue
            self.faults[fault] += 1
            if fault == "scheduler":
                c.kill_scheduler()
                await asyncio.sleep(self.rng.uniform(0.2, 2.0))
                c.start_scheduler()
            elif fault == "agent":
                name = self.rng.choice(self.names)
                c.kill_agent(name)
                await asyncio.sleep(self.rng.uniform(0.5, 3.0))
                c.start_agent(name)
            elif fault == "pause":
                # up to just under lease + kill grace (past it, the scheduler requeues: a
                # script that completed while its agent was frozen would run again); past
                # lease + 3/4 of the grace the agent's watchdog kills its runs
                name = self.rng.choice(self.names)
                c.pause_agent(name)
                await asyncio.sleep(self.rng.uniform(0.5, LEASE_S + KILL_GRACE_S - 0.5))
                c.resume_agent(name)
            else:
                await asyncio.to_thread(c.restart_broker, self.rng.uniform(0.2, 2.0))

    # --- several schedulers -----------------------------------------------------------------

    async def leader(self) -> Leadership | None:
        """The lease as stored (None: no broker answers, or no leader yet)."""
        client = None
        try:
            client = await Client.connect(self.cluster.url, name="chaos-leader")
            kv = await client.bus.js.key_value(subjects.KV_LEADERSHIP)
            entry = await asyncio.wait_for(kv.get(subjects.LEADER_KEY), 5)
            return codec.decode(Leadership, entry.value or b"")
        except (
            ClientError,
            NotInitialised,
            BrokerUnreachable,
            nats.errors.Error,
            OSError,
            TimeoutError,
            codec.BadMessage,
        ):
            return None  # the broker restarting, or not yet serving Sortie's resources
        finally:
            if client is not None:
                await _close(client)

    async def leader_fault(self, fault: str) -> bool:
        """Kill or pause the leading scheduler; False if none could be found (the broker
        restarting, a takeover under way)."""
        lease = await self.leader()
        procs = self.cluster.others
        name = next(
            (n for n, p in procs.items() if lease and p.pid == lease.pid and p.poll() is None),
            None,
        )
        if lease is None or lease.released or name is None:
            return False
        t0 = time.monotonic()
        if fault == "leader_kill":
            procs[name].kill()
            procs[name].wait()
        else:  # past its lease: a standby takes over; resumed, it finds itself deposed
            os.kill(procs[name].pid, signal.SIGSTOP)
            await asyncio.sleep(LEADER_LEASE_S + self.rng.uniform(0.5, 3.0))
            os.kill(procs[name].pid, signal.SIGCONT)
        deadline = t0 + 60
        while time.monotonic() < deadline:
            now = await self.leader()
            if now is not None and now.epoch > lease.epoch and not now.released:
                self.leaderless.append(time.monotonic() - t0)
                break
            await asyncio.sleep(0.1)
        else:
            self.leaderless.append(time.monotonic() - t0)
        return True

    async def supervise(self, until: float) -> None:
        """Start a scheduler again once it exits (killed, or deposed), as systemd would."""
        while time.monotonic() < until:
            for name, proc in list(self.cluster.others.items()):
                if proc.poll() is not None:
                    self.cluster.start_another_scheduler(
                        name,
                        *("--lease", str(LEASE_S), "--kill-grace", str(KILL_GRACE_S)),
                        *("--leader-lease", str(LEADER_LEASE_S)),
                    )
            await asyncio.sleep(0.5)

    # --- checks -----------------------------------------------------------------------------

    async def settle(self) -> dict[str, m.RunRecord]:
        """Wait (bounded) until every accepted run has ended; return the final records."""
        deadline = time.monotonic() + self.s.settle_s
        async with await self.cluster.client() as client:
            while True:
                records = {r.run_id: r for r in await client.list_runs()}
                active = [r for r in self.accepted.values() if _active(records.get(r))]
                if not active or time.monotonic() > deadline:
                    return records
                await asyncio.sleep(1.0)

    def check(self, records: dict[str, m.RunRecord], report: Report) -> None:
        run_no = self._check_records(records, report)
        done = self._check_ledger(report)
        report.double_completions = sorted(n for n, k in done.items() if k > 1)
        for n, rec in run_no.items():
            if rec.state is RunState.COMPLETED and done[n] != 1:
                report.missing_runs.append(f"run {n} Completed with {done[n]} ledger completions")

    def _check_records(
        self, records: dict[str, m.RunRecord], report: Report
    ) -> dict[str, m.RunRecord]:
        """Each accepted submission: one run, ended. Returns the runs by their CHAOS_N."""
        by_sid: dict[str, list[m.RunRecord]] = {}
        for rec in records.values():
            if rec.spec.submission_id is not None:
                by_sid.setdefault(rec.spec.submission_id, []).append(rec)
        states: Counter[str] = Counter()
        run_no = {}
        for sid, run_id in self.accepted.items():
            recs = by_sid.get(sid, [])
            if len(recs) > 1:
                report.duplicate_runs.append(sid)
            found = records.get(run_id)
            if found is None:
                report.missing_runs.append(sid)
                continue
            rec = found
            run_no[rec.spec.env_vars["CHAOS_N"]] = rec
            kind = f"({rec.error.kind})" if rec.error and rec.state is RunState.FAILED else ""
            states[f"{rec.state}{kind}"] += 1
            if rec.state not in TERMINAL:
                report.stuck.append(f"{run_id} {rec.state}")
            if rec.attempt > 1:
                report.rerun += 1
        report.states = dict(states)
        return run_no

    def _check_ledger(self, report: Report) -> Counter[str]:
        """The runs' own ledger: never over capacity. Returns completions per CHAOS_N."""
        done: Counter[str] = Counter()
        for line in self.ledger.read_text().splitlines():
            parts = line.split()
            if parts[0] == "start":
                report.attempts_started += 1
                live = int(parts[4])
                report.max_concurrent = max(report.max_concurrent, live)
                if live > SLOTS:
                    report.over_capacity.append(line)
            elif parts[0] == "done":
                done[parts[1]] += 1
        return done

    # --- all of it --------------------------------------------------------------------------

    async def run(self) -> Report:
        t0 = time.monotonic()
        report = Report(settings=asdict(self.s))
        try:
            self.start()
            submitter = asyncio.create_task(self.submit_all())
            supervisor = asyncio.create_task(
                self.supervise(time.monotonic() + self.s.seconds + self.s.settle_s)
            )
            await self.inject(time.monotonic() + self.s.seconds)
            await submitter
            records = await self.settle()
            supervisor.cancel()
            if self.s.schedulers > 1:
                last = await self.leader()
                report.leader_epochs = last.epoch if last else 0
            self.check(records, report)
        finally:
            self.cluster.close()
        report.submitted = self.s.runs
        report.accepted = len(self.accepted)
        report.refused = self.refused
        report.faults = dict(self.faults)
        report.seconds = round(time.monotonic() - t0, 1)
        report.longest_leaderless_s = round(max(self.leaderless, default=0.0), 2)
        return report


def _active(rec: m.RunRecord | None) -> bool:
    return rec is not None and rec.state not in TERMINAL


async def _close(client: Client) -> None:
    with contextlib.suppress(TimeoutError, nats.errors.Error, OSError):
        await asyncio.wait_for(client.close(), 5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=Settings.runs)
    p.add_argument("--seconds", type=float, default=Settings.seconds)
    p.add_argument("--agents", type=int, default=Settings.agents)
    p.add_argument("--seed", type=int, default=Settings.seed)
    p.add_argument("--submit-every", type=float, default=None, help="default: spread out")
    p.add_argument("--fault-every", type=float, default=Settings.fault_every_s)
    p.add_argument("--schedulers", type=int, default=1, help="more: leader kills and pauses")
    p.add_argument(
        "--leader-kill-weight",
        type=int,
        default=Settings.leader_kill_weight,
        help="a leader kill is drawn this many times as often as each other fault",
    )
    p.add_argument("--keep", type=Path, help="keep the daemons' files here")
    args = p.parse_args(argv)
    settings = Settings(
        runs=args.runs,
        seconds=args.seconds,
        agents=args.agents,
        seed=args.seed,
        submit_every_s=args.submit_every,
        fault_every_s=args.fault_every,
        schedulers=args.schedulers,
        leader_kill_weight=max(1, args.leader_kill_weight),
    )
    with tempfile.TemporaryDirectory(prefix="sortie-chaos-") as tmp:
        root = args.keep or Path(tmp)
        root.chmod(root.stat().st_mode | 0o011)  # as root, runs start as sortie-run: pass it
        report = asyncio.run(Chaos(root, settings).run())
    print(json.dumps(asdict(report), indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
