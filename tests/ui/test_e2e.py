"""Browser tests: Debian's chromium driven by Playwright against a seeded live server.

Every page loads without console errors and is screenshotted into
``test-artifacts/ui/``; the key interactions work end to end.
"""

from __future__ import annotations

import re

import pytest
from tests.ui.browser import NEEDS_CHROMIUM, Browser
from tests.ui.conftest import SeededServer
from tests.ui.seed import INSTANCES, KNOWN_TRACE

pytestmark = [pytest.mark.e2e, pytest.mark.slow, NEEDS_CHROMIUM]

pytest.importorskip("playwright.sync_api")


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
    # three instances answer 200, one also 500: four series, each a row of the legend table with its statistics
    assert chart.get_attribute("data-series-count") == str(len(INSTANCES) + 1)
    rows = page.locator("[data-testid=chart] [data-testid=legend] tbody tr")
    assert rows.count() == len(INSTANCES) + 1
    cells = rows.first.locator("td").all_inner_texts()
    assert len(cells) == 6 and "http_requests_total" not in cells[0] and "instance=" in cells[0]
    assert all(re.fullmatch(r"[0-9.e+-]+[kMG]?", c) for c in cells[1:5]), cells  # min, max, mean, last
    rows.first.click()  # only that series, as Grafana's legend does
    assert rows.nth(1).get_attribute("class") == "off"
    rows.first.click()  # again: all of them
    assert rows.nth(1).get_attribute("class") == ""
    # the URL holds the query and the range, so the link can be shared
    assert "from=now-1h" in page.url and "expr=rate" in page.url
    # a second query in the same chart; a series without labels is named by its query, not "{}"
    page.click("[data-add-query]")
    page.locator("#expr-2").fill("sum(rate(http_requests_total[5m]))")
    page.click("button.primary")
    page.wait_for_url(re.compile(r"expr=sum"))
    page.wait_for_selector("[data-testid=chart][data-rendered='1']")
    assert chart.get_attribute("data-series-count") == str(len(INSTANCES) + 2)
    names = page.locator("[data-testid=legend] tbody tr td:first-child").all_inner_texts()
    assert "sum(rate(http_requests_total[5m]))" in [n.strip() for n in names]
    # the inspector says what each query cost and returned
    page.click("[data-testid=inspector] summary")
    inspected = page.locator("[data-testid=inspector] tbody tr")
    assert inspected.count() == 2
    assert inspected.nth(1).locator("td").nth(2).inner_text() == "1"  # one series
    assert all(int(inspected.nth(i).locator("td").nth(4).inner_text()) > 0 for i in range(2))  # samples read
    web.shot("metrics-legend-inspector")
    # one time format: 24-hour with the zone named, UTC or the browser's zone at the header's toggle
    zone = page.locator("[data-tz-toggle]")
    zone.click()
    assert page.evaluate("localStorage.getItem('pw-tz')") == "utc" and zone.inner_text() == "UTC"
    assert zone.get_attribute("aria-pressed") == "true"
    zone.click()
    assert page.evaluate("localStorage.getItem('pw-tz')") == "local"
    assert re.fullmatch(r"UTC([+-]\d\d:\d\d)?", zone.inner_text())
    # the table view of the same query, instant
    page.check("input[name=type][value=instant]")
    page.click("button.primary")
    page.wait_for_selector("[data-testid=result-table]")
    tables = page.locator("[data-testid=result-table]")
    assert tables.count() == 2  # one per query
    assert tables.first.locator("tbody tr").count() == len(INSTANCES) + 1
    assert tables.nth(1).locator("tbody tr").count() == 1
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


def test_trace_search_with_several_tags(web: Browser, seeded_server: SeededServer) -> None:
    page = web.goto("/traces?service=payment")
    page.wait_for_selector("[data-testid=scatter][data-rendered='1']")
    everything = page.locator("table.data tbody tr").count()
    page.locator("form.search input[name=attr]").first.fill("payment.amount>=10")
    page.click("[data-add-tag]")
    page.locator("form.search input[name=attr]").nth(1).fill("payment.amount<13")
    page.click("form.search button.primary")
    page.wait_for_url(re.compile(r"attr=.*attr="))
    page.wait_for_selector("[data-testid=scatter][data-rendered='1']")
    rows = page.locator("table.data tbody tr")
    assert 0 < rows.count() < everything  # both tags must match
    assert page.locator("[data-testid=scatter]").get_attribute("data-series-count") == str(rows.count())
    # the form keeps both filters and offers a third, empty one
    assert page.locator("form.search input[name=attr]").evaluate_all("els => els.map(e => e.value)") == [
        "payment.amount>=10", "payment.amount<13", ""]
    web.shot("traces-tags")
    web.assert_clean()


