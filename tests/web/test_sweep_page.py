"""The sweep views in a real browser (Chromium via Playwright) against a real broker, scheduler
and `sortie web`, with sweeps written as the scheduler writes them (``sweep_seed.py``): from the
list to a sweep, its trials table, scatter and curves drawn, the scatter's parameter chosen, a
trial written while the page is open appearing without a reload; no JavaScript error
(``conftest.page``), a screenshot when a test fails."""

from __future__ import annotations

import json

from playwright.sync_api import Page, expect

from sortie.proto import sweeps as sw
from sortie.proto.states import RunState
from tests.web.sweep_seed import DONE, LIVE, STOPPED, Seeded, put, report, run_apart, trial_record
from tests.web.sweep_seed import seeded as seeded  # the fixture, shared


def test_from_the_list_to_a_sweep_whose_table_and_charts_draw(seeded: Seeded, page: Page) -> None:
    page.goto(f"{seeded.base}/runs")
    page.click('header.top nav a:text("Sweeps")')
    page.wait_for_url(f"{seeded.base}/sweeps")
    row = page.locator(f'#sweeps tr[data-run="{DONE}"]')
    expect(row.locator("td.trials")).to_have_text("4 / 4")
    expect(row.locator("td.best")).to_contain_text(f"{DONE}_1")
    expect(page.locator(f'#sweeps tr[data-run="{LIVE}"]')).to_have_count(1)
    row.get_by_role("link", name=DONE, exact=True).click()
    page.wait_for_url(f"{seeded.base}/sweeps/{DONE}")

    expect(page.locator("#sweep-state")).to_have_text("Completed")
    expect(page.locator("#sweep-ended-because")).to_contain_text("max_total_trials reached")
    rows = page.locator("#trials tbody tr")
    expect(rows).to_have_count(4)
    expect(page.locator("#trials tr.best")).to_have_attribute("data-run", f"{DONE}_1")
    stopped = page.locator(f'#trials tr[data-run="{DONE}_2"] td.stop')
    expect(stopped).to_contain_text("early_terminated")
    expect(stopped).to_contain_text(STOPPED)
    expect(page.locator("#cancel")).to_be_hidden()  # it has ended

    scatter = page.locator("#scatter")
    expect(scatter.locator("canvas")).to_have_count(1)
    assert scatter.get_attribute("data-param") == "learning_rate"
    assert json.loads(scatter.get_attribute("data-x") or "[]") == [0.01, 0.05, 0.09]
    assert json.loads(scatter.get_attribute("data-y") or "[]") == [0.62, 0.91, 0.3]
    page.select_option("#scatter-param", "optimizer")
    expect(scatter).to_have_attribute("data-param", "optimizer")
    assert json.loads(scatter.get_attribute("data-x") or "[]") == [0, 0, 1]  # sorted by x

    curves = page.locator("#curves")
    expect(curves.locator("canvas")).to_have_count(1)
    expect(curves).to_have_attribute(
        "data-runs", json.dumps([f"{DONE}_1", f"{DONE}_0", f"{DONE}_2"]).replace(" ", "")
    )

    page.click(f'#trials a:text("{DONE}_1")')
    page.wait_for_url(f"{seeded.base}/runs/{DONE}_1")
    expect(page.locator("#trial-params")).to_contain_text("adam")
    page.click("#trial-sweep")
    page.wait_for_url(f"{seeded.base}/sweeps/{DONE}")


def test_a_trial_appears_on_an_open_sweep_page_without_a_reload(seeded: Seeded, page: Page) -> None:
    page.goto(f"{seeded.base}/sweeps/{LIVE}")
    expect(page.locator("#live")).to_have_class("live on")
    trial_id = sw.trial_run_id(LIVE, 2)
    params: dict[str, sw.ParamValue] = {"learning_rate": 0.02, "optimizer": "sgd"}

    async def write() -> None:
        from sortie.bus.connection import open_bus

        bus = await open_bus(seeded.url, "test")
        try:
            await report(bus, trial_id, [0.2, 0.45])
            await put(bus, trial_record(LIVE, 2, RunState.RUNNING, params, [0.2, 0.45]))
        finally:
            await bus.close()

    run_apart(write())
    row = page.locator(f'#trials tr[data-run="{trial_id}"]')
    expect(row).to_have_count(1, timeout=30_000)
    expect(row.locator("td.objective")).to_have_text("0.45")
    # what depends on many trials is read again: the scatter and the curve
    scatter = page.locator("#scatter")
    expect(scatter).to_have_attribute("data-y", "[0.5,0.45,0.2]", timeout=30_000)  # by lr
    expect(page.locator("#curves")).to_have_attribute(
        "data-runs", json.dumps([f"{LIVE}_0", trial_id, f"{LIVE}_1"]).replace(" ", "")
    )
