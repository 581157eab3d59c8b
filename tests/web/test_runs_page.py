"""The runs and experiments pages in a real browser, against a real `sortie up`: newest first,
filters, the pager, a new run appearing live at the top, the latest metrics, counts by
experiment."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.web.conftest import Dashboard, screenshot_dir

SCRIPT = """\
import sys
from sortie import Run
run = Run.get_context()
run.log("loss", 0.5)
run.log("loss", 0.25)
run.log("acc", 0.875)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("src")
    (where / "train.py").write_text(SCRIPT)
    return where


def submit(dashboard: Dashboard, src: Path, experiment: str, *extra: str) -> str:
    proc = dashboard.cli(
        "run", "submit", str(src), "--script", "train.py", "--python", sys.executable,
        "--experiment", experiment, "-o", "json", *extra,
    )  # fmt: skip
    assert proc.stdout, proc.stderr
    return str(json.loads(proc.stdout.splitlines()[0])["run_id"])


def shown(page: Page) -> list[str]:
    return page.locator("#runs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.run)")


@pytest.fixture(scope="module")
def runs(dashboard: Dashboard, src: Path) -> list[str]:
    """Three ended runs, oldest first: two of `web-a` (Completed, Failed), one of `web-b`."""
    done = submit(dashboard, src, "web-a", "--wait")
    failed = submit(dashboard, src, "web-a", "--wait", "--", "3")
    other = submit(dashboard, src, "web-b", "--wait")
    return [done, failed, other]


def test_runs_are_listed_newest_first_with_their_latest_metrics(
    dashboard: Dashboard, page: Page, runs: list[str]
) -> None:
    page.goto(f"{dashboard.base}/runs")
    expect(page.locator("#runs tbody tr")).to_have_count(3)
    assert shown(page) == list(reversed(runs))
    first = page.locator(f'#runs tr[data-run="{runs[0]}"]')
    expect(first.locator(".state")).to_have_text("Completed")
    expect(first.locator(".metrics")).to_have_text("acc0.875loss0.25")
    expect(page.locator(f'#runs tr[data-run="{runs[1]}"] .state')).to_have_text("Failed")
    assert first.locator("a").first.get_attribute("href") == f"/runs/{runs[0]}"
    if os.environ.get("SORTIE_SCREENSHOTS"):  # for the README
        page.screenshot(path=str(screenshot_dir(Path()) / "runs.png"), full_page=True)


def test_filters_keep_the_runs_they_name(dashboard: Dashboard, page: Page, runs: list[str]) -> None:
    page.goto(f"{dashboard.base}/runs")
    page.select_option("select[name=state]", "Failed")
    page.click("form.filters button")
    page.wait_for_url("**/runs?*state=Failed*")
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    assert shown(page) == [runs[1]]
    page.goto(f"{dashboard.base}/runs?experiment=web-a")
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    assert shown(page) == [runs[1], runs[0]]
    page.goto(f"{dashboard.base}/runs?search={runs[2][-8:]}")
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    page.goto(f"{dashboard.base}/runs?experiment=nothing-here")
    expect(page.locator("#runs-empty")).to_be_visible()
    page.goto(f"{dashboard.base}/runs?state=Bogus")
    expect(page.locator("#runs-error")).to_contain_text("'Bogus' is not a valid RunState")


def test_the_pager_walks_older_and_back(dashboard: Dashboard, page: Page, runs: list[str]) -> None:
    page.goto(f"{dashboard.base}/runs?limit=2&experiment=web-a")
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    expect(page.locator("#newer")).to_have_count(0)
    page.goto(f"{dashboard.base}/runs?limit=1")
    seen = []
    for _ in range(3):
        expect(page.locator("#runs tbody tr")).to_have_count(1)
        seen += shown(page)
        if page.locator("#older").count() == 0:
            break
        page.click("#older")
    assert seen == list(reversed(runs))
    page.click("#newer")
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    assert shown(page) == [runs[1]]
    refused = page.request.get(f"{dashboard.base}/api/runs?limit=0")
    assert refused.status == 400
    assert refused.json() == {
        "code": "bad_request",
        "message": "limit='0': a page shows 1 to 200 runs",
    }
    listed = page.request.get(f"{dashboard.base}/api/runs?experiment=web-a").json()
    assert [r["run_id"] for r in listed["rows"]][-2:] == [runs[1], runs[0]]


def test_a_new_run_appears_at_the_top_live(
    dashboard: Dashboard, page: Page, src: Path, runs: list[str]
) -> None:
    page.goto(f"{dashboard.base}/runs?experiment=web-a")
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    expect(page.locator("#live.on")).to_have_count(1)  # the event stream is open
    other = submit(dashboard, src, "web-c")  # not this page's experiment: not shown
    new = submit(dashboard, src, "web-a")
    expect(page.locator("#runs tbody tr")).to_have_count(3)
    assert shown(page) == [new, runs[1], runs[0]]
    row = page.locator(f'#runs tr[data-run="{new}"]')
    expect(row.locator(".state")).to_have_text("Completed", timeout=60_000)  # updated live
    expect(row.locator(".metrics")).to_have_text("acc0.875loss0.25")
    assert other not in shown(page)


