"""YAML dashboards: provisioned from a folder, edited in the UI and saved to the state store.

The format (the demo's dashboards in ``pitwall/demo/dashboards/`` use it too)::

    title: Checkout
    refresh: 30s            # optional
    time: 1h                # optional default range; Grafana's {from: now-1h, to: now} works too
    variables:
      - {name: service, label: Service, query: label_values(traces_span_metrics_calls_total, service_name)}
    rows:
      - title: Traffic
        panels:
          - {title: Requests, type: timeseries, datasource: prometheus, query: 'sum(rate(x{s="$service"}[5m]))', unit: req/s,
             legend: '{{route}}', width: 8}
          - {title: Errors, type: stat, query: 'sum(increase(errors_total[5m]))',
             thresholds: [{value: 1, color: orange}, {value: 20, color: red}], width: 4}

Panel fields beyond the query: ``legend`` names each series as Grafana's
``legendFormat`` does (``{{label}}`` replaced by the series' label value);
``thresholds`` colour a stat or gauge value with the colour of the highest
threshold it reaches; ``limit`` caps the lines of a logs panel or the traces
of a traces panel; ``width`` (1-12 of the row's twelve columns) sizes panels
as Grafana's grid does (panels without one share what is left).

Panel types: timeseries, stat, gauge, table, logs, traces; datasources:
prometheus (PromQL), loki (LogQL), traces (a trace search such as
``service=$service status=error min_duration=100ms http.route=/cart``).

Edits go to a ``ui_dashboards`` table created on the control-plane state
store's SQLAlchemy engine (``storage/state.py``); an edited provisioned
dashboard shadows its file until it is deleted from the UI.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import delete, insert, select

from pitwall.core.errors import BadData, NotFound
from pitwall.storage.state import StateStore, ui_dashboards

__all__ = ["Dashboard", "DashboardStore", "Panel", "Row", "Threshold", "Variable", "from_grafana",
           "parse_dashboard", "substitute"]

PanelType = Literal["timeseries", "stat", "gauge", "table", "logs", "traces"]
Datasource = Literal["prometheus", "loki", "traces"]
_ALLOWED_TYPES: dict[str, frozenset[str]] = {  # what each datasource's panels can draw
    "prometheus": frozenset({"timeseries", "stat", "gauge", "table"}),
    "loki": frozenset({"logs", "timeseries"}),
    "traces": frozenset({"traces"}),
}
_VAR_REF = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Threshold(_M):
    value: float
    color: str = Field(pattern=r"^(#[0-9a-fA-F]{3,8}|[a-z]+)$")


class Panel(_M):
    title: str = ""
    type: PanelType = "timeseries"
    datasource: Datasource = "prometheus"
    query: str
    unit: str = ""
    stacked: bool = False
    min: float | None = None
    max: float | None = None
    description: str = ""
    legend: str = Field("", max_length=200)
    thresholds: list[Threshold] = Field(default_factory=list, max_length=20)
    limit: int | None = Field(None, ge=1, le=5000)  # default: 50 log lines, 20 traces
    width: int | None = Field(None, ge=1, le=12)

    @model_validator(mode="after")
    def _type_fits_datasource(self) -> Panel:
        if self.type not in _ALLOWED_TYPES[self.datasource]:
            raise ValueError(f"a {self.type} panel cannot show {self.datasource} data "
                             f"(allowed: {', '.join(sorted(_ALLOWED_TYPES[self.datasource]))})")
        return self

    def color_of(self, value: float) -> str:
        """The colour of the highest threshold ``value`` reaches ("" below all of them)."""
        reached = [t for t in self.thresholds if value >= t.value]
        return max(reached, key=lambda t: t.value).color if reached else ""


class Row(_M):
    title: str = ""
    panels: list[Panel] = Field(default_factory=list)

    def spans(self) -> list[int] | None:
        """Columns (of 12) per panel when any panel sets ``width``; None keeps the automatic layout."""
        if not any(p.width for p in self.panels):
            return None
        free = [p for p in self.panels if not p.width]
        left = max(12 - sum(p.width or 0 for p in self.panels), 0)
        share = max(left // len(free), 1) if free else 0
        return [p.width or share or 12 for p in self.panels]


class Variable(_M):
    name: str = Field(pattern=r"^[A-Za-z_]\w*$")
    label: str = ""
    query: str
    default: str = ""


_GRAFANA_TIME = re.compile(r"^now-(\d+[smhdwy])$")


def _default_range(v: Any) -> Any:
    """``1h``, or Grafana's ``{from: now-1h, to: now}`` (the only shape a default range takes here)."""
    if isinstance(v, dict):
        m = _GRAFANA_TIME.match(str(v.get("from", "")))
        if set(v) - {"from", "to"} or str(v.get("to", "now")) != "now" or not m:
            raise ValueError("must be a duration such as 1h or {from: now-<duration>, to: now}")
        return m.group(1)
    return v