def test_compare_two_traces(web: Browser, seeded_server: SeededServer) -> None:
    page = web.goto("/traces?service=frontend")
    boxes = page.locator("[data-testid=compare-form] input[name=id]")
    assert boxes.count() >= 2
    failed = KNOWN_TRACE  # the failed checkout; a good one next to it
    page.locator(f"[data-testid=compare-form] input[value='{failed}']").check()
    page.locator("[data-testid=compare-form] tbody tr:not(.is-err) input[name=id]").first.check()
    page.click("[data-testid=compare]")
    page.wait_for_selector("[data-testid=trace-diff]")
    rows = page.locator("[data-testid=trace-diff] tbody tr")
    assert rows.count() == 5  # the same five call paths in both: nothing added or removed
    assert page.locator("[data-testid=trace-diff] tr[data-change=same]").count() == 5
    web.shot("traces-compare")
    # from a trace's page, against a trace id that does not exist: a clear error
    page.goto(web.base + f"/traces/compare?a={failed}&b=fedcba9876543210fedcba9876543210", wait_until="networkidle")
    assert page.locator(".qerror").count() == 1
    assert len(web.errors) == 1 and "404" in web.errors[0]  # the page itself answers 404, as it should
    web.errors.clear()
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
    # one colour per service (Jaeger's waterfall): the three services' bars differ; errors stay red
    ok_bars = page.locator(".span-row:not(.error) .bar")
    assert ok_bars.count() == 1 and "svc-" in (ok_bars.first.get_attribute("class") or "")
    swatches = page.locator(".summary .svc .sw").evaluate_all(
        "els => els.map(e => getComputedStyle(e).backgroundColor)")
    assert len(swatches) == len(set(swatches)) >= 3
    assert page.locator("[data-testid=incomplete]").count() == 0  # every span's parent arrived
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
    # the volume histogram is split by level, each level in its own colour
    levels = page.locator("[data-testid=volume]").evaluate("el => el._pwData.series.map(s => s.name)")
    assert levels == ["error"]
    assert page.locator("[data-testid=volume]").evaluate("el => el._pwColours[0]") == "#e02f44"
    web.shot("logs-volume-levels")
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


def test_log_filters_line_views_and_context(web: Browser, seeded_server: SeededServer) -> None:
    page = web.goto("/logs?query=%7Bservice_name%3D%22checkout%22%7D+%7C%3D+%22payment+failed%22")
    lines = page.locator("ol.loglines[data-testid=loglines] > li")
    total = lines.count()
    assert total >= 2
    first = lines.first
    first.locator("summary").click()
    # filter out one parsed value: the json parser goes in first, the field named as it names it
    order = first.locator("tr", has_text="order").locator("td").first.inner_text()
    first.locator("tr", has_text="order").locator("[data-log-filter=out]").click()
    page.wait_for_url(re.compile(r"json"))
    assert page.locator("#logql").input_value().endswith(f'| json | order!="{order}"')
    assert page.locator("ol.loglines[data-testid=loglines] > li").count() == total - 1
    # filter by a stream label: it joins the selector
    page.goto(web.base + "/logs?query=%7Bservice_name%3D%22inventory%22%7D", wait_until="networkidle")
    stream = page.locator("ol.loglines[data-testid=loglines] > li")
    assert stream.count() == 40
    stream.first.locator("summary").click()
    stream.first.locator("tr", has_text="job").locator("[data-log-filter=out]").click()
    page.wait_for_url(re.compile(r"job"))
    assert page.locator("#logql").input_value() == '{service_name="inventory", job!="inventory"}'
    assert page.locator("ol.loglines[data-testid=loglines] > li.empty").count() == 1
    page.go_back(wait_until="networkidle")
    page.goto(web.base + "/logs?query=%7Bservice_name%3D%22checkout%22%7D+%7C%3D+%22payment+failed%22",
              wait_until="networkidle")
    # prettified JSON and message only, remembered by the browser
    page.check("[data-line-view=pretty]")
    line = page.locator("ol.loglines[data-testid=loglines] .line").first
    assert "\n" in line.inner_text() and '"msg": "payment failed"' in line.inner_text()
    page.uncheck("[data-line-view=pretty]")
    page.check("[data-line-view=message]")
    assert line.inner_text() == "payment failed"
    page.reload(wait_until="networkidle")
    assert page.locator("ol.loglines[data-testid=loglines] .line").first.inner_text() == "payment failed"
    page.uncheck("[data-line-view=message]")
    # the lines around a hit in its own stream
    hit = page.locator("ol.loglines[data-testid=loglines] > li").nth(1)
    hit.locator("summary").click()
    hit.locator("[data-testid=show-context]").click()
    ctx = hit.locator("[data-testid=log-context]")
    ctx.wait_for()
    assert ctx.locator("li.hit").count() == 1 and ctx.locator("li").count() > 2
    web.shot("logs-context")
    web.assert_clean()


