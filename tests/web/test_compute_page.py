"""The compute page in a real browser against a real `sortie up`: clusters created, updated and
deleted from its forms (their node counts drawn live), bad input refused next to the form with
nothing created, and the attach form's checks."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.web.conftest import Dashboard


def names(dashboard: Dashboard) -> list[str]:
    listed = dashboard.json("compute", "list")
    assert isinstance(listed, list)
    return [c["name"] for c in listed]


def create(page: Page, name: str, *, min_nodes: str = "0", max_nodes: str = "2") -> None:
    page.get_by_role("button", name="New cluster").click()
    form = page.locator("#create-form")
    form.locator("input[name=name]").fill(name)
    form.locator("select[name=vm_size]").select_option("LOCAL_SMALL")
    form.locator("input[name=min_nodes]").fill(min_nodes)
    form.locator("input[name=max_nodes]").fill(max_nodes)
    form.get_by_role("button", name="Create").click()


def test_a_cluster_created_from_the_form_appears_with_its_nodes_and_can_be_changed_and_deleted(
    dashboard: Dashboard, page: Page
) -> None:
    page.goto(f"{dashboard.base}/compute")
    create(page, "web-pool", min_nodes="1", max_nodes="2")
    expect(page.locator("#create-form .form-error")).to_have_text("Created web-pool")
    row = page.locator('#targets tr[data-name="web-pool"]')
    expect(row).to_contain_text("cluster")
    expect(row).to_contain_text("process of LOCAL_SMALL")
    card = page.locator('#clusters [data-name="web-pool"]')
    # min 1: the autoscaler starts a node, and the page shows it come up (pushed, no reload)
    expect(card.locator('[data-count="current"] b')).to_have_text("1", timeout=60_000)
    expect(card.locator(".events")).to_contain_text("scale up")
    assert "web-pool" in names(dashboard)

    card.locator("input[name=max_nodes]").fill("3")
    card.get_by_role("button", name="Update limits").click()
    expect(card.locator(".card-actions .form-error")).to_have_text("Updated web-pool")
    expect(card.locator('[data-limit="max"]')).to_have_text("3")
    shown = dashboard.json("compute", "show", "web-pool")
    assert isinstance(shown, dict) and shown["max_nodes"] == 3

    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name="Delete").click()
    # the node stops first (SIGTERM, the grace, SIGKILL): slow on a loaded machine
    expect(card).to_have_count(0, timeout=100_000)
    expect(page.locator('#targets tr[data-name="web-pool"]')).to_have_count(0)
    assert "web-pool" not in names(dashboard)


def test_a_bad_name_is_refused_with_the_rule_and_nothing_is_created(
    dashboard: Dashboard, page: Page
) -> None:
    page.goto(f"{dashboard.base}/compute")
    create(page, "9_bad name")
    error = page.locator("#create-form .form-error")
    expect(error).to_contain_text("is not valid: use 2 to 16 characters")
    expect(error).to_contain_text("starting with a letter")
    assert "9_bad name" not in names(dashboard)
    expect(page.locator("#clusters [data-name]")).to_have_count(0)


def test_the_attach_form_refuses_missing_credentials_and_sends_nothing(
    dashboard: Dashboard, page: Page
) -> None:
    page.goto(f"{dashboard.base}/compute")
    page.get_by_role("button", name="Attach machine").click()
    form = page.locator("#attach-form")
    form.locator("input[name=name]").fill("lab-box")
    form.locator("input[name=address]").fill("127.0.0.1")
    form.locator("input[name=username]").fill("someone")
    form.get_by_role("button", name="Check host key").click()
    expect(form.locator(".form-error")).to_contain_text("credentials are required")
    # password chosen but left empty: the same refusal; no host key was fetched
    form.get_by_label("a password").check()
    form.get_by_role("button", name="Check host key").click()
    expect(form.locator(".form-error")).to_contain_text(re.compile("upload the private key"))
    expect(form.locator(".hostkey")).to_be_hidden()
    assert "lab-box" not in names(dashboard)
