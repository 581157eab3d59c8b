"""The sweep views over HTTP, against a real nats-server, a real scheduler (its run index) and
a real `sortie web`, with sweeps written into the store as the scheduler writes them
(``tests/web/sweep_seed.py``): the list, a sweep's page and JSON, its curves, the live events,
the links from the run pages, who may cancel, and no secret on any of it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
from starlette.testclient import TestClient

from sortie.client.client import Client
from sortie.proto import sweeps as sw
from sortie.proto.states import RunState
from sortie.web.access import Viewer
from sortie.web.app import create_app
from sortie.web.settings import WebSettings
from tests.web.sweep_seed import (
    DONE,
    LIVE,
    SECRET,
    STOPPED,
    Seeded,
    put,
    report,
    run_apart,
    trial_record,
)
from tests.web.sweep_seed import seeded as seeded  # the fixture, shared

HTML = {"accept": "text/html"}


def get(seeded: Seeded, path: str, **kw: object) -> httpx.Response:
    return httpx.get(f"{seeded.base}{path}", timeout=30, **kw)  # type: ignore[arg-type]


def test_the_list_shows_sweeps_only_with_their_progress_and_best(seeded: Seeded) -> None:
    listed = get(seeded, "/api/sweeps").json()
    by_id = {r["run_id"]: r for r in listed["rows"]}
    assert set(by_id) == {DONE, LIVE}  # no plain run, no trial
    done = by_id[DONE]
    assert (done["issued"], done["max_total_trials"]) == (4, 4)
    assert (done["best_run_id"], done["best_objective"]) == (f"{DONE}_1", 0.91)
    assert (done["primary_metric"], done["goal"]) == ("accuracy", "maximize")
    assert (done["sampling"], done["policy"]) == ("random", "bandit")
    assert done["state"] == "Completed" and done["ended_because"] == "max_total_trials reached"
    assert [r["run_id"] for r in listed["rows"]] == [LIVE, DONE]  # newest first
    page = get(seeded, "/sweeps", headers=HTML)
    assert page.status_code == 200 and DONE in page.text
    assert re.search(r'<a href="/sweeps" class="active">Sweeps</a>', page.text)


def test_a_sweeps_json_has_its_spec_trials_best_and_scatter(seeded: Seeded) -> None:
    got = get(seeded, f"/api/sweeps/{DONE}").json()
    assert got["spec"]["policy"] == (
        "bandit(evaluation_interval=1, delay_evaluation=2, slack_factor=0.1)"
    )
    assert got["spec"]["space"][1] == {
        "name": "optimizer",
        "argument": "--optimizer",
        "expression": 'choice(values=["sgd", "adam"])',
    }
    trials = got["trials"]
    assert [t["index"] for t in trials] == [0, 1, 2, 3]
    assert [t["state"] for t in trials] == ["Completed", "Completed", "Canceled", "Failed"]
    assert [t["objective"] for t in trials] == [0.62, 0.91, 0.3, None]
    assert trials[2]["early_terminated"] is True
    assert trials[2]["error"] == {"kind": "early_terminated", "message": STOPPED}
    assert trials[3]["error"]["kind"] == "exit_code" and not trials[3]["early_terminated"]
    assert got["best"]["run_id"] == f"{DONE}_1" and got["best"]["trial"]["params"] == {
        "learning_rate": 0.05,
        "optimizer": "adam",
    }
    lr, opt = got["scatter"]
    assert (lr["name"], lr["x"], lr["y"]) == (
        "learning_rate",
        [0.01, 0.05, 0.09],
        [0.62, 0.91, 0.3],
    )
    assert opt["categories"] == ['"sgd"', '"adam"'] and opt["x"] == [0, 1, 0]
    assert got["curve_runs"] == [f"{DONE}_1", f"{DONE}_0", f"{DONE}_2", f"{DONE}_3"]


def test_the_curves_are_each_trials_primary_metric_by_interval(seeded: Seeded) -> None:
    got = get(seeded, f"/api/sweeps/{DONE}/curves").json()
    assert got["metric"] == "accuracy"
    assert got["curves"] == {
        f"{DONE}_1": [0.5, 0.8, 0.91],
        f"{DONE}_0": [0.4, 0.55, 0.62],
        f"{DONE}_2": [0.1, 0.2, 0.3],
        f"{DONE}_3": [],
    }
    one = get(seeded, f"/api/sweeps/{DONE}/curves?runs={DONE}_2").json()
    assert one["curves"] == {f"{DONE}_2": [0.1, 0.2, 0.3]}
    other = get(seeded, f"/api/sweeps/{DONE}/curves?runs=plain_run_1")
    assert other.status_code == 400
    assert "plain_run_1 is not a trial of sweep" in other.json()["message"]


def test_a_run_that_is_no_sweep_is_a_404_saying_where_it_is(seeded: Seeded) -> None:
    plain = get(seeded, "/api/sweeps/plain_run_1")
    assert plain.status_code == 404
    assert (
        plain.json()["message"] == "run plain_run_1 is not a sweep: its page is /runs/plain_run_1"
    )
    assert get(seeded, "/sweeps/nope_1").status_code == 404
    assert get(seeded, "/sweeps/nope_1/events").status_code == 404


def test_run_pages_link_sweeps_and_trials_and_the_runs_list_marks_them(seeded: Seeded) -> None:
    sweep_page = get(seeded, f"/runs/{DONE}", headers=HTML).text
    assert f'href="/sweeps/{DONE}"' in sweep_page
    trial_page = get(seeded, f"/runs/{DONE}_2", headers=HTML).text
    assert f'id="trial-sweep" href="/sweeps/{DONE}"' in trial_page
    params = re.search(r'<table class="grid kv" id="trial-params">(.*?)</table>', trial_page, re.S)
    assert params is not None
    assert "learning_rate" in params[1] and "0.09" in params[1] and "sgd" in params[1]
    rows = {r["run_id"]: r for r in get(seeded, "/api/runs").json()["rows"]}
    assert rows[DONE]["sweep"] is True and rows[DONE]["trial"] is None
    assert rows[f"{DONE}_2"]["trial"] == 2 and rows[f"{DONE}_2"]["sweep"] is False
    assert rows["plain_run_1"]["sweep"] is False


class ReadOnlyTokens:
    async def lookup(self, token: str) -> Viewer | None:
        return Viewer(can_act=False, session="ro", label="reader") if token == "ro" else None


def state_of(seeded: Seeded, run_id: str) -> RunState:
    found: list[RunState] = []

    async def read() -> None:
        async with await Client.connect(seeded.url) as client:
            found.append((await client.get_run(run_id)).state)

    run_apart(read())
    return found[0]


def test_a_read_only_viewer_sees_no_cancel_and_cannot_cancel(seeded: Seeded) -> None:
    before = state_of(seeded, LIVE)
    app = create_app(WebSettings(url=seeded.url), tokens=ReadOnlyTokens())
    auth = {"Authorization": "Bearer ro"}
    with TestClient(app, base_url="http://127.0.0.1") as http:
        html = http.get(f"/sweeps/{LIVE}", headers={**auth, **HTML}).text
        assert LIVE in html and 'id="cancel"' not in html
        csrf = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', html)
        assert csrf is not None
        refused = http.post(f"/sweeps/{LIVE}/cancel", headers={**auth, "x-csrf-token": csrf[1]})
        assert refused.status_code == 403 and "read-only" in refused.json()["message"]
    assert state_of(seeded, LIVE) == before


def test_a_cancel_without_the_pages_csrf_token_is_refused(seeded: Seeded) -> None:
    before = state_of(seeded, LIVE)
    refused = httpx.post(f"{seeded.base}/sweeps/{LIVE}/cancel", timeout=30)
    assert refused.status_code == 403 and "stale" in refused.json()["message"]
    assert state_of(seeded, LIVE) == before


def test_no_secret_reaches_a_sweep_page_or_its_json(seeded: Seeded) -> None:
    for path in ("/sweeps", f"/sweeps/{DONE}", f"/api/sweeps/{DONE}", "/api/sweeps"):
        text = get(seeded, path, headers=HTML if not path.startswith("/api") else {}).text
        assert SECRET not in text, path
        assert "API_KEY" not in text, path  # the sweep views show no environment at all


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, object]]]:
    name, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and data:
            yield name, json.loads(data)
            name, data = "message", ""


def test_the_sweeps_events_push_its_trials_and_its_cancel(seeded: Seeded) -> None:
    """Last: it cancels LIVE."""
    trial_id = sw.trial_run_id(LIVE, 2)
    params: dict[str, sw.ParamValue] = {"learning_rate": 0.03, "optimizer": "adam"}

    async def write_trial() -> None:
        from sortie.bus.connection import open_bus

        bus = await open_bus(seeded.url, "test")
        try:
            await report(bus, trial_id, [0.33])
            await put(bus, trial_record(LIVE, 2, RunState.RUNNING, params, [0.33]))
        finally:
            await bus.close()

    seen: list[tuple[str, dict[str, object]]] = []
    html = get(seeded, f"/sweeps/{LIVE}", headers=HTML).text
    csrf = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', html)
    assert csrf is not None
    with httpx.stream("GET", f"{seeded.base}/sweeps/{LIVE}/events", timeout=60) as response:
        for name, data in sse_events(response):
            seen.append((name, data))
            if len(seen) == 1:  # the sweep as it is: now change it
                assert name == "sweep" and data["run_id"] == LIVE
                run_apart(write_trial())
            if name == "trial" and data["run_id"] == trial_id:
                assert data["params"] == params and data["intervals"] == 1
                assert data["state"] == "Running"
                reply = httpx.post(
                    f"{seeded.base}/sweeps/{LIVE}/cancel",
                    headers={"x-csrf-token": csrf[1]},
                    timeout=30,
                )
                assert reply.status_code == 200, reply.text
            if name == "sweep" and data["state"] == "Canceled":
                break
    names = [n for n, d in seen if d.get("run_id") in (LIVE, trial_id)]
    assert names[0] == "sweep" and "trial" in names and names[-1] == "sweep"
    assert seen[-1][1]["state"] == "Canceled"
    assert state_of(seeded, LIVE) is RunState.CANCELED
    curve = get(seeded, f"/api/sweeps/{LIVE}/curves?runs={trial_id}").json()
    assert curve["curves"] == {trial_id: [0.33]}
