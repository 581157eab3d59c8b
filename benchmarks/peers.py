"""The peer side of the benchmarks: Ray Jobs and a one-node Slurm cluster on this machine.

Run with the Python of a separate environment that has ``ray[default]`` (never a project
dependency), e.g. ``uv venv /tmp/ray-venv && VIRTUAL_ENV=/tmp/ray-venv uv pip install
"ray[default]"``. ``benchmarks/latency.py --ray`` and ``benchmarks/snapshot_bytes.py --ray``
call it and print the ratios. Standard library and Ray only: it must not import Sortie.

- ``ray-latency``: ``ray start --head`` in a temporary directory, then through
  ``JobSubmissionClient`` the same measurements as ``latency.py``: submit -> process started
  (a one-line shell entrypoint writing its start time; the ``working_dir`` is uploaded once
  and cached), a burst of trivial jobs (first submit to last job SUCCEEDED), and the start
  cost of a cached ``pip`` runtime environment over none.
- ``slurm-latency``: a ``slurm.conf`` for one node (this machine) in a temporary directory,
  ``slurmctld -D`` and ``slurmd -D`` started as children (root; ``munged`` must be running),
  then sbatch -> batch script started (it writes ``date +%s.%N``) one job at a time, and a
  burst of trivial jobs (first sbatch to the last gone from ``squeue``). Slurm's scheduler
  settings are its defaults unless ``--sched-params`` gives ``SchedulerParameters``.
- ``ray-bytes``: the size of the package Ray uploads for a ``working_dir`` before and after
  one file is edited (Ray addresses the whole directory as one zip).

    /tmp/ray-venv/bin/python -m benchmarks.peers ray-latency [--samples 100] [--burst 200]
    python3 -m benchmarks.peers slurm-latency [--samples 100] [--burst 200]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def summary_ms(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 0.5), 1),
        "p99_ms": round(pct(ms, 0.99), 1),
        "min_ms": round(min(ms), 1),
        "max_ms": round(max(ms), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }


class JobFailed(Exception):
    pass


def wait_stamp(path: Path, failed: Callable[[], str | None], limit_s: float = 300) -> float:
    deadline = time.monotonic() + limit_s
    n = 0
    while time.monotonic() < deadline:
        try:
            text = path.read_text().strip()
            if text:
                return float(text)
        except FileNotFoundError:
            pass
        n += 1
        if n % 250 == 0 and (why := failed()) is not None:
            raise JobFailed(why)
        time.sleep(0.002)
    raise JobFailed(f"job never started (no {path})")


def ray_latency(args: argparse.Namespace) -> dict[str, Any]:
    from ray.job_submission import JobSubmissionClient

    tmp = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    src = tmp / "src"
    src.mkdir()
    (src / "stamp.py").write_text(
        "import os, time\nt = time.time()\nopen(os.environ['STAMP'], 'w').write(repr(t))\n"
    )
    stamps = tmp / "stamps"
    stamps.mkdir()
    ray_bin, port = _ray_start(tmp)
    try:
        jobs = _RayJobs(JobSubmissionClient(f"http://127.0.0.1:{port}"), src, stamps)
        sh = "sh -c 'date +%s.%N > \"$STAMP\"'"
        jobs.started(sh, {}, 3)  # warm-up: working_dir uploaded and cached
        result: dict[str, Any] = {
            "ray_version": __import__("ray").__version__,
            "submit_to_started": summary_ms(jobs.started(sh, {}, args.samples)),
        }
        try:
            result["env"] = _ray_env_overhead(jobs, args)
        except JobFailed as exc:
            result["env_error"] = str(exc)[-1500:]
        if args.burst:
            result["burst"] = jobs.burst(args.burst)
        return result
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, check=False)


def _ray_start(tmp: Path) -> tuple[str, int]:
    """``ray start --head`` with its files in ``tmp``: the ``ray`` binary and dashboard port."""
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = 8265 + os.getpid() % 1000
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    subprocess.run(
        # --node-ip-address: Ray would otherwise bind the machine's external interface
        [ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1",
         "--num-cpus", str(os.cpu_count() or 2),
         "--dashboard-port", str(port), "--temp-dir", str(tmp / "ray"),
         "--include-dashboard", "true", "--disable-usage-stats"],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    return ray_bin, port


def _ray_env_overhead(jobs: _RayJobs, args: argparse.Namespace) -> dict[str, Any]:
    """The start cost of a cached ``pip`` runtime environment over none."""
    pip_env = {"pip": list(args.env_pip)}
    jobs.started("python stamp.py", pip_env, 1)  # warm-up: the pip environment built
    plain = jobs.started("python stamp.py", {}, args.env_samples)
    cached = jobs.started("python stamp.py", pip_env, args.env_samples)
    return {
        "pip": list(args.env_pip),
        "none": summary_ms(plain),
        "pip_cached": summary_ms(cached),
        "overhead_ms": round((statistics.median(cached) - statistics.median(plain)) * 1000, 1),
    }


class _RayJobs:
    """Jobs submitted through Ray's ``JobSubmissionClient``, each with ``src`` as working_dir."""

    def __init__(self, client: Any, src: Path, stamps: Path) -> None:
        self.client = client  # a ray.job_submission.JobSubmissionClient
        self.src = src
        self.stamps = stamps

    def wait_done(self, job: str) -> str:
        from ray.job_submission import JobStatus

        while True:
            st = self.client.get_job_status(job)
            if st in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                return str(st)
            time.sleep(0.01)

    def failed(self, job: str) -> str | None:
        from ray.job_submission import JobStatus

        st = self.client.get_job_status(job)
        if st in (JobStatus.FAILED, JobStatus.STOPPED):
            info = self.client.get_job_info(job).message
            return f"{st}: {info}\n{self.client.get_job_logs(job)}"
        return None

    def started(self, entry: str, runtime_env: dict[str, Any], n: int) -> list[float]:
        """Submit -> process started, ``n`` jobs one at a time."""
        out = []
        for i in range(n):
            stamp = self.stamps / f"{time.time_ns()}-{i}"
            renv = dict(runtime_env, working_dir=str(self.src), env_vars={"STAMP": str(stamp)})
            t0 = time.time()
            job = self.client.submit_job(entrypoint=entry, runtime_env=renv)
            began = wait_stamp(stamp, functools.partial(self.failed, job))
            out.append(began - t0)
            self.wait_done(job)
        return out

    def burst(self, n: int) -> dict[str, Any]:
        """``n`` trivial jobs: first submit to last job SUCCEEDED."""
        t0 = time.perf_counter()
        jobs = [
            self.client.submit_job(entrypoint="true", runtime_env={"working_dir": str(self.src)})
            for _ in range(n)
        ]
        submitted = time.perf_counter() - t0
        states = [self.wait_done(j) for j in jobs]
        elapsed = time.perf_counter() - t0
        return {
            "runs": n,
            "submitted_s": round(submitted, 2),
            "first_submit_to_last_end_s": round(elapsed, 2),
            "runs_per_s": round(n / elapsed, 1),
            "succeeded": sum(1 for s in states if s.endswith("SUCCEEDED")),
        }


