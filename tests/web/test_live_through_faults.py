"""An open runs page stays live through a scheduler restart and a nats-server restart: the
daemons are separate processes (tests/faults.py), `sortie web` is one more, and the page is
never reloaded by the test."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from sortie.bus.broker import free_port
from tests.faults import Cluster, listening


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "c")
    c.start_broker()
    c.start_scheduler()
    try:
        yield c
    finally:
        c.close()


def _submitted(cluster: Cluster, src: Path) -> str:
    """A run's id, once a scheduler took it (retried while one is starting: bounded)."""
    deadline = time.monotonic() + 60
    while True:
        out = cluster.cli("run", "submit", str(src), "--script", "train.py", "--output", "json")
        if out.returncode == 0:
            return str(json.loads(out.stdout.splitlines()[0])["run_id"])
        if time.monotonic() > deadline:
            raise AssertionError(out.stderr)
        time.sleep(0.5)


def test_the_runs_page_stays_live_through_restarts(
    cluster: Cluster, page: Page, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("print('hi')\n")
    first = _submitted(cluster, src)  # the scheduler is up (resources made)
    port = free_port()
    web = cluster._spawn("web", ["web", "--port", str(port)])
    try:
        listening(port)
        token = cluster.cli("auth", "web-token", "--label", "faults").stdout.splitlines()[0]
        base = f"http://127.0.0.1:{port}"
        page.goto(f"{base}/login?next=/runs")
        page.fill("input[name=token]", token)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/runs")
        expect(page.get_by_role("link", name=first, exact=True)).to_be_visible()

        cluster.kill_scheduler()
        cluster.start_scheduler()
        after_scheduler = _submitted(cluster, src)
        expect(page.get_by_role("link", name=after_scheduler, exact=True)).to_be_visible(
            timeout=60_000
        )

        cluster.restart_broker()
        after_broker = _submitted(cluster, src)
        expect(page.get_by_role("link", name=after_broker, exact=True)).to_be_visible(
            timeout=60_000
        )
        assert page.url == f"{base}/runs"  # the same page all along
        page.goto("about:blank")  # its event stream closed before `sortie web` stops
    finally:
        web.terminate()
        web.wait(20)