def test_the_experiments_page_counts_runs_by_state(
    dashboard: Dashboard, page: Page, runs: list[str]
) -> None:
    page.goto(f"{dashboard.base}/experiments?metric=loss&goal=min")
    row = page.locator('#experiments tr[data-experiment="web-a"]')
    expect(row.locator(".state[data-state=Failed]")).to_have_text("Failed 1")
    expect(row.locator(".best")).to_contain_text("0.25")
    expect(page.locator('#experiments tr[data-experiment="web-b"] .runs-count')).to_have_text("1")
    # the latest run of each: web-b's one run; web-a's newest (a test above may add one)
    newest_a = page.request.get(f"{dashboard.base}/api/runs?experiment=web-a").json()["rows"][0]
    for name, latest in (("web-a", newest_a["run_id"]), ("web-b", runs[2])):
        cell = page.locator(f'#experiments tr[data-experiment="{name}"] td').nth(3)
        expect(cell.locator("a")).to_have_text(latest)
        assert cell.locator("a").get_attribute("href") == f"/runs/{latest}"
        expect(cell.locator(".muted")).to_contain_text("ago")
    if os.environ.get("SORTIE_SCREENSHOTS"):
        page.screenshot(path=str(screenshot_dir(Path()) / "experiments.png"), full_page=True)
    row.locator("td a").first.click()
    page.wait_for_url("**/runs?experiment=web-a")
    expect(page.locator("#runs tbody tr").first).to_be_visible()


def test_a_child_run_is_listed_under_its_parent(
    dashboard: Dashboard, page: Page, tmp_path: Path
) -> None:
    (tmp_path / "train.py").write_text(
        "from sortie import Run\n"
        "run = Run.get_context()\n"
        "fold = run.child_run('fold-1')\n"
        "fold.log('acc', 0.9)\n"
        "fold.complete()\n"
        "run.log('acc', 0.5)\n"
    )
    parent = submit(dashboard, tmp_path, "web-kids", "--wait")
    page.goto(f"{dashboard.base}/runs?experiment=web-kids")
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    first, second = shown(page)
    assert first == parent  # the child is newer, yet listed right under its parent
    expect(page.locator(f'#runs tr[data-run="{second}"]')).to_have_class("child")
    if os.environ.get("SORTIE_SCREENSHOTS"):
        page.screenshot(path=str(screenshot_dir(Path()) / "runs-children.png"), full_page=True)


@pytest.fixture(scope="module")
def tagged(dashboard: Dashboard, src: Path) -> Iterator[dict[str, str]]:
    """In experiment `web-t`: two ended runs on target `local` tagged team=vision and
    team=nlp, and one on `web-pool` (a cluster made for it; the run is canceled at once, so
    it needs no node)."""
    dashboard.cli(
        "compute", "create", "web-pool", "--vm-size", "LOCAL_SMALL", "--max-nodes", "1",
        check=True,
    )  # fmt: skip
    try:
        pooled = submit(dashboard, src, "web-t", "--target", "web-pool")
        dashboard.cli("run", "cancel", pooled, check=True)
        yield {
            "vision": submit(dashboard, src, "web-t", "--tag", "team=vision", "--wait"),
            "nlp": submit(dashboard, src, "web-t", "--tag", "team=nlp", "--wait"),
            "pool": pooled,
        }
    finally:
        dashboard.cli("compute", "delete", "web-pool", "--force")


def test_the_target_and_tag_filters_keep_the_runs_they_name(
    dashboard: Dashboard, page: Page, tagged: dict[str, str]
) -> None:
    page.goto(f"{dashboard.base}/runs?experiment=web-t")
    expect(page.locator("#runs tbody tr")).to_have_count(3)
    # typed into the filter form, as a person would
    page.fill("input[name=target]", "web-pool")
    page.click("form.filters button")
    page.wait_for_url("**/runs?*target=web-pool*")
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    assert shown(page) == [tagged["pool"]]
    page.fill("input[name=target]", "")
    page.fill("input[name=tag]", "team=vision")
    page.click("form.filters button")
    page.wait_for_url("**/runs?*tag=team%3Dvision*")
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    assert shown(page) == [tagged["vision"]]
    # a key alone: every run that has the tag, whatever its value
    page.goto(f"{dashboard.base}/runs?tag=team")
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    assert shown(page) == [tagged["nlp"], tagged["vision"]]
    page.goto(f"{dashboard.base}/runs?experiment=web-t&target=local")
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    assert shown(page) == [tagged["nlp"], tagged["vision"]]
    page.goto(f"{dashboard.base}/runs?target=web-pool&tag=team")
    expect(page.locator("#runs-empty")).to_be_visible()
    page.goto(f"{dashboard.base}/runs?tag=team=audio")
    expect(page.locator("#runs-empty")).to_be_visible()
