"""Plumbing shared by the UI's page modules: templates, the time range of a request, JSON answers."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from pitwall import __version__
from pitwall.core.errors import PitwallError
from pitwall.core.http_errors import status_of
from pitwall.core.oidc import csrf_field
from pitwall.core.params import tenant_of
from pitwall.metrics import TargetsSnapshot
from pitwall.ui.queries import MetricsView, query_error
from pitwall.ui.settings import UISettings
from pitwall.ui.timerange import QUICK_RANGES, REFRESH_CHOICES, TimeRange

if TYPE_CHECKING:
    from pitwall.ui.alerts_view import AlertsView
    from pitwall.ui.backups_view import BackupsSource
    from pitwall.ui.chaos_view import ChaosSource
    from pitwall.ui.config_view import ConfigSource
    from pitwall.ui.dashboards import DashboardStore
    from pitwall.ui.gateway_view import GatewaySource
    from pitwall.ui.incidents_view import IncidentsSource
    from pitwall.ui.logs_view import LogsView
    from pitwall.ui.pipelines_view import PipelinesSource
    from pitwall.ui.releases_view import ChangesSource, ReleasesSource
    from pitwall.ui.slo_view import SLOSource
    from pitwall.ui.status_view import StatusView
    from pitwall.ui.traces_view import TracesView
    from pitwall.ui.workloads_view import WorkloadsSource

HERE = Path(__file__).resolve().parent
# In three groups, a gap between them: watching (signals), responding (alerts, incidents, budgets), running
# (workloads and what changes them); the server's own pages last.
NAV = [
    ("overview", "/", "Overview", "o"),
    ("metrics", "/graph", "Metrics", "m"),
    ("logs", "/logs", "Logs", "l"),
    ("traces", "/traces", "Traces", "t"),
    ("services", "/services", "Service map", "s"),
    ("dashboards", "/dashboards", "Dashboards", "d"),
    ("alerts", "/alerts", "Alerts", "a"),
    ("incidents", "/incidents", "Incidents", "i"),
    ("slos", "/slos", "SLOs", "b"),
    ("workloads", "/workloads", "Workloads", "w"),
    ("releases", "/releases", "Releases", "r"),
    ("gateway", "/gateway", "API gateway", "y"),
    ("pipelines", "/pipelines", "Pipelines", "p"),
    ("chaos", "/chaos", "Chaos", "x"),
    ("backups", "/backups", "Backups", "k"),
    ("config", "/config", "Config", "c"),
    ("targets", "/targets", "Targets", "g"),
    ("status", "/status", "Status", "u"),
]
NAV_GROUP_STARTS = {"alerts", "workloads", "targets"}


@dataclass
class UIDeps:
    """Everything the pages read, each through its pillar's public query interface; None = not available."""

    settings: UISettings
    metrics: MetricsView
    targets: Callable[[], TargetsSnapshot]
    traces: TracesView | None
    logs: LogsView | None
    alerts: AlertsView | None
    dashboards: DashboardStore
    workloads: WorkloadsSource | None = None
    releases: ReleasesSource | None = None
    chaos: ChaosSource | None = None
    changes: ChangesSource | None = None  # the change-event stream (incidents' ChangeLog)
    status: StatusView | None = None
    incidents: IncidentsSource | None = None
    slos: SLOSource | None = None
    pipelines: PipelinesSource | None = None
    backups: BackupsSource | None = None
    config: ConfigSource | None = None  # the registry's ConfigConsole
    gateway: GatewaySource | None = None  # the API gateway's configuration in force (its GatewayPart)


def fmt_num(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e9:
        return f"{v / 1e9:.{digits}g}G"
    if a >= 1e6:
        return f"{v / 1e6:.{digits}g}M"
    if a >= 1e3:
        return f"{v / 1e3:.{digits}g}k"
    return f"{v:.{digits}g}"


def _fmt_pct(v: float | None) -> str:
    return "—" if v is None else f"{v * 100:.2f}%"


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v / 1000:.2f}s" if v >= 1000 else f"{v:.1f}ms"


