"""Who may open the dashboard and who may act, with real parts: a real `sortie up` with
authentication on, `sortie web` standalone against it (a child process), tokens minted with
`sortie auth web-token`, real HTTP requests, Chromium, and a real reverse proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, Response, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from sortie.bus.broker import free_port
from sortie.bus.connection import BusAuth, open_bus
from sortie.proto import codec, subjects
from sortie.proto import web_tokens as wt
from sortie.web.access import action_form
from sortie.web.app import create_app
from sortie.web.settings import WebSettings
from sortie.web.sse import Event, stream
from sortie.web.views import NAV
from tests.e2e.conftest import REPO, SORTIE, Installation, stop_up
from tests.e2e.conftest import installation as installation  # the fixture, shared
from tests.web.conftest import Dashboard
from tests.web.reverse_proxy import reverse_proxy

TOKEN = re.compile(r"sortie_web_[A-Za-z0-9_-]{43}")
JSON = {"accept": "application/json"}
HTML = {"accept": "text/html"}


@dataclass
class Web:
    """`sortie web` standalone, as a child process."""

    base: str  # http://127.0.0.1:PORT (with the root path, if any)
    log: Path  # its stderr
    process: subprocess.Popen[str]


def start_web(inst: Installation, log: Path, *extra: str, host: str = "127.0.0.1") -> Web:
    port = free_port()
    if host != "127.0.0.1":
        extra = ("--host", host, *extra)
    proc = subprocess.Popen(
        [*SORTIE, "web", "--port", str(port), *extra],
        env=inst.env,
        stdout=subprocess.PIPE,
        stderr=open(log, "a"),  # noqa: SIM115 - owned by the child
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(f"dashboard: http://{host}:{port}"):
        proc.kill()
        raise AssertionError(f"sortie web did not start: {line!r}\n{log.read_text()[-3000:]}")
    assert "log in with a token" in line  # on loopback too: standalone needs a token
    return Web(base=f"http://127.0.0.1:{port}", log=log, process=proc)


def mint(inst: Installation, *args: str) -> str:
    out = inst.cli("auth", "web-token", *args, check=True)
    return out.stdout.splitlines()[0]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", **JSON}


@pytest.fixture(scope="module")
def web(installation: Installation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    found = start_web(installation, tmp_path_factory.mktemp("web") / "web.log")
    try:
        yield found
    finally:
        stop_up(found.process)


@pytest.fixture(scope="module")
def tokens(installation: Installation) -> dict[str, str]:
    return {
        "full": mint(installation, "--label", "alice"),
        "read_only": mint(installation, "--label", "bob", "--read-only"),
    }


# --- standalone: a token or nothing --------------------------------------------------------


def test_standalone_refuses_without_a_token_even_on_loopback(web: Web) -> None:
    page = httpx.get(f"{web.base}/runs?experiment=x", headers=HTML)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/runs%3Fexperiment%3Dx"
    api = httpx.get(f"{web.base}/runs", headers=JSON)
    assert api.status_code == 401
    assert api.json()["code"] == "unauthorized"
    assert "`sortie auth web-token` mints one" in api.json()["message"]
    wrong = httpx.get(f"{web.base}/runs", headers=bearer("sortie_web_" + "x" * 43))
    assert wrong.status_code == 401
    assert httpx.get(f"{web.base}/healthz").text == "ok"
    assert httpx.get(f"{web.base}/static/sortie.css").status_code == 200


def test_a_bearer_token_opens_pages_and_shows_whose_it_is(web: Web, tokens: dict[str, str]) -> None:
    full = httpx.get(f"{web.base}/runs", headers=bearer(tokens["full"]))
    assert full.status_code == 200
    assert "alice" in full.text and "(read-only)" not in full.text
    ro = httpx.get(f"{web.base}/runs", headers=bearer(tokens["read_only"]))
    assert ro.status_code == 200 and "bob" in ro.text and "(read-only)" in ro.text
    # a token in the query string is no token
    assert httpx.get(f"{web.base}/runs?token={tokens['full']}", headers=JSON).status_code == 401


def test_on_every_interface_it_needs_a_token_too(
    installation: Installation, tokens: dict[str, str], tmp_path: Path
) -> None:
    wide = start_web(installation, tmp_path / "web.log", host="0.0.0.0")
    try:
        assert httpx.get(f"{wide.base}/runs", headers=JSON).status_code == 401
        opened = httpx.get(f"{wide.base}/runs", headers={**bearer(tokens["full"]), **HTML})
        assert opened.status_code == 200 and "alice" in opened.text
    finally:
        stop_up(wide.process)


def test_revoking_a_token_locks_it_out_at_once(installation: Installation, web: Web) -> None:
    token = mint(installation, "--label", "short-lived")
    assert httpx.get(f"{web.base}/runs", headers=bearer(token)).status_code == 200
    installation.cli("auth", "web-token", "--revoke", "short-lived", check=True)
    statuses = []
    for _ in range(50):  # the dashboard's watch hears of it within milliseconds
        statuses.append(httpx.get(f"{web.base}/runs", headers=bearer(token)).status_code)
        if statuses[-1] == 401:
            break
        time.sleep(0.1)
    assert statuses[-1] == 401, statuses


async def test_an_expired_token_is_refused(installation: Installation, web: Web) -> None:
    now = time.time()
    made = {
        "expired": wt.WebToken(label="old", issued_at=now - 7200, expires_at=now - 60),
        "current": wt.WebToken(label="new", issued_at=now, expires_at=now + 3600),
    }
    sent = {name: wt.PREFIX + name * 10 for name in made}  # never minted: written as the CLI does
    bus = await open_bus(installation.url, "test", auth=BusAuth(creds=installation.scheduler_creds))
    try:
        kv = await bus.js.key_value(subjects.KV_WEB_TOKENS)
        for name, record in made.items():
            await kv.put(wt.token_hash(sent[name]), codec.encode(record))
    finally:
        await bus.close()
    async with httpx.AsyncClient(base_url=web.base) as http:
        for _ in range(50):  # until the dashboard's watch has both
            if (await http.get("/runs", headers=bearer(sent["current"]))).status_code == 200:
                break
            time.sleep(0.1)
        assert (await http.get("/runs", headers=bearer(sent["current"]))).status_code == 200
        assert (await http.get("/runs", headers=bearer(sent["expired"]))).status_code == 401


# --- the login form ------------------------------------------------------------------------


def test_logging_in_through_the_form_sets_a_strict_http_only_cookie(
    web: Web, tokens: dict[str, str], page: Page
) -> None:
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.goto(f"{web.base}/compute")
    assert page.url == f"{web.base}/login?next=/compute"
    page.fill("input[name=token]", "sortie_web_not-a-token")
    page.click("button[type=submit]")
    assert "That token is not known here" in page.locator("p.error").inner_text()
    page.fill("input[name=token]", tokens["full"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{web.base}/compute")
    assert "alice" in page.locator("header.top .who").inner_text()
    cookie = next(c for c in page.context.cookies() if c["name"] == "sortie_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert page.evaluate("document.cookie") == ""  # no script can read it
    page.click("header.top button:has-text('log out')")
    page.wait_for_url(f"{web.base}/login")
    assert "sortie_token" not in {c["name"] for c in page.context.cookies()}
    page.goto(f"{web.base}/runs")
    assert page.url.startswith(f"{web.base}/login")
    assert not any(tokens["full"] in url for url in urls)


def login_form(http: httpx.Client) -> dict[str, str]:
    """The login form's hidden fields (and, in ``http``'s jar, its cookie)."""
    text = http.get("/login?next=/queue").text
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', text))


def test_the_login_form_refuses_a_post_from_another_site(web: Web, tokens: dict[str, str]) -> None:
    with httpx.Client(base_url=web.base) as http:
        fields = login_form(http)
        assert set(fields) == {"next", "csrf"} and fields["next"] == "/queue"
        # another site's form: no login cookie of this dashboard (SameSite=Strict), or its
        # own Origin
        with httpx.Client(base_url=web.base) as other:
            forged = other.post("/login", data={**fields, "token": tokens["full"]})
        assert forged.status_code == 403 and "sortie_token" not in forged.cookies
        assert "sent from another site" in forged.text
        cross = http.post(
            "/login",
            data={**fields, "token": tokens["full"]},
            headers={"origin": "https://evil.example"},
        )
        assert cross.status_code == 403 and "sortie_token" not in cross.cookies
        ok = http.post("/login", data={**login_form(http), "token": tokens["full"]})
        assert ok.status_code == 303 and ok.headers["location"] == "/queue"
        assert ok.cookies["sortie_token"] == tokens["full"]
        assert "httponly" in ok.headers["set-cookie"].lower()


def test_behind_https_the_cookie_is_secure(web: Web, tokens: dict[str, str]) -> None:
    """A TLS-terminating proxy on this host says so in ``X-Forwarded-Proto``."""
    https = {"x-forwarded-proto": "https"}
    with httpx.Client(base_url=web.base) as http:  # (the jar keeps a Secure cookie off http)
        fields = {**login_form(http), "token": tokens["full"]}
        response = http.post("/login", data=fields, headers=https)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie


@pytest.mark.parametrize(
    ("next_path", "lands"),
    [
        ("/agents", "/agents"),
        ("//evil.example/x", "/runs"),
        ("https://evil.example/", "/runs"),
        ("/\\evil.example", "/runs"),
    ],
)
def test_after_logging_in_only_a_path_of_this_dashboard(
    web: Web, tokens: dict[str, str], next_path: str, lands: str
) -> None:
    with httpx.Client(base_url=web.base) as http:
        fields = {**login_form(http), "next": next_path, "token": tokens["read_only"]}
        response = http.post("/login", data=fields)
    assert response.status_code == 303 and response.headers["location"] == lands


# --- actions: read-only tokens and cross-site requests -------------------------------------


@pytest.fixture(scope="module")
def acting(installation: Installation) -> Iterator[tuple[TestClient, list[str]]]:
    """The dashboard app (a real token book on the real broker) with one extra action route
    that records what it did."""
    done: list[str] = []

    async def act(request: Request) -> JSONResponse:
        form = await action_form(request)
        done.append(str(form.get("what") or "json"))
        return JSONResponse({"ok": True})

    settings = WebSettings(url=installation.url, creds=installation.client_creds)
    app = create_app(settings)
    app.router.routes.append(Route("/test/act", act, methods=["POST"]))
    with TestClient(app, base_url="http://127.0.0.1:8265") as client:
        yield client, done


def csrf_of(client: TestClient, token: str) -> str:
    text = client.get("/runs", headers={**bearer(token), **HTML}).text
    found = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', text)
    assert found, text[:500]
    return found[1]


def test_a_read_only_token_cannot_act(
    acting: tuple[TestClient, list[str]], tokens: dict[str, str]
) -> None:
    client, done = acting
    before = list(done)
    csrf = csrf_of(client, tokens["read_only"])
    refused = client.post(
        "/test/act", headers={**bearer(tokens["read_only"]), "x-csrf-token": csrf}
    )
    assert refused.status_code == 403
    assert refused.json() == {
        "code": "forbidden",
        "message": "this token is read-only: actions need a token minted by `sortie auth "
        "web-token` without --read-only",
    }
    assert done == before


def test_an_action_needs_this_pages_csrf_token_and_origin(
    acting: tuple[TestClient, list[str]], tokens: dict[str, str]
) -> None:
    client, done = acting
    before = list(done)
    auth = bearer(tokens["full"])
    csrf = csrf_of(client, tokens["full"])
    other = csrf_of(client, tokens["read_only"])  # another viewer's token binds to that viewer
    for headers, form, why in [
        (auth, {"what": "no token"}, "this page's form is stale"),
        ({**auth, "x-csrf-token": other}, {}, "this page's form is stale"),
        (auth, {"csrf": "0" * 64, "what": "wrong"}, "this page's form is stale"),
        (
            {**auth, "x-csrf-token": csrf, "origin": "https://evil.example"},
            {},
            "an action from another site (https://evil.example) was refused",
        ),
    ]:
        refused = client.post("/test/act", headers=headers, data=form)
        assert refused.status_code == 403, refused.text
        assert why in refused.json()["message"]
    assert done == before
    ok = client.post("/test/act", headers=auth, data={"csrf": csrf, "what": "form"})
    assert ok.status_code == 200 and ok.json() == {"ok": True}
    proxied = client.post(
        "/test/act",
        headers={
            **auth,
            "x-csrf-token": csrf,
            "origin": "https://dash.example.org",
            "x-forwarded-host": "dash.example.org",
        },
    )
    assert proxied.status_code == 200
    assert done == [*before, "form", "json"]


# --- the compute and agents actions, each behind the gate ------------------------------------

READ_ONLY = (
    "this token is read-only: actions need a token minted by `sortie auth web-token` "
    "without --read-only"
)
STALE = (
    "this page's form is stale (the dashboard restarted or you logged in again): reload the "
    "page and try again"
)
CLUSTER = "gated-pool"  # created by the CLI for these tests; every refused action names it
ACTIONS = [  # (path, JSON body): each as the compute and agents pages post it
    ("/compute", {"name": "gated-new", "vm_size": "LOCAL_SMALL", "max_nodes": 1}),
    (f"/compute/{CLUSTER}/update", {"max_nodes": 3}),
    (f"/compute/{CLUSTER}/delete", {"force": True}),
    ("/compute/attach", {"name": "gated-box", "address": "10.0.0.5", "username": "me",
                         "password": "pw-never-sent"}),
    (f"/compute/{CLUSTER}/detach", {"force": True}),
    ("/agents/{agent}/cordon", {}),
    ("/agents/{agent}/uncordon", {}),
    ("/agents/{agent}/drain", {}),
]  # fmt: skip


def page_csrf(web: Web, token: str) -> str:
    text = httpx.get(f"{web.base}/compute", headers={**bearer(token), **HTML}).text
    found = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', text)
    assert found, text[:500]
    return found[1]


def what_is_there(inst: Installation) -> tuple[object, object]:
    """The compute targets and the agents, as the CLI shows them (without heartbeat times)."""
    agents = inst.json("agent", "list")
    assert isinstance(agents, list)
    for agent in agents:
        agent.pop("last_seen", None)
    return inst.json("compute", "list"), agents


@pytest.fixture(scope="module")
def a_cluster(installation: Installation) -> str:
    installation.cli(
        "compute", "create", CLUSTER, "--vm-size", "LOCAL_SMALL", "--max-nodes", "2", check=True
    )
    return CLUSTER


@pytest.mark.usefixtures("a_cluster")
@pytest.mark.parametrize("action", ACTIONS, ids=[p for p, _ in ACTIONS])
@pytest.mark.parametrize("refusal", ["read-only token", "no CSRF token"])
def test_compute_and_agents_actions_are_refused_and_change_nothing(
    installation: Installation,
    web: Web,
    tokens: dict[str, str],
    action: tuple[str, dict[str, object]],
    refusal: str,
) -> None:
    agents = installation.json("agent", "list")
    assert isinstance(agents, list) and agents
    path, body = action[0].format(agent=agents[0]["agent_id"]), action[1]
    if refusal == "read-only token":  # with the page's own CSRF token: only the token refuses
        read_only = tokens["read_only"]
        headers = {**bearer(read_only), "x-csrf-token": page_csrf(web, read_only)}
        message = READ_ONLY
    else:  # a full token, but no page's CSRF token (another site's form, a stale script)
        headers = bearer(tokens["full"])
        message = STALE
    before = what_is_there(installation)
    refused = httpx.post(f"{web.base}{path}", headers=headers, json=body)
    assert refused.status_code == 403, refused.text
    assert refused.json() == {"code": "forbidden", "message": message}
    assert what_is_there(installation) == before


def test_the_same_actions_with_a_full_token_and_the_pages_csrf_token_go_through(
    installation: Installation, web: Web, tokens: dict[str, str], a_cluster: str
) -> None:
    """The refusals above are the gate's, not a broken route: the same requests, allowed."""
    headers = {**bearer(tokens["full"]), "x-csrf-token": page_csrf(web, tokens["full"])}
    (agent,) = installation.json("agent", "list")  # type: ignore[misc]
    agent_id = agent["agent_id"]
    cordoned = httpx.post(f"{web.base}/agents/{agent_id}/cordon", headers=headers, json={})
    assert cordoned.json() == {"ok": True, "agent_id": agent_id, "action": "cordon"}
    (agent,) = installation.json("agent", "list")  # type: ignore[misc]
    assert agent["cordoned"] is True
    httpx.post(f"{web.base}/agents/{agent_id}/uncordon", headers=headers, json={})
    (agent,) = installation.json("agent", "list")  # type: ignore[misc]
    assert agent["cordoned"] is False
    updated = httpx.post(f"{web.base}/compute/{a_cluster}/update", headers=headers,
                         json={"max_nodes": 3})  # fmt: skip
    assert updated.status_code == 200, updated.text
    assert updated.json()["max_nodes"] == 3


