"""The dashboard in a real browser: Debian's Chromium (tests/setup-system.sh installs it),
driven headless by Playwright, against a real `sortie up` serving its dashboard.

Every page a test opens is watched for JavaScript errors (a console error or an uncaught
exception fails the test), and a failed test leaves a screenshot of its page in
``SORTIE_SCREENSHOTS`` (default: the test's temporary directory), named after the test.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from sortie.bus.broker import free_port
from tests.e2e.conftest import Installation, isolated_env, start_up, stop_up

CHROMIUM = Path("/usr/bin/chromium")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def screenshot_dir(tmp_path: Path) -> Path:
    where = Path(os.environ.get("SORTIE_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


# Module scope, not session: while Playwright's sync API is open it leaves its event loop
# running on this thread, so an async test (pytest-asyncio) after it in the same session fails
# ("Runner.run() cannot be called from a running event loop"). Closed after each module, it
# leaves later modules' async tests alone (within a module, put async tests first).
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run tests/setup-system.sh (as root) once")
    with sync_playwright() as pw:
        found = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield found
        finally:
            found.close()


# Chromium logs every 4xx answer to a fetch as a console error; a refusal the page shows the
# user (a bad name, a read-only token), or the scheduler away for a moment (503), is not a
# JavaScript error
REFUSED = re.compile(r"^Failed to load resource: the server responded with a status of (4\d\d|503)")


def is_js_error(msg: ConsoleMessage) -> bool:
    return msg.type == "error" and not REFUSED.match(msg.text)


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Page]:
    """A fresh page; fails its test on any JavaScript error, and keeps a screenshot when the
    test failed."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    errors: list[str] = []
    opened.on("console", lambda msg: errors.append(msg.text) if is_js_error(msg) else None)
    opened.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    yield opened
    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        shot = screenshot_dir(tmp_path) / f"{request.node.name}.png"
        opened.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failed page: {shot}")
        if "dashboard" in request.fixturenames:
            log: Path = request.getfixturevalue("dashboard").log
            lines = log.read_text(errors="replace").splitlines()[-80:]
            print(f"the last {len(lines)} lines of {log}:", *lines, sep="\n")
    context.close()
    assert not errors, f"the page logged JavaScript errors: {errors}"


class Dashboard(Installation):
    base: str  # http://127.0.0.1:PORT


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """A real `sortie up` with its dashboard on a free port of 127.0.0.1 (open, as on
    loopback: no login)."""
    root = tmp_path_factory.mktemp("sortie-web")
    port, web_port = free_port(), free_port()
    env = isolated_env(root)
    log = root / "up.log"
    proc = start_up(root / "data", port, env, log, "--dashboard-port", str(web_port))
    inst = Dashboard(
        url=f"nats://127.0.0.1:{port}", data_dir=root / "data", env=env, process=proc, log=log
    )
    inst.base = f"http://127.0.0.1:{web_port}"
    try:
        yield inst
    finally:
        stop_up(proc)
