"""Unit tests of the UI's pure parts: time ranges, steps, waterfall layout, log parsing, dashboards."""

from __future__ import annotations

import dataclasses

import pytest

from pitwall.core.errors import BadData
from pitwall.traces.model import SpanRow, summarize
from pitwall.ui.dashboards import Variable, parse_dashboard, substitute, variable_query
from pitwall.ui.grafana import from_grafana
from pitwall.ui.logs_view import level_name, parse_fields, severity_of, to_line
from pitwall.ui.pages_alerts import parse_matcher
from pitwall.ui.pages_dashboards import trace_params
from pitwall.ui.queries import sparkline_path
from pitwall.ui.timerange import TimeRange, parse_time, pick_step_ms
from pitwall.ui.traces_view import critical_path, waterfall

pytestmark = pytest.mark.timeout(30)

NOW = 1_700_000_000_000


def test_parse_time_forms() -> None:
    assert parse_time("now", NOW) == NOW
    assert parse_time("now-1h", NOW) == NOW - 3_600_000
    assert parse_time("now+5m", NOW) == NOW + 300_000
    assert parse_time("1700000000", NOW) == NOW
    assert parse_time("1700000000000", NOW) == NOW
    assert parse_time("2023-11-14T22:13:20Z", NOW) == NOW
    for bad in ("now-xyz", "yesterday", "nan"):
        with pytest.raises(BadData):
            parse_time(bad, NOW)


def test_time_range() -> None:
    tr = TimeRange.parse(None, None, None, "1h", now_ms=NOW)
    assert (tr.start_ms, tr.end_ms, tr.relative, tr.label) == (NOW - 3_600_000, NOW, True, "Last 1h")
    assert tr.qs(expr="up") == "from=now-1h&to=now&expr=up"
    tr = TimeRange.parse("1699990000", "1700000000", "30s", now_ms=NOW)
    assert not tr.relative and tr.refresh_ms == 30_000 and "→" in tr.label
    with pytest.raises(BadData, match="empty"):
        TimeRange.parse("now", "now-1h", None, now_ms=NOW)
    with pytest.raises(BadData, match="refresh"):
        TimeRange.parse(None, None, "7s", now_ms=NOW)
    with pytest.raises(BadData, match="90 days"):
        TimeRange.parse("now-100d", None, None, now_ms=NOW)


def test_step_decimates_to_width() -> None:
    assert pick_step_ms(3_600_000, 600) == 10_000
    assert pick_step_ms(3_600_000, 100) == 60_000
    assert pick_step_ms(60_000, 4000) == 1000  # never below 1 s
    for span, pts in ((86_400_000, 700), (7 * 86_400_000, 300), (90 * 86_400_000, 10)):
        assert span / pick_step_ms(span, pts) <= pts


def _span(sid: str, parent: str, start: int, dur: int, status: int = 0) -> SpanRow:
    return SpanRow("t" * 32, sid, parent, "svc", sid, 2, start, dur, status, "", "", 0, {}, {}, {}, [], [])


def test_critical_path_follows_the_last_finishing_children() -> None:
    spans = [
        _span("root", "", 0, 100),
        _span("a", "root", 5, 30),    # overlaps b, ends first: not critical
        _span("b", "root", 10, 60),   # ends at 70: critical
        _span("c", "root", 75, 20),   # ends at 95, last: critical
        _span("b1", "b", 12, 50),     # b's only child: critical
    ]
    assert critical_path(spans) == {"root", "c", "b", "b1"}


def test_waterfall_rows_depth_first_with_offsets() -> None:
    spans = [_span("root", "", 0, 100), _span("x", "root", 50, 50, status=2), _span("y", "x", 60, 10),
             _span("orphan", "gone", 20, 10)]
    wf = waterfall(spans)
    assert [r.span.span_id for r in wf.rows] == ["root", "x", "y", "orphan"]  # roots by start, depth first
    x = wf.rows[1]
    assert (x.depth, x.offset_pct, x.width_pct, x.error, x.has_children) == (1, 50.0, 50.0, True, True)
    assert wf.rows[2].parent_index == 1 and wf.rows[3].depth == 0 and wf.error_count == 1
    assert wf.incomplete and wf.orphans == 1 and wf.has_root  # "orphan" names a parent that never arrived


def test_incomplete_traces_and_service_colours() -> None:
    whole = [_span("root", "", 0, 100), _span("x", "root", 50, 50)]
    assert not waterfall(whole).incomplete and not summarize(whole).incomplete
    headless = [_span("x", "root", 50, 50), _span("y", "x", 60, 10)]  # the root span has not arrived
    wf, summary = waterfall(headless), summarize(headless)
    assert wf.incomplete and not wf.has_root and wf.orphans == 1
    assert summary.incomplete and not summary.has_root and summary.orphans == 1
    spans = [dataclasses.replace(_span(str(i), "", i, 1), service=f"svc{i:02d}") for i in range(14)]
    wf = waterfall(spans)
    assert [wf.colour(f"svc{i:02d}") for i in range(14)] == [*range(12), 0, 1]  # the palette wraps