SLURM_CONF = """\
# One-node cluster on this machine for the benchmark; everything else is Slurm's default.
ClusterName=sortiebench
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
SlurmctldLogFile={tmp}/slurmctld.log
SlurmdLogFile={tmp}/slurmd.log
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
{extra}"""


def slurm_up(tmp: Path, sched_params: str) -> tuple[dict[str, str], list[subprocess.Popen[bytes]]]:
    """Start slurmctld and slurmd (foreground, as children) with a config in ``tmp``."""
    probe = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True)
    facts = dict(kv.split("=", 1) for kv in probe.stdout.split() if "=" in kv)
    (tmp / "state").mkdir()
    (tmp / "spool").mkdir()
    conf = tmp / "slurm.conf"
    base = 6817 + os.getpid() % 1000 * 2
    conf.write_text(
        SLURM_CONF.format(
            host=facts["NodeName"], ctld_port=base, slurmd_port=base + 1, tmp=tmp,
            cpus=facts["CPUs"], mem=int(facts["RealMemory"]) * 9 // 10,
            extra=f"SchedulerParameters={sched_params}\n" if sched_params else "",
        )
    )  # fmt: skip
    env = dict(os.environ, SLURM_CONF=str(conf))
    procs = [
        subprocess.Popen(
            [daemon, "-D", "-f", str(conf)], env=env, stdout=subprocess.DEVNULL,
            stderr=open(tmp / f"{daemon}.err", "wb"),  # noqa: SIM115 - handed to the child
        )
        for daemon in ("slurmctld", "slurmd")
    ]  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env, check=False
        ).stdout.strip()
        if state == "idle":
            return env, procs
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.2)
    slurm_down(procs)
    logs = "".join((tmp / f).read_text(errors="replace")[-1500:] for f in
                   ("slurmctld.err", "slurmd.err", "slurmctld.log", "slurmd.log")
                   if (tmp / f).exists())  # fmt: skip
    raise SystemExit(f"Slurm did not come up (sinfo: {state!r}):\n{logs}")


