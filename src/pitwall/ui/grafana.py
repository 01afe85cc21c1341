"""Grafana dashboard JSON (schemaVersion 6 to 39+) as a pitwall dashboard, with what could not be carried over.

Grafana's model (https://grafana.com/docs/grafana/latest/dashboards/build-dashboards/view-dashboard-json-model/):
``panels`` on a 24-column grid (``gridPos``), ``row`` panels that hold their children when collapsed and
precede them when open; before schemaVersion 16 a ``rows`` list whose panels have a ``span`` of 12
(DashboardMigrator turns each span into a width of span x 2 of 24). Legacy ``graph`` and ``singlestat``
keep their options outside ``fieldConfig`` (``yaxes``, ``format``, ``thresholds: "50,80"`` with
``colors``). Datasources are a name, ``${DS_X}`` (resolved through ``__inputs``), or ``{type, uid}``.

Nothing is dropped silently: what pitwall cannot draw becomes a note on its panel (shown on the
dashboard) and a line in the import's warnings.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from pitwall.core.errors import BadData
from pitwall.ui.dashboards import (
    VAR_REF,
    Dashboard,
    Panel,
    PanelType,
    Query,
    Row,
    Threshold,
    Variable,
    VariableType,
)

__all__ = ["GrafanaImport", "from_grafana", "is_grafana"]

_TYPES: dict[str, PanelType] = {
    "timeseries": "timeseries", "graph": "timeseries", "stat": "stat", "singlestat": "stat", "gauge": "gauge",
    "bargauge": "bargauge", "table": "table", "table-old": "table", "logs": "logs", "traces": "traces",
}
_MAX_PANELS = 500
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.+?)\s*,\s*)?([A-Za-z_]\w*)\s*\)\s*$")
# Grafana's named palette (packages/grafana-data themes) for the names dashboards use most.
_COLOURS = {
    "green": "#73bf69", "dark-green": "#37872d", "semi-dark-green": "#56a64b", "light-green": "#96d98d",
    "red": "#f2495c", "dark-red": "#c4162a", "semi-dark-red": "#e02f44", "light-red": "#ff7383",
    "orange": "#ff9830", "dark-orange": "#fa6400", "semi-dark-orange": "#ff780a", "light-orange": "#ffb357",
    "yellow": "#fade2a", "dark-yellow": "#e0b400", "semi-dark-yellow": "#f2cc0c", "light-yellow": "#ffee52",
    "blue": "#5794f2", "dark-blue": "#1f60c4", "semi-dark-blue": "#3274d9", "light-blue": "#8ab8ff",
    "purple": "#b877d9", "dark-purple": "#8f3bb8", "semi-dark-purple": "#a352cc", "light-purple": "#ca95e5",
    "text": "", "transparent": "",
}
_SIMPLE_COLOUR = re.compile(r"^(#[0-9a-fA-F]{3,8}|[a-z]+|rgba?\(\s*[0-9.]+\s*(,\s*[0-9.]+%?\s*){2,3}\))$")


@dataclass
class GrafanaImport:
    """The converted dashboard and one warning per thing that could not be carried over."""

    dashboard: Dashboard
    warnings: list[str] = field(default_factory=list)


def is_grafana(data: Any) -> bool:
    """A parsed document is Grafana's dashboard JSON (or an API export wrapping one in ``dashboard``)."""
    if isinstance(data, dict) and isinstance(data.get("dashboard"), dict):
        data = data["dashboard"]
    return isinstance(data, dict) and ("panels" in data or "schemaVersion" in data or
                                       (isinstance(data.get("rows"), list) and "templating" in data))


def _colour(c: Any) -> str:
    s = str(c or "").strip()
    s = _COLOURS.get(s, s)
    return s if s and _SIMPLE_COLOUR.match(s) else ""


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