def test_log_fields_and_severity() -> None:
    assert parse_fields('{"msg": "hi", "http": {"status": 500}}') == [("msg", "hi"), ("http.status", "500")]
    assert parse_fields('level=warn msg="disk \\"sda\\" full" pct=97') == [
        ("level", "warn"), ("msg", 'disk "sda" full'), ("pct", "97")]
    assert parse_fields("just a line") == []
    assert severity_of({"level": "ERR"}, [], "") == "error"
    assert severity_of({}, [("severity", "warning")], "") == "warn"
    assert severity_of({}, [], "2024 FATAL: boom") == "critical"
    assert severity_of({}, [], "nothing") == "unknown"
    line = to_line("1700000000123000000", "level=info msg=ok", {"app": "x"}, {"trace_id": "AB" * 16})
    assert line.trace_id == "ab" * 16 and line.level == "info" and line.time.endswith(".123")
    assert to_line(1, "trace_id=nothex msg=x", {}).trace_id == ""


def test_volume_series_and_lines_name_levels_alike() -> None:
    """One table: a volume series' level is the one a line with that level value gets; other values stay."""
    for raw in ("WARNING", "err", "eror", "fatal", "crit", "dbug", "wrn", "inf", "trc", "notice", "panic"):
        assert level_name({"detected_level": raw}) == severity_of({"level": raw}, [], ""), raw
    assert level_name({"level": "Eror", "detected_level": "info"}) == "error"
    assert level_name({"detected_level": "verbose"}) == "verbose"
    assert level_name({}) == "unknown"


def test_dashboard_parsing_and_variables() -> None:
    d = parse_dashboard("title: T\nvariables: [{name: svc, query: 'label_values(up, job)'}]\n"
                        "rows: [{panels: [{type: logs, datasource: loki, query: '{a=\"$svc\"}'}]}]")
    assert variable_query(d.variables[0]) == ("up", "job")
    assert variable_query(Variable(name="x", query="label_values(job)")) == ("", "job")
    with pytest.raises(BadData, match="label_values"):
        variable_query(Variable(name="x", query="up"))
    assert substitute('{a="$svc", b="${svc}x", c="$other"}', {"svc": "api"}) == '{a="api", b="apix", c="$other"}'
    with pytest.raises(BadData, match="unknown key"):
        parse_dashboard("title: T\ncolour: red\n")
    with pytest.raises(BadData, match="top level"):
        parse_dashboard("- a\n")


def test_grafana_import_types_rows_and_variables() -> None:
    doc = ('{"dashboard": {"title": "G", "time": {"from": "now-6h"}, "panels": ['
           '{"type": "graph", "title": "A", "targets": [{"expr": "up"}]},'
           '{"type": "row", "title": "Logs", "panels": [{"type": "logs", "title": "L", '
           '"datasource": {"type": "loki"}, "targets": [{"expr": "{a=\\"b\\"}"}]}]},'
           '{"type": "stat", "title": "no query", "targets": []}],'
           '"templating": {"list": [{"type": "query", "name": "job", "query": "label_values(up, job)"},'
           '{"type": "custom", "name": "c"}, {"type": "query", "name": "q", "query": "query_result(up)"}]}}}')
    imp = from_grafana(doc)
    d, skipped = imp.dashboard, imp.warnings
    assert d.time == "6h" and [r.title for r in d.rows] == ["", "Logs"]
    assert d.rows[0].panels[0].type == "timeseries"
    assert (d.rows[1].panels[0].type, d.rows[1].panels[0].datasource) == ("logs", "loki")
    assert [(v.name, v.type) for v in d.variables] == [("job", "query"), ("c", "custom")]
    assert any("no query" in s for s in skipped) and any("'q'" in s for s in skipped)
    assert d.notes == skipped  # nothing here is a note of a kept panel: all shown on top of the dashboard


def test_trace_panel_query() -> None:
    p = trace_params('service=api status=error min_duration=100ms "http.route=/a b" retries>2')
    assert p.getlist("attr") == ["http.route=/a b", "retries>2"]
    assert (p["service"], p["status"], p["min_duration"]) == ("api", "error", "100ms")
    with pytest.raises(BadData):
        trace_params("justaword")


def test_matcher_text_and_sparkline() -> None:
    assert parse_matcher('job=~"api|web"') == ("job", "=~", "api|web")
    assert parse_matcher("env!=prod") == ("env", "!=", "prod")
    assert sparkline_path([]) == ""
    assert sparkline_path([None, 1.0, None]) == "M60.0 12.0 h-2"
    assert sparkline_path([0.0, 1.0, None, 1.0]).count("M") == 2


