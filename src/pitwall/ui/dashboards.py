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

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import delete, insert, select

from pitwall.core import regex as user_regex
from pitwall.core.errors import BadData, NotFound
from pitwall.storage.state import StateStore, ui_dashboards

__all__ = [
    "VAR_REF",
    "Dashboard",
    "DashboardStore",
    "Panel",
    "Query",
    "Row",
    "Threshold",
    "VarValue",
    "Variable",
    "builtin_values",
    "parse_dashboard",
    "substitute",
]

PanelType = Literal["timeseries", "stat", "gauge", "bargauge", "table", "logs", "traces"]
Datasource = Literal["prometheus", "loki", "traces"]
_ALLOWED_TYPES: dict[str, frozenset[str]] = {  # what each datasource's panels can draw
    "prometheus": frozenset({"timeseries", "stat", "gauge", "bargauge", "table"}),
    "loki": frozenset({"logs", "timeseries"}),
    "traces": frozenset({"traces"}),
}
# $name, ${name}, ${name:format} and Grafana's deprecated [[name]] / [[name:format]]
VAR_REF = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]|\$(\w+)")


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Threshold(_M):
    value: float  # -.inf for Grafana's base step (its ``value: null``)
    color: str = Field(pattern=r"^(#[0-9a-fA-F]{3,8}|[a-z]+|rgba?\(\s*[0-9.]+\s*(,\s*[0-9.]+%?\s*){2,3}\))$")


class Query(_M):
    """One more query of a panel (Grafana's further ``targets``), drawn with the panel's first one."""

    query: str
    legend: str = Field("", max_length=200)


class Panel(_M):
    title: str = ""
    type: PanelType = "timeseries"
    datasource: Datasource = "prometheus"
    query: str
    unit: str = ""
    stacked: bool = False
    min: float | None = None
    max: float | None = None
    decimals: int | None = Field(None, ge=0, le=10)
    description: str = ""
    legend: str = Field("", max_length=200)
    queries: list[Query] = Field(default_factory=list, max_length=25)
    thresholds: list[Threshold] = Field(default_factory=list, max_length=20)
    limit: int | None = Field(None, ge=1, le=5000)  # default: 50 log lines, 20 traces
    width: int | None = Field(None, ge=1, le=12)
    height: int | None = Field(None, ge=3, le=60)  # in Grafana's grid rows (30 px each); default 8
    notes: list[str] = Field(default_factory=list, max_length=50)  # what an import could not carry over

    def chart_height(self) -> int:
        """Pixels of the chart: the panel's grid height less its title and legend, as Grafana lays it out."""
        return max((self.height or 8) * 30 - 60, 120)

    def all_queries(self) -> list[Query]:
        """The panel's first query and its further ones, in order."""
        return [Query(query=self.query, legend=self.legend), *self.queries]

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
    collapsed: bool = False
    panels: list[Panel] = Field(default_factory=list, max_length=500)

    def spans(self) -> list[int] | None:
        """Columns (of 12) per panel when any panel sets ``width``; None keeps the automatic layout."""
        if not any(p.width for p in self.panels):
            return None
        free = [p for p in self.panels if not p.width]
        left = max(12 - sum(p.width or 0 for p in self.panels), 0)
        share = max(left // len(free), 1) if free else 0
        return [p.width or share or 12 for p in self.panels]


VariableType = Literal["query", "custom", "interval", "constant", "textbox"]


class Variable(_M):
    """A template variable, as Grafana's: ``query`` is ``label_values([selector,] label)`` for the query type,
    the comma-separated options of custom and interval, the value of constant, the default text of textbox."""

    name: str = Field(pattern=r"^[A-Za-z_]\w*$")
    label: str = ""
    type: VariableType = "query"
    query: str = ""
    default: str = ""
    multi: bool = False
    include_all: bool = False
    all_value: str = ""  # what All stands for (Grafana's allValue, e.g. ``.*``); empty: every option
    regex: str = Field("", max_length=500)  # keeps matching options; a capture group (or ``value``) extracts
    hide: bool = False

    def filtered(self, options: list[str]) -> list[str]:
        """``options`` through the variable's regex as Grafana applies it (``/re/i`` form accepted, RE2)."""
        if not self.regex:
            return options
        pattern = self.regex
        m = re.fullmatch(r"/(.*)/([gimsuy]*)", pattern, re.S)
        if m:
            pattern = ("(?i)" if "i" in m.group(2) else "") + m.group(1)
        try:
            rx = user_regex.compile(pattern)
        except ValueError as e:
            raise BadData(f"variable {self.name}: invalid regex: {e}") from None
        out: list[str] = []
        for o in options:
            hit = rx.search(o)
            if hit is None:
                continue
            v = hit.group("value") or hit.group(1) or o
            if v not in out:
                out.append(v)
        return out

    def options(self) -> list[str]:
        """The fixed options of a custom or interval variable (a query variable's come from the data)."""
        if self.type in ("custom", "interval"):
            return [o.strip() for o in re.split(r"(?<!\\),", self.query) if o.strip()]
        if self.type == "constant":
            return [self.query]
        return []


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
    variables: list[Variable] = Field(default_factory=list, max_length=100)
    rows: list[Row] = Field(default_factory=list, max_length=200)
    notes: list[str] = Field(default_factory=list, max_length=200)  # what an import left out, shown on top

    @model_validator(mode="after")
    def _variables_defined(self) -> Dashboard:
        names = {v.name for v in self.variables}
        for r in self.rows:
            for p in r.panels:
                for q in p.all_queries():
                    for m in VAR_REF.finditer(q.query):
                        ref = m.group(1) or m.group(3) or m.group(5)
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


_REGEX_SPECIAL = re.compile(r"[\\^$.|?*+()\[\]{}]")


def _regex_escape(v: str) -> str:
    # Grafana escapes regex metacharacters of each value; PromQL strings need the backslashes doubled.
    return _REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(0), v)


