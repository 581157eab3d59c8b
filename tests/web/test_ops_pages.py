"""The Compare, Queue and Agents pages in a real browser, against a real `sortie up`: runs
compared side by side, a run that cannot be placed shown with its position and reason, the
local agent with its capacity and its run, cordoned and uncordoned from the page, drained from
it (its run goes on, no new one starts there) and back to ready."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import wait_until
from tests.web.conftest import Dashboard

TRAIN = """\
import sys
from sortie import Run
lr = float(sys.argv[sys.argv.index("--lr") + 1])
run = Run.get_context()
for step in range(5):
    run.log("loss", 1.0 / (1 + lr * step), step=step)
    run.log("accuracy", lr * step, step=step)
"""
SLEEP = "import time\ntime.sleep(600)\n"


def submit(dashboard: Dashboard, src: Path, script: str, *args: str) -> str:
    """A run of ``script`` with this interpreter as is (no environment to build); its id."""
    out = dashboard.json(
        "run", "submit", str(src), "--script", script, "--python", sys.executable, *args
    )
    assert isinstance(out, dict)
    run_id: str = out["run_id"]
    return run_id


def state(dashboard: Dashboard, run_id: str) -> str:
    shown = dashboard.json("run", "show", run_id)
    assert isinstance(shown, dict)
    found: str = shown["state"]
    return found


def local_agent(dashboard: Dashboard) -> dict[str, Any]:
    """The installation's one agent, as `sortie agent list` shows it."""
    listed = dashboard.json("agent", "list")
    assert isinstance(listed, list) and len(listed) == 1
    agent: dict[str, Any] = listed[0]
    return agent


def get(dashboard: Dashboard, path: str) -> Any:
    with urllib.request.urlopen(f"{dashboard.base}{path}", timeout=30) as reply:
        return json.loads(reply.read())


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("ops-src")
    (src / "train.py").write_text(TRAIN)
    (src / "sleep.py").write_text(SLEEP)
    return src


# --- compare ---------------------------------------------------------------------------------


def test_compare_overlays_each_metric_and_sets_the_runs_side_by_side(
    dashboard: Dashboard, page: Page, sources: Path
) -> None:
    slow = submit(dashboard, sources, "train.py", "--experiment", "cmp", "--arg=--lr", "--arg=0.1")
    fast = submit(
        dashboard,
        sources,
        "train.py",
        "--experiment",
        "cmp",
        "--arg=--lr",
        "--arg=0.5",
        "--env",
        "MODE=fast",
    )
    for run_id in (slow, fast):
        dashboard.cli("run", "wait", run_id, check=True)

    page.goto(f"{dashboard.base}/compare?runs={slow},{fast}")
    charts = page.locator("#compare-charts .chart")
    expect(charts).to_have_count(2)
    assert [c.get_attribute("data-metric") for c in charts.all()] == ["accuracy", "loss"]
    for chart in charts.all():  # one series per run, named in the chart's legend
        legend = chart.locator(".u-legend")
        expect(legend).to_contain_text(slow)
        expect(legend).to_contain_text(fast)
    lr = page.locator("#compare-table tr", has=page.locator("td.name", has_text="--lr"))
    expect(lr).to_have_class("differs")
    assert lr.locator("td.value").all_inner_texts() == ["0.1", "0.5"]
    mode = page.locator("#compare-table tr", has=page.locator("td.name", has_text="MODE"))
    assert mode.locator("td.value").all_inner_texts() == ["—", "fast"]
    target = page.locator("#compare-table tr", has=page.locator("td.name", has_text="target"))
    expect(target).to_have_class("same")

    # the picker adds a run found by its id's prefix; the URL follows
    page.locator(".chip", has_text=fast).locator("button").click()
    expect(charts.first.locator(".u-legend")).not_to_contain_text(fast)
    page.fill("#compare-search", fast[:-3])
    page.locator("#compare-found li", has_text=fast).click()
    expect(page.locator(".chip", has_text=fast)).to_be_visible()
    assert page.url.endswith(f"/compare?runs={slow},{fast}")
    expect(charts.first.locator(".u-legend")).to_contain_text(fast)


def test_compare_refuses_more_runs_than_it_can_show(dashboard: Dashboard) -> None:
    ids = ",".join(f"r{i}" for i in range(11))
    with pytest.raises(urllib.error.HTTPError) as refused:
        get(dashboard, f"/api/compare?runs={ids}")
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["message"] == (
        "11 runs asked for: compare at most 10 at once (remove some from the list)"
    )


# --- queue and agents ------------------------------------------------------------------------


@dataclass
class Busy:
    agent_id: str
    cpus: float
    hog: str  # running, holding every CPU of the local agent
    waiter: str  # queued behind it: CPUs busy


