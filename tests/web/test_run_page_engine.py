"""The run page of a run handed to Slurm, in a real browser against a real `sortie up`, the
tests' sshd and the real one-node Slurm of tests/engines: while Slurm holds the run (its one
node taken by another) the page shows the run's Slurm job, PENDING with Slurm's reason, and the
wait in Slurm's queue next to its state, Queued (queued in Slurm); once the job is cancelled
it shows the job's end and no wait (pushed to the open page)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import wait_until
from tests.engines.conftest import slurm as slurm  # the session's Slurm cluster, shared
from tests.engines.slurm_cluster import SlurmCluster
from tests.engines.test_attach_engines_e2e import slurm_attach_args
from tests.ssh.conftest import ClientKey, Sshd
from tests.ssh.conftest import authorized as authorized  # the fixtures, shared
from tests.ssh.conftest import client_key as client_key
from tests.ssh.conftest import known_hosts as known_hosts
from tests.ssh.conftest import sshd as sshd
from tests.ssh.test_attach_e2e import detach, key_file
from tests.web.conftest import Dashboard
from tests.web.test_compute_engines import forget

pytestmark = pytest.mark.timeout(600)

JOB = """
import sys, time
print("started", flush=True)
if "--sleep" in sys.argv:
    time.sleep(float(sys.argv[-1]))
"""


def submit(dashboard: Dashboard, src: Path, *flags: str) -> str:
    sub = dashboard.json(
        "run", "submit", str(src), "--script", "job.py", "--target", "hpc",
        "--python", sys.executable, *flags,
    )  # fmt: skip
    assert isinstance(sub, dict)
    return str(sub["run_id"])


def shown(dashboard: Dashboard, run_id: str) -> dict:
    found = dashboard.json("run", "show", run_id)
    assert isinstance(found, dict)
    return found


def test_a_run_slurm_holds_shows_its_job_and_its_wait_in_slurm_s_queue(  # noqa: PLR0917  # pytest passes fixtures by name
    dashboard: Dashboard,
    page: Page,
    sshd: Sshd,
    known_hosts: Path,
    client_key: ClientKey,
    slurm: SlurmCluster,
    tmp_path: Path,
) -> None:
    key = key_file(tmp_path, client_key)
    attached = dashboard.cli(*slurm_attach_args("hpc", sshd, known_hosts, key, slurm), timeout=300)
    assert attached.returncode == 0, attached.stderr
    runs: list[str] = []
    try:
        src = tmp_path / "job"
        src.mkdir()
        (src / "job.py").write_text(JOB)
        cpus = str(slurm.cpus)
        hog = submit(dashboard, src, "--cpus", cpus, "--arg=--sleep", "--arg=300")
        runs.append(hog)
        wait_until(lambda: shown(dashboard, hog)["state"] == "Running", timeout=120)
        waits = submit(dashboard, src, "--cpus", cpus)
        runs.insert(0, waits)

        def held() -> dict | None:
            job = shown(dashboard, waits).get("engine_job")
            return job if job and job["state"] == "PENDING" and job["reason"] else None

        pending = wait_until(held, timeout=120)
        page.goto(f"{dashboard.base}/runs/{waits}")
        expect(page.locator("#run-state")).to_have_text("Queued")  # queued in Slurm
        expect(page.locator("#run-engine-wait")).to_have_text(
            f"waiting in slurm's queue: {pending['reason']}"
        )
        expect(page.locator("#run-engine-job")).to_contain_text(
            f"slurm job {pending['job_id']}: PENDING ({pending['reason']}) since "
        )

        # cancelled (the waiting one first: once the node is free it would start), the open
        # page is told: the job's end, and no wait any more
        for run_id in (waits, hog):
            dashboard.cli("run", "cancel", run_id, check=True)
        expect(page.locator("#run-state")).to_have_text("Canceled", timeout=120_000)
        expect(page.locator(".run-title h1")).not_to_contain_text("waiting in", use_inner_text=True)
        expect(page.locator("#run-engine-job")).to_contain_text(f"slurm job {pending['job_id']}: ")
        expect(page.locator("#run-engine-job")).not_to_contain_text("PENDING", timeout=60_000)
        wait_until(lambda: shown(dashboard, hog)["state"] == "Canceled", timeout=120)
        detach(dashboard, "hpc")
    finally:
        forget(dashboard, "hpc", runs)