class Dashboard(_M):
    title: str
    description: str = ""
    refresh: str = ""
    time: Annotated[str, BeforeValidator(_default_range)] = "1h"
    tags: list[str] = Field(default_factory=list)
    variables: list[Variable] = Field(default_factory=list)
    rows: list[Row] = Field(default_factory=list)

    @model_validator(mode="after")
    def _variables_defined(self) -> Dashboard:
        names = {v.name for v in self.variables}
        for r in self.rows:
            for p in r.panels:
                for m in _VAR_REF.finditer(p.query):
                    ref = m.group(1) or m.group(2)
                    if ref not in names and not ref.startswith("__"):
                        raise ValueError(f"panel {p.title!r} uses undefined variable ${ref}")
        return self


def parse_dashboard(text: str, source: str = "dashboard") -> Dashboard:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise BadData(f"{source}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise BadData(f"{source}: the top level must be a mapping")
    try:
        return Dashboard.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            lines.append(f"{loc}: {msg}" if loc else msg)
        raise BadData(f"{source}: " + "; ".join(lines)) from None


_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+?)\s*,\s*)?([A-Za-z_]\w*)\s*\)\s*$")


def variable_query(v: Variable) -> tuple[str, str]:
    """``label_values(selector, label)`` or ``label_values(label)`` as (selector, label)."""
    m = _LABEL_VALUES.match(v.query)
    if not m:
        raise BadData(f"variable {v.name}: query must be label_values([selector,] label), got {v.query[:100]!r}")
    return (m.group(1) or ""), m.group(2)


def substitute(query: str, values: dict[str, str]) -> str:
    """Replace ``$name`` and ``${name}`` with the variable's value (longest names first)."""
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, query)


def to_yaml(d: Dashboard) -> str:
    data = d.model_dump(exclude_defaults=True)
    data["title"] = d.title
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)


# ------------------------------------------------------------------ Grafana import

_GRAFANA_TYPES: dict[str, PanelType] = {
    "timeseries": "timeseries", "graph": "timeseries", "stat": "stat", "singlestat": "stat", "gauge": "gauge",
    "bargauge": "gauge", "table": "table", "table-old": "table", "logs": "logs", "traces": "traces",
}


def _ds_type(ds: Any) -> str:
    if isinstance(ds, dict):
        return str(ds.get("type", ""))
    return str(ds or "")


def from_grafana(text: str) -> tuple[Dashboard, list[str]]:
    """A Grafana dashboard JSON as a pitwall dashboard, plus what was skipped and why."""
    try:
        g = json.loads(text)
    except ValueError as e:
        raise BadData(f"not a JSON document: {e}") from None
    if isinstance(g, dict) and isinstance(g.get("dashboard"), dict):
        g = g["dashboard"]
    if not isinstance(g, dict) or not isinstance(g.get("panels", []), list):
        raise BadData("not a Grafana dashboard: expected an object with 'panels'")
    skipped: list[str] = []
    rows: list[Row] = [Row(title="")]

    def add(p: dict[str, Any]) -> None:
        ptype = _GRAFANA_TYPES.get(str(p.get("type", "")))
        title = str(p.get("title", ""))
        if ptype is None:
            skipped.append(f"panel {title!r}: type {p.get('type')!r} is not supported")
            return
        targets = [t for t in p.get("targets", []) if isinstance(t, dict)]
        ds = _ds_type(p.get("datasource")) or (_ds_type(targets[0].get("datasource")) if targets else "")
        query = ""
        for t in targets:
            query = str(t.get("expr") or t.get("query") or "")
            if query:
                break
        if not query:
            skipped.append(f"panel {title!r}: no query")
            return
        datasource: Datasource = "prometheus"
        if "loki" in ds or ptype == "logs":
            datasource = "loki"
        elif ds in ("tempo", "zipkin", "jaeger") or ptype == "traces":
            datasource = "traces"
        unit = str((p.get("fieldConfig") or {}).get("defaults", {}).get("unit", "") or "")
        query = query.replace("$__rate_interval", "5m").replace("$__interval", "1m")
        rows[-1].panels.append(Panel(title=title, type=ptype, datasource=datasource, query=query, unit=unit))

    for p in g.get("panels", []):
        if not isinstance(p, dict):
            continue
        if p.get("type") == "row":
            rows.append(Row(title=str(p.get("title", ""))))
            for inner in p.get("panels", []):
                if isinstance(inner, dict):
                    add(inner)
        else:
            add(p)
    variables: list[Variable] = []
    for v in (g.get("templating") or {}).get("list", []):
        if not isinstance(v, dict) or v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else q
        if isinstance(q, str) and _LABEL_VALUES.match(q):
            variables.append(Variable(name=str(v.get("name")), label=str(v.get("label") or ""), query=q))
        else:
            skipped.append(f"variable {v.get('name')!r}: only label_values() queries are supported")
    tr = (g.get("time") or {}).get("from", "now-1h")
    dash = Dashboard(title=str(g.get("title") or "Imported dashboard"), refresh=str(g.get("refresh") or ""),
                     time=tr[4:] if isinstance(tr, str) and tr.startswith("now-") else "1h",
                     variables=variables, rows=[r for r in rows if r.panels])
    return dash, skipped


