"""Grafana dashboard JSON import: the converter, variable substitution, the import API and folder provisioning."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.ui.seed import DASHBOARD, _remote_write

from pitwall.config import Settings, load_settings
from pitwall.core.errors import BadData
from pitwall.ui.dashboards import Variable, VarValue, builtin_values, parse_dashboard, substitute, to_yaml
from pitwall.ui.grafana import from_grafana, is_grafana

pytestmark = pytest.mark.timeout(120)

FIXTURES = Path(__file__).parent / "grafana"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return data


def test_modern_dashboard_panels_layout_and_field_config() -> None:
    imp = from_grafana(json.dumps(_load("service-modern.json")))
    d = imp.dashboard
    assert d.title == "Service (Grafana 10)" and d.time == "15m"
    assert [r.title for r in d.rows] == ["", "Details"]
    top = d.rows[0].panels
    assert [(p.title, p.type, p.width) for p in top] == [
        ("Requests by code", "timeseries", 8), ("Error ratio", "stat", 4), ("Saturation", "gauge", 6),
        ("By instance", "bargauge", 6)]
    ts = top[0]
    assert ts.unit == "reqps" and ts.stacked and ts.decimals == 1
    assert (ts.height, ts.chart_height()) == (8, 180) and top[2].height == 6
    # two visible targets drawn together, the hidden one noted; legendFormat kept per query
    assert [q.query for q in ts.all_queries()] == [
        'sum by (code) (rate(http_requests_total{instance=~"$instance"}[$__rate_interval]))',
        'sum(rate(http_requests_total{instance=~"$instance"}[$__rate_interval]))']
    assert [q.legend for q in ts.all_queries()] == ["{{code}}", "total"]
    assert any("query C is hidden" in n for n in ts.notes)
    stat = top[1]
    assert stat.unit == "percentunit" and (stat.min, stat.max) == (0.0, 1.0)
    assert [(t.value, t.color) for t in stat.thresholds] == [(-math.inf, "#73bf69"), (0.01, "#ff9830"),
                                                            (0.05, "#f2495c")]
    assert stat.color_of(0.02) == "#ff9830" and stat.color_of(0.0) == "#73bf69"
    assert any("value mappings" in n for n in stat.notes)
    details = d.rows[1]
    assert details.collapsed  # the collapsed row's children come with it
    assert [(p.title, p.type, p.datasource) for p in details.panels] == [
        ("Top series", "table", "prometheus"), ("Checkout logs", "logs", "loki"),
        ("Slow traces", "traces", "traces")]
    assert details.panels[2].query == "service=frontend min_duration=10ms"
    # the pie chart is not drawable: a note on the dashboard and a warning, never silently gone
    assert any("'Share'" in w and "piechart" in w for w in imp.warnings)
    assert any("'Share'" in n for n in d.notes)
    assert not any("Requests by code" in n for n in d.notes)  # panel notes stay on their panel


def test_variables_of_every_kind() -> None:
    d = from_grafana(_load("service-modern.json")).dashboard
    by = {v.name: v for v in d.variables}
    assert set(by) == {"ds", "instance", "code", "window", "env", "search"}
    inst = by["instance"]
    assert (inst.type, inst.multi, inst.include_all, inst.all_value, inst.default) == (
        "query", True, True, ".*", "$__all")
    assert by["code"].options() == ["200", "500", "503"]
    assert by["window"].options() == ["1m", "5m", "10m"]
    assert (by["env"].type, by["env"].options()) == ("constant", ["prod"])
    assert (by["search"].type, by["search"].default) == ("textbox", "GET")
    assert by["ds"].hide  # a datasource variable: pitwall is the data source


def test_variable_regex_filters_and_extracts() -> None:
    v = Variable(name="x", query="label_values(up, instance)", regex="/([a-c]):9100/")
    assert v.filtered(["a:9100", "b:9100", "z:9100", "a:9100"]) == ["a", "b"]
    assert Variable(name="x", regex="/^API/i").filtered(["api-1", "web"]) == ["api-1"]
    assert Variable(name="x", regex="(?P<value>\\d+)-.*").filtered(["12-a", "x"]) == ["12"]
    with pytest.raises(BadData, match="invalid regex"):
        Variable(name="x", regex="(a").filtered(["a"])


def test_legacy_schema_rows_graph_and_singlestat() -> None:
    imp = from_grafana(_load("legacy-v14.json"))
    d = imp.dashboard
    assert d.time == "1h"
    assert [r.title for r in d.rows] == ["Traffic", "Details"]
    graph, single, gauge = d.rows[0].panels
    assert (graph.type, graph.width, graph.unit, graph.min, graph.stacked) == ("timeseries", 8, "reqps", 0.0, True)
    assert graph.legend == "{{instance}}" and graph.datasource == "prometheus"
    assert (single.type, single.width, single.unit, single.decimals) == ("stat", 4, "", 0)
    assert [(t.value, t.color) for t in single.thresholds] == [
        (-math.inf, "#299c46"), (3.0, "rgba(237, 129, 40, 0.89)"), (10.0, "#d44a3a")]
    assert (gauge.type, gauge.unit, gauge.max, gauge.width) == ("gauge", "percent", 100.0, 12)  # singlestat gauge
    assert any("'avg'" in n for n in gauge.notes)  # valueName avg: pitwall shows the last value
    assert not gauge.thresholds  # neither colorValue nor colorBackground: Grafana shows no colours
    assert d.rows[1].panels[0].type == "table"
    assert [v.name for v in d.variables] == ["instance"]
    # [[instance]] (the old syntax) is kept and substituted like $instance
    assert "[[instance]]" in graph.query


def test_imported_dashboard_round_trips_through_yaml() -> None:
    for name in ("service-modern.json", "legacy-v14.json"):
        d = from_grafana(_load(name)).dashboard
        again = parse_dashboard(to_yaml(d))
        assert again == d, name


def test_substitution_formats_as_grafana() -> None:
    multi = VarValue(("a.b", "c"), multi=True)
    values = {"x": multi, "one": VarValue(("v1",)), "all": VarValue(("p", "q"), True, ".*")}
    assert substitute('m{i=~"$x"}', values) == 'm{i=~"(a\\\\.b|c)"}'
    assert substitute('m{i=~"${x:regex}"}', values) == 'm{i=~"(a\\\\.b|c)"}'
    assert substitute("${x:csv} ${x:pipe} ${x:raw}", values) == "a.b,c a.b|c a.b,c"
    assert substitute('m{i="$one", j="${one}", k="[[one]]"}', values) == 'm{i="v1", j="v1", k="v1"}'
    assert substitute('m{i=~"$all"}', values) == 'm{i=~".*"}'  # All with allValue
    assert substitute("$unknown", values) == "$unknown"
    # a multi variable with one value chosen: escaped, without parentheses (Grafana's Prometheus source)
    assert substitute("$x", {"x": VarValue(("a.b",), True)}) == "a\\\\.b"


def test_builtin_interval_variables() -> None:
    b = builtin_values(6 * 3600_000, points=600)
    assert b["__interval"].values == ("36s",)
    assert b["__rate_interval"].values == ("60s",)  # max(36s + 15s, 4 x 15s)
    assert b["__range"].values == ("21600s",)
    assert substitute("rate(x[$__rate_interval]) / $__range_s", b) == "rate(x[60s]) / 21600"


def test_bad_documents_are_refused_clearly() -> None:
    for text, msg in (("{", "not a JSON document"), ("[1]", "not a Grafana dashboard"),
                      ('{"title": "x", "panels": 3}', "not a Grafana dashboard")):
        with pytest.raises(BadData, match=msg):
            from_grafana(text)
    assert is_grafana({"dashboard": {"panels": []}}) and not is_grafana({"title": "t", "rows": []})
    many = {"title": "m", "panels": [], "templating": {"list": [
        {"type": "constant", "name": f"v{i}", "query": "x"} for i in range(101)]}}
    with pytest.raises(BadData, match="at most 100"):
        from_grafana(many)


def test_undefined_variable_becomes_a_text_box() -> None:
    doc = {"title": "U", "panels": [{"type": "stat", "title": "S", "targets": [{"expr": 'up{job="$job"}'}]}],
           "templating": {"list": [{"type": "adhoc", "name": "filters"},
                                   {"type": "query", "name": "app", "datasource": {"type": "loki"},
                                    "query": "label_values(app)"},
                                   {"type": "query", "name": "job", "query": "query_result(up)"}]}}
    imp = from_grafana(doc)
    assert [(v.name, v.type) for v in imp.dashboard.variables] == [("job", "textbox")]
    assert any("adhoc" in w for w in imp.warnings) and any("query_result" in w for w in imp.warnings)
    assert any("'app'" in w and "loki" in w for w in imp.warnings)


# ---------------------------------------------------------------- through the HTTP API


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    dash = tmp_path / "dashboards"
    dash.mkdir()
    (dash / "checkout.yaml").write_text(DASHBOARD)
    config = tmp_path / "pitwall.yaml"  # a file, so that /-/reload reads the same settings again
    config.write_text(f"storage: {{fsync: false}}\nui: {{dashboards_dir: '{dash}'}}\n")
    return load_settings(config, data_dir=tmp_path / "data", listen="127.0.0.1:0")


async def _write(client: httpx.AsyncClient) -> None:
    now = int(time.time() * 1000)
    series = [({"__name__": "http_requests_total", "job": "api", "instance": f"i{k}", "code": "200"},
               [(now - 600_000 + j * 15_000, float(j * (k + 1))) for j in range(41)]) for k in range(3)]
    r = await client.post("/api/v1/write", content=_remote_write(series),
                          headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"})
    assert r.status_code == 204, r.text


async def test_import_api_then_panels_run_with_variables(client: httpx.AsyncClient) -> None:
    await _write(client)
    r = await client.post("/api/ui/v1/dashboards/import", content=json.dumps({"dashboard": _load("service-modern.json")}))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["uid"] == "service-grafana-10" and body["panels"] == 7
    assert any("piechart" in w for w in body["warnings"])
    listed = (await client.get("/api/ui/v1/dashboards")).json()["data"]
    assert {"uid": "service-grafana-10", "source": "saved"}.items() <= next(
        e for e in listed if e["uid"] == "service-grafana-10").items()
    view = await client.get("/dashboards/service-grafana-10")
    assert 'data-testid="dashboard-notes"' in view.text and 'data-testid="panel-notes"' in view.text
    assert '<option value="$__all" selected>All</option>' in view.text
    # All with allValue ".*": the stat panel's query matches every instance
    ts = await client.get("/ui/panel/service-grafana-10/0/0", params=[("var-instance", "$__all")])
    src = ts.text.split('data-src="')[1].split('"')[0].replace("&amp;", "&")
    chart = (await client.get(src)).json()
    names = sorted(s["name"] for s in chart["series"])
    assert names == ["200", "total"]  # both queries in one chart, named by their legends
    # two instances chosen: a regex alternation
    one = await client.get("/ui/panel/service-grafana-10/0/3", params=[("var-instance", "i0"), ("var-instance", "i2")])
    assert one.text.count('data-testid="bargauge-value"') == 2


async def test_import_api_errors_are_json_and_store_nothing(client: httpx.AsyncClient) -> None:
    before = (await client.get("/api/ui/v1/dashboards")).json()["data"]
    r = await client.post("/api/ui/v1/dashboards/import", content="{not json")
    assert r.status_code == 400 and r.json()["errorType"] == "bad_data" and "JSON" in r.json()["error"]
    r = await client.post("/api/ui/v1/dashboards/import", content=json.dumps({"title": "x", "panels": 1}))
    assert r.status_code == 400
    assert (await client.get("/api/ui/v1/dashboards")).json()["data"] == before


async def test_json_files_are_provisioned_and_reloaded(client: httpx.AsyncClient, settings: Settings) -> None:
    folder = settings.ui.dashboards_dir
    assert folder is not None
    (folder / "legacy.json").write_text((FIXTURES / "legacy-v14.json").read_text())
    (folder / "notes.json").write_text('{"not": "a dashboard"}')
    listed = {e["uid"]: e for e in (await client.get("/api/ui/v1/dashboards")).json()["data"]}
    assert listed["legacy"]["title"] == "Legacy (Grafana 4)" and listed["legacy"]["source"] == "file"
    assert listed["legacy"]["panels"] == 4
    assert listed["notes"]["problems"]  # a JSON that is neither format is listed with why
    # an edit on disk shows at the next listing
    doc = _load("legacy-v14.json")
    doc["title"] = "Legacy, renamed"
    (folder / "legacy.json").write_text(json.dumps(doc))
    st = (folder / "legacy.json").stat()
    os.utime(folder / "legacy.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    listed = {e["uid"]: e for e in (await client.get("/api/ui/v1/dashboards")).json()["data"]}
    assert listed["legacy"]["title"] == "Legacy, renamed"
    # /-/reload provisions afresh
    (folder / "legacy.json").unlink()
    assert (await client.post("/-/reload")).status_code == 200
    listed = {e["uid"]: e for e in (await client.get("/api/ui/v1/dashboards")).json()["data"]}
    assert "legacy" not in listed and "checkout" in listed
