"""The pipeline views over HTTP, against a real nats-server, a real scheduler (its run index) and
a real `sortie web`, with pipelines written into the store as the scheduler writes them
(``tests/web/pipeline_seed.py``): the list, a pipeline's page and JSON (graph, steps, reuse,
what changed, reasons, parameters), the live events, the links from the run pages and the runs
list, who may cancel and rerun."""

from __future__ import annotations

import re

import httpx
from starlette.testclient import TestClient

from sortie.client.client import Client
from sortie.proto import messages as m
from sortie.proto.states import RunState
from sortie.web.access import Viewer
from sortie.web.app import create_app
from sortie.web.settings import WebSettings
from tests.web.pipeline_seed import (
    DONE,
    FAILED_BECAUSE,
    LIVE,
    OLD,
    PIPELINE_FAILED,
    Seeded,
    start_live_prep,
)
from tests.web.pipeline_seed import seeded as seeded  # the fixture, shared
from tests.web.sweep_seed import run_apart
from tests.web.test_sweep_view import sse_events

HTML = {"accept": "text/html"}


def get(seeded: Seeded, path: str, **kw: object) -> httpx.Response:
    return httpx.get(f"{seeded.base}{path}", timeout=30, **kw)  # type: ignore[arg-type]


def record_of(seeded: Seeded, run_id: str) -> m.RunRecord:
    found: list[m.RunRecord] = []

    async def read() -> None:
        async with await Client.connect(seeded.url) as client:
            found.append(await client.get_run(run_id))

    run_apart(read())
    return found[0]