class _Converter:
    def __init__(self, g: dict[str, Any]) -> None:
        self.g = g
        self.warnings: list[str] = []
        self.panel_warnings: set[int] = set()  # indexes of warnings shown on their panel (the rest on top)
        # ${DS_PROMETHEUS} of an exported dashboard names its datasource's plugin in __inputs
        self.inputs = {str(i.get("name")): str(i.get("pluginId") or "") for i in g.get("__inputs", [])
                       if isinstance(i, dict)}
        self.default_ds = "prometheus"

    # ---------------------------------------------------------------- datasources

    def ds_kind(self, ds: Any) -> str:
        """``prometheus``, ``loki``, ``traces``, ``mixed``, ``default`` or the unknown type's name."""
        if isinstance(ds, dict):
            name = str(ds.get("type") or ds.get("uid") or "")
        else:
            name = str(ds or "")
        m = re.fullmatch(r"\$\{?(\w+)\}?", name)
        if m and m.group(1) in self.inputs:
            name = self.inputs[m.group(1)]
        low = name.lower()
        if not low or low in ("default", "-- default --") or low.startswith("$"):
            return "default"
        if "mixed" in low:
            return "mixed"
        if "loki" in low:
            return "loki"
        if any(k in low for k in ("tempo", "jaeger", "zipkin")):
            return "traces"
        if "prometheus" in low or "mimir" in low or "thanos" in low or "cortex" in low:
            return "prometheus"
        if "grafana" in low or "testdata" in low or "dashboard" in low:
            return low
        return "prometheus" if isinstance(ds, str) else low  # a data source named by the user: most are Prometheus

    # ---------------------------------------------------------------- panels

    def panel(self, p: dict[str, Any], width: int | None) -> Panel | None:
        title = str(p.get("title") or "")
        gtype = str(p.get("type") or "")
        ptype = _TYPES.get(gtype)
        if ptype is None:
            self.warnings.append(f"panel {title!r}: type {gtype!r} is not drawn by pitwall (skipped)")
            return None
        notes: list[str] = []
        panel_kind = self.ds_kind(p.get("datasource"))
        picked: list[tuple[str, Query]] = []
        for t in p.get("targets") or []:
            if not isinstance(t, dict):
                continue
            ref = str(t.get("refId") or "?")
            if t.get("hide"):
                notes.append(f"query {ref} is hidden in Grafana: not drawn")
                continue
            kind = self.ds_kind(t.get("datasource")) if t.get("datasource") else panel_kind
            if kind in ("default", "mixed"):
                kind = "traces" if ptype == "traces" else "loki" if ptype == "logs" else self.default_ds
            text = self.target_query(t, kind, ptype)
            if kind not in ("prometheus", "loki", "traces"):
                notes.append(f"query {ref}: data source {kind!r} is not served by pitwall")
                continue
            if not text:
                notes.append(f"query {ref}: empty or not in a form pitwall reads")
                continue
            legend = str(t.get("legendFormat") or "")
            if legend == "__auto":  # Grafana 10's "auto" legend: the series' own name
                legend = ""
            picked.append((kind, Query(query=text, legend=legend[:200])))
        if not picked:
            self.warnings.append(f"panel {title!r}: no query pitwall can run (skipped)"
                                 + (f": {'; '.join(notes)}" if notes else ""))
            return None
        ds = picked[0][0]
        if (ptype == "logs" and ds != "loki") or (ptype == "traces" and ds != "traces"):
            self.warnings.append(f"panel {title!r}: a {gtype} panel over {ds} data cannot be drawn (skipped)")
            return None
        if (ds == "traces" and ptype != "traces") or (ds == "loki" and ptype not in ("logs", "timeseries")):
            notes.append(f"a {gtype} panel over {ds} data is drawn as "
                         f"{'a traces list' if ds == 'traces' else 'a time series'}")
            ptype = "traces" if ds == "traces" else "timeseries"
        same = [q for k, q in picked if k == ds]
        for k, q in picked:
            if k != ds:
                notes.append(f"query {q.query[:60]!r} reads {k}, not {ds} like the panel's first: not drawn")
        if ptype in ("logs", "traces") and len(same) > 1:
            notes.append(f"only the first of {len(same)} queries is shown in a {ptype} panel")
            same = same[:1]
        height = _grid_height(p)
        out: dict[str, Any] = {"title": title, "type": ptype, "datasource": ds, "query": same[0].query,
                               "legend": same[0].legend, "queries": same[1:25], "width": width,
                               "description": str(p.get("description") or "")[:2000], "height": height}
        if len(same) > 25:
            notes.append(f"{len(same) - 25} queries beyond the first 25 are not drawn")
        self.field_options(p, gtype, out, notes)
        if ptype == "logs" and isinstance(p.get("maxDataPoints"), int) and p["maxDataPoints"] > 0:
            out["limit"] = min(p["maxDataPoints"], 5000)
        for n in notes:
            self.panel_warnings.add(len(self.warnings))
            self.warnings.append(f"panel {title!r}: {n}")
        out["notes"] = notes[:50]
        try:
            return Panel.model_validate(out)
        except ValidationError as e:
            self.warnings.append(f"panel {title!r}: {e.errors()[0]['msg']} (skipped)")
            return None

    def target_query(self, t: dict[str, Any], kind: str, ptype: PanelType) -> str:
        if kind != "traces":
            return str(t.get("expr") or "").strip()
        # Tempo's search form and Jaeger's search fields as pitwall's trace search terms
        terms: list[str] = []
        for key, term in (("serviceName", "service"), ("service", "service"), ("spanName", "operation"),
                          ("operation", "operation"), ("minDuration", "min_duration"),
                          ("maxDuration", "max_duration")):
            if t.get(key):
                terms.append(f"{term}={t[key]}")
        if terms:
            return " ".join(_quote(x) for x in terms)
        q = str(t.get("query") or "")
        return _traceql_terms(q)

    def field_options(self, p: dict[str, Any], gtype: str, out: dict[str, Any], notes: list[str]) -> None:
        defaults = (p.get("fieldConfig") or {}).get("defaults") or {}
        if gtype == "graph":  # legacy: the left y axis carries unit, min and max
            yaxes = p.get("yaxes") or [{}]
            y = yaxes[0] if yaxes and isinstance(yaxes[0], dict) else {}
            defaults = {"unit": y.get("format"), "min": y.get("min"), "max": y.get("max"),
                        "decimals": y.get("decimals") or p.get("decimals"), **defaults}
            out["stacked"] = bool(p.get("stack"))
        elif gtype == "singlestat":
            defaults = {"unit": p.get("format"), "decimals": p.get("decimals"), **defaults}
            gauge = p.get("gauge") or {}
            if gauge.get("show"):
                out["type"] = "gauge"
                defaults.setdefault("min", gauge.get("minValue"))
                defaults.setdefault("max", gauge.get("maxValue"))
            out["thresholds"] = _singlestat_thresholds(p, notes)
        else:
            custom = defaults.get("custom") or {}
            stacking = (custom.get("stacking") or {}).get("mode")
            out["stacked"] = stacking in ("normal", "percent")
            if stacking == "percent":
                notes.append("100% stacking is drawn as normal stacking")
        calcs = ((p.get("options") or {}).get("reduceOptions") or {}).get("calcs") or []
        reducer = calcs[0] if calcs and isinstance(calcs[0], str) else "lastNotNull"
        if gtype == "singlestat":
            reducer = {"current": "lastNotNull"}.get(str(p.get("valueName") or "current"), str(p.get("valueName")))
        if out["type"] in ("stat", "gauge", "bargauge") and reducer not in ("lastNotNull", "last"):
            notes.append(f"reduced by {reducer!r} in Grafana; pitwall shows the value at the end of the range")
        unit = defaults.get("unit")
        if isinstance(unit, str) and unit not in ("short", "none"):
            out["unit"] = unit[:40]
        for k in ("min", "max"):
            v = _num(defaults.get(k))
            if v is not None:
                out[k] = v
        dec = defaults.get("decimals")
        if isinstance(dec, int) and not isinstance(dec, bool) and 0 <= dec <= 10:
            out["decimals"] = dec
        steps = (defaults.get("thresholds") or {}).get("steps")
        if isinstance(steps, list) and gtype != "singlestat":
            out["thresholds"] = self.steps(steps, defaults.get("thresholds") or {}, notes)
        if defaults.get("mappings"):
            notes.append("value mappings are not applied")
        if (p.get("fieldConfig") or {}).get("overrides"):
            notes.append("field overrides are not applied")
        if p.get("transformations"):
            notes.append("transformations are not applied")

    def steps(self, steps: list[Any], cfg: dict[str, Any], notes: list[str]) -> list[Threshold]:
        if cfg.get("mode") == "percentage":
            notes.append("percentage thresholds are applied as absolute values")
        out: list[Threshold] = []
        for s in steps[:20]:
            if not isinstance(s, dict):
                continue
            colour = _colour(s.get("color"))
            value = _num(s.get("value"))
            if not colour:
                if s.get("color") not in ("text", "transparent"):
                    notes.append(f"threshold colour {str(s.get('color'))[:40]!r} is not known")
                continue
            out.append(Threshold(value=-math.inf if value is None else value, color=colour))
        return out

    # ---------------------------------------------------------------- layout

    def sections(self) -> list[Row]:
        """Panels in Grafana's reading order, split at row panels; widths from gridPos (24 columns)."""
        g = self.g
        rows: list[Row] = [Row(title="")]
        if not g.get("panels") and isinstance(g.get("rows"), list):  # before schemaVersion 16
            for r in g["rows"][:_MAX_PANELS]:
                if not isinstance(r, dict):
                    continue
                title = str(r.get("title") or "") if r.get("showTitle", True) else ""
                rows.append(Row(title=title, collapsed=bool(r.get("collapse"))))
                for p in (r.get("panels") or [])[:_MAX_PANELS]:
                    if isinstance(p, dict):
                        self.add(rows[-1], p, _span_width(p.get("span")))
            return [r for r in rows if r.panels]
        panels = [p for p in g.get("panels") or [] if isinstance(p, dict)][:_MAX_PANELS]
        for p in _reading_order(panels):
            if p.get("type") == "row":
                rows.append(Row(title=str(p.get("title") or ""), collapsed=bool(p.get("collapsed"))))
                for inner in _reading_order([c for c in p.get("panels") or [] if isinstance(c, dict)]):
                    self.add(rows[-1], inner, _grid_width(inner))
            else:
                self.add(rows[-1], p, _grid_width(p))
        return [r for r in rows if r.panels]

    def add(self, row: Row, p: dict[str, Any], width: int | None) -> None:
        if p.get("repeat"):
            self.warnings.append(f"panel {str(p.get('title') or '')!r}: repeating by ${p['repeat']} "
                                 "is not supported; drawn once")
        panel = self.panel(p, width)
        if panel is not None:
            row.panels.append(panel)

    # ---------------------------------------------------------------- variables

    def variables(self) -> list[Variable]:
        out: list[Variable] = []
        for v in (self.g.get("templating") or {}).get("list") or []:
            if not isinstance(v, dict):
                continue
            var = self.variable(v)
            if var is not None:
                out.append(var)
        return out

    def variable(self, v: dict[str, Any]) -> Variable | None:
        name = str(v.get("name") or "")
        vtype = str(v.get("type") or "")
        if vtype == "datasource":  # pitwall is the one data source of each kind
            self.warnings.append(f"variable {name!r}: a data source variable is not needed; "
                                 f"${name} stands for pitwall's own")
            return Variable(name=name, type="constant", query=str(v.get("query") or "prometheus"), hide=True)
        if vtype not in ("query", "custom", "interval", "constant", "textbox"):
            self.warnings.append(f"variable {name!r}: type {vtype!r} is not supported")
            return None
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else q
        query = str(q or "")
        if vtype == "query":
            kind = self.ds_kind(v.get("datasource"))
            if kind not in ("prometheus", "default", "mixed"):  # options come from the metrics store's labels
                self.warnings.append(f"variable {name!r}: options from a {kind} data source are not supported")
                return None
            if not _LABEL_VALUES.match(query):
                self.warnings.append(f"variable {name!r}: only label_values() queries are supported, "
                                     f"not {query[:80]!r}")
                return None
        current = v.get("current") or {}
        cur = current.get("value") if isinstance(current, dict) else None
        if isinstance(cur, list):
            cur = cur[0] if cur else ""
        default = str(cur or "")
        if vtype == "textbox" and not default:
            default = query
        if vtype == "interval" and v.get("auto"):
            self.warnings.append(f"variable {name!r}: the auto interval option is not offered")
        vt: VariableType = vtype  # type: ignore[assignment]
        try:
            return Variable(name=name, label=str(v.get("label") or ""), type=vt, query=query[:2000],
                            default=default[:500], multi=bool(v.get("multi")),
                            include_all=bool(v.get("includeAll")), all_value=str(v.get("allValue") or "")[:500],
                            regex=str(v.get("regex") or "")[:500] if vtype == "query" else "",
                            hide=v.get("hide") == 2)
        except ValidationError as e:
            self.warnings.append(f"variable {name!r}: {e.errors()[0]['msg']}")
            return None

    def undefined(self, rows: list[Row], names: set[str]) -> list[Variable]:
        """A text box for each variable the panels use that was not kept, so they still run once it is set."""
        out: list[Variable] = []
        for r in rows:
            for p in r.panels:
                for q in p.all_queries():
                    for m in VAR_REF.finditer(q.query):
                        ref = m.group(1) or m.group(3) or m.group(5)
                        if ref in names or ref.startswith("__"):
                            continue
                        names.add(ref)
                        self.warnings.append(f"variable {ref!r} is used by panel {p.title!r} but not defined "
                                             "as pitwall can: it is a text box to fill in")
                        out.append(Variable(name=ref, type="textbox"))
        return out

    # ---------------------------------------------------------------- dashboard

    def dashboard(self) -> Dashboard:
        g = self.g
        rows = self.sections()
        t = g.get("time") or {}
        frm, to = str(t.get("from") or "now-6h"), str(t.get("to") or "now")
        m = re.fullmatch(r"now-(\d+[smhdwy])(?:/\w)?", frm)
        time = m.group(1) if m and to.startswith("now") else "6h"
        if not m or not to.startswith("now"):
            self.warnings.append(f"time range {frm} to {to} is not relative to now: opens on the last 6h")
        refresh = g.get("refresh")
        variables = self.variables()
        variables += self.undefined(rows, {v.name for v in variables})
        data = {"title": str(g.get("title") or "Imported dashboard")[:200],
                "description": str(g.get("description") or "")[:2000],
                "refresh": refresh if isinstance(refresh, str) and re.fullmatch(r"\d+[smhd]", refresh) else "",
                "time": time, "tags": [str(x)[:50] for x in (g.get("tags") or [])[:20]],
                "variables": variables, "rows": rows,
                "notes": [w for i, w in enumerate(self.warnings) if i not in self.panel_warnings][:200]}
        try:
            return Dashboard.model_validate(data)
        except ValidationError as e:
            # a panel that refers to a variable the import could not keep: note it rather than fail
            msg = e.errors()[0]["msg"].removeprefix("Value error, ")
            raise BadData(f"the dashboard cannot be imported: {msg}") from None


