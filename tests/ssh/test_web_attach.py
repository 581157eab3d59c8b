"""Attaching a machine from the dashboard's compute page, in a real browser, against a real
`sortie up` and the tests' sshd: the host key's fingerprint is fetched and shown, confirmed,
and pinned; a wrong password fails with a message that says so; the right one attaches; the
password is on no page, in no response the page got, and in no log line.
"""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, Response, expect

from sortie.proto import messages as m
from sortie.scheduler.ssh import SshCredentials, SshError, connect, host_key_scan
from tests.e2e.conftest import wait_until
from tests.ssh.conftest import SSH_TEST_PASSWORD, SSH_TEST_USER, Sshd
from tests.web.conftest import Dashboard
from tests.web.conftest import browser as browser  # the fixtures, shared
from tests.web.conftest import dashboard as dashboard
from tests.web.conftest import page as page

pytestmark = pytest.mark.timeout(420)

WRONG_PASSWORD = "not-the-password-7"


@pytest.fixture
def user_known_hosts() -> Iterator[Path]:
    """The scheduler's default known_hosts (this user's), restored after the test: the page
    attaches without naming one, so the confirmed key is recorded there."""
    path = Path.home() / ".ssh" / "known_hosts"
    saved = path.read_bytes() if path.exists() else None
    try:
        yield path
    finally:
        if saved is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(saved)


def fill_attach(page: Page, sshd: Sshd, name: str, password: str) -> None:
    form = page.locator("#attach-form")
    form.locator("input[name=name]").fill(name)
    form.locator("input[name=address]").fill(sshd.host)
    form.locator("input[name=ssh_port]").fill(str(sshd.port))
    form.locator("input[name=username]").fill(SSH_TEST_USER)
    form.get_by_label("a password").check()
    form.locator("input[name=password]").fill(password)


def attach(page: Page, sshd: Sshd, name: str, password: str) -> None:
    """Fill the form, fetch the host key, check the fingerprint shown, confirm, attach."""
    if page.locator("#attach-panel").is_hidden():
        page.get_by_role("button", name="Attach machine").click()
    fill_attach(page, sshd, name, password)
    form = page.locator("#attach-form")
    form.get_by_role("button", name="Check host key").click()
    fingerprint = sshd.host_key.get_fingerprint("sha256")
    expect(form.locator(".hostkey-fp")).to_have_text(f"ssh-ed25519 {fingerprint}")
    expect(form.locator(".hostkey-text")).to_contain_text("has no entry")
    form.get_by_role("button", name="Confirm fingerprint and attach").click()
    expect(form.locator(".form-error")).to_contain_text(f"Attaching {name}")


def detach(page: Page, dashboard: Dashboard, name: str) -> None:
    card = page.locator(f'#machines [data-name="{name}"]')
    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Detach").click()
    expect(card).to_have_count(0, timeout=90_000)
    listed = dashboard.json("compute", "list")
    assert isinstance(listed, list) and name not in [c["name"] for c in listed]


def first_event(url: str) -> str:
    """The first event of a page's stream (the snapshot it draws first)."""
    with urllib.request.urlopen(url, timeout=20) as stream:
        text = ""
        while "\n\n" not in text.removeprefix("retry: 1000\n\n"):
            text += stream.read1(4096).decode()
        return text


async def test_the_scan_reports_the_key_and_how_known_hosts_sees_it_recording_nothing(
    sshd: Sshd, tmp_path: Path
) -> None:
    known = tmp_path / "known_hosts"
    ask = m.HostKeyScan(address=sshd.host, ssh_port=sshd.port, known_hosts=str(known))
    reply = await host_key_scan.scan(ask)
    assert isinstance(reply, m.HostKeyReply), reply
    assert reply.fingerprint == sshd.host_key.get_fingerprint("sha256")
    assert (reply.algorithm, reply.verdict) == ("ssh-ed25519", "unknown")
    assert "has no entry" in reply.message and not known.exists()

    known.write_text(sshd.known_hosts_line())
    reply = await host_key_scan.scan(ask)
    assert isinstance(reply, m.HostKeyReply) and reply.verdict == "known", reply
    sshd.restart(new_host_key=True)
    reply = await host_key_scan.scan(ask)
    assert isinstance(reply, m.HostKeyReply) and reply.verdict == "changed", reply
    assert "HAS CHANGED" in reply.message
    assert reply.fingerprint == sshd.host_key.get_fingerprint("sha256")

    sshd.stop()
    refused = await host_key_scan.scan(ask)
    assert isinstance(refused, m.ErrorReply) and "cannot reach" in refused.message


async def test_a_pinned_fingerprint_trusts_that_key_alone(sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    creds = SshCredentials(password=SSH_TEST_PASSWORD)
    with pytest.raises(SshError) as caught:
        await connect(sshd.target(), creds, known_hosts=known, pinned_host_key="SHA256:other")
    assert caught.value.code == "host_key_changed"
    assert "is not the one confirmed" in caught.value.message
    assert "SHA256:other" in caught.value.message and not known.exists()

    fingerprint = sshd.host_key.get_fingerprint("sha256")
    conn = await connect(sshd.target(), creds, known_hosts=known, pinned_host_key=fingerprint)
    conn.close()
    assert known.read_text() == sshd.known_hosts_line()  # recorded once trusted


# Playwright's sync API keeps an event loop running once the browser opened: the browser
# test comes after this module's async tests.
def test_attach_by_password_with_the_fingerprint_confirmed_leaves_no_trace_of_it(
    dashboard: Dashboard, page: Page, sshd: Sshd, user_known_hosts: Path
) -> None:
    bodies: list[bytes] = []

    def keep(response: Response) -> None:
        if "text/event-stream" not in (response.headers.get("content-type") or ""):
            with contextlib.suppress(Exception):  # a response the page left before its end
                bodies.append(response.body())

    page.on("response", keep)
    page.goto(f"{dashboard.base}/compute")

    # a wrong password: the attach fails, saying what to check; nothing stays half-done
    attach(page, sshd, "web-bad", WRONG_PASSWORD)
    bad = page.locator('#machines [data-name="web-bad"]')
    expect(bad.locator(".card-state")).to_have_text("Failed", timeout=60_000)
    expect(bad).to_contain_text("authentication failed")
    detach(page, dashboard, "web-bad")

    attach(page, sshd, "web-box", SSH_TEST_PASSWORD)
    card = page.locator('#machines [data-name="web-box"]')
    expect(card.locator(".card-state")).to_have_text("Succeeded", timeout=300_000)
    expect(card).to_contain_text(f"{SSH_TEST_USER}@{sshd.host}:{sshd.port} (password)")
    expect(page.locator('#targets tr[data-name="web-box"]')).to_contain_text("attached machine")
    # the key confirmed on the page is the one now trusted
    assert sshd.known_hosts_line().split()[2] in user_known_hosts.read_text()

    # the password is nowhere a person or a log could see it
    seen = [
        page.content(),
        first_event(f"{dashboard.base}/compute/stream"),
        urllib.request.urlopen(f"{dashboard.base}/api/compute").read().decode(),
    ]
    for secret in (SSH_TEST_PASSWORD, WRONG_PASSWORD):
        assert all(secret not in text for text in seen), secret
        assert all(secret.encode() not in body for body in bodies), secret
        assert secret not in dashboard.log.read_text(), secret
    assert page.locator("#attach-form input[name=password]").input_value() == ""

    detach(page, dashboard, "web-box")
    wait_until(lambda: "web-box" not in dashboard.cli("compute", "list").stdout, timeout=30)