# ------------------------------------------------------------------ storage

_UID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,127}$")


def slug(title: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:100]
    return s or "dashboard"


@dataclass
class DashboardEntry:
    uid: str
    dashboard: Dashboard
    yaml: str
    source: str  # "file" | "edited" | "saved"
    path: Path | None = None
    problems: list[str] = field(default_factory=list)


class DashboardStore:
    """Provisioned YAML files (read at each listing, so edits on disk show up) and saved edits."""

    def __init__(self, folder: Path | None, state: StateStore) -> None:
        self.folder = folder
        self.engine = state.engine

    def _files(self) -> dict[str, tuple[Path, str]]:
        out: dict[str, tuple[Path, str]] = {}
        if self.folder is None or not self.folder.is_dir():
            return out
        for p in sorted([*self.folder.glob("*.yaml"), *self.folder.glob("*.yml")]):
            uid = slug(p.stem)
            try:
                out[uid] = (p, p.read_text())
            except OSError:
                continue
        return out

    def _saved(self, tenant: str) -> dict[str, str]:
        with self.engine.connect() as c:
            rows = c.execute(select(ui_dashboards.c.uid, ui_dashboards.c.yaml)
                             .where(ui_dashboards.c.tenant == tenant)).all()
        return {str(r[0]): str(r[1]) for r in rows}

    def list(self, tenant: str = "default") -> list[DashboardEntry]:
        files = self._files()
        saved = self._saved(tenant)
        out: list[DashboardEntry] = []
        for uid in sorted(set(files) | set(saved)):
            path = files[uid][0] if uid in files else None
            text = saved.get(uid) if uid in saved else files[uid][1]
            assert text is not None
            source = ("edited" if uid in files else "saved") if uid in saved else "file"
            try:
                d = parse_dashboard(text, str(path or uid))
                out.append(DashboardEntry(uid, d, text, source, path))
            except BadData as e:
                out.append(DashboardEntry(uid, Dashboard(title=uid), text, source, path, [e.message]))
        out.sort(key=lambda e: e.dashboard.title.lower())
        return out

    def get(self, uid: str, tenant: str = "default") -> DashboardEntry:
        for e in self.list(tenant):
            if e.uid == uid:
                return e
        raise NotFound(f"dashboard {uid!r} not found")

    def save(self, uid: str, text: str, tenant: str = "default") -> Dashboard:
        if not _UID.match(uid):
            raise BadData(f"invalid dashboard id {uid[:64]!r}: lowercase letters, digits, - and _")
        d = parse_dashboard(text, uid)
        with self.engine.begin() as c:
            c.execute(delete(ui_dashboards).where(ui_dashboards.c.tenant == tenant, ui_dashboards.c.uid == uid))
            c.execute(insert(ui_dashboards).values(tenant=tenant, uid=uid, yaml=text, updated_at=time.time()))
        return d

    def delete(self, uid: str, tenant: str = "default") -> bool:
        with self.engine.begin() as c:
            n = c.execute(delete(ui_dashboards).where(ui_dashboards.c.tenant == tenant,
                                                      ui_dashboards.c.uid == uid)).rowcount
        return bool(n)

    def new_uid(self, title: str, tenant: str = "default") -> str:
        base = slug(title)
        taken = {e.uid for e in self.list(tenant)}
        uid, i = base, 2
        while uid in taken:
            uid, i = f"{base}-{i}", i + 1
        return uid