def _traceql_terms(q: str) -> str:
    """The simple TraceQL filters Grafana's Tempo search writes (``{resource.service.name="x" && status=error}``)."""
    q = q.strip()
    if not q:
        return ""
    m = re.fullmatch(r"\{(.*)\}", q, re.S)
    if not m:
        return ""
    terms: list[str] = []
    for part in re.split(r"\s*&&\s*", m.group(1).strip()):
        if not part:
            continue
        c = re.fullmatch(r'([\w.]+)\s*(=|>|<)\s*"?([^"]*)"?', part.strip())
        if not c:
            return ""
        key, op, val = c.groups()
        if key in ("resource.service.name", ".service.name") and op == "=":
            terms.append(f"service={val}")
        elif key == "name" and op == "=":
            terms.append(f"operation={val}")
        elif key == "status" and op == "=":
            terms.append(f"status={val}")
        elif key == "duration" and op in (">", "<"):
            terms.append(f"{'min' if op == '>' else 'max'}_duration={val}")
        elif op == "=":
            terms.append(f"{key.removeprefix('span.').removeprefix('.')}={val}")
        else:
            return ""
    return " ".join(_quote(t) for t in terms)


def _quote(term: str) -> str:
    return f'"{term}"' if re.search(r"\s", term) else term


def _singlestat_thresholds(p: dict[str, Any], notes: list[str]) -> list[Threshold]:
    """Singlestat's ``thresholds: "50,80"`` with three ``colors``: below, between, above."""
    raw = p.get("thresholds")
    colours = [_colour(c) for c in p.get("colors") or []]
    if not raw or not (p.get("colorValue") or p.get("colorBackground")):
        return []
    values = [_num(x) for x in str(raw).split(",")]
    if any(v is None for v in values) or len(colours) < len(values) + 1 or not all(colours):
        notes.append(f"thresholds {str(raw)[:40]!r} with colours {p.get('colors')!r} are not understood")
        return []
    out = [Threshold(value=-math.inf, color=colours[0])]
    out += [Threshold(value=v, color=c) for v, c in zip(values, colours[1:], strict=False) if v is not None]
    return out


