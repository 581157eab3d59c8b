"""An open runs page, and an open run page, stay live through a scheduler restart and a
nats-server restart: the daemons are separate processes (tests/faults.py), `sortie web` is one
more, and the page is never reloaded by the test."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def _submitted(cluster: Cluster, src: Path, *extra: str) -> str:
    """A run's id, once a scheduler took it (retried while one is starting: bounded)."""
    deadline = time.monotonic() + 60
    while True:
        out = cluster.cli(
            "run", "submit", str(src), "--script", "train.py", "--output", "json", *extra
        )
        if out.returncode == 0:
            return str(json.loads(out.stdout.splitlines()[0])["run_id"])
        if time.monotonic() > deadline:
            raise AssertionError(out.stderr)
        time.sleep(0.5)


@contextmanager
def _web(cluster: Cluster) -> Iterator[str]:
    """`sortie web` standalone on a free port, as a process of its own: its base URL."""
    port = free_port()
    web = cluster._spawn("web", ["web", "--port", str(port)])
    try:
        listening(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        web.terminate()
        web.wait(20)


def _logged_in(cluster: Cluster, page: Page, base: str, path: str) -> None:
    """``page`` at ``path``, logged in through the form with a token minted for it."""
    token = cluster.cli("auth", "web-token", "--label", "faults").stdout.splitlines()[0]
    page.goto(f"{base}/login?next={path}")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{path}")


def test_the_runs_page_stays_live_through_restarts(
    cluster: Cluster, page: Page, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("print('hi')\n")
    first = _submitted(cluster, src)  # the scheduler is up (resources made)
    with _web(cluster) as base:
        _logged_in(cluster, page, base, "/runs")
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


# ticks until the file named by its argument exists, then ends (bounded: ten minutes)
TICKS = """\
import sys, time
from pathlib import Path
done = Path(sys.argv[1])
for i in range(3000):
    print(f"tick {i}", flush=True)
    if done.exists():
        sys.exit(0)
    time.sleep(0.2)
sys.exit(1)
"""


def _last_tick(page: Page) -> int:
    return int(page.locator("#log").inner_text().rsplit("tick ", 1)[1].split()[0])


def _ticks_on(page: Page, after: int) -> int:
    """Once the open page's log shows more lines than ``after``: the last one it shows."""
    expect(page.locator("#log")).to_contain_text(f"tick {after + 5}", timeout=60_000)
    return _last_tick(page)


def test_an_open_run_page_keeps_its_logs_and_states_through_restarts(
    cluster: Cluster, page: Page, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(TICKS)
    done = tmp_path / "done"
    # queued: no agent yet; it starts after the scheduler's restart
    run_id = _submitted(cluster, src, "--python", sys.executable, "--arg", str(done))
    with _web(cluster) as base:
        _logged_in(cluster, page, base, f"/runs/{run_id}")
        expect(page.locator("#run-state")).to_have_text("Queued")
        page.click('#run-tabs a[data-tab="logs"]')

        # the scheduler restarts; an agent comes; the run starts: its state and its lines
        # reach the page opened before
        cluster.kill_scheduler()
        cluster.start_scheduler()
        cluster.start_agent("a1", "--target", "local")
        expect(page.locator("#run-state")).to_have_text("Running", timeout=90_000)
        seen = _ticks_on(page, 0)

        # the broker is away 3 s under the running run (longer than a command's few tries
        # to reconnect: `sortie web` keeps trying), then back: the lines keep coming
        cluster.restart_broker(down_s=3.0)
        seen = _ticks_on(page, seen)

        # and the run's end reaches the page too
        done.write_text("")
        expect(page.locator("#run-state")).to_have_text("Completed", timeout=60_000)
        expect(page.locator("#log-status")).to_have_text("end of output")
        # every line once, in order: none lost or shown twice across the reconnects
        shown = page.locator("#log").inner_text().splitlines()
        ticks = [int(t.split()[1]) for t in shown if t.startswith("tick ")]
        assert ticks == list(range(len(ticks))) and ticks[-1] > seen
        page.click('#run-tabs a[data-tab="overview"]')
        timeline = page.locator("#timeline")
        expect(timeline).to_contain_text("Running")
        expect(timeline).to_contain_text("Completed")
        expect(page.locator("#run-ended")).not_to_be_empty()
        assert page.url.split("#")[0] == f"{base}/runs/{run_id}"  # the same page all along
        page.goto("about:blank")  # its event streams closed before `sortie web` stops
