"""A real sweep on the sweep page: nats-server, the scheduler (its sweep controller) and an
agent as processes, `sortie web`, and real trial scripts logging a noisy objective. The page
opened while the sweep runs fills its trials table, scatter and curves without a reload, and
shows the sweep ending with its best trial; no JavaScript error (``conftest.page``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from sortie.bus.broker import free_port
from sortie.client.runconfig import RunConfiguration, ScriptRunConfig
from sortie.proto import sweeps as sw
from tests.faults import Cluster, listening, until
from tests.web.sweep_seed import run_apart

TRIAL = """\
import argparse, time
from sortie import Run

p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
a = p.parse_args()
run = Run.get_context()
for i in range(1, 7):
    run.log("acc", round(a.x * i / 6, 6))
    time.sleep(0.3)
"""

SWEEP = sw.SweepSpec(
    space={"x": sw.Uniform(min_value=0.1, max_value=1.0)},
    sampling=sw.RandomSampling(seed=4),
    policy=sw.NoTermination(),
    primary_metric="acc",
    goal="maximize",
    max_total_trials=4,
    max_concurrent_trials=2,
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str]]:
    cluster = Cluster(tmp_path_factory.mktemp("real-sweep") / "c")
    cluster.start_broker()
    cluster.start_scheduler()
    cluster.start_agent("a1", "--target", "box", "--cpus", "2")
    web = None
    try:
        run_apart(ready(cluster))  # the scheduler made the broker's resources: web may start
        port = free_port()
        web = cluster._spawn("web", ["web", "--port", str(port), "--open-on-loopback"])
        listening(port)
        yield cluster, f"http://127.0.0.1:{port}"
    finally:
        if web is not None:
            web.terminate()
            web.wait(30)
        cluster.close()


async def ready(cluster: Cluster) -> None:
    client = await cluster.client()
    await client.close()


async def submitted(cluster: Cluster, src: Path) -> str:
    async with await cluster.client() as client:

        async def has_box() -> bool:
            return "box" in {t.name for t in await client.targets()}

        await until(has_box, 30)
        config = ScriptRunConfig(
            source_directory=src, script="train.py", run_config=RunConfiguration(target="box")
        )
        return (await client.submit(config, sweep=SWEEP)).run_id


def test_a_real_sweep_fills_its_open_page_and_ends_with_its_best(
    served: tuple[Cluster, str], page: Page, tmp_path: Path
) -> None:
    cluster, base = served
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(TRIAL)
    sweep_id = run_apart(submitted(cluster, src))
    page.goto(f"{base}/sweeps/{sweep_id}")
    expect(page.locator("#sweep-state")).to_have_text("Running")
    rows = page.locator("#trials tbody tr[data-run]")
    expect(rows).to_have_count(4, timeout=180_000)
    expect(page.locator("#sweep-state")).to_have_text("Completed", timeout=180_000)
    expect(page.locator("#sweep-ended-because")).not_to_be_empty()
    expect(page.locator('#trials tbody tr[data-state="Completed"]')).to_have_count(4)
    best = page.locator("#trials tr.best")
    expect(best).to_have_count(1)
    best_id = best.get_attribute("data-run")
    assert best_id is not None and best_id.startswith(f"{sweep_id}_")
    expect(page.locator("#sweep-best")).to_contain_text(best_id)
    # each trial's six reports, from its own metric stream
    curves = page.locator("#curves")
    expect(curves.locator("canvas")).to_have_count(1)
    wait = 0
    while len(json.loads(curves.get_attribute("data-runs") or "[]")) < 4 and wait < 100:
        page.wait_for_timeout(200)  # the last reload after the last trial's record (bounded)
        wait += 1
    assert sorted(json.loads(curves.get_attribute("data-runs") or "[]")) == sorted(
        f"{sweep_id}_{i}" for i in range(4)
    )
    got = run_apart(curves_of(base, sweep_id))
    assert all(len(values) == 6 for values in got.values()), got
    scatter = page.locator("#scatter")
    expect(scatter.locator("canvas")).to_have_count(1)
    assert len(json.loads(scatter.get_attribute("data-y") or "[]")) == 4


async def curves_of(base: str, sweep_id: str) -> dict[str, list[float]]:
    import httpx

    async with httpx.AsyncClient() as http:
        reply = await http.get(f"{base}/api/sweeps/{sweep_id}/curves", timeout=30)
    curves: dict[str, list[float]] = reply.json()["curves"]
    return curves
