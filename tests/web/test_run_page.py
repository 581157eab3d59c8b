"""The run page in a real browser against a real `sortie up`: live logs and charts while the
run runs, cancel, resubmit, the copy-command, secrets never on the page, the snapshot's
files and artifacts; and the log stream's resume after a reconnect, over plain HTTP."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect
from starlette.testclient import TestClient

from sortie.web.access import Viewer
from sortie.web.app import create_app
from sortie.web.settings import WebSettings
from tests.e2e.conftest import wait_until
from tests.web.conftest import Dashboard

SECRET = "s3cr3t-value-never-shown"

LONG = """\
import sys, time
from sortie import Run
run = Run.get_context()
print("args", sys.argv[1:], flush=True)
for i in range(900):
    print(f"tick {i}", flush=True)
    if i % 5 == 0:
        print(f"warn {i}", file=sys.stderr, flush=True)
    run.log("loss", 1.0 / (i + 1), step=i)
    time.sleep(0.2)
"""

# a 1x1 PNG, so the script needs no imaging library
PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99"
    b"=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)

SHORT = f"""\
from pathlib import Path
from sortie import Run
run = Run.get_context()
for i in range(5):
    print(f"line {{i}}", flush=True)
    run.log("acc", 0.5 + i / 10, step=i)
for i in range(250):  # more lines than one log batch holds (200): at least two batches
    print(f"pad {{i}}")
run.log_row("epochs", epoch=1, loss=0.5)
run.log_row("epochs", epoch=2, loss=0.25)
Path("dot.png").write_bytes({PNG!r})
run.log_image("dot", path="dot.png")
fold = run.child_run("fold-1")
fold.log("fold_acc", 0.75)
fold.log("fold_acc", 0.8)
fold.complete()
Path("outputs").mkdir(exist_ok=True)
Path("outputs/result.txt").write_text("the result")
"""


def source(tmp_path: Path, name: str, script: str) -> Path:
    src = tmp_path / name
    src.mkdir(parents=True)
    (src / "train.py").write_text(script)
    (src / "notes.bin").write_bytes(bytes(range(256)))
    return src


def submit(dashboard: Dashboard, src: Path, *extra: str, env: dict[str, str] | None = None) -> str:
    proc = dashboard.cli(
        "run", "submit", str(src), "--script", "train.py", "--python", sys.executable,
        "--output", "json", *extra, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(json.loads(proc.stdout.splitlines()[0])["run_id"])


def shown(dashboard: Dashboard, run_id: str) -> dict[str, object]:
    """`sortie run show RUN_ID`'s JSON."""
    found = dashboard.json("run", "show", run_id)
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def long_run(dashboard: Dashboard, tmp_path_factory: pytest.TempPathFactory) -> str:
    src = source(tmp_path_factory.mktemp("long"), "long", LONG)
    return submit(
        dashboard, src, "--experiment", "web-run", "--env", "PLAIN=visible-value",
        "--secret-env", "API_KEY", "--", "--lr", "0.1",
        env={"API_KEY": SECRET},
    )  # fmt: skip


# the first series' stroke, rgb of Sortie.palette[0] (#2f6fde)
FIRST_SERIES = (0x2F, 0x6F, 0xDE)


def series_pixels(chart: Locator) -> int:
    """How many pixels of the chart's canvas are the first series' colour: the line uPlot
    drew (axes, grid and text are grey or black, the background transparent)."""
    count: int = chart.locator("canvas").evaluate(
        """(canvas, [r, g, b]) => {
            const {data} = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
            let n = 0;
            for (let i = 0; i < data.length; i += 4) {
                const off = Math.abs(data[i] - r) + Math.abs(data[i + 1] - g)
                    + Math.abs(data[i + 2] - b);
                if (data[i + 3] > 128 && off < 40) n++;
            }
            return n;
        }""",
        list(FIRST_SERIES),
    )
    return count


@pytest.fixture(scope="module")
def short_run(dashboard: Dashboard, tmp_path_factory: pytest.TempPathFactory) -> str:
    src = source(tmp_path_factory.mktemp("short"), "short", SHORT)
    run_id = submit(dashboard, src, "--experiment", "web-short")
    dashboard.cli("run", "wait", run_id, check=True, timeout=180)
    return run_id


