"""The dashboard format and the demo's two dashboards."""

from __future__ import annotations

import re
from pathlib import Path

import promql_parser
import pytest

from pitwall.core.errors import ConfigError
from pitwall.demo.dashboards import Dashboard, load_dashboard, shipped_dashboards, substitute


def test_shipped_dashboards_load() -> None:
    boards = {b.uid: b for b in shipped_dashboards()}
    assert set(boards) == {"service-overview", "business-kpis"}
    overview = boards["service-overview"]
    assert overview.title == "Service overview" and overview.refresh == "10s"
    assert overview.time.from_ == "now-15m"
    types = {p.type for b in boards.values() for r in b.rows for p in r.panels}
    assert types == {"timeseries", "stat", "gauge", "table", "logs", "traces"}


def _panels(board: Dashboard) -> list[tuple[str, str, str]]:
    values = {v.name: "frontend|payment" for v in board.variables}
    return [(p.title, p.datasource, substitute(p.query, values)) for r in board.rows for p in r.panels]


@pytest.mark.parametrize("board", shipped_dashboards(), ids=lambda b: b.uid)
def test_every_prometheus_query_parses(board: Dashboard) -> None:
    for title, ds, query in _panels(board):
        if ds == "prometheus":
            promql_parser.parse(query), title  # raises on a syntax error
    for v in board.variables:
        assert v.query is not None
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", v.query)
        assert m is not None and m.group(2) == v.label
        promql_parser.parse(m.group(1))


@pytest.mark.parametrize("board", shipped_dashboards(), ids=lambda b: b.uid)
def test_log_and_trace_queries_look_right(board: Dashboard) -> None:
    for title, ds, query in _panels(board):
        if ds == "loki":
            assert re.search(r"\{service_name=~?\"[^\"]+\"\}", query), title
        if ds == "traces":
            keys = {term.split("=", 1)[0] for term in query.split()}
            assert keys <= {"service", "spanName", "minDuration", "maxDuration", "annotationQuery", "limit"}, title


def test_substitute_handles_both_spellings() -> None:
    assert substitute('{a=~"$x", b="${x}y", c="$unknown"}', {"x": "1|2"}) == '{a=~"1|2", b="1|2y", c="$unknown"}'


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("title: t\nrows: [{title: r, panels: [{title: p, type: pie, datasource: prometheus, query: up}]}]",
     "rows.0.panels.0.type"),
    ("title: t\nrows: [{title: r, panels: [{title: p, type: logs, datasource: prometheus, query: up}]}]",
     "a logs panel cannot show prometheus data"),
    ("title: t\nrows: [{title: r, panels: [{title: p, type: stat, datasource: prometheus, query: 'up{a=\"$v\"}'}]}]",
     "undefined variable $v"),
    ("title: t\ncolour: red\nrows: [{title: r, panels: [{title: p, type: stat, datasource: prometheus, query: up}]}]",
     "colour: unknown key"),
    ("title: t\nrows: []", "rows: List should have at least 1 item"),
    ("- a list", "top level must be a mapping"),
])
def test_bad_dashboards_name_the_problem(tmp_path: Path, yaml_text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_dashboard(path)
    assert message in e.value.message


def test_uid_defaults_to_file_name(tmp_path: Path) -> None:
    path = tmp_path / "my-board.yaml"
    path.write_text("title: t\nrows: [{title: r, panels: [{title: p, type: stat, datasource: prometheus, query: up}]}]")
    assert load_dashboard(path).uid == "my-board"
