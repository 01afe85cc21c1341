"""Every dashboard the repository ships loads in the UI's format, and its queries parse."""

from __future__ import annotations

import re
from pathlib import Path

import promql_parser
import pytest
import yaml

from pitwall.core.errors import BadData
from pitwall.ui.dashboards import Dashboard, parse_dashboard, substitute
from tests.conftest import REPO

SHIPPED = sorted((REPO / "src" / "pitwall").glob("**/dashboards/*.yaml"))


def _load(path: Path) -> Dashboard:
    return parse_dashboard(path.read_text(), path.name)


def test_the_demo_ships_its_two_dashboards() -> None:
    boards = {p.stem: _load(p) for p in SHIPPED}
    assert {"service-overview", "business-kpis"} <= set(boards)
    overview = boards["service-overview"]
    assert overview.title == "Service overview" and overview.refresh == "10s" and overview.time == "15m"
    types = {p.type for b in boards.values() for r in b.rows for p in r.panels}
    assert types == {"timeseries", "stat", "gauge", "table", "logs", "traces"}
    assert any(p.legend for r in overview.rows for p in r.panels)
    assert any(p.width for r in overview.rows for p in r.panels)


def test_the_demo_alerts_link_to_shipped_dashboards() -> None:
    rules = yaml.safe_load((REPO / "src" / "pitwall" / "demo" / "demo.rules.yaml").read_text())
    linked = {r["annotations"]["dashboard"] for g in rules["groups"] for r in g["rules"]
              if "dashboard" in r.get("annotations", {})}
    assert linked and linked <= {p.stem for p in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_query_parses(path: Path) -> None:
    board = _load(path)
    values = {v.name: "frontend|payment" for v in board.variables}
    for r in board.rows:
        for p in r.panels:
            query = substitute(p.query, values)
            if p.datasource == "prometheus":
                promql_parser.parse(query)  # raises on a syntax error
            elif p.datasource == "loki":
                assert re.search(r"\{service_name=~?\"[^\"]+\"\}", query), p.title
            else:
                keys = {term.split("=", 1)[0] for term in query.split()}
                assert keys <= {"service", "spanName", "minDuration", "maxDuration", "annotationQuery", "limit"}
    for v in board.variables:
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", v.query)
        assert m is not None
        promql_parser.parse(m.group(1))


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("title: t\nrows: [{title: r, panels: [{title: p, type: pie, datasource: prometheus, query: up}]}]",
     "rows.0.panels.0.type"),
    ("title: t\nrows: [{title: r, panels: [{title: p, type: logs, datasource: prometheus, query: up}]}]",
     "a logs panel cannot show prometheus data"),
    ("title: t\nrows: [{title: r, panels: [{title: p, type: stat, datasource: prometheus, query: 'up{a=\"$v\"}'}]}]",
     "undefined variable $v"),
    ("title: t\ncolour: red\nrows: [{title: r, panels: [{title: p, type: stat, datasource: prometheus, query: up}]}]",
     "colour: unknown key"),
    ("title: t\ntime: {from: now-1h, to: now-5m}\nrows: []", "time: must be a duration"),
    ("title: t\nrows: [{panels: [{query: up, width: 13}]}]", "rows.0.panels.0.width"),
    ("title: t\nrows: [{panels: [{query: up, thresholds: [{value: 1, color: 'red;x'}]}]}]", "color"),
    ("- a list", "the top level must be a mapping"),
])
def test_bad_dashboards_name_the_problem(yaml_text: str, message: str) -> None:
    with pytest.raises(BadData) as e:
        parse_dashboard(yaml_text, "bad.yaml")
    assert message in e.value.message