@pytest.fixture(scope="module")
def busy(dashboard: Dashboard, sources: Path) -> Iterator[Busy]:
    agent = local_agent(dashboard)
    cpus = agent["capacity"]["cpus"]
    hog = submit(dashboard, sources, "sleep.py", "--experiment", "hog", "--cpus", f"{cpus:g}")
    wait_until(lambda: state(dashboard, hog) == "Running", timeout=60, interval=0.5)
    waiter = submit(dashboard, sources, "sleep.py", "--experiment", "waits", "--cpus", "1")
    try:
        yield Busy(agent_id=agent["agent_id"], cpus=cpus, hog=hog, waiter=waiter)
    finally:
        for run_id in (waiter, hog):
            dashboard.cli("run", "cancel", run_id)


def test_queue_page_shows_a_waiting_run_with_its_position_and_reason(
    dashboard: Dashboard, page: Page, busy: Busy
) -> None:
    page.goto(f"{dashboard.base}/queue")
    row = page.locator(f'#queue tr[data-run="{busy.waiter}"]')
    expect(row.locator("td.pos")).to_have_text("1")
    expect(row.locator(".reason")).to_have_text("1CPUs busy")
    expect(row.locator(".summary")).to_contain_text("no agent of target 'local' can take it now")
    expect(page.locator("#queue-count")).to_have_text("1 queued")
    # the same from the JSON endpoint: the scheduler's queue reply as it is
    listed = get(dashboard, "/api/queue")
    assert listed["total"] == 1
    (queued,) = listed["runs"]
    assert (queued["run_id"], queued["position"], queued["reasons"]) == (
        busy.waiter,
        1,
        {"CPUs busy": 1},
    )


def test_agents_page_shows_the_local_agent_with_its_capacity_and_run(
    dashboard: Dashboard, page: Page, busy: Busy
) -> None:
    page.goto(f"{dashboard.base}/agents")
    row = page.locator(f'#agents tr[data-agent="{busy.agent_id}"]')
    expect(row.locator(".state")).to_have_text("ready")
    expect(row.locator("td.cpus")).to_contain_text(f"{busy.cpus:g} / {busy.cpus:g} used")
    expect(row.locator("td.cpus")).to_contain_text("0 free")
    expect(row.locator("td.runs a")).to_have_text(busy.hog)
    expect(row.locator("td.age")).to_contain_text("ago")


def test_cordon_and_uncordon_from_the_agents_page(
    dashboard: Dashboard, page: Page, busy: Busy
) -> None:
    page.goto(f"{dashboard.base}/agents")
    row = page.locator(f'#agents tr[data-agent="{busy.agent_id}"]')
    row.get_by_role("button", name="Cordon").click()
    expect(row.locator(".state")).to_have_text("cordoned")
    agent = local_agent(dashboard)
    assert agent["cordoned"] is True
    row.get_by_role("button", name="Uncordon").click()
    expect(row.locator(".state")).to_have_text("ready")
    agent = local_agent(dashboard)
    assert agent["cordoned"] is False


def test_an_action_without_the_pages_csrf_token_is_refused(
    dashboard: Dashboard, busy: Busy
) -> None:
    request = urllib.request.Request(
        f"{dashboard.base}/agents/{busy.agent_id}/cordon", method="POST", data=b"{}"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403
    agent = local_agent(dashboard)
    assert agent["cordoned"] is False


def test_drain_from_the_agents_page(dashboard: Dashboard, page: Page, busy: Busy) -> None:
    """Last of the agents tests: it ends the hog, and starts the waiter."""
    page.goto(f"{dashboard.base}/agents")
    row = page.locator(f'#agents tr[data-agent="{busy.agent_id}"]')
    row.get_by_role("button", name="Drain").click()
    expect(row.locator(".state")).to_have_text("draining")
    expect(row.get_by_role("button", name="Drain")).to_have_count(0)  # drained already
    expect(row.get_by_role("button", name="Uncordon")).to_be_visible()
    expect(row.locator("td.runs a")).to_have_text(busy.hog)  # its run goes on
    assert local_agent(dashboard)["draining"] is True
    assert state(dashboard, busy.hog) == "Running"

    # its run ends: the agent, idle now, stays draining and takes no new run
    dashboard.cli("run", "cancel", busy.hog, check=True)
    expect(row.locator("td.runs")).to_have_text("none", timeout=30_000)
    expect(row.locator("td.cpus")).to_contain_text(f"0 / {busy.cpus:g} used")
    expect(row.locator(".state")).to_have_text("draining")
    assert state(dashboard, busy.waiter) == "Queued"

    # uncordoned from the page, it is ready again and the waiting run starts on it
    row.get_by_role("button", name="Uncordon").click()
    expect(row.locator(".state")).to_have_text("ready")
    expect(row.locator("td.runs a")).to_have_text(busy.waiter, timeout=60_000)
    assert local_agent(dashboard)["draining"] is False
