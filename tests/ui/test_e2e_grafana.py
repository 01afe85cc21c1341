"""Grafana dashboards imported in Chromium: the JSON Grafana exports (a Grafana 10 one and a schemaVersion 14
one with legacy graph/singlestat panels), pasted and uploaded, then every panel draws the seeded data."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from tests.ui.browser import NEEDS_CHROMIUM, Browser
from tests.ui.seed import INSTANCES

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.timeout(180),
    NEEDS_CHROMIUM,
]

pytest.importorskip("playwright.sync_api")

FIXTURES = Path(__file__).parent / "grafana"


def _loaded(page: Any) -> None:
    """Every panel has swapped in its content."""
    page.wait_for_function(
        "![...document.querySelectorAll('.panel-body p.muted')].some(p => p.textContent === 'loading…')")


def test_import_a_grafana_10_dashboard_by_pasting(web: Browser) -> None:
    page = web.goto("/dashboards/import?from=now-1h&to=now")
    page.fill("#json", (FIXTURES / "service-modern.json").read_text())
    page.click("button.primary")
    warnings = page.locator("[data-testid=import-warnings]")
    warnings.wait_for()
    assert "piechart" in warnings.inner_text()  # the pie chart is reported, not silently dropped
    warnings.locator("a").first.click()
    page.wait_for_url(re.compile(r"/dashboards/service-grafana-10"))
    _loaded(page)
    panels = page.locator("[data-testid=panel]")
    assert panels.count() == 7
    # time series: both queries in one chart, by code (200, 500) and the total
    chart = page.locator("[data-testid=panel][data-title='Requests by code'] .pw-chart")
    page.wait_for_selector("[data-testid=panel][data-title='Requests by code'] .pw-chart[data-rendered='1']")
    assert chart.get_attribute("data-series-count") == "3"
    legend = chart.locator(".u-legend .u-series").all_inner_texts()
    assert any("total" in t for t in legend) and any("500" in t for t in legend)
    # stat: the error ratio with its unit, coloured by its thresholds
    stat = page.locator("[data-testid=panel][data-title='Error ratio'] [data-testid=stat-value]")
    assert re.fullmatch(r"\d+(\.\d+)?", stat.inner_text()), stat.inner_text()
    assert stat.get_attribute("style")  # a threshold colour
    # gauge with 2 decimals, bar gauge one bar per instance (All)
    gauge = page.locator("[data-testid=panel][data-title='Saturation'] [data-testid=gauge-value]").inner_text()
    assert re.fullmatch(r"\d+\.\d\d", gauge), gauge
    bars = page.locator("[data-testid=panel][data-title='By instance'] .bar > span")
    assert bars.count() == len(INSTANCES)
    widths = [b.evaluate("e => e.style.width") for b in bars.all()]
    assert widths[-1] == "100%" and widths[0] != widths[-1]  # c:9100 (the largest) fills its bar
    # the pie chart is noted on the dashboard, the hidden query on its panel
    assert "piechart" in (page.locator("[data-testid=dashboard-notes]").text_content() or "")
    notes = page.locator("[data-testid=panel][data-title='Requests by code'] [data-testid=panel-notes]")
    assert "query C is hidden" in (notes.text_content() or "")
    # the collapsed row opens onto a table, log lines and traces
    page.click("details.drow summary")
    table_rows = page.locator("[data-testid=panel][data-title='Top series'] [data-testid=panel-table] tr")
    assert table_rows.count() == len(INSTANCES)
    logs = page.locator("[data-testid=panel][data-title='Checkout logs'] ol.loglines > li")
    assert logs.count() > 0
    traces = page.locator("[data-testid=panel][data-title='Slow traces'] tbody tr:not(:has(td.empty))")
    assert traces.count() > 0  # Tempo's search (serviceName, minDuration) as pitwall's trace search
    web.shot("grafana-import-modern")
    page.locator("details.drow").scroll_into_view_if_needed()
    page.evaluate("window.scrollBy(0, 400)")
    web.shot("grafana-import-modern-details")
    # narrowing the multi-value variable to two instances redraws the bar gauge with two bars
    page.select_option("[data-testid=var-instance]", ["a:9100", "c:9100"])
    page.click("form.vars button[type=submit]")
    page.wait_for_url(re.compile(r"var-instance=a%3A9100&var-instance=c%3A9100"))
    _loaded(page)
    assert page.locator("[data-testid=panel][data-title='By instance'] [data-testid=bargauge-value]").count() == 2
    web.assert_clean()


def test_import_a_legacy_schema_14_dashboard_by_file(web: Browser) -> None:
    page = web.goto("/dashboards/import")
    page.set_input_files("input[type=file][data-json-file]", str(FIXTURES / "legacy-v14.json"))
    page.wait_for_function("document.querySelector('#json').value.includes('singlestat')")
    page.click("button.primary")
    warnings = page.locator("[data-testid=import-warnings]")
    assert "reduced by 'avg'" in warnings.inner_text()  # singlestat valueName avg: reported
    warnings.locator("a").first.click()
    page.wait_for_url(re.compile(r"/dashboards/legacy-grafana-4"))
    _loaded(page)
    assert [h.strip() for h in page.locator("section.drow > h2").all_inner_texts()] == ["Traffic", "Details"]
    page.wait_for_selector("[data-testid=panel][data-title='Request rate'] .pw-chart[data-rendered='1']")
    chart = page.locator("[data-testid=panel][data-title='Request rate'] .pw-chart")
    assert chart.get_attribute("data-series-count") == "1"  # [[instance]] = the first instance
    assert "a:9100" in " ".join(chart.locator(".u-legend .u-series").all_inner_texts())
    series = page.locator("[data-testid=panel][data-title='Series'] [data-testid=stat-value]")
    assert series.inner_text() == str(len(INSTANCES) + 1)  # count(http_requests_total), 0 decimals
    assert series.get_attribute("style") == "color: rgba(237, 129, 40, 0.89)"  # 4 is past the threshold 3
    assert page.locator("[data-testid=panel][data-title='Error percentage'] [data-testid=gauge-value]").count() == 1
    assert page.locator("[data-testid=panel][data-title='Requests by instance'] [data-testid=panel-table] tr").count() == len(INSTANCES)
    web.shot("grafana-import-legacy")
    page.click("[data-theme-toggle]")  # readable in the dark theme too
    page.wait_for_selector("[data-testid=panel][data-title='Request rate'] .pw-chart[data-rendered='1']")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(15, 18, 22)"
    web.shot("grafana-import-legacy-dark")
    web.assert_clean()
