"""Route tests of the web UI, in process (the ``client`` fixture), with data sent through the ingest APIs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
from tests.ui.seed import DASHBOARD, KNOWN_TRACE, RULES, _otlp_traces, _remote_write, _trace

from pitwall.config import Settings, load_settings

pytestmark = pytest.mark.timeout(60)

PAGES = ["/", "/graph", "/logs", "/traces", "/services", "/alerts", "/dashboards", "/targets",
         "/dashboards/new", "/dashboards/import"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    dash = tmp_path / "dashboards"
    dash.mkdir()
    (dash / "checkout.yaml").write_text(DASHBOARD)
    (dash / "broken.yaml").write_text("title: [unclosed\n")
    rules = tmp_path / "r.yaml"
    rules.write_text(RULES)
    return load_settings(
        data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False}, rule_files=[str(rules)],
        ui={"dashboards_dir": str(dash)},
        scrape_configs=[{"job_name": "dead", "static_configs": [{"targets": ["127.0.0.1:1"]}]}],
    )


async def _write_metrics(client: httpx.AsyncClient, now_ms: int) -> None:
    series = [({"__name__": "req_total", "job": "api", "instance": f"i{k}"},
               [(now_ms - 600_000 + j * 15_000, float(j * (k + 1))) for j in range(41)]) for k in range(3)]
    r = await client.post("/api/v1/write", content=_remote_write(series),
                          headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"})
    assert r.status_code == 204, r.text


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_renders_on_an_empty_server(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert 'aria-current="page"' in r.text
    assert "/ui/static/vendor/uPlot.iife.min.js" in r.text and "cdn" not in r.text.lower()


async def test_vendor_assets_are_served_and_paths_stay_inside(client: httpx.AsyncClient) -> None:
    for name in ("vendor/htmx.min.js", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css", "pitwall.js"):
        r = await client.get(f"/ui/static/{name}")
        assert r.status_code == 200, name
        assert len(r.content) > 1000
    assert (await client.get("/ui/static/vendor/other.js")).status_code == 404
    assert (await client.get("/ui/static/../routes.py")).status_code == 404
    assert (await client.get("/ui/static/%2e%2e/routes.py")).status_code == 404


async def test_time_range_in_links_and_bad_range_shown(client: httpx.AsyncClient) -> None:
    r = await client.get("/targets?from=now-6h&to=now&refresh=30s")
    assert 'href="/graph?from=now-6h&amp;to=now&amp;refresh=30s"' in r.text
    assert 'data-refresh-ms="30000"' in r.text
    r = await client.get("/targets?from=now&to=now-1h")
    assert r.status_code == 200
    assert "the time range is empty" in r.text


async def test_chart_data_has_one_series_per_result(client: httpx.AsyncClient) -> None:
    import time

    now = int(time.time() * 1000)
    await _write_metrics(client, now)
    r = await client.get("/ui/api/chart", params={"expr": "rate(req_total[1m])", "from": "now-15m", "to": "now",
                                                  "points": "100"})
    body = r.json()
    assert r.status_code == 200 and "error" not in body, body
    assert len(body["series"]) == 3
    assert all(len(s["values"]) == len(body["x"]) for s in body["series"])
    assert len(body["x"]) <= 101  # decimated to the requested width
    assert {s["labels"]["instance"] for s in body["series"]} == {"i0", "i1", "i2"}


async def test_promql_errors_carry_their_position(client: httpx.AsyncClient) -> None:
    r = await client.get("/ui/api/chart", params={"expr": "sum(rate(req_total[1m])", "from": "now-15m"})
    err = r.json()["error"]
    assert err["kind"] == "bad_data" and err["status"] == 400
    assert (err["line"], err["col"]) == (1, 24)
    page = await client.get("/graph", params={"expr": "sum(rate(req_total[1m])", "type": "instant"})
    assert 'class="qerror"' in page.text and 'data-line="1"' in page.text and 'data-col="24"' in page.text


async def test_instant_table(client: httpx.AsyncClient) -> None:
    import time

    await _write_metrics(client, int(time.time() * 1000))
    r = await client.get("/graph", params={"expr": "sum by (instance) (req_total)", "type": "instant"})
    assert r.text.count('<td class="mono">{instance=') == 3


async def test_completion(client: httpx.AsyncClient) -> None:
    import time

    await _write_metrics(client, int(time.time() * 1000))
    names = (await client.get("/ui/api/complete", params={"kind": "metric", "prefix": "req"})).json()["items"]
    assert names[0] == "req_total"
    funcs = (await client.get("/ui/api/complete", params={"kind": "metric", "prefix": "histogram_q"})).json()
    assert funcs["items"] == ["histogram_quantile"]
    labels = (await client.get("/ui/api/complete", params={"kind": "label", "metric": "req_total"})).json()
    assert labels["items"] == ["instance", "job"]
    values = (await client.get("/ui/api/complete", params={"kind": "value", "label": "instance",
                                                           "metric": "req_total", "prefix": "i"})).json()
    assert values["items"] == ["i0", "i1", "i2"]


async def test_targets_page_shows_health_and_pool(client: httpx.AsyncClient) -> None:
    r = await client.get("/targets")
    assert "<h2>dead" in r.text
    assert "http://127.0.0.1:1/metrics" in r.text


async def test_trace_view_and_not_found(client: httpx.AsyncClient) -> None:
    import time

    _, _, spans = _trace(0, time.time_ns() - 60 * 10**9)
    r = await client.post("/v1/traces", json=_otlp_traces(spans))
    assert r.status_code == 200, r.text
    page = await client.get(f"/traces/{KNOWN_TRACE}")
    assert page.status_code == 200
    assert page.text.count('class="span-row') == 5
    assert page.text.count("span-row critical") >= 3
    assert "card declined" in page.text  # the failed span's status message
    assert "order.validated" in page.text  # an event
    summary = page.text[page.text.index('class="summary"'):][:700]
    assert re.search(r"\d errors?</span>\s+· started", summary), summary  # issue 22: "6 errors· started"
    service = await client.get("/services/payment")
    assert re.search(r"Logs of payment</a>\s+· <a", service.text)
    missing = await client.get("/traces/" + "ab" * 16)
    assert missing.status_code == 404 and "not found" in missing.text
    search = await client.get("/traces", params={"service": "payment", "status": "error"})
    assert KNOWN_TRACE[16:] in search.text or KNOWN_TRACE in search.text
    bad = await client.get("/traces", params={"min_duration": "soon"})
    assert "min duration: not a duration" in bad.text
    graph = await client.get("/services")
    assert graph.text.count('class="node"') == 4
    assert "checkout → payment" in graph.text


async def test_dashboards_list_view_edit_and_errors(client: httpx.AsyncClient) -> None:
    r = await client.get("/dashboards")
    assert "Checkout health" in r.text
    assert "invalid YAML" in r.text  # broken.yaml is listed with its problem
    view = await client.get("/dashboards/checkout")
    assert view.text.count('data-testid="panel"') == 6
    assert 'hx-get="/ui/panel/checkout/0/0?' in view.text
    bad = await client.post("/dashboards/checkout/edit", data={"yaml": "title: x\nrows: [{panels: [{type: pie, query: up}]}]"})
    assert bad.status_code == 400 and "rows.0.panels.0.type" in bad.text
    good = await client.post("/dashboards/checkout/edit", data={"yaml": "title: Edited\nrows: []\n"})
    assert good.status_code == 303
    assert "Edited" in (await client.get("/dashboards/checkout")).text
    assert "provisioned, edited in UI" in (await client.get("/dashboards")).text
    await client.post("/dashboards/checkout/delete")
    assert "Checkout health" in (await client.get("/dashboards/checkout")).text  # back to the file
    for path in ("/dashboards/nope", "/dashboards/nope/edit"):  # security issue 23: edit answered 500
        missing = await client.get(path)
        assert missing.status_code == 404 and "dashboard &#39;nope&#39; not found" in missing.text, path


async def test_panel_fragment(client: httpx.AsyncClient) -> None:
    import time

    await _write_metrics(client, int(time.time() * 1000))
    (await client.post("/dashboards/_new/edit", data={"yaml": (
        "title: Req\nvariables: [{name: inst, query: 'label_values(req_total, instance)'}]\n"
        "rows: [{panels: [{title: N, type: stat, query: 'count(req_total{instance=\"$inst\"})'},"
        " {title: T, type: timeseries, query: 'rate(req_total[1m])'}]}]\n")}))
    view = await client.get("/dashboards/req")
    assert '<option value="i0" selected>i0</option>' in view.text
    stat = await client.get("/ui/panel/req/0/0", params={"var-inst": "i1"})
    assert re.search(r'data-testid="stat-value">1<', stat.text)
    ts = await client.get("/ui/panel/req/0/1")
    assert 'class="pw-chart" data-src="/ui/api/chart?expr=rate' in ts.text
    missing = await client.get("/ui/panel/req/5/0")
    assert "no such panel" in missing.text


async def test_panel_legend_thresholds_and_widths(client: httpx.AsyncClient) -> None:
    import time

    await _write_metrics(client, int(time.time() * 1000))
    r = await client.post("/dashboards/_new/edit", data={"yaml": (
        "title: Legend\ntime: {from: now-30m, to: now}\n"
        "rows: [{panels: [{title: N, type: stat, query: 'count(req_total)', legend: 'all {{job}}',"
        " thresholds: [{value: 2, color: orange}, {value: 3, color: red}], width: 4},"
        " {title: T, type: timeseries, query: 'rate(req_total[1m])', legend: '{{instance}} of {{job}}'}]}]\n")})
    assert r.status_code == 303, r.text
    view = await client.get("/dashboards/legend")
    assert "grid-column: span 4" in view.text and "grid-column: span 8" in view.text  # the rest of the row
    assert "from=now-30m" in view.text  # the dashboard's default range
    stat = await client.get("/ui/panel/legend/0/0")
    assert re.search(r'data-testid="stat-value" style="color: red">3<', stat.text)  # 3 reaches the red step
    assert ">all <" in stat.text  # count() has no job label: {{job}} is empty
    ts = await client.get("/ui/panel/legend/0/1")
    src = re.search(r'data-src="([^"]+)"', ts.text)
    assert src is not None and "legend=" in src.group(1)
    chart = (await client.get(src.group(1).replace("&amp;", "&"))).json()
    assert sorted(s["name"] for s in chart["series"]) == ["i0 of api", "i1 of api", "i2 of api"]


async def test_grafana_import(client: httpx.AsyncClient) -> None:
    doc = {"title": "From Grafana", "panels": [
        {"type": "row", "title": "R", "panels": []},
        {"type": "timeseries", "title": "Rate", "datasource": {"type": "prometheus"},
         "targets": [{"expr": "rate(up[$__rate_interval])"}]},
        {"type": "piechart", "title": "Pie", "targets": [{"expr": "up"}]},
    ]}
    r = await client.post("/dashboards/import", data={"json": json.dumps(doc)})
    assert r.status_code == 200 and "piechart" in r.text  # the skipped panel is reported
    view = await client.get("/dashboards/from-grafana")
    assert "Rate" in view.text
    bad = await client.post("/dashboards/import", data={"json": "{"})
    assert bad.status_code == 400 and "not a JSON document" in bad.text


async def test_silence_create_and_expire(client: httpx.AsyncClient) -> None:
    page = await client.get("/alerts", params={"m": ["alertname=ServerErrors", "job=api"]})
    assert 'value="alertname"' in page.text and 'value="ServerErrors"' in page.text
    r = await client.post("/alerts/silences", data={"name": ["alertname", ""], "op": ["=", "="],
                                                    "value": ["ServerErrors", ""], "duration": "1h",
                                                    "created_by": "tester", "comment": "c"})
    assert r.status_code == 303
    sid = r.headers["location"].split("created=")[1].split("#")[0]
    page = await client.get("/alerts")
    assert f'data-silence-id="{sid}"' in page.text
    r = await client.post(f"/alerts/silences/{sid}/expire")
    assert r.status_code == 303
    page = await client.get("/alerts", params={"expired": "1"})
    row = page.text.split(f'data-silence-id="{sid}"')[1].split("</tr>")[0]
    assert "st-expired" in row
    again = await client.post(f"/alerts/silences/{sid}/expire")
    assert again.status_code == 400 and "already expired" in again.text
    missing = await client.post("/alerts/silences", data={"name": "", "op": "=", "value": "", "created_by": "x"})
    assert missing.status_code == 400 and "at least one matcher" in missing.text


async def test_ui_can_be_disabled(tmp_path: Path) -> None:
    from pitwall.server import create_app

    s = load_settings(data_dir=tmp_path / "d", listen="127.0.0.1:0", storage={"fsync": False},
                      ui={"enabled": False})
    app = create_app(s)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        assert (await c.get("/graph")).status_code == 404


async def test_alert_filter_detail_and_silence_preview(client: httpx.AsyncClient) -> None:
    alerts = [{"labels": {"alertname": "DiskFull", "severity": "critical", "instance": "db-1"},
               "annotations": {"summary": "disk full", "runbook_url": "https://runbooks.example/disk",
                               "dashboard": "storage"}},
              {"labels": {"alertname": "SlowQueries", "severity": "warning", "instance": "db-2"},
               "annotations": {"summary": "slow"}}]
    assert (await client.post("/api/v2/alerts", json=alerts)).status_code == 200
    page = await client.get("/alerts")
    assert "DiskFull" in page.text and "SlowQueries" in page.text
    only = await client.get("/alerts", params={"filter": '{severity="critical"}'})
    assert "DiskFull" in only.text and "SlowQueries" not in only.text.split('id="new-silence"')[0]
    bad = await client.get("/alerts", params={"filter": '{severity=="x"}'})
    assert bad.status_code == 400 and "filter:" in bad.text
    # the detail page: annotations, runbook and dashboard links
    fp = page.text.split('href="/alerts/alert/')[1].split("?")[0]
    detail = await client.get(f"/alerts/alert/{fp}")
    assert detail.status_code == 200 and "https://runbooks.example/disk" in detail.text
    assert 'href="/dashboards/storage"' in detail.text and 'data-testid="alert-facts"' in detail.text
    assert (await client.get("/alerts/alert/00000000000000ff")).status_code == 404
    # the silence form's preview counts what a silence would hit
    hit = await client.get("/ui/fragment/silence-preview", params={"name": "instance", "op": "=~", "value": "db-.*"})
    assert 'data-testid="silence-hits">2<' in hit.text
    none = await client.get("/ui/fragment/silence-preview", params={"name": "instance", "op": "=", "value": "x"})
    assert 'data-testid="silence-hits">0<' in none.text
    wrong = await client.get("/ui/fragment/silence-preview", params={"name": "instance", "op": "=~", "value": "("})
    assert "invalid matcher" in wrong.text
    # a silenced alert is hidden until "Silenced" is ticked, as in Alertmanager's UI
    r = await client.post("/alerts/silences", data={"name": ["alertname"], "op": ["="], "value": ["SlowQueries"],
                                                    "duration": "1h", "created_by": "t", "comment": "c"})
    assert r.status_code == 303
    groups = (await client.get("/alerts")).text.split('id="new-silence"')[0]
    assert "SlowQueries" not in groups and "DiskFull" in groups
    shown = (await client.get("/alerts", params={"silenced": "1"})).text.split('id="new-silence"')[0]
    assert "SlowQueries" in shown


async def test_trace_compare_needs_two_known_traces(client: httpx.AsyncClient) -> None:
    none = await client.get("/traces/compare")
    assert none.status_code == 400 and "pick two traces" in none.text
    missing = await client.get("/traces/compare", params={"a": "00000000000000000000000000000002",
                                                           "b": "00000000000000000000000000000001"})
    assert missing.status_code == 404 and "not found" in missing.text


async def test_config_pages_history_diff_rollback_and_envs(client: httpx.AsyncClient) -> None:
    for value in (b"timeout: 5s\nretries: 2\n", b"timeout: 9s\nretries: 2\n"):
        assert (await client.put("/v1/kv/app/web/settings", content=value)).status_code == 200
    await client.put("/v1/kv/config/staging/web/timeout", content=b"5s")
    await client.put("/v1/kv/config/production/web/timeout", content=b"9s")
    await client.put("/v1/kv/config/production/web/pool", content=b"20")
    top = await client.get("/config")
    assert top.status_code == 200 and "app/" in top.text and "config/" in top.text
    folder = await client.get("/config", params={"prefix": "app/web/"})
    assert "settings" in folder.text and 'data-testid="key-history"' in folder.text
    page = await client.get("/config/history", params={"key": "app/web/settings"})
    assert page.status_code == 200 and page.text.count('class="change ') == 2
    assert '<span class="del">-timeout: 5s</span>' in page.text and '<span class="add">+timeout: 9s</span>' in page.text
    first = int(page.text.split('data-testid="rollback-')[1].split('"')[0])
    r = await client.post("/config/rollback", data={"key": "app/web/settings", "source": "consul", "to": str(first)})
    assert r.status_code == 303 and "done=" in r.headers["location"]
    assert (await client.get("/v1/kv/app/web/settings", params={"raw": ""})).content == b"timeout: 5s\nretries: 2\n"
    again = await client.get("/config/history", params={"key": "app/web/settings", "done": str(first)})
    assert again.text.count('class="change ') == 3 and 'data-testid="rolled-back"' in again.text
    bad = await client.post("/config/rollback", data={"key": "app/web/settings", "to": "x"})
    assert bad.status_code == 400 and "positive integer" in bad.text
    none = await client.post("/config/rollback", data={"key": "app/web/nothing", "to": "1"})
    assert none.status_code == 404 and "no recorded change" in none.text
    envs = await client.get("/config/envs", params={"a": "staging", "b": "production", "service": "web"})
    assert envs.status_code == 200 and ">web/pool<" in envs.text  # only in production, relative to the env
    assert ">web/timeout<" in envs.text and ">5s<" in envs.text and ">9s<" in envs.text
    wrong = await client.get("/config/envs", params={"a": "a/b", "b": "c"})
    assert wrong.status_code == 400