def test_a_running_run_streams_logs_and_charts_and_cancels(
    dashboard: Dashboard, page: Page, long_run: str
) -> None:
    # from the runs list, as a person gets there
    page.goto(f"{dashboard.base}/runs")
    page.get_by_role("link", name=long_run, exact=True).click()
    page.wait_for_url(f"{dashboard.base}/runs/{long_run}")
    page.click('#run-tabs a[data-tab="logs"]')
    expect(page.locator("#run-state")).to_have_text("Running", timeout=90_000)
    log = page.locator("#log")
    expect(log).to_contain_text("tick 3", timeout=60_000)
    # lines keep coming while the page is open (no reload)
    seen = int(log.inner_text().rsplit("tick ", 1)[1].split()[0])
    expect(log).to_contain_text(f"tick {seen + 5}", timeout=30_000)
    assert page.locator("#log span.err").first.inner_text().startswith("warn 0")
    # the filter keeps matching lines only
    page.fill("#log-filter", "warn")
    expect(page.locator("#log span").first).to_contain_text("warn 0")
    assert "tick" not in log.inner_text()
    page.fill("#log-filter", "")

    page.click('#run-tabs a[data-tab="metrics"]')
    chart = page.locator('.chart[data-metric="loss"]')
    expect(chart.locator("canvas")).to_have_count(1, timeout=30_000)
    points = json.loads(chart.get_attribute("data-points") or "[]")
    assert points[:3] == [1.0, 0.5, pytest.approx(1 / 3)]
    steps = json.loads(chart.get_attribute("data-x") or "[]")
    assert steps[:3] == [0, 1, 2]
    # uPlot drew the series: its line's colour is on the canvas, and its legend names it
    wait_until(lambda: series_pixels(chart) > 100)
    expect(chart.locator(".u-legend .u-series").nth(1)).to_contain_text("loss")

    page.click('#run-tabs a[data-tab="overview"]')
    expect(page.locator("#timeline")).to_contain_text("Running")
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("#cancel")
    expect(page.locator("#run-state")).to_have_text("Canceled", timeout=60_000)
    expect(page.locator("#cancel")).to_be_hidden()
    expect(page.locator("#run-error")).to_contain_text("canceled")
    expect(page.locator("#timeline")).to_contain_text("Canceled")


def test_the_page_names_secrets_but_never_holds_their_values(
    dashboard: Dashboard, page: Page, long_run: str
) -> None:
    page.goto(f"{dashboard.base}/runs/{long_run}")
    html = page.content()
    assert "API_KEY" in html and "PLAIN" in html and "visible-value" in html
    assert SECRET not in html
    served = httpx.get(f"{dashboard.base}/runs/{long_run}").text
    assert SECRET not in served and "API_KEY" in served


