"""The pipeline views in a real browser (Chromium via Playwright) against a real broker,
scheduler and `sortie web`, with pipelines written as the scheduler writes them
(``pipeline_seed.py``): from the list to a pipeline, its graph and steps table drawn, a reused
step showing the run it took its outputs from, a step's run changing while the page is open;
no JavaScript error (``conftest.page``), a screenshot when a test fails."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.web.pipeline_seed import DONE, LIVE, OLD, PIPELINE_FAILED, Seeded, start_live_prep
from tests.web.pipeline_seed import seeded as seeded  # the fixture, shared
from tests.web.sweep_seed import run_apart


def test_from_the_list_to_a_pipeline_whose_graph_and_steps_draw(seeded: Seeded, page: Page) -> None:
    page.goto(f"{seeded.base}/runs")
    page.click('header.top nav a:text("Pipelines")')
    page.wait_for_url(f"{seeded.base}/pipelines")
    row = page.locator(f'#pipelines tr[data-run="{DONE}"]')
    expect(row.locator("td.steps")).to_contain_text("3 / 5 done")
    expect(row.locator("td.steps")).to_contain_text("1 failed")
    expect(row.locator("td.steps")).to_contain_text("1 skipped")
    expect(row.locator("td.name")).to_have_text("train-flow")
    expect(page.locator("#pipelines tbody tr")).to_have_count(3)
    row.get_by_role("link", name=DONE, exact=True).click()
    page.wait_for_url(f"{seeded.base}/pipelines/{DONE}")

    expect(page.locator("#pipeline-state")).to_have_text("Failed")
    expect(page.locator("#pipeline-error")).to_have_text(PIPELINE_FAILED)
    expect(page.locator("#cancel")).to_be_hidden()  # it has ended
    expect(page.locator("#rerun")).to_be_visible()
    graph = page.locator("#graph")
    expect(graph.locator("g.edge")).to_have_count(5)
    for name, state in [("prep", "reused"), ("train", "completed"), ("evaluate", "failed"),
                        ("lint", "completed"), ("report", "skipped")]:  # fmt: skip
        expect(graph.locator(f'[data-step="{name}"]')).to_have_attribute("data-state", state)
    # layers go left to right: train is right of prep, evaluate right of train
    xs = {
        n: float(graph.locator(f'[data-step="{n}"] rect').get_attribute("x") or "nan")
        for n in ("prep", "train", "evaluate", "report")
    }
    assert xs["prep"] < xs["train"] < xs["evaluate"] < xs["report"]
    expect(graph.locator(".edge.after")).to_have_count(1)  # lint -> report: run_after only

    steps = page.locator("#steps tbody tr")
    expect(steps).to_have_count(5)
    reused = page.locator("#step-prep td.run")
    expect(reused).to_contain_text(f"reused {OLD}_prep of {OLD}")
    expect(page.locator("#step-train td.why")).to_have_text(
        "key changed; changed: snapshot_id, script"
    )
    expect(page.locator("#step-evaluate td.reason")).to_contain_text("its run failed")
    expect(page.locator("#step-report td.reason")).to_have_text("step evaluate failed")
    expect(page.locator("#parameters")).to_contain_text("(default 3)")

    reused.locator("a.reused-from").click()
    page.wait_for_url(f"{seeded.base}/runs/{OLD}_prep")
    page.click("#step-pipeline")
    page.wait_for_url(f"{seeded.base}/pipelines/{OLD}#step-prep")
    expect(page.locator("#pipeline-state")).to_have_text("Completed")


def test_a_steps_run_changes_on_an_open_pipeline_page_without_a_reload(
    seeded: Seeded, page: Page
) -> None:
    page.goto(f"{seeded.base}/pipelines/{LIVE}")
    expect(page.locator("#live")).to_have_class("live on")
    expect(page.locator("#graph [data-step=train]")).to_have_attribute("data-state", "waiting")
    expect(page.locator("#step-prep td.run .state")).to_have_text("Queued")

    run_apart(start_live_prep(seeded.url))
    expect(page.locator("#step-prep td.run .state")).to_have_text("Running", timeout=30_000)