def time_tag(ms: int, *, precise: bool = False, zone: bool = True) -> Markup:
    """A ``<time>`` in UTC, 24-hour, that the page's script rewrites into the zone the user chose
    (``zone=False``: without the zone's name, for long lists under a header that names it)."""
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    text = dt.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if precise else dt.strftime("%Y-%m-%d %H:%M:%S")
    extra = (' data-precision="ms"' if precise else "") + ("" if zone else ' data-bare="1"')
    return Markup(f'<time datetime="{dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")}" '
                  f'data-ms="{int(ms)}"{extra}>{text}{" UTC" if zone else ""}</time>')


def _fmt_ts(v: float | None) -> Markup | str:
    if not v:
        return "—"
    return time_tag(int(v * 1000))


def _fmt_ns(v: int) -> Markup:
    return time_tag(v // 1_000_000, precise=True)


def fmt_bytes(v: float | None) -> str:
    """Bytes in binary units (KiB, MiB, ...), as Prometheus' status pages show sizes."""
    if v is None:
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TiB"


def fmt_duration(s: float) -> str:
    d, rest = divmod(int(s), 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    return (f"{d}d " if d else "") + (f"{h}h " if h or d else "") + f"{m}m {sec}s"


def make_env() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = fmt_num
    env.filters["pct"] = _fmt_pct
    env.filters["ms"] = _fmt_ms
    env.filters["ts"] = _fmt_ts
    env.filters["ns_ts"] = _fmt_ns
    env.filters["ms_ts"] = lambda ms: time_tag(int(ms)) if ms else "—"
    env.filters["utf8"] = lambda b: bytes(b)[:4096].decode(errors="replace")
    env.filters["dt"] = lambda d: time_tag(int(d.timestamp() * 1000)) if d else "—"
    env.filters["line_ts"] = lambda ns: time_tag(int(ns) // 1_000_000, precise=True, zone=False)
    env.filters["bytes"] = fmt_bytes
    env.filters["duration"] = fmt_duration
    env.filters["tojson_attr"] = lambda v: json.dumps(v, separators=(",", ":"))
    env.globals["nav"] = NAV
    env.globals["nav_group_starts"] = NAV_GROUP_STARTS
    env.globals["version"] = __version__
    env.globals["quick_ranges"] = QUICK_RANGES
    env.globals["refresh_choices"] = REFRESH_CHOICES
    env.globals["urlencode"] = urlencode
    env.globals["csrf_field"] = csrf_field  # the session's CSRF token in every POST form (core.oidc)
    return env


class Pages:
    """Renders templates with what every page needs: the time range, the current page, the URL."""

    def __init__(self, deps: UIDeps) -> None:
        self.deps = deps
        self.env = make_env()

    def time_range(self, request: Request) -> TimeRange:
        p = request.query_params
        return TimeRange.parse(p.get("from"), p.get("to"), p.get("refresh"), self.deps.settings.default_range)

    def render(self, request: Request, template: str, page: str, tr: TimeRange | None, status: int = 200,
               **ctx: Any) -> HTMLResponse:
        keep = [(k, v) for k, v in request.query_params.multi_items() if k not in ("from", "to", "refresh")]
        html = self.env.get_template(template).render(
            request=request, page=page, tr=tr, keep=keep, path=request.url.path,
            tenant=tenant_of(request), **ctx)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def range_or_error(self, request: Request) -> tuple[TimeRange, str]:
        """The request's range, or the default one and the error to show when it is invalid."""
        try:
            return self.time_range(request), ""
        except PitwallError as e:
            return TimeRange.parse(None, None, None, self.deps.settings.default_range), e.message


def json_response(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, separators=(",", ":"), allow_nan=False), status_code=status,
                    media_type="application/json", headers={"Cache-Control": "no-store"})


def json_error(e: PitwallError) -> Response:
    """A query's error for the page's scripts: HTTP 200 with ``error`` (so browsers log no failed
    resource for a typo in a query), the status it would have had inside."""
    return json_response({"error": {**query_error(e).to_json(), "status": status_of(e)}})


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a (blocking, CPU-bound) query off the event loop."""
    return await run_in_threadpool(fn, *args, **kwargs)


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name, "")
    try:
        v = int(raw) if raw else default
    except ValueError:
        v = default
    return max(lo, min(v, hi))