@dataclass(frozen=True)
class VarValue:
    """A variable's current value(s); ``all_value`` is set when All is chosen and the variable names one."""

    values: tuple[str, ...]
    multi: bool = False
    all_value: str | None = None


def _format(v: VarValue, fmt: str | None) -> str:
    if v.all_value is not None:
        return v.all_value
    vals = v.values
    if fmt in ("csv",):
        return ",".join(vals)
    if fmt == "pipe":
        return "|".join(vals)
    if fmt == "raw" or fmt == "text":
        return ",".join(vals) if len(vals) != 1 else vals[0]
    if fmt == "regex" or (fmt is None and v.multi):
        # Grafana's Prometheus/Loki default for multi-value and All: a regex alternation of escaped values
        esc = [_regex_escape(x) for x in vals]
        return esc[0] if len(esc) == 1 and fmt is None else "(" + "|".join(esc) + ")"
    return vals[0] if vals else ""


def substitute(query: str, values: dict[str, str] | dict[str, VarValue]) -> str:
    """Replace ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]`` with the variable's value.

    Formats as Grafana's: ``regex`` (``(a|b)``, values escaped), ``pipe``, ``csv``, ``raw``; a multi-value
    variable without a format becomes the regex form, as Grafana's Prometheus and Loki datasources do.
    Unknown names stay as written (the query engine then reports them)."""
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3) or m.group(5)
        fmt = m.group(2) or m.group(4)
        v = values.get(name)
        if v is None:
            return m.group(0)
        return _format(v if isinstance(v, VarValue) else VarValue((v,)), fmt)

    return VAR_REF.sub(repl, query)


