"""Dashboards as YAML: the format the web UI renders, and the demo's two dashboards.

One file per dashboard (``*.yaml`` in this directory for the demo's)::

    title: Service overview            # required
    uid: service-overview              # optional; default: the file name without .yaml
    description: RED metrics, logs and traces per service
    refresh: 10s                       # auto-refresh interval (Prometheus duration), optional
    time: {from: now-15m, to: now}     # default range: "now", "now-<duration>" or RFC 3339
    variables:                         # template variables, referenced as $name in queries
      - name: service                  # [a-zA-Z_][a-zA-Z0-9_]*
        label: service_name            # the label whose values the query lists
        query: 'label_values(traces_span_metrics_calls_total, service_name)'
        # or: values: [a, b]           (a fixed list instead of a query)
        multi: true                    # several values; "$service" becomes "a|b" (for =~)
        include_all: true              # an "All" entry; "$service" becomes ".*"
        default: All
    rows:
      - title: Traffic
        collapsed: false
        panels:
          - title: Request rate        # required
            type: timeseries           # timeseries | stat | gauge | table | logs | traces
            datasource: prometheus     # prometheus (PromQL) | loki (LogQL) | traces (trace search)
            query: 'sum by (service_name) (rate(...{service_name=~"$service"}[1m]))'
            legend: '{{service_name}}' # optional, Prometheus legend template
            unit: reqps                # optional: reqps, s, ms, percent, percentunit, bytes, short, currencyUSD
            width: 6                   # optional grid width out of 12 (default: 12 / panels in the row)
            thresholds: [{value: 0.05, color: orange}, {value: 0.2, color: red}]   # optional
            min: 0                     # optional axis/gauge bounds
            max: 1
            limit: 50                  # optional, rows/lines/traces shown (logs, traces, table)

Datasource and panel type go together: ``prometheus`` feeds timeseries, stat,
gauge and table panels; ``loki`` feeds logs panels (a log query) and
timeseries/stat panels (a LogQL metric query); ``traces`` feeds traces panels,
whose query is space-separated ``key=value`` terms of Zipkin's
``/api/v2/traces`` search: ``service=``, ``spanName=``, ``minDuration=``
(``500ms``), ``maxDuration=``, ``annotationQuery=`` (``error``), ``limit=``.

Variables are replaced textually before the query runs: ``$name`` or
``${name}``; ``$__range`` and ``$__interval`` are the chosen range and step.

:func:`load_dashboard` parses and validates one file, :func:`shipped_dashboards`
returns the demo's. The models reject unknown keys and mismatched
datasource/type pairs, naming the offending key, so a typo is an error rather
than a blank panel.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pitwall.core.errors import ConfigError

__all__ = [
    "Dashboard",
    "Panel",
    "Row",
    "Threshold",
    "TimeRange",
    "Variable",
    "load_dashboard",
    "shipped_dashboards",
    "substitute",
]

PanelType = Literal["timeseries", "stat", "gauge", "table", "logs", "traces"]
Datasource = Literal["prometheus", "loki", "traces"]

ALLOWED_TYPES: dict[str, frozenset[str]] = {
    "prometheus": frozenset({"timeseries", "stat", "gauge", "table"}),
    "loki": frozenset({"logs", "timeseries", "stat", "table"}),
    "traces": frozenset({"traces", "table"}),
}
_VAR_RE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TimeRange(_Model):
    from_: str = Field("now-15m", alias="from")
    to: str = "now"


class Variable(_Model):
    name: str = Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    label: str | None = None
    query: str | None = None
    values: list[str] | None = None
    multi: bool = True
    include_all: bool = True
    default: str = "All"

    @model_validator(mode="after")
    def _one_source(self) -> Variable:
        if (self.query is None) == (self.values is None):
            raise ValueError("give either query or values")
        return self


class Threshold(_Model):
    value: float
    color: str


class Panel(_Model):
    title: str
    type: PanelType
    datasource: Datasource
    query: str = Field(min_length=1)
    legend: str | None = None
    unit: str | None = None
    width: int | None = Field(None, ge=1, le=12)
    thresholds: list[Threshold] = Field(default_factory=list)
    min: float | None = None
    max: float | None = None
    limit: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _type_fits_datasource(self) -> Panel:
        if self.type not in ALLOWED_TYPES[self.datasource]:
            raise ValueError(f"a {self.type} panel cannot show {self.datasource} data "
                             f"(allowed: {', '.join(sorted(ALLOWED_TYPES[self.datasource]))})")
        return self


class Row(_Model):
    title: str
    collapsed: bool = False
    panels: list[Panel] = Field(min_length=1)


class Dashboard(_Model):
    title: str
    uid: str = ""
    description: str = ""
    refresh: str | None = None
    time: TimeRange = Field(default_factory=lambda: TimeRange(**{"from": "now-15m"}))
    variables: list[Variable] = Field(default_factory=list)
    rows: list[Row] = Field(min_length=1)

    @model_validator(mode="after")
    def _variables_defined(self) -> Dashboard:
        names = {v.name for v in self.variables}
        for r in self.rows:
            for p in r.panels:
                for m in _VAR_RE.finditer(p.query):
                    ref = m.group(1) or m.group(2)
                    if ref not in names and not ref.startswith("__"):
                        raise ValueError(f"panel {p.title!r} uses undefined variable ${ref}")
        return self


def substitute(query: str, values: dict[str, str]) -> str:
    """Replace ``$name``/``${name}`` in ``query``; unknown names are left as they are."""
    return _VAR_RE.sub(lambda m: values.get(m.group(1) or m.group(2), m.group(0)), query)


def load_dashboard(path: Path) -> Dashboard:
    """Parse and validate one dashboard file; problems raise ConfigError naming the key."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"dashboard {path.name}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"dashboard {path.name}: top level must be a mapping")
    try:
        board = Dashboard.model_validate(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            msgs.append(f"{key}: {msg}" if key else msg)
        raise ConfigError(f"dashboard {path.name}:\n" + "\n".join(msgs)) from e
    if not board.uid:
        board.uid = path.name.removesuffix(".yaml")
    return board


def shipped_dashboards() -> list[Dashboard]:
    """The demo's dashboards, sorted by file name."""
    root = resources.files(__name__)
    names = sorted(p.name for p in root.iterdir() if p.name.endswith(".yaml"))
    with resources.as_file(root) as directory:
        return [load_dashboard(Path(directory) / n) for n in names]