def test_service_map_is_layered_and_lights_on_hover(web: Browser) -> None:
    page = web.goto("/services")
    box = page.locator("[data-testid=service-map]").bounding_box()
    assert box is not None and box["width"] > 1000  # the whole width of the page
    x = {n: page.locator(f"[data-node={n}] circle").evaluate("c => +c.getAttribute('cx')")
         for n in ("frontend", "checkout", "payment")}
    assert x["frontend"] < x["checkout"] < x["payment"]  # callers left of callees
    page.hover("[data-node=checkout] circle")
    assert "focus" in (page.locator("[data-testid=service-map]").get_attribute("class") or "")
    hot = page.locator(".edge.hot").evaluate_all("es => es.map(e => e.dataset.from + '>' + e.dataset.to)")
    assert "frontend>checkout" in hot and "checkout>payment" in hot
    web.shot("service-map-hover")
    page.mouse.move(5, 5)
    assert page.locator(".edge.hot").count() == 0
    web.assert_clean()


def test_create_and_expire_a_silence(web: Browser) -> None:
    page = web.goto("/alerts")
    for _ in range(60):  # the rule fires after its first evaluations; the pipeline groups it
        if page.locator("[data-testid=silence-alert]").count():
            break
        page.wait_for_timeout(250)
        page.reload(wait_until="networkidle")
    # the alert's own page: labels, the rule behind it and its query one click away
    page.locator("a.aname").first.click()
    page.wait_for_selector("[data-testid=alert-facts]")
    assert page.locator("[data-testid=rule-query]").count() == 1
    web.shot("alert-detail")
    page.click("[data-testid=silence-alert]")
    form = page.locator("[data-testid=silence-form]")
    names = form.locator("input[name=name]").evaluate_all("els => els.map(e => e.value)")
    assert "alertname" in names
    # the form previews what the silence would hit, and follows edits
    page.wait_for_selector("[data-testid=silence-hits]")
    assert int(page.locator("[data-testid=silence-hits]").inner_text()) >= 1
    extra = form.locator(".matcher").last
    extra.locator("input[name=name]").fill("alertname")
    extra.locator("input[name=value]").fill("NoSuchAlert")
    page.wait_for_function("document.querySelector('[data-testid=silence-hits]').textContent === '0'")
    extra.locator("input[name=name]").fill("")
    page.wait_for_function("document.querySelector('[data-testid=silence-hits]').textContent !== '0'")
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


def test_arrange_a_dashboards_panels(web: Browser) -> None:
    page = web.goto("/dashboards/checkout")
    page.wait_for_selector("[data-testid=panel] .pw-chart[data-rendered='1']")
    page.click("[data-arrange]")
    traffic = page.locator(".panels[data-row='0'] > [data-testid=panel]")
    assert traffic.nth(0).get_attribute("data-title") == "Requests"
    # Requests one step right, then 6 columns wide; Series taller (by keyboard)
    traffic.nth(0).get_by_role("button", name="Move right: Requests").click()
    assert traffic.nth(1).get_attribute("data-title") == "Requests"
    for _ in range(2):
        page.get_by_role("button", name="Wider: Requests").click()
    series = page.get_by_role("button", name="Taller: Series")
    series.focus()
    page.keyboard.press("Enter")
    assert "6/12" in traffic.nth(1).locator(".arrange-size").inner_text()
    web.shot("dashboard-arrange")
    page.click("[data-testid=save-layout]")
    page.wait_for_url(re.compile(r"/dashboards/checkout\?"))
    page.wait_for_selector("[data-testid=panel]")
    titles = page.locator(".panels[data-row='0'] > [data-testid=panel]").evaluate_all(
        "ps => ps.map(p => [p.dataset.title, p.dataset.width, p.dataset.height])")
    assert titles == [["Series", "4", "9"], ["Requests", "6", ""], ["Load", "4", ""]]
    assert "span 6" in (page.locator("[data-title=Requests]").get_attribute("style") or "")
    web.assert_clean()


def test_config_history_and_rollback(web: Browser, seeded_server: SeededServer) -> None:
    import httpx

    for v in ("pool: 10\ntimeout: 5s\n", "pool: 20\ntimeout: 5s\n"):
        assert httpx.put(f"{seeded_server.url}/v1/kv/shop/checkout/settings", content=v.encode()).status_code == 200
    page = web.goto("/config?prefix=shop/checkout/")
    page.click("[data-testid=key-history]")
    page.wait_for_selector("[data-testid=changes]")
    assert page.locator("li.change").count() == 2
    assert page.locator("li.change").first.locator(".add").inner_text() == "+pool: 20"
    web.shot("config-history")
    page.locator("li.change").nth(1).locator("button[data-testid^=rollback-]").click()
    page.wait_for_selector("[data-testid=rolled-back]")
    assert page.locator("li.change").count() == 3
    got = httpx.get(f"{seeded_server.url}/v1/kv/shop/checkout/settings", params={"raw": ""}).text
    assert got == "pool: 10\ntimeout: 5s\n"
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