def csrf_of(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', html)
    assert found is not None
    return found[1]


def test_the_list_shows_pipelines_only_with_their_steps_counted(seeded: Seeded) -> None:
    listed = get(seeded, "/api/pipelines").json()
    assert [r["run_id"] for r in listed["rows"]] == [LIVE, DONE, OLD]  # newest first, no step
    done = next(r for r in listed["rows"] if r["run_id"] == DONE)
    assert (done["name"], done["experiment"], done["state"]) == (
        "train-flow",
        "pipeline-web",
        "Failed",
    )
    c = done["steps"]
    assert (c["completed"], c["reused"], c["failed"], c["skipped"], c["total"]) == (2, 1, 1, 1, 5)
    assert done["duration_s"] == 60 and done["error"] == PIPELINE_FAILED
    page = get(seeded, "/pipelines", headers=HTML)
    assert page.status_code == 200 and DONE in page.text
    assert re.search(r'<a href="/pipelines" class="active">Pipelines</a>', page.text)
    only = get(seeded, "/api/pipelines?state=Completed").json()
    assert [r["run_id"] for r in only["rows"]] == [OLD]


def test_a_pipelines_json_has_its_graph_steps_reuse_and_reasons(seeded: Seeded) -> None:
    got = get(seeded, f"/api/pipelines/{DONE}").json()
    nodes = {n["name"]: (n["layer"], n["state"]) for n in got["graph"]["nodes"]}
    assert nodes == {
        "prep": (0, "reused"),
        "lint": (0, "completed"),
        "train": (1, "completed"),
        "evaluate": (2, "failed"),
        "report": (3, "skipped"),
    }
    assert {"from": "lint", "to": "report", "data": [], "run_after": True} in got["graph"]["edges"]
    steps = {s["name"]: s for s in got["steps"]}
    assert (steps["prep"]["reused_from"], steps["prep"]["reused_pipeline"]) == (f"{OLD}_prep", OLD)
    assert steps["train"]["run_id"] == f"{DONE}_train"
    assert steps["train"]["run_state"] == "Completed"
    assert steps["train"]["why_ran"] == "key changed; changed: snapshot_id, script"
    assert steps["evaluate"]["error"] == FAILED_BECAUSE
    assert steps["evaluate"]["reason"] == f"its run failed: {FAILED_BECAUSE}"
    assert steps["report"]["reason"] == "step evaluate failed"
    assert steps["lint"]["why_ran"] == "allow_reuse is off; key unchanged"
    assert got["parameters"] == [{"name": "epochs", "value": 5, "default": 3, "set": True}]
    html = get(seeded, f"/pipelines/{DONE}", headers=HTML).text
    assert 'id="graph"' in html and 'id="rerun"' in html
    assert re.search(r'id="cancel" hidden', html)  # it has ended


def test_a_run_that_is_no_pipeline_is_a_404_saying_where_it_is(seeded: Seeded) -> None:
    plain = get(seeded, "/api/pipelines/plain_run_1")
    assert plain.status_code == 404
    assert plain.json()["message"] == (
        "run plain_run_1 is not a pipeline: its page is /runs/plain_run_1"
    )
    assert get(seeded, f"/api/pipelines/{DONE}_train").status_code == 404  # a step run
    assert get(seeded, "/pipelines/nope_1").status_code == 404
    assert get(seeded, "/pipelines/nope_1/events").status_code == 404
    html = {"x-csrf-token": csrf_of(get(seeded, "/pipelines", headers=HTML).text)}
    assert httpx.post(f"{seeded.base}/pipelines/plain_run_1/rerun", headers=html).status_code == 404


def test_run_pages_link_pipelines_and_steps_and_the_runs_list_marks_them(seeded: Seeded) -> None:
    assert f'id="pipeline-link" href="/pipelines/{DONE}"' in get(seeded, f"/runs/{DONE}").text
    step_page = get(seeded, f"/runs/{DONE}_train", headers=HTML).text
    assert f'id="step-pipeline" href="/pipelines/{DONE}#step-train"' in step_page
    assert f"train of pipeline {DONE}" in step_page
    rows = {r["run_id"]: r for r in get(seeded, "/api/runs").json()["rows"]}
    assert (rows[DONE]["pipeline"], rows[DONE]["step"]) == (True, None)
    assert (rows[f"{DONE}_train"]["pipeline"], rows[f"{DONE}_train"]["step"]) == (False, "train")
    assert (rows["plain_run_1"]["pipeline"], rows["plain_run_1"]["step"]) == (False, None)


class ReadOnlyTokens:
    async def lookup(self, token: str) -> Viewer | None:
        return Viewer(can_act=False, session="ro", label="reader") if token == "ro" else None


def test_a_read_only_viewer_sees_no_actions_and_can_take_none(seeded: Seeded) -> None:
    before = record_of(seeded, LIVE)
    app = create_app(WebSettings(url=seeded.url), tokens=ReadOnlyTokens())
    auth = {"Authorization": "Bearer ro"}
    with TestClient(app, base_url="http://127.0.0.1") as http:
        html = http.get(f"/pipelines/{LIVE}", headers={**auth, **HTML}).text
        assert LIVE in html and 'id="cancel"' not in html and 'id="rerun"' not in html
        for action in ("cancel", "rerun"):
            refused = http.post(
                f"/pipelines/{LIVE}/{action}", headers={**auth, "x-csrf-token": csrf_of(html)}
            )
            assert refused.status_code == 403, action
            assert "read-only" in refused.json()["message"]
    after = record_of(seeded, LIVE)
    assert (after.state, after.cancel_requested) == (before.state, before.cancel_requested)


def test_an_action_without_the_pages_csrf_token_or_from_another_site_is_refused(
    seeded: Seeded,
) -> None:
    before = record_of(seeded, LIVE)
    for action in ("cancel", "rerun"):
        refused = httpx.post(f"{seeded.base}/pipelines/{LIVE}/{action}", timeout=30)
        assert refused.status_code == 403 and "stale" in refused.json()["message"]
        token = csrf_of(get(seeded, f"/pipelines/{LIVE}", headers=HTML).text)
        foreign = httpx.post(
            f"{seeded.base}/pipelines/{LIVE}/{action}",
            headers={"x-csrf-token": token, "origin": "http://evil.example"},
            timeout=30,
        )
        assert foreign.status_code == 403 and "another site" in foreign.json()["message"]
    after = record_of(seeded, LIVE)
    assert (after.state, after.cancel_requested) == (before.state, before.cancel_requested)
    listed = get(seeded, "/api/pipelines").json()["rows"]
    assert [r["run_id"] for r in listed] == [LIVE, DONE, OLD]  # no rerun was submitted


def test_the_pipelines_events_push_its_steps_and_its_cancel(seeded: Seeded) -> None:
    """Last: it cancels LIVE."""
    prep = f"{LIVE}_prep"

    seen: list[tuple[str, dict[str, object]]] = []
    token = csrf_of(get(seeded, f"/pipelines/{LIVE}", headers=HTML).text)
    with httpx.stream("GET", f"{seeded.base}/pipelines/{LIVE}/events", timeout=60) as response:
        for name, data in sse_events(response):
            seen.append((name, data))
            if len(seen) == 1:  # the pipeline as it is: now change a step
                assert name == "pipeline" and data["run_id"] == LIVE
                run_apart(start_live_prep(seeded.url))
            if name == "step" and data["run_id"] == prep and data["run_state"] == "Running":
                assert data["step"] == "prep"
                reply = httpx.post(
                    f"{seeded.base}/pipelines/{LIVE}/cancel",
                    headers={"x-csrf-token": token},
                    timeout=30,
                )
                assert reply.status_code == 200, reply.text
            if name == "pipeline" and (data["cancel_requested"] or data["terminal"]):
                break
    names = [n for n, _ in seen]
    assert names[0] == "pipeline" and "step" in names and names[-1] == "pipeline"
    assert names.index("step") < len(names) - 1  # the cancel came after the step's change
    after = record_of(seeded, LIVE)
    assert after.cancel_requested or after.state is RunState.CANCELED


def test_rerun_submits_the_pipeline_again_and_its_page_links_the_first(seeded: Seeded) -> None:
    """After the events test: it adds a pipeline run."""
    token = csrf_of(get(seeded, f"/pipelines/{DONE}", headers=HTML).text)
    reply = httpx.post(
        f"{seeded.base}/pipelines/{DONE}/rerun", headers={"x-csrf-token": token}, timeout=30
    )
    assert reply.status_code == 200, reply.text
    new_id = reply.json()["run_id"]
    assert new_id != DONE
    rec = record_of(seeded, new_id)
    assert rec.pipeline is not None and rec.pipeline.rerun_of == DONE
    assert rec.pipeline.parameters == {"epochs": 5}  # the first run's values, not the defaults
    html = get(seeded, f"/pipelines/{new_id}", headers=HTML).text
    assert f'id="rerun-of" href="/pipelines/{DONE}"' in html
