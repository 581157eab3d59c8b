"""The Models view in a real browser: a registered model, its versions and its files."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page

from tests.web.conftest import Dashboard


def test_registered_versions_are_listed_and_their_files_download(
    dashboard: Dashboard, page: Page, tmp_path: Path
) -> None:
    weights = tmp_path / "model.pkl"
    weights.write_bytes(b"weights v1")
    dashboard.cli("model", "register", "digits", str(weights), "--tag", "stage=dev", check=True)
    weights.write_bytes(b"weights v2")
    dashboard.cli("model", "register", "digits", str(weights), "--description", "C=0.5", check=True)

    page.goto(f"{dashboard.base}/models")
    row = page.locator("#models tbody tr", has_text="digits")
    assert row.locator("td").nth(1).inner_text() == "2"  # the latest version
    assert row.locator("td").nth(2).inner_text() == "2"  # versions

    row.get_by_role("link", name="digits").click()
    versions = page.locator("#versions tbody tr")
    assert versions.count() == 2
    assert "C=0.5" in versions.first.inner_text()
    assert "stage=dev" in versions.nth(1).inner_text()
    with page.expect_download() as download:
        versions.nth(1).get_by_role("link", name="model.pkl").click()
    saved = tmp_path / "downloaded"
    download.value.save_as(saved)
    assert saved.read_bytes() == b"weights v1"


def test_an_unknown_model_is_a_404_that_says_so(dashboard: Dashboard, page: Page) -> None:
    response = page.request.get(f"{dashboard.base}/models?name=nope")
    assert response.status == 404
    assert "no model named 'nope'" in response.text()
