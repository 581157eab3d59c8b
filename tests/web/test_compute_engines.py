"""Attaching a Slurm login node from the compute page, in a real browser against a real
`sortie up` and the tests' sshd (this host, as the unprivileged test user): the form's type
Slurm with a partition attaches the machine with that engine (the scheduler records it; the
remote agent is started with it), and the targets table and the machine's card say so. A Spark
setting the engine would not take is refused next to the form and nothing is attached.

No Slurm needs to run here: attaching records the engine and starts the agent with it; the
agent asks `sinfo` for its nodes' size and, with no cluster to ask, advertises its host's
(tests/engines runs runs through a real Slurm)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.e2e.conftest import wait_until
from tests.ssh.conftest import SSH_TEST_USER, ClientKey, Sshd
from tests.ssh.conftest import authorized as authorized  # the fixtures, shared
from tests.ssh.conftest import client_key as client_key
from tests.ssh.conftest import sshd as sshd
from tests.ssh.test_attach_e2e import detach, key_file, show
from tests.web.conftest import Dashboard

pytestmark = pytest.mark.timeout(600)


def names(dashboard: Dashboard) -> list[str]:
    listed = dashboard.json("compute", "list")
    assert isinstance(listed, list)
    return [c["name"] for c in listed]


def fill_login(form: Locator, name: str, sshd: Sshd, key: Path) -> None:
    form.locator("input[name=name]").fill(name)
    form.locator("input[name=address]").fill(sshd.host)
    form.locator("input[name=ssh_port]").fill(str(sshd.port))
    form.locator("input[name=username]").fill(SSH_TEST_USER)
    form.locator("input[name=private_key_file]").set_input_files(str(key))


def forget(dashboard: Dashboard, name: str, runs: list[str]) -> None:
    """After a failed test: its runs cancelled and its machine detached (forced), so no agent
    of it is left running on the test user's account to hold ~/.sortie from the next attach.
    Best effort: the test's own failure is the one reported."""
    if name not in names(dashboard):
        return
    for run_id in runs:
        dashboard.cli("run", "cancel", run_id)
    dashboard.cli("compute", "detach", name, "--force")
    with contextlib.suppress(AssertionError):
        wait_until(lambda: name not in names(dashboard), timeout=60)


def test_a_slurm_login_node_attached_from_the_form_is_shown_as_slurm(
    dashboard: Dashboard, page: Page, sshd: Sshd, client_key: ClientKey, tmp_path: Path
) -> None:
    key = key_file(tmp_path, client_key)
    page.goto(f"{dashboard.base}/compute")
    page.get_by_role("button", name="Attach machine").click()
    form = page.locator("#attach-form")
    fill_login(form, "hpc", sshd, key)
    expect(form.locator("input[name=partition]")).to_be_hidden()  # a machine's form: no engine
    form.locator("select[name=type]").select_option("slurm")
    form.locator("input[name=partition]").fill("debug")
    form.get_by_role("button", name="Check host key").click()
    # the scheduler fetched the sshd's key: its fingerprint is shown, to confirm
    expect(form.locator(".hostkey-fp")).to_contain_text("SHA256:")
    try:
        form.get_by_role("button", name="Confirm fingerprint and attach").click()
        expect(form.locator(".form-error")).to_have_text("Attaching hpc: its progress shows below")
        card = page.locator('#machines [data-name="hpc"]')
        expect(card.locator(".card-what")).to_contain_text("slurm · partition debug")
        expect(card.locator(".card-state")).to_have_text("Succeeded", timeout=300_000)
        row = page.locator('#targets tr[data-name="hpc"]')
        expect(row).to_contain_text("attached machine · slurm · partition debug")
        vm = show(dashboard, "hpc")
        assert vm["engine"] == {
            "engine": "slurm",
            "partition": "debug",
            "account": None,
            "qos": None,
        }
        shown = dashboard.cli("compute", "show", "hpc", check=True).stdout
        assert "slurm: partition debug, account (default), qos (default)" in shown
        # the key went in the attach request only: not on the page, not in the daemons' log
        body = client_key.text.splitlines()[1]
        assert body not in page.content() and body not in dashboard.log.read_text()

        detach(dashboard, "hpc")
        expect(card).to_have_count(0, timeout=60_000)
    finally:
        forget(dashboard, "hpc", [])


def test_a_spark_conf_line_without_a_value_is_refused_next_to_the_form_and_nothing_attached(
    dashboard: Dashboard, page: Page, sshd: Sshd, client_key: ClientKey, tmp_path: Path
) -> None:
    key = key_file(tmp_path, client_key)
    before = names(dashboard)
    page.goto(f"{dashboard.base}/compute")
    page.get_by_role("button", name="Attach machine").click()
    form = page.locator("#attach-form")
    fill_login(form, "sparky", sshd, key)
    form.locator("select[name=type]").select_option("spark")
    expect(form.locator("input[name=partition]")).to_be_hidden()
    form.locator("input[name=master]").fill("spark://127.0.0.1:7077")
    form.locator("textarea[name=conf]").fill("spark.executor.memory=512m\nspark.executor.cores")
    form.get_by_role("button", name="Check host key").click()
    error = form.locator(".form-error")
    expect(error).to_contain_text("--conf takes KEY=VALUE, got 'spark.executor.cores'")
    expect(form.locator(".hostkey")).to_be_hidden()  # refused before the host key was fetched

    # a UI port out of range: refused the same way, saying the range
    form.locator("textarea[name=conf]").fill("spark.executor.memory=512m")
    form.locator("input[name=ui_port]").fill("70000")
    form.get_by_role("button", name="Check host key").click()
    expect(error).to_contain_text("--ui-port 70000 is not a port: use 1-65535")
    expect(form.locator(".hostkey")).to_be_hidden()
    assert names(dashboard) == before
    expect(page.locator('#machines [data-name="sparky"]')).to_have_count(0)