def _grid_width(p: dict[str, Any]) -> int | None:
    gp = p.get("gridPos")
    w = gp.get("w") if isinstance(gp, dict) else None
    if not isinstance(w, int | float) or isinstance(w, bool):
        return None
    return max(1, min(12, round(w / 2)))  # 24 columns in Grafana, 12 in pitwall


def _grid_height(p: dict[str, Any]) -> int | None:
    gp = p.get("gridPos")
    h = gp.get("h") if isinstance(gp, dict) else None
    if not isinstance(h, int | float) or isinstance(h, bool):
        return None
    return max(3, min(60, round(h)))


def _span_width(span: Any) -> int | None:
    if not isinstance(span, int | float) or isinstance(span, bool):
        return None
    return max(1, min(12, round(span)))


def _reading_order(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(item: tuple[int, dict[str, Any]]) -> tuple[float, float, int]:
        i, p = item
        gp = p.get("gridPos")
        gp = gp if isinstance(gp, dict) else {}
        y, x = gp.get("y"), gp.get("x")
        return (y if isinstance(y, int | float) else math.inf, x if isinstance(x, int | float) else 0, i)

    return [p for _, p in sorted(enumerate(panels), key=key)]


def from_grafana(text: str | dict[str, Any]) -> GrafanaImport:
    """A Grafana dashboard JSON (text or parsed; an API export's ``{"dashboard": ...}`` too) as pitwall's."""
    if isinstance(text, str):
        try:
            g = json.loads(text)
        except ValueError as e:
            raise BadData(f"not a JSON document: {e}") from None
    else:
        g = text
    if isinstance(g, dict) and isinstance(g.get("dashboard"), dict):
        g = g["dashboard"]
    if not isinstance(g, dict) or not isinstance(g.get("panels", []), list) or not is_grafana(g):
        raise BadData("not a Grafana dashboard: expected an object with 'panels' (or 'rows' before schemaVersion 16)")
    c = _Converter(g)
    d = c.dashboard()
    return GrafanaImport(d, c.warnings)