def builtin_values(span_ms: int, points: int = 600, scrape_ms: int = 15_000) -> dict[str, VarValue]:
    """Grafana's global variables for a range: ``$__interval`` (range / points, at least the scrape
    interval), ``$__rate_interval`` (max(interval + scrape, 4 x scrape)), ``$__range`` and its _s/_ms."""
    interval = max(span_ms // max(points, 1), scrape_ms)
    rate = max(interval + scrape_ms, 4 * scrape_ms)
    secs = max(span_ms // 1000, 1)

    def d(ms: int) -> VarValue:
        return VarValue((f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms",))

    return {"__interval": d(interval), "__interval_ms": VarValue((str(interval),)), "__rate_interval": d(rate),
            "__range": VarValue((f"{secs}s",)), "__range_s": VarValue((str(secs),)),
            "__range_ms": VarValue((str(span_ms),))}


def relayout(d: Dashboard, layout: Any) -> Dashboard:
    """The dashboard with its panels rearranged by the grid editor: ``layout`` is, per row, the list of
    ``{"panel": original index, "width": 1-12 or null, "height": 3-60 or null}`` in the new order. Every
    panel of a row must appear exactly once (panels move within their row); ``BadData`` names what is wrong."""
    if not isinstance(layout, list) or len(layout) != len(d.rows):
        raise BadData(f"layout: one list per row expected ({len(d.rows)} rows)")
    rows: list[Row] = []
    for ri, (row, items) in enumerate(zip(d.rows, layout, strict=True)):
        if not isinstance(items, list) or sorted(_index(it, ri) for it in items) != list(range(len(row.panels))):
            raise BadData(f"layout: row {ri} must list each of its {len(row.panels)} panels once")
        panels = []
        for it in items:
            try:
                panels.append(row.panels[it["panel"]].model_copy(update={
                    "width": it.get("width"), "height": it.get("height")}))
            except (TypeError, AttributeError):
                raise BadData(f"layout: row {ri}: bad entry {str(it)[:80]}") from None
        rows.append(row.model_copy(update={"panels": panels}))
    try:  # validate the sizes through the model's own bounds
        return Dashboard.model_validate({**d.model_dump(), "rows": [r.model_dump() for r in rows]})
    except ValidationError as e:
        raise BadData(f"layout: {e.errors()[0]['msg']}") from None


def _index(item: Any, ri: int) -> int:
    if not isinstance(item, dict) or not isinstance(item.get("panel"), int) or isinstance(item.get("panel"), bool):
        raise BadData(f"layout: row {ri}: each entry needs an integer 'panel'")
    return int(item["panel"])


def to_yaml(d: Dashboard) -> str:
    data = d.model_dump(exclude_defaults=True)
    data["title"] = d.title
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)


# ------------------------------------------------------------------ storage

_MAX_FILE = 8 << 20  # a provisioned file larger than this is not read
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


def parse_any(text: str, source: str) -> Dashboard:
    """A dashboard file by its content: Grafana's JSON (any file name) or pitwall's YAML."""
    from pitwall.ui.grafana import from_grafana, is_grafana  # grafana builds on this module's models

    try:
        data = yaml.safe_load(text)  # JSON is YAML: one parse tells the two apart
    except yaml.YAMLError as e:
        raise BadData(f"{source}: invalid YAML or JSON: {e}") from None
    if is_grafana(data):
        try:
            return from_grafana(data).dashboard
        except BadData as e:
            raise BadData(f"{source}: {e.message}") from None
    return parse_dashboard(text, source)


_PROVISIONED = ("*.yaml", "*.yml", "*.json")


class DashboardStore:
    """Provisioned files (pitwall YAML or Grafana JSON, told apart by content; re-read when a file changes,
    appears or goes) and dashboards saved from the UI."""

    def __init__(self, folder: Path | None, state: StateStore) -> None:
        self.folder = folder
        self.engine = state.engine
        self._parsed: dict[Path, tuple[tuple[int, int], Dashboard | BadData, str]] = {}

    def reload(self, folder: Path | None) -> None:
        """Provision from ``folder`` from now on, every file parsed afresh (``/-/reload``)."""
        self.folder = folder
        self._parsed.clear()

    def _files(self) -> dict[str, tuple[Path, str]]:
        out: dict[str, tuple[Path, str]] = {}
        if self.folder is None or not self.folder.is_dir():
            return out
        paths = sorted({p for pat in _PROVISIONED for p in self.folder.glob(pat)})
        for p in paths:
            uid = slug(p.stem)
            if uid in out:  # a.yaml and a.json: the first in name order wins
                continue
            try:
                if p.stat().st_size > _MAX_FILE:
                    continue
                out[uid] = (p, p.read_text())
            except (OSError, UnicodeDecodeError):
                continue
        return out

    def _provisioned(self, path: Path, text: str) -> tuple[Dashboard | BadData, str]:
        """The file's dashboard (or why not) and its YAML, parsed once per change of the file."""
        try:
            st = path.stat()
            key = (st.st_mtime_ns, st.st_size)
        except OSError:
            key = (0, 0)
        hit = self._parsed.get(path)
        if hit is not None and hit[0] == key:
            return hit[1], hit[2]
        result: Dashboard | BadData
        try:
            result = parse_any(text, str(path))
            shown = text if path.suffix != ".json" else to_yaml(result)
        except BadData as e:
            result, shown = e, text
        if len(self._parsed) > 10_000:
            self._parsed.clear()
        self._parsed[path] = (key, result, shown)
        return result, shown

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
            source = ("edited" if uid in files else "saved") if uid in saved else "file"
            if uid in saved:
                text = saved[uid]
                try:
                    parsed: Dashboard | BadData = parse_dashboard(text, str(path or uid))
                except BadData as e:
                    parsed = e
            else:
                parsed, text = self._provisioned(*files[uid])
            if isinstance(parsed, BadData):
                out.append(DashboardEntry(uid, Dashboard(title=uid), text, source, path, [parsed.message]))
            else:
                out.append(DashboardEntry(uid, parsed, text, source, path))
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
