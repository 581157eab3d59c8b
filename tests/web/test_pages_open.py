"""Every view of the dashboard opens in a real browser without a JavaScript error."""

from __future__ import annotations

from playwright.sync_api import Page

from sortie.web.views import NAV
from tests.web.conftest import Dashboard


def test_every_view_in_the_navigation_opens(dashboard: Dashboard, page: Page) -> None:
    for view in NAV:
        response = page.goto(f"{dashboard.base}{view.path}")
        assert response is not None and response.status == 200, view.name
        assert page.locator("header.top nav a.active").inner_text() == view.title


def test_pages_allow_only_their_own_scripts_and_no_framing(
    dashboard: Dashboard, page: Page
) -> None:
    response = page.goto(f"{dashboard.base}/runs")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-frame-options"] == "DENY"