def test_service_map_layers_callers_left_of_callees() -> None:
    from pitwall.ui.pages_signals import layout_graph

    edges = [("frontend", "checkout"), ("checkout", "payment"), ("checkout", "inventory"), ("frontend", "search"),
             ("payment", "checkout")]  # a cycle: the back edge is ignored for the columns
    names = ["frontend", "checkout", "payment", "inventory", "search", "lonely"]
    pos, height = layout_graph(names, edges)
    x = {n: p[0] for n, p in pos.items()}
    assert x["frontend"] < x["checkout"] < x["payment"] == x["inventory"]
    assert x["search"] == x["checkout"] and x["lonely"] == x["frontend"]
    # services of one column never share a spot, and the drawing is tall enough for the fullest column
    spots = {(round(p[0]), round(p[1])) for p in pos.values()}
    assert len(spots) == len(names) and all(0 < p[1] < height for p in pos.values())
    assert layout_graph(["solo"], [])[0]["solo"][0] == 600  # one service: centred


def test_compare_two_traces_by_call_path() -> None:
    from pitwall.ui.traces_view import compare

    def sp(sid: str, parent: str, name: str, dur: int) -> SpanRow:
        return dataclasses.replace(_span(sid, parent, 0, dur), name=name)

    a = [sp("r", "", "GET /", 100), sp("x", "r", "db", 10), sp("y", "r", "db", 20), sp("z", "r", "cache", 5)]
    b = [sp("r", "", "GET /", 90), sp("x", "r", "db", 30), sp("q", "r", "queue", 7), sp("o", "gone", "late", 1)]
    rows = {r.path: r for r in compare(a, b)}
    root = ("svc · GET /",)
    assert (rows[root].a_count, rows[root].b_count, rows[root].change) == (1, 1, "same")
    db = (*root, "svc · db")
    assert (rows[db].a_count, rows[db].b_count, rows[db].a_ns, rows[db].b_ns, rows[db].change) == (2, 1, 30, 30, "fewer")
    assert rows[(*root, "svc · cache")].change == "removed" and rows[(*root, "svc · queue")].change == "added"
    assert rows[("svc · late",)].change == "added" and rows[("svc · late",)].depth == 0  # its parent never came
    paths = [r.path for r in compare(a, b)]
    assert paths.index(root) < paths.index(db)  # tree order: a parent before its children


def test_relayout_moves_and_sizes_panels_within_rows() -> None:
    from pitwall.core.errors import BadData
    from pitwall.ui.dashboards import parse_dashboard, relayout, to_yaml

    d = parse_dashboard("title: T\nrows:\n  - panels:\n"
                        "      - {title: A, type: stat, query: up}\n"
                        "      - {title: B, type: timeseries, query: up, width: 6}\n"
                        "  - panels:\n      - {title: C, type: stat, query: up}\n")
    out = relayout(d, [[{"panel": 1, "width": 8, "height": 10}, {"panel": 0, "width": 4, "height": None}],
                       [{"panel": 0, "width": 12, "height": None}]])
    assert [(p.title, p.width, p.height) for p in out.rows[0].panels] == [("B", 8, 10), ("A", 4, None)]
    assert parse_dashboard(to_yaml(out)).rows[0].panels[0].title == "B"  # what is saved reads back the same
    for bad, why in [([[{"panel": 0}]], "one list per row"),
                     ([[{"panel": 0}, {"panel": 0}], [{"panel": 0}]], "each of its 2 panels once"),
                     ([[{"panel": "x"}, {"panel": 1}], [{"panel": 0}]], "integer 'panel'"),
                     ([[{"panel": 0, "width": 13}, {"panel": 1}], [{"panel": 0}]], "layout:")]:
        with pytest.raises(BadData, match=why):
            relayout(d, bad)


def test_scatter_spreads_a_capped_search_over_the_whole_range() -> None:
    from typing import Any, cast

    from pitwall.traces import SpanFilter, TraceSummary
    from pitwall.ui.traces_view import TracesView

    minute = 60 * 10**9
    traces = [TraceSummary(f"{i:032x}", "svc", "GET", i * minute, 1000, 1, 0, ["svc"]) for i in range(60)]

    class NewestFirst:
        def search(self, tenant: str, f: SpanFilter, limit: int) -> list[TraceSummary]:
            hits = [t for t in traces if f.start_ns <= t.start_ns <= f.end_ns]
            return sorted(hits, key=lambda t: -t.start_ns)[:limit]

    view = TracesView(cast(Any, NewestFirst()))
    whole = SpanFilter(0, 60 * minute - 1)
    few, sampled = view.scatter("t", whole, cap=100)
    assert len(few) == 60 and not sampled  # under the cap: every match
    spread, sampled = view.scatter("t", whole, cap=20, slices=10)
    starts = sorted(t.summary.start_ns // minute for t in spread)
    assert sampled and len(starts) == 20
    assert {s // 6 for s in starts} == set(range(10))  # two from each tenth of the hour, the first included
