"""The README's screenshots of the dashboard, taken from a real installation.

    .venv/bin/python -m tests.web.screenshots [--out docs/screenshots]

Starts `sortie up` with its dashboard in a temporary directory (its own profile: nothing of
yours is touched), submits the example (examples/sklearn-digits, in an environment with
scikit-learn) and two runs that log training curves, creates a cluster, waits for the runs to
end, and saves PNGs of the runs list, a run with its charts and the compute page (Chromium,
headless: tests/setup-system.sh installs it). Each page is shot once its network is idle and
its heading (``main h1``) is shown, so it works whatever the pages hold.
``SORTIE_SHOTS_DIR=DIR`` keeps the installation (its ``up.log``) in DIR instead of a temporary
directory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from sortie.bus.broker import free_port
from tests.e2e.conftest import REPO, Installation, isolated_env, start_up, stop_up
from tests.web.conftest import CHROMIUM

EXAMPLE = REPO / "examples" / "sklearn-digits"
WAIT_S = 600  # the example's environment is built once (uv), then cached

CURVE = """\
import math, random, sys, time
from sortie import Run

run = Run.get_context()
lr = float(sys.argv[1])
random.seed(int(lr * 1e4))
for step in range(120):
    loss = 2.3 * math.exp(-lr * 40 * step / 120) + 0.05 + random.random() * 0.04
    run.log("loss", loss, step=step)
    run.log("accuracy", 1 - loss / 2.5, step=step)
    if step % 20 == 0:
        print(f"step {step}: loss {loss:.4f}", flush=True)
    time.sleep(0.02)
run.log("final_loss", loss)
"""


def _runs(inst: Installation, work: Path) -> list[str]:
    """Submit the example and two curve runs; their ids."""
    digits = work / "digits"
    shutil.copytree(EXAMPLE, digits, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    curves = work / "curves"
    curves.mkdir()
    (curves / "train.py").write_text(CURVE)
    submits = [
        (
            str(digits),
            "--script",
            "train.py",
            "--experiment",
            "digits",
            "--pip",
            "scikit-learn",
            "--arg=--C",
            "--arg",
            "10",
            "--tag",
            "model=svm",
        ),
    ]
    for lr in ("0.1", "0.05"):
        submits.append(
            (str(curves), "--script", "train.py", "--experiment", "curves",
             "--python", sys.executable, "--tag", f"lr={lr}", "--", lr)
        )  # fmt: skip
    ids = []
    for args in submits:
        out = inst.cli("run", "submit", "--output", "json", *args, check=True)
        ids.append(json.loads(out.stdout.splitlines()[0])["run_id"])
    return ids


def _wait(inst: Installation, run_ids: list[str]) -> None:
    for run_id in run_ids:
        done = inst.cli("run", "wait", run_id, timeout=WAIT_S)
        if done.returncode != 0:
            print(f"run {run_id} did not complete: {done.stderr.strip()}", file=sys.stderr)


def _shot(page: Page, url: str, out: Path) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    page.locator("main h1").first.wait_for(state="visible")
    time.sleep(0.5)  # charts draw after their data arrives
    page.screenshot(path=str(out), full_page=False)
    print(f"saved {out}")


def take(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sortie-shots-") as tmp:
        root = Path(os.environ.get("SORTIE_SHOTS_DIR") or tmp)
        root.chmod(root.stat().st_mode | stat.S_IXOTH)  # runs' user passes it to their dirs
        port, web_port = free_port(), free_port()
        env = isolated_env(root)
        log = root / "up.log"
        proc = start_up(root / "data", port, env, log, "--dashboard-port", str(web_port))
        inst = Installation(
            url=f"nats://127.0.0.1:{port}", data_dir=root / "data", env=env, process=proc, log=log
        )
        base = f"http://127.0.0.1:{web_port}"
        try:
            inst.cli(
                "compute", "create", "train-pool", "--vm-size", "local_small", "--max-nodes", "4",
                check=True,
            )  # fmt: skip
            run_ids = _runs(inst, root)
            _wait(inst, run_ids)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
                page = browser.new_page(viewport={"width": 1400, "height": 860})
                _shot(page, f"{base}/runs", out / "runs.png")
                _shot(page, f"{base}/runs/{run_ids[1]}#metrics", out / "run.png")
                _shot(page, f"{base}/compute", out / "compute.png")
                browser.close()
        finally:
            stop_up(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    take(parser.parse_args().out)


if __name__ == "__main__":
    main()
