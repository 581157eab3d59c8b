"""The peer side of the benchmarks: Ray Jobs on this machine.

Run with the Python of a separate environment that has ``ray[default]`` (never a project
dependency), e.g. ``uv venv /tmp/ray-venv && VIRTUAL_ENV=/tmp/ray-venv uv pip install
"ray[default]"``. ``benchmarks/latency.py --ray`` and ``benchmarks/snapshot_bytes.py --ray``
call it and print the ratios. Standard library and Ray only: it must not import Sortie.

- ``ray-latency``: ``ray start --head`` in a temporary directory, then through
  ``JobSubmissionClient`` the same measurements as ``latency.py``: submit -> process started
  (a one-line shell entrypoint writing its start time; the ``working_dir`` is uploaded once
  and cached), a burst of trivial jobs (first submit to last job SUCCEEDED), and the start
  cost of a cached ``pip`` runtime environment over none.
- ``ray-bytes``: the size of the package Ray uploads for a ``working_dir`` before and after
  one file is edited (Ray addresses the whole directory as one zip).

    /tmp/ray-venv/bin/python benchmarks/peers.py ray-latency [--samples 100] [--burst 200]
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
    from ray.job_submission import JobStatus, JobSubmissionClient

    ray_bin = str(Path(sys.executable).parent / "ray")
    tmp = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    src = tmp / "src"
    src.mkdir()
    (src / "stamp.py").write_text(
        "import os, time\nt = time.time()\nopen(os.environ['STAMP'], 'w').write(repr(t))\n"
    )
    stamps = tmp / "stamps"
    stamps.mkdir()
    port = 8265 + os.getpid() % 1000
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    subprocess.run(
        [ray_bin, "start", "--head", "--num-cpus", str(os.cpu_count() or 2),
         "--dashboard-port", str(port), "--temp-dir", str(tmp / "ray"),
         "--include-dashboard", "true", "--disable-usage-stats"],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    try:
        client = JobSubmissionClient(f"http://127.0.0.1:{port}")

        def wait_done(job: str) -> str:
            while True:
                st = client.get_job_status(job)
                if st in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                    return str(st)
                time.sleep(0.01)

        def started(entry: str, runtime_env: dict[str, Any], n: int) -> list[float]:
            out = []
            for i in range(n):
                stamp = stamps / f"{time.time_ns()}-{i}"
                renv = dict(runtime_env, working_dir=str(src), env_vars={"STAMP": str(stamp)})
                t0 = time.time()
                job = client.submit_job(entrypoint=entry, runtime_env=renv)
                began = wait_stamp(stamp, functools.partial(failed, job))
                out.append(began - t0)
                wait_done(job)
            return out

        def failed(job: str) -> str | None:
            st = client.get_job_status(job)
            if st in (JobStatus.FAILED, JobStatus.STOPPED):
                return f"{st}: {client.get_job_info(job).message}\n{client.get_job_logs(job)}"
            return None

        sh = "sh -c 'date +%s.%N > \"$STAMP\"'"
        started(sh, {}, 3)  # warm-up: working_dir uploaded and cached
        result: dict[str, Any] = {
            "ray_version": __import__("ray").__version__,
            "submit_to_started": summary_ms(started(sh, {}, args.samples)),
        }
        pip_env = {"pip": list(args.env_pip)}
        try:
            started("python stamp.py", pip_env, 1)  # warm-up: the pip environment built
            plain = started("python stamp.py", {}, args.env_samples)
            cached = started("python stamp.py", pip_env, args.env_samples)
            result["env"] = {
                "pip": list(args.env_pip),
                "none": summary_ms(plain),
                "pip_cached": summary_ms(cached),
                "overhead_ms": round(
                    (statistics.median(cached) - statistics.median(plain)) * 1000, 1
                ),
            }
        except JobFailed as exc:
            result["env_error"] = str(exc)[-1500:]
        if args.burst:
            t0 = time.perf_counter()
            jobs = [
                client.submit_job(entrypoint="true", runtime_env={"working_dir": str(src)})
                for _ in range(args.burst)
            ]
            submitted = time.perf_counter() - t0
            states = [wait_done(j) for j in jobs]
            elapsed = time.perf_counter() - t0
            result["burst"] = {
                "runs": args.burst,
                "submitted_s": round(submitted, 2),
                "first_submit_to_last_end_s": round(elapsed, 2),
                "runs_per_s": round(args.burst / elapsed, 1),
                "succeeded": sum(1 for s in states if s.endswith("SUCCEEDED")),
            }
        return result
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, check=False)


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
    by = sub.add_parser("ray-bytes")
    by.add_argument("--dir", required=True)
    by.add_argument("--edit", required=True)
    args = p.parse_args()
    out = ray_latency(args) if args.cmd == "ray-latency" else ray_bytes(args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