def slurm_down(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def slurm_latency(args: argparse.Namespace) -> dict[str, Any]:
    """sbatch -> batch script started, and a burst of trivial jobs, on a one-node cluster."""
    tmp = Path(tempfile.mkdtemp(prefix="slurm-bench-"))
    env, procs = slurm_up(tmp, args.sched_params)
    (tmp / "stamps").mkdir()
    (tmp / "stamp.sh").write_text('#!/bin/sh\ndate +%s.%N > "$STAMP"\n')
    (tmp / "noop.sh").write_text("#!/bin/sh\ntrue\n")
    slurm = _SlurmJobs(tmp, env)
    try:
        slurm.started(3)  # warm-up
        version = subprocess.run(
            ["sinfo", "-V"], capture_output=True, text=True, env=env, check=False
        )
        result: dict[str, Any] = {
            "slurm_version": version.stdout.strip(),
            "scheduler_parameters": args.sched_params,
            "config": str(tmp / "slurm.conf"),
            "submit_to_started": summary_ms(slurm.started(args.samples)),
        }
        if args.burst:
            result["burst"] = slurm.burst(args.burst, args.burst_window)
        return result
    finally:
        slurm_down(procs)


class _SlurmJobs:
    """Batch jobs on the cluster ``slurm_up`` started in ``tmp`` (its scripts live there)."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.common = ["sbatch", "--parsable", "--output=/dev/null", f"--chdir={tmp}"]

    def sbatch(self, *extra: str) -> str:
        done = subprocess.run(
            [*self.common, *extra], capture_output=True, text=True, env=self.env, check=True
        )
        return done.stdout.strip().split(";")[0]

    def queued(self, name: str) -> list[str]:
        out = subprocess.run(
            ["squeue", "-h", "-n", name, "-o", "%i"],
            capture_output=True, text=True, env=self.env, check=True,
        ).stdout  # fmt: skip
        return out.split()

    def state(self, job: str) -> str | None:
        """None while the job is fine; otherwise what went wrong."""
        out = subprocess.run(
            ["scontrol", "show", "job", job],
            capture_output=True, text=True, env=self.env, check=False,
        ).stdout  # fmt: skip
        st = next((w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")), "")
        fine = ("", "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "COMPLETED")
        return None if st in fine else f"{job} {st}"

    def wait_gone(self, name: str, every_s: float = 0.05) -> None:
        while self.queued(name):  # squeue lists a job until it has completed
            time.sleep(every_s)

    def started(self, n: int) -> list[float]:
        """sbatch -> batch script started, ``n`` jobs one at a time."""
        out = []
        for i in range(n):
            stamp = self.tmp / "stamps" / f"{time.time_ns()}-{i}"
            t0 = time.time()
            job = self.sbatch(
                "--job-name=lat", f"--export=ALL,STAMP={stamp}", str(self.tmp / "stamp.sh")
            )
            began = wait_stamp(stamp, functools.partial(self.state, job))
            out.append(began - t0)
            self.wait_gone("lat")  # one at a time: the next starts on an idle node
        return out

    def burst(self, n: int, window: int) -> dict[str, Any]:
        """``n`` trivial jobs: first sbatch to the last gone from ``squeue``."""
        name = f"burst-{os.getpid()}"
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max(1, min(window, 8))) as pool:
            jobs = list(
                pool.map(lambda _: self.sbatch(f"--job-name={name}", str(self.tmp / "noop.sh")),
                         range(n))
            )  # fmt: skip
        submitted = time.perf_counter() - t0
        self.wait_gone(name, 0.1)
        elapsed = time.perf_counter() - t0
        return {
            "runs": n,
            "submitted_s": round(submitted, 2),
            "first_submit_to_last_end_s": round(elapsed, 2),
            "runs_per_s": round(n / elapsed, 1),
            "failed": sum(1 for j in jobs if self.state(j) is not None),
        }


def ray_bytes(args: argparse.Namespace) -> dict[str, Any]:
    from ray._private.runtime_env.packaging import create_package, get_uri_for_directory

    src = Path(args.dir)
    tmp = Path(tempfile.mkdtemp(prefix="ray-bytes-"))

    def package(tag: str) -> tuple[str, int]:
        uri = get_uri_for_directory(str(src), include_gitignore=True)
        target = tmp / f"{tag}.zip"
        create_package(str(src), target, include_gitignore=True)
        return uri, target.stat().st_size

    first_uri, first_size = package("first")
    again_uri, _ = package("again")
    edited = Path(args.edit)
    edited.write_text(edited.read_text() + "# one more line\n")
    edit_uri, edit_size = package("edited")
    return {
        "first_upload_bytes": first_size,
        # the same URI is already in the cluster's store: nothing is uploaded
        "unchanged_upload_bytes": 0 if again_uri == first_uri else first_size,
        "edited_upload_bytes": edit_size if edit_uri != first_uri else 0,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    lat = sub.add_parser("ray-latency")
    lat.add_argument("--samples", type=int, default=100)
    lat.add_argument("--env-samples", type=int, default=30)
    lat.add_argument("--env-pip", nargs="+", default=["six"])
    lat.add_argument("--burst", type=int, default=200)
    lat.add_argument("--burst-window", type=int, default=200)  # (Ray's submit is synchronous)
    sl = sub.add_parser("slurm-latency")
    sl.add_argument("--samples", type=int, default=100)
    sl.add_argument("--burst", type=int, default=200)
    sl.add_argument("--burst-window", type=int, default=8, help="sbatch calls in flight")
    sl.add_argument("--sched-params", default="", help="SchedulerParameters (default: none)")
    by = sub.add_parser("ray-bytes")
    by.add_argument("--dir", required=True)
    by.add_argument("--edit", required=True)
    args = p.parse_args()
    run = {"ray-latency": ray_latency, "slurm-latency": slurm_latency, "ray-bytes": ray_bytes}
    out = run[args.cmd](args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
