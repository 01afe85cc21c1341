"""The A/B report page in Debian's chromium: filled in and submitted with JavaScript (htmx swaps the result and
pushes the report's URL) and without it (a plain GET form), screenshotted into ``test-artifacts/ui/``."""

from __future__ import annotations

from typing import Any

import pytest
from tests.conftest import LiveServer
from tests.releases.test_abtest_api import SPLIT, seeded  # noqa: F401 (the seeded live server)
from tests.ui.browser import NEEDS_CHROMIUM, Browser

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120), NEEDS_CHROMIUM]

pytest.importorskip("playwright.sync_api")


def _fill(page: Any) -> None:
    page.fill("input[name=numerator]", SPLIT["numerator"])
    page.fill("input[name=denominator]", SPLIT["denominator"])
    page.fill("input[name=control]", "control")
    page.click("[data-testid=abtest-run]")


def test_report_with_htmx(chromium: Any, seeded: LiveServer) -> None:  # noqa: F811
    web = Browser(chromium, seeded.url)
    try:
        page = web.goto("/releases")
        page.click("[data-testid=abtest-link]")
        page.wait_for_load_state("networkidle")
        _fill(page)
        page.wait_for_selector("[data-testid=abtest-p]")
        assert page.locator("[data-testid=abtest-p]").inner_text() == "0.0847"
        assert "keep-running" in page.locator("[data-testid=abtest-verdict]").inner_text()
        assert "numerator=sum%20by" in page.url and "control=control" in page.url  # the report's link, pushed by htmx
        assert page.locator("[data-testid=abtest-form]").count() == 1  # the fragment replaced the result only
        web.shot("abtest-light")
        web.assert_clean()
    finally:
        web.ctx.close()


def test_report_without_javascript(chromium: Any, seeded: LiveServer) -> None:  # noqa: F811
    ctx = chromium.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
    try:
        page = ctx.new_page()
        page.goto(seeded.url + "/releases/abtest")
        _fill(page)
        page.wait_for_load_state("load")
        assert page.locator("[data-testid=abtest-p]").inner_text() == "0.0847"
        assert page.input_value("input[name=control]") == "control"
        page.fill("input[name=window]", "7d")
        page.click("[data-testid=abtest-run]")
        page.wait_for_load_state("load")
        assert page.locator("[data-testid=abtest-error]").inner_text().startswith("window: no query uses $window")
    finally:
        ctx.close()