def test_the_copy_command_is_the_spec_as_a_command_line(
    dashboard: Dashboard, page: Page, long_run: str
) -> None:
    expected = shlex.join(
        [
            "sortie", "run", "submit", ".", "--script", "train.py", "--experiment", "web-run",
            "--python", sys.executable, "--env=PLAIN=visible-value", "--secret-env=API_KEY",
            "--", "--lr", "0.1",
        ]
    )  # fmt: skip
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.goto(f"{dashboard.base}/runs/{long_run}")
    assert page.locator("#cli-command").inner_text() == expected
    page.click("#copy-command")
    expect(page.locator("#action-message")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == expected
    # the secret's value is kept nowhere readable: resubmitting is the CLI's to do
    page.click("#resubmit")
    expect(page.locator("#action-message")).to_contain_text("resubmit it from the CLI")


def test_a_finished_run_shows_tables_images_files_and_resubmits(
    dashboard: Dashboard, page: Page, short_run: str
) -> None:
    page.goto(f"{dashboard.base}/runs/{short_run}#metrics")
    expect(page.locator("#run-state")).to_have_text("Completed")
    acc = page.locator('.chart[data-metric="acc"]')
    expect(acc.locator("canvas")).to_have_count(1)
    assert json.loads(acc.get_attribute("data-points") or "[]") == pytest.approx(
        [0.5, 0.6, 0.7, 0.8, 0.9]
    )
    wait_until(lambda: series_pixels(acc) > 100)
    table = page.locator('.metric-table[data-metric="epochs"]')
    expect(table.locator("tbody tr")).to_have_count(2)
    assert [t.text_content() for t in table.locator("th").all()] == ["epoch", "loss"]
    image = page.locator('figure[data-metric="dot"] img')
    expect(image).to_have_count(1)
    wait_until(lambda: page.evaluate("(img) => img.naturalWidth", image.element_handle()) == 1)

    page.click('#run-tabs a[data-tab="files"]')
    expect(page.locator("#file-view")).to_contain_text('run.log("acc"')
    page.click('#snapshot-files a[data-path="notes.bin"]')
    expect(page.locator("#file-view")).to_contain_text("a binary file (256 bytes)")
    with page.expect_download() as got:
        page.click('#artifacts a:text("outputs/result.txt")')
    assert Path(got.value.path()).read_text() == "the result"

    page.click('#run-tabs a[data-tab="overview"]')
    child = page.locator("#children a")
    expect(child).to_have_count(1)
    expect(page.locator("#children .state")).to_have_text("Completed")
    child_id = child.inner_text()
    page.click("#resubmit")
    new_id = page.locator("#resubmitted").inner_text()
    assert new_id and new_id != short_run
    old, new = shown(dashboard, short_run), shown(dashboard, new_id)
    assert new["snapshot"] == old["snapshot"]
    assert new["experiment"] == "web-short" and new["arguments"] == old["arguments"]

    # the child's page: its parent, its own points (on its parent's subjects), no resubmit
    page.goto(f"{dashboard.base}/runs/{child_id}#metrics")
    expect(page.locator(f'a[href$="/runs/{short_run}"]').first).to_be_visible()
    fold = page.locator('.chart[data-metric="fold_acc"]')
    expect(fold.locator("canvas")).to_have_count(1)
    assert json.loads(fold.get_attribute("data-points") or "[]") == [0.75, 0.8]
    expect(page.locator('.chart[data-metric="acc"]')).to_have_count(0)
    page.click('#run-tabs a[data-tab="overview"]')
    page.click("#resubmit")
    expect(page.locator("#action-message")).to_contain_text(f"resubmit its parent {short_run}")


def sse_events(response: httpx.Response) -> Iterator[tuple[str, str | None, dict[str, object]]]:
    """(event, id, data) of a text/event-stream response, as they come."""
    name, ident, data = "message", None, ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("id: "):
            ident = line[4:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and data:
            yield name, ident, json.loads(data)
            name, ident, data = "message", None, ""


def read_log_stream(
    base: str, run_id: str, last_id: str | None = None
) -> list[tuple[str | None, list[str]]]:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    got: list[tuple[str | None, list[str]]] = []
    url = f"{base}/runs/{run_id}/logs/stream"
    with httpx.stream("GET", url, headers=headers, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for name, ident, data in sse_events(response):
            if name == "end":
                return got
            assert name == "lines", data
            got.append((ident, [str(line[2]) for line in data["lines"]]))  # type: ignore[index, union-attr]
    raise AssertionError("the stream closed without its end marker")


def test_the_log_stream_resumes_after_the_last_event_id(
    dashboard: Dashboard, short_run: str
) -> None:
    whole = read_log_stream(dashboard.base, short_run)
    texts = [t for _, lines in whole for t in lines]
    assert [t for t in texts if t.startswith("line ")] == [f"line {i}" for i in range(5)]
    assert len(whole) >= 2, "the run's output came in one batch: nothing to resume after"
    first_id = whole[0][0]
    resumed = read_log_stream(dashboard.base, short_run, last_id=first_id)
    assert resumed == whole[1:]  # the rest, once each, in order
    last_id = whole[-1][0]
    assert read_log_stream(dashboard.base, short_run, last_id=last_id) == []


def test_the_log_downloads_as_a_text_file(dashboard: Dashboard, short_run: str) -> None:
    got = httpx.get(f"{dashboard.base}/runs/{short_run}/logs.txt", timeout=30)
    assert got.status_code == 200
    assert got.headers["content-disposition"] == f'attachment; filename="{short_run}.log"'
    assert [line for line in got.text.splitlines() if line.startswith("line ")] == [
        f"line {i}" for i in range(5)
    ]


def test_a_run_that_does_not_exist_is_a_404_saying_so(dashboard: Dashboard) -> None:
    got = httpx.get(f"{dashboard.base}/runs/nope_123/logs/stream", timeout=30)
    assert got.status_code == 404 and "no run 'nope_123'" in got.json()["message"]
    art = httpx.get(f"{dashboard.base}/runs/nope_123/artifacts/x.txt", timeout=30)
    assert art.status_code == 404


class ReadOnlyTokens:
    """One read-only token, ``ro`` (what `sortie auth web-token --read-only` mints)."""

    async def lookup(self, token: str) -> Viewer | None:
        return Viewer(can_act=False, session="ro", label="reader") if token == "ro" else None


def test_a_read_only_viewer_sees_no_actions_and_cannot_act(
    dashboard: Dashboard, short_run: str
) -> None:
    settings = WebSettings(url=dashboard.url, creds=dashboard.client_creds)
    app = create_app(settings, tokens=ReadOnlyTokens())
    auth = {"Authorization": "Bearer ro"}
    before = len(json_runs(dashboard, "web-short"))
    with TestClient(app, base_url="http://127.0.0.1") as http:
        html = http.get(f"/runs/{short_run}", headers=auth).text
        assert short_run in html and 'id="copy-command"' in html
        assert 'id="cancel"' not in html and 'id="resubmit"' not in html
        for action in ("cancel", "resubmit"):
            refused = http.post(f"/runs/{short_run}/{action}", headers=auth)
            assert refused.status_code == 403
            assert "read-only" in refused.json()["message"]
    assert len(json_runs(dashboard, "web-short")) == before


def json_runs(dashboard: Dashboard, experiment: str) -> list[object]:
    listed = dashboard.json("run", "list", "--experiment", experiment)
    assert isinstance(listed, list)
    return listed


def test_the_record_stream_pushes_each_change_on_one_connection(
    dashboard: Dashboard, tmp_path: Path
) -> None:
    run_id = submit(dashboard, source(tmp_path, "pushed", LONG), "--experiment", "web-push")
    states: list[str] = []
    url = f"{dashboard.base}/runs/{run_id}/events"
    with httpx.stream("GET", url, timeout=60) as response:
        for name, _, data in sse_events(response):
            assert name == "run", data
            states.append(str(data["state"]))
            if len(states) == 1:  # the record as it was: change it
                dashboard.cli("run", "cancel", run_id, check=True)
            if states[-1] == "Canceled":
                break
    assert states[-1] == "Canceled", f"the stream ended after {states}"
    assert len(states) >= 2  # the record as it was, then each change pushed
