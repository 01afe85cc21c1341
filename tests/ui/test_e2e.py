"""Browser tests: Debian's chromium driven by Playwright against a seeded live server.

Every page loads without console errors and is screenshotted into
``test-artifacts/ui/``; the key interactions work end to end.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import REPO
from tests.ui.conftest import SeededServer
from tests.ui.seed import INSTANCES, KNOWN_TRACE

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "ui"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]

sync_api = pytest.importorskip("playwright.sync_api")


class Browser:
    def __init__(self, browser: Any, base: str) -> None:
        self.browser = browser
        self.base = base
        self.errors: list[str] = []
        self.ctx = browser.new_context(viewport={"width": 1280, "height": 860}, color_scheme="light")
        self.page = self.ctx.new_page()
        self.page.set_default_timeout(15_000)
        self.page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text} {m.location}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def goto(self, path: str) -> Any:
        resp = self.page.goto(self.base + path, wait_until="networkidle")
        assert resp is not None and resp.status == 200, f"{path}: {resp.status if resp else 'no response'}"
        return self.page

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)

    def assert_clean(self) -> None:
        assert self.errors == [], self.errors


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def web(chromium: Any, seeded_server: SeededServer) -> Iterator[Browser]:
    b = Browser(chromium, seeded_server.url)
    yield b
    b.ctx.close()


PAGES = [
    ("overview", "/"),
    ("metrics", "/graph?expr=" + "sum+by+(instance)+(rate(http_requests_total[5m]))"),
    ("logs", "/logs?query=%7Bservice_name%3D%22checkout%22%7D"),
    ("traces", "/traces"),
    ("trace", f"/traces/{KNOWN_TRACE}"),
    ("service-map", "/services"),
    ("service", "/services/checkout"),
    ("alerts", "/alerts"),
    ("dashboards", "/dashboards"),
    ("dashboard", "/dashboards/checkout"),
    ("targets", "/targets"),
    ("status", "/status"),
]


@pytest.mark.parametrize(("name", "path"), PAGES, ids=[n for n, _ in PAGES])
def test_page_loads_without_console_errors(web: Browser, name: str, path: str) -> None:
    page = web.goto(path)
    assert page.locator("h1").first.is_visible()
    assert page.locator("nav a[aria-current=page]").count() == 1
    if page.locator(".pw-chart").count():
        page.wait_for_selector(".pw-chart[data-rendered]")
    if name == "dashboard":
        page.wait_for_function("document.querySelectorAll('.panel .muted').length === 0 || "
                               "![...document.querySelectorAll('.panel p.muted')].some(p => p.textContent === 'loading…')")
    web.shot(name)
    web.assert_clean()


def test_dark_theme_toggle(web: Browser) -> None:
    page = web.goto("/graph?expr=rate(http_requests_total%5B5m%5D)")
    page.wait_for_selector(".pw-chart[data-rendered]")
    page.click("[data-theme-toggle]")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(15, 18, 22)"
    web.shot("metrics-dark")
    page.reload(wait_until="networkidle")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"  # remembered
    web.assert_clean()


def test_promql_query_draws_one_line_per_series(web: Browser) -> None:
    page = web.goto("/graph")
    editor = page.locator("#expr")
    editor.fill("rate(http_requests_total[5m])")
    editor.press("Control+Enter")
    page.wait_for_url(re.compile(r"/graph\?.*expr=rate"))
    chart = page.locator("[data-testid=chart]")
    page.wait_for_selector("[data-testid=chart][data-rendered='1']")
    # three instances answer 200, one also 500: four series, each in the legend
    assert chart.get_attribute("data-series-count") == str(len(INSTANCES) + 1)
    assert page.locator("[data-testid=chart] .u-legend .u-series").count() == len(INSTANCES) + 2  # + time
    # the URL holds the query and the range, so the link can be shared
    assert "from=now-1h" in page.url and "expr=rate" in page.url
    # the table view of the same query, instant
    page.check("input[name=type][value=instant]")
    page.click("button.primary")
    page.wait_for_selector("[data-testid=result-table]")
    assert page.locator("[data-testid=result-table] tbody tr").count() == len(INSTANCES) + 1
    web.assert_clean()


def test_promql_completion_and_history(web: Browser) -> None:
    page = web.goto("/graph")
    editor = page.locator("#expr")
    editor.click()
    editor.type("http_req")
    page.wait_for_selector(".completions li")
    assert page.locator(".completions li").first.inner_text() == "http_requests_total"
    editor.press("Tab")
    editor.type("{ins")
    page.wait_for_selector(".completions li:text('instance')")
    editor.press("Tab")
    page.wait_for_selector(".completions li:text('a:9100')")
    editor.press("Enter")
    assert editor.input_value() == 'http_requests_total{instance="a:9100"'
    editor.type("}")
    editor.press("Control+Enter")
    page.wait_for_selector("[data-testid=chart][data-rendered='1']")
    assert page.locator("[data-testid=chart]").get_attribute("data-series-count") == "2"
    page.click("details.history summary")
    assert page.locator("[data-history-list=promql] button").first.inner_text() == 'http_requests_total{instance="a:9100"}'
    web.assert_clean()


def test_promql_error_shows_position(web: Browser) -> None:
    page = web.goto("/graph?expr=sum(rate(http_requests_total%5B5m%5D)")
    err = page.locator("[data-js-error]")
    err.wait_for(state="visible")
    assert "parse error" in err.inner_text()
    assert err.get_attribute("data-line") == "1"
    assert err.locator(".caret").inner_text().endswith("^")
    web.assert_clean()


def test_open_a_trace_and_its_spans(web: Browser, seeded_server: SeededServer) -> None:
    page = web.goto("/traces?service=payment&status=error")
    page.wait_for_selector("[data-testid=scatter][data-rendered='1']")
    rows = page.locator("table.data tbody tr")
    assert rows.count() == len(seeded_server.data.error_trace_ids)
    page.click(f"a[href^='/traces/{KNOWN_TRACE[16:]}'], a[href^='/traces/{KNOWN_TRACE}']")
    page.wait_for_selector("[data-testid=waterfall]")
    spans = page.locator(".span-row")
    assert spans.count() == 5
    assert page.locator(".span-row.error").count() == 4  # the failed payment and its callers
    assert page.locator(".span-row.critical").count() >= 3
    page.locator(".span-row", has_text="Charge").locator("[data-span-details]").click()
    details = page.locator(".span-details:visible")
    assert "payment.amount" in details.inner_text() and "card declined" in details.inner_text()
    # collapsing the checkout span hides its two children
    page.locator(".span-row", has_text="PlaceOrder").locator("[data-collapse]").click()
    assert page.locator(".span-row:visible").count() == 3
    web.shot("trace-details")
    web.assert_clean()


def test_follow_a_log_line_to_its_trace(web: Browser, seeded_server: SeededServer) -> None:
    page = web.goto("/logs?query=%7Bservice_name%3D%22checkout%22%7D+%7C%3D+%22payment+failed%22")
    page.wait_for_selector("[data-testid=volume][data-rendered]")
    lines = page.locator("ol.loglines > li")
    assert lines.count() == len(seeded_server.data.error_trace_ids)
    assert page.locator("ol.loglines > li.lv-error").count() == lines.count()
    lines.first.locator("summary").click()
    assert "order" in lines.first.locator(".fields").inner_text()  # parsed JSON field
    link = lines.first.locator("a.tracelink")
    href = link.get_attribute("href") or ""
    link.click()
    page.wait_for_selector("[data-testid=waterfall]")
    assert page.url.split("?")[0].endswith(href.split("?")[0])
    # and back from the trace to its logs
    page.click("[data-testid=trace-logs]")
    page.wait_for_selector("ol.loglines > li")
    assert page.locator("ol.loglines > li").count() == 1
    web.assert_clean()


def test_create_and_expire_a_silence(web: Browser) -> None:
    page = web.goto("/alerts")
    for _ in range(60):  # the rule fires after its first evaluations; the pipeline groups it
        if page.locator("[data-testid=silence-alert]").count():
            break
        page.wait_for_timeout(250)
        page.reload(wait_until="networkidle")
    page.click("[data-testid=silence-alert]")
    form = page.locator("[data-testid=silence-form]")
    names = form.locator("input[name=name]").evaluate_all("els => els.map(e => e.value)")
    assert "alertname" in names
    form.locator("input[name=created_by]").fill("e2e@pitwall.test")
    form.locator("input[name=comment]").fill("silenced by the browser test")
    form.locator("button[type=submit]").click()
    page.wait_for_url(re.compile(r"/alerts\?created="))
    row = page.locator("[data-testid=silences] tbody tr", has_text="e2e@pitwall.test")
    assert row.locator(".pill").inner_text() == "active"
    web.shot("alerts-silenced")
    row.locator("[data-testid=expire]").click()
    page.wait_for_load_state("networkidle")
    assert page.locator("[data-testid=silences] tbody tr", has_text="e2e@pitwall.test").count() == 0
    page.goto(web.base + "/alerts?expired=1", wait_until="networkidle")
    row = page.locator("[data-testid=silences] tbody tr", has_text="e2e@pitwall.test")
    assert row.locator(".pill").inner_text() == "expired"
    web.assert_clean()


def test_open_a_dashboard(web: Browser) -> None:
    page = web.goto("/dashboards")
    page.click("text=Checkout health")
    page.wait_for_selector("[data-testid=panel] .pw-chart[data-rendered='1']")
    assert page.locator("[data-testid=panel]").count() == 6
    assert page.locator("[data-testid=stat-value]").first.inner_text() == str(len(INSTANCES) + 1)
    page.wait_for_selector("[data-testid=panel] ol.loglines > li")
    # changing the variable reloads the panels with it, and the URL keeps the choice
    page.select_option("select[name=var-instance]", "b:9100")
    page.wait_for_url(re.compile(r"var-instance=b%3A9100"))
    page.wait_for_selector("[data-testid=panel] .pw-chart[data-rendered='1']")
    web.assert_clean()