# --- open on loopback: `sortie up`'s own dashboard -----------------------------------------


def test_open_mode_refuses_a_rebound_dns_name(dashboard: Dashboard) -> None:
    port = dashboard.base.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
        opened = httpx.get(f"{dashboard.base}/runs", headers={"host": host, **HTML})
        assert opened.status_code == 200, host
        assert "local" in opened.text
    rebound = httpx.get(f"{dashboard.base}/runs", headers={"host": f"evil.example:{port}", **JSON})
    assert rebound.status_code == 401
    page = httpx.get(f"{dashboard.base}/runs", headers={"host": f"evil.example:{port}", **HTML})
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    # nothing to log in to on loopback; the rebound name gets the form
    login = httpx.get(f"{dashboard.base}/login?next=/queue", headers=HTML)
    assert login.status_code == 303 and login.headers["location"] == "/queue"
    rebound_login = httpx.get(
        f"{dashboard.base}/login?next=/queue", headers={"host": f"evil.example:{port}", **HTML}
    )
    assert rebound_login.status_code == 200 and 'name="token"' in rebound_login.text


def test_a_secret_env_value_reaches_no_page_url_or_log(
    dashboard: Dashboard, page: Page, tmp_path: Path
) -> None:
    secret = f"hush-{uuid.uuid4().hex}"
    src = tmp_path / "src"
    src.mkdir()
    (src / "job.py").write_text(
        "import os\nassert os.environ['DB_PASSWORD']\nprint('connected', flush=True)\n"
    )
    submitted = dashboard.cli(
        "run", "submit", "--output", "json", str(src), "--script", "job.py",
        "--python", sys.executable, "--secret-env", "DB_PASSWORD", "--env", "PLAIN=shown",
        "--wait", env={"DB_PASSWORD": secret},
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    run_id = json.loads(submitted.stdout.splitlines()[0])["run_id"]
    bodies: list[str] = []
    urls: list[str] = []

    def keep(response: Response) -> None:
        urls.append(response.url)
        if "text/event-stream" not in response.headers.get("content-type", ""):
            with contextlib.suppress(Exception):  # a body the page let go of (navigated away)
                bodies.append(response.text())

    page.on("response", keep)
    for path in [*(v.path for v in NAV), f"/runs/{run_id}"]:
        page.goto(f"{dashboard.base}{path}")
        page.wait_for_load_state("networkidle")
        bodies.append(page.content())
    assert len(bodies) > len(NAV)
    assert not [u for u in urls if secret in u]
    assert not [b[:200] for b in bodies if secret in b]
    assert secret not in dashboard.log.read_text()


# --- behind a reverse proxy under a path ---------------------------------------------------


def test_behind_a_reverse_proxy_under_a_path(
    installation: Installation,
    tokens: dict[str, str],
    browser: Browser,
    tmp_path: Path,
) -> None:
    prefixed = start_web(installation, tmp_path / "web.log", "--root-path", "/sortie")
    try:
        with reverse_proxy(prefixed.base, "/sortie") as proxy:
            base = f"{proxy}/sortie"
            # the app itself answers at its root; links carry the prefix
            assert httpx.get(f"{prefixed.base}/healthz").text == "ok"
            context = browser.new_context()
            page = context.new_page()
            seen: list[Response] = []
            errors: list[str] = []
            page.on("response", lambda r: seen.append(r))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{base}/")
            page.wait_for_url(f"{base}/login?next=/")
            page.fill("input[name=token]", tokens["full"])
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/runs")
            for view in NAV:
                page.click(f"header.top nav a:has-text('{view.title}')")
                page.wait_for_url(f"{base}{view.path}")
                page.wait_for_load_state("networkidle")
                assert page.locator("header.top nav a.active").inner_text() == view.title
            cookie = next(c for c in context.cookies() if c["name"] == "sortie_token")
            assert cookie["path"] == "/sortie"
            page.click("header.top button:has-text('log out')")
            page.wait_for_url(f"{base}/login")
            context.close()
    finally:
        stop_up(prefixed.process)
    assert not errors, errors
    failed = [f"{r.status} {r.url}" for r in seen if r.status >= 400]
    assert not failed
    assert all(r.url.startswith(f"{base}/") for r in seen), [r.url for r in seen]
    assert any(r.url.endswith("/static/sortie.js") for r in seen)
    assert not any(tokens["full"] in r.url for r in seen)


@contextlib.contextmanager
def serve_in_thread(app: Starlette, root_path: str) -> Iterator[str]:
    """``app`` on uvicorn in a thread of its own (its own event loop), as `sortie web`
    serves it; yields its base (``http://127.0.0.1:PORT``, without the root path)."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, root_path=root_path, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    assert server.started, "the dashboard did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


async def ticks(request: Request) -> StreamingResponse:
    """Three events, then nothing until the page goes: only a proxy that streams lets a page
    see them."""

    async def events() -> AsyncIterator[Event]:
        for n in range(1, 4):
            yield Event("tick", json.dumps({"n": n}))
            await asyncio.sleep(0.2)
        await asyncio.Event().wait()

    return stream(request, events())


def test_events_stream_and_actions_work_through_the_proxy(
    installation: Installation, tokens: dict[str, str], page: Page
) -> None:
    done: list[str] = []

    async def act(request: Request) -> JSONResponse:
        await action_form(request)
        done.append("acted")
        return JSONResponse({"ok": True})

    settings = WebSettings(
        url=installation.url, creds=installation.client_creds, root_path="/sortie"
    )
    app = create_app(settings)
    app.router.routes += [
        Route("/test/ticks", ticks),
        Route("/test/act", act, methods=["POST"]),
    ]
    with serve_in_thread(app, "/sortie") as upstream, reverse_proxy(upstream, "/sortie") as proxy:
        base = f"{proxy}/sortie"
        page.goto(f"{base}/queue")
        page.fill("input[name=token]", tokens["full"])
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/queue")
        got = page.evaluate(
            """() => new Promise((resolve, reject) => {
                const seen = [];
                const source = new EventSource(Sortie.url("/test/ticks"));
                source.addEventListener("tick", (ev) => {
                    seen.push(JSON.parse(ev.data).n);
                    if (seen.length === 3) { source.close(); resolve(seen); }
                });
                setTimeout(() => reject(new Error("only " + seen)), 15000);
            })"""
        )
        assert got == [1, 2, 3]
        # the browser's Origin is the proxy's; the dashboard knows it from X-Forwarded-Host
        assert page.evaluate("() => Sortie.post('/test/act', {})") == {"ok": True}
        assert done == ["acted"]


# --- secrets never in a log ----------------------------------------------------------------


def test_no_token_reaches_a_log(installation: Installation, web: Web) -> None:
    """Last in this module: every test above sent tokens, good and bad, to this dashboard."""
    httpx.post(f"{web.base}/login", data={"token": "sortie_web_" + "y" * 43})
    logs = web.log.read_text() + installation.log.read_text()
    assert not TOKEN.search(logs), TOKEN.findall(logs)


def test_a_read_only_viewer_in_the_browser_cannot_cancel(
    installation: Installation, web: Web, tokens: dict[str, str], page: Page, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("import time\nprint('up', flush=True)\ntime.sleep(300)\n")
    run_id = json.loads(
        installation.cli(
            "run", "submit", str(src), "--script", "train.py", "--python", sys.executable,
            "--output", "json", check=True,
        ).stdout.splitlines()[0]
    )["run_id"]  # fmt: skip
    try:
        page.goto(f"{web.base}/login?next=/runs/{run_id}")
        page.fill("input[name=token]", tokens["read_only"])
        page.click("button[type=submit]")
        page.wait_for_url(f"{web.base}/runs/{run_id}")
        expect(page.locator("#run-state")).to_have_text("Running", timeout=90_000)
        assert "(read-only)" in page.locator("header.top .who").inner_text()
        expect(page.locator("#cancel")).to_have_count(0)
        # the action itself, sent from the page with its CSRF token, is refused
        reply = page.evaluate(
            """async (runId) => {
                const csrf = document.querySelector('meta[name="csrf-token"]').content;
                const res = await fetch(`/runs/${runId}/cancel`, {method: "POST",
                    headers: {"X-CSRF-Token": csrf, "Accept": "application/json"}});
                return {status: res.status, body: await res.json()};
            }""",
            run_id,
        )
        assert reply["status"] == 403
        assert "read-only" in reply["body"]["message"]
        shown = installation.json("run", "show", run_id)
        assert isinstance(shown, dict) and shown["state"] == "Running"
    finally:
        installation.cli("run", "cancel", run_id)


def test_a_read_only_viewer_in_the_browser_has_no_agent_actions(
    installation: Installation, web: Web, tokens: dict[str, str], page: Page
) -> None:
    (agent,) = installation.json("agent", "list")  # type: ignore[misc]
    for who, buttons in (("full", ["Cordon", "Drain"]), ("read_only", [])):
        page.context.clear_cookies()
        page.goto(f"{web.base}/login?next=/agents")
        page.fill("input[name=token]", tokens[who])
        page.click("button[type=submit]")
        page.wait_for_url(f"{web.base}/agents")
        row = page.locator(f'#agents tr[data-agent="{agent["agent_id"]}"]')
        expect(row.locator(".state")).to_have_text("ready")
        # the same row, drawn for who may act (a full token) and who may not
        assert row.get_by_role("button").all_inner_texts() == buttons, who
    expect(page.locator("#agents td.actions")).to_have_count(0)
