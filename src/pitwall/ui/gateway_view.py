"""What the API gateway pages show: per consumer and per route, Kong's series read by PromQL, and each
consumer's configuration from the gateway's loaded declarative config (credentials redacted).

Every number is one grouped PromQL query over the page's range (``rate(...[range])`` at its end), so 200
consumers cost a fixed number of queries; each cell links to the metrics explorer with the query of that one
row. Rate-limited requests are ``code="429", source="kong"``: Kong's prometheus plugin has no rate-limit
series, and the rate-limiting plugin's refusal is a 429 the gateway answers itself (an upstream's own 429 is
``source="service"``). ``GatewaySource`` is the UI's read interface onto the gateway
(``traffic.gateway.wiring.GatewayPart`` fits it); without one the pages still show the series.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

from pitwall.ui.objects import quote
from pitwall.ui.queries import MetricsView
from pitwall.ui.timerange import TimeRange

__all__ = [
    "COLUMNS",
    "ConsumerConfig",
    "GatewaySource",
    "Stats",
    "consumer_charts",
    "consumer_config",
    "consumer_stats",
    "route_stats",
    "sort_rows",
]

Obj = dict[str, Any]
REQS = "kong_http_requests_total"
LATENCY = "kong_request_latency_ms_bucket"
BYTES = "kong_bandwidth_bytes"
# Credential kinds of the declarative format and the auth plugin each belongs to.
AUTH_KINDS = {"keyauth_credentials": "key-auth", "basicauth_credentials": "basic-auth", "jwt_secrets": "jwt"}
# Field names never shown, in credentials and in plugin configs (matched as substrings, lower case).
SECRET_WORDS = ("key", "secret", "password", "token", "credential", "authorization", "cookie")
REDACTED = "<redacted>"
# Sortable columns: query-string name -> (header, attribute).
COLUMNS = {"name": ("Name", "name"), "rps": ("Requests/s", "rps"), "err5": ("5xx %", "err5"),
           "err4": ("4xx %", "err4"), "p50": ("p50", "p50"), "p99": ("p99", "p99"),
           "limited": ("429/s", "limited"), "bw_in": ("In", "bw_in"), "bw_out": ("Out", "bw_out")}


class KongEntities(Protocol):
    """The entities of one loaded declarative configuration (``KongState``)."""

    @property
    def consumers(self) -> list[Obj]: ...

    @property
    def plugins(self) -> list[Obj]: ...

    @property
    def routes(self) -> list[Obj]: ...

    @property
    def services(self) -> list[Obj]: ...


class GatewaySource(Protocol):
    """The gateway's configuration in force."""

    @property
    def state(self) -> KongEntities: ...


@dataclass
class Stats:
    """One row: a consumer, or a route of a service. Rates per second, ratios 0..1, latencies in ms,
    bandwidth in bytes/s; ``links`` maps a column to its explorer URL."""

    name: str
    service: str = ""
    route: str = ""
    configured: bool = False
    groups: list[str] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    rps: float | None = None
    err5: float | None = None
    err4: float | None = None
    p50: float | None = None
    p99: float | None = None
    limited: float | None = None
    bw_in: float | None = None
    bw_out: float | None = None
    links: dict[str, str] = field(default_factory=dict)


def consumer_name(c: Obj) -> str:
    """The ``consumer`` label Kong's prometheus plugin gives this consumer: username, else custom_id, else id."""
    return str(c.get("username") or c.get("custom_id") or c.get("id") or "")


def window(tr: TimeRange) -> str:
    """The rate window of the page's numbers: its whole range (at least a minute)."""
    return f"{max(tr.span_ms // 1000, 60)}s"


def explore(expr: str, tr: TimeRange) -> str:
    return "/graph?" + urlencode({"expr": expr, **tr.params()})


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


class _Queries:
    """The column queries over one selector, grouped by ``by`` (or for one row when ``by`` is empty)."""

    def __init__(self, sel: str, by: str, w: str) -> None:
        self.sel, self.by, self.w = sel, by, w

    def _s(self, extra: str = "") -> str:
        return "{" + ",".join(x for x in (self.sel, extra) if x) + "}"

    def _sum(self, inner: str) -> str:
        return f"sum by ({self.by}) ({inner})" if self.by else f"sum({inner})"

    def rate(self, extra: str = "") -> str:
        return self._sum(f"rate({REQS}{self._s(extra)}[{self.w}])")

    def exprs(self) -> dict[str, str]:
        le = f"{self.by}, le" if self.by else "le"
        total = self.rate()
        e5, e4 = self.rate('code=~"5.."'), self.rate('code=~"4.."')
        ingress, egress = self._s('direction="ingress"'), self._s('direction="egress"')
        return {
            "rps": total,
            "err5": f"{e5} / {total}",
            "err4": f"{e4} / {total}",
            "p50": f"histogram_quantile(0.5, sum by ({le}) (rate({LATENCY}{self._s()}[{self.w}])))",
            "p99": f"histogram_quantile(0.99, sum by ({le}) (rate({LATENCY}{self._s()}[{self.w}])))",
            "limited": self.rate('code="429",source="kong"'),
            "bw_in": self._sum(f"rate({BYTES}{ingress}[{self.w}])"),
            "bw_out": self._sum(f"rate({BYTES}{egress}[{self.w}])"),
        }


def _fill(mv: MetricsView, tr: TimeRange, tenant: str, sel: str, by: tuple[str, ...],
          row_of: Callable[[dict[str, str]], Stats]) -> None:
    """Run each column's grouped query and set it on the row ``row_of`` picks for each result. The error
    ratios are divided here from their numerators (what the linked ratio query computes), so the total
    rate is evaluated once, not three times."""
    q = _Queries(sel, ", ".join(by), window(tr))
    exprs = q.exprs()
    exprs["err5"], exprs["err4"] = q.rate('code=~"5.."'), q.rate('code=~"4.."')
    for col, expr in exprs.items():
        for lb, v in mv.vector(expr, tr.end_ms, tenant):
            setattr(row_of(dict(lb)), col, _finite(v))


def _row_links(row: Stats, sel: str, tr: TimeRange) -> None:
    for col, expr in _Queries(sel, "", window(tr)).exprs().items():
        row.links[col] = explore(expr, tr)


def _finish(rows: Iterable[Stats]) -> None:
    """Error rates (as ``_fill`` left them) become ratios of the request rate; with requests counted, a
    missing error or 429 rate means none happened; with none, a ratio is undefined and stays absent."""
    for r in rows:
        if r.rps:
            r.err5 = (r.err5 or 0.0) / r.rps
            r.err4 = (r.err4 or 0.0) / r.rps
            r.limited = r.limited if r.limited is not None else 0.0
        else:
            r.err5 = r.err4 = None


def consumer_stats(mv: MetricsView, tr: TimeRange, gw: GatewaySource | None, tenant: str = "default",
                   only: str = "") -> list[Stats]:
    """Every consumer of the configuration in force plus every one seen only in the series, with its numbers
    (only the one named ``only`` when given)."""
    rows: dict[str, Stats] = {}
    for c in gw.state.consumers if gw is not None else []:
        name = consumer_name(c)
        if only and name != only:
            continue
        rows[name] = Stats(name=name, configured=True, groups=_groups(c),
                           auth=sorted(AUTH_KINDS[k] for k in AUTH_KINDS if c.get(k)))

    def row_of(lb: dict[str, str]) -> Stats:
        name = lb.get("consumer", "")
        return rows.setdefault(name, Stats(name=name))

    sel = f'job="kong",consumer="{quote(only)}"' if only else 'job="kong",consumer!=""'
    _fill(mv, tr, tenant, sel, ("consumer",), row_of)
    rows.pop("", None)
    for r in rows.values():
        _row_links(r, f'job="kong",consumer="{quote(r.name)}"', tr)
    _finish(rows.values())
    return list(rows.values())


def route_stats(mv: MetricsView, tr: TimeRange, gw: GatewaySource | None, tenant: str = "default",
                consumer: str = "") -> list[Stats]:
    """Every route (with its service) of the configuration and of the series, with its numbers; of one
    consumer's requests when ``consumer`` is given (then only routes it called)."""
    rows: dict[tuple[str, str], Stats] = {}
    configured: set[tuple[str, str]] = set()
    if gw is not None:
        services = {s.get("id"): str(s.get("name") or s.get("id") or "") for s in gw.state.services}
        configured = {(services.get(rt.get("service"), ""), str(rt.get("name") or rt.get("id") or ""))
                      for rt in gw.state.routes}
    if not consumer:
        for svc, name in configured:
            rows[(svc, name)] = Stats(name=f"{svc}/{name}", service=svc, route=name, configured=True)

    def row_of(lb: dict[str, str]) -> Stats:
        key = (lb.get("service", ""), lb.get("route", ""))
        return rows.setdefault(key, Stats(name=f"{key[0]}/{key[1]}", service=key[0], route=key[1],
                                          configured=key in configured))

    base = 'job="kong"' + (f',consumer="{quote(consumer)}"' if consumer else "")
    _fill(mv, tr, tenant, base, ("service", "route"), row_of)
    for r in rows.values():
        _row_links(r, f'{base},service="{quote(r.service)}",route="{quote(r.route)}"', tr)
    _finish(rows.values())
    return list(rows.values())


def sort_rows(rows: list[Stats], key: str, desc: bool) -> list[Stats]:
    """Rows by a column of ``COLUMNS`` (unknown: by name); absent numbers last either way."""
    attr = COLUMNS.get(key, COLUMNS["name"])[1]
    if attr == "name":
        return sorted(rows, key=lambda r: r.name, reverse=desc)
    have = [r for r in rows if getattr(r, attr) is not None]
    none = sorted((r for r in rows if getattr(r, attr) is None), key=lambda r: r.name)
    # ties keep the name order either way (a stable sort over rows sorted by name)
    return sorted(sorted(have, key=lambda r: r.name), key=lambda r: getattr(r, attr), reverse=desc) + none


def _groups(c: Obj) -> list[str]:
    return sorted({str(a.get("group", "")) for a in c.get("acls") or [] if isinstance(a, dict)})


def redact(v: Any, name: str = "") -> Any:
    """``v`` with every field whose name says it holds a secret replaced (recursively); unset (null) fields
    are left out."""
    if name and any(w in name.lower() for w in SECRET_WORDS):
        return REDACTED if v not in (None, "", [], {}) else v
    if isinstance(v, dict):
        return {str(k): redact(x, str(k)) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [redact(x, name) for x in v]
    return v


@dataclass
class ConsumerConfig:
    """A configured consumer as the page shows it: never a key, secret or password."""

    name: str
    id: str
    username: str
    custom_id: str
    tags: list[str]
    groups: list[str]
    credentials: list[dict[str, Any]]  # kind, plugin, id and the non-secret fields
    plugins: list[dict[str, Any]]  # name, enabled, scope, redacted config


def consumer_config(gw: GatewaySource | None, name: str) -> ConsumerConfig | None:
    """The consumer whose ``consumer`` label is ``name``, with the plugins scoped to it; None when it is not
    in the configuration in force."""
    if gw is None:
        return None
    c = next((c for c in gw.state.consumers if consumer_name(c) == name), None)
    if c is None:
        return None
    creds = []
    for kind, plugin in AUTH_KINDS.items():
        for cr in c.get(kind) or []:
            fields = {k: v for k, v in redact(cr).items() if k not in ("id", "tags", "consumer")}
            creds.append({"kind": kind, "plugin": plugin, "id": str(cr.get("id", "")), "fields": fields})
    services = {s.get("id"): str(s.get("name") or s.get("id")) for s in gw.state.services}
    routes = {r.get("id"): str(r.get("name") or r.get("id")) for r in gw.state.routes}
    plugins = []
    for p in gw.state.plugins:
        if p.get("consumer") != c.get("id"):
            continue
        scope = ["consumer"] + ([f"service {services.get(p['service'], p['service'])}"] if p.get("service") else []) \
            + ([f"route {routes.get(p['route'], p['route'])}"] if p.get("route") else [])
        plugins.append({"name": str(p.get("name", "")), "enabled": bool(p.get("enabled", True)),
                        "scope": " + ".join(scope), "config": redact(p.get("config") or {})})
    return ConsumerConfig(name=name, id=str(c.get("id", "")), username=str(c.get("username") or ""),
                          custom_id=str(c.get("custom_id") or ""), tags=[str(t) for t in c.get("tags") or []],
                          groups=_groups(c), credentials=creds, plugins=plugins)


def consumer_charts(name: str, tr: TimeRange) -> list[dict[str, Any]]:
    """Chart sources (``/ui/api/chart``) of one consumer over the range: requests/s by code class, p50/p99
    latency, 429s/s, bandwidth in/out; each with its queries."""
    sel = f'job="kong",consumer="{quote(name)}"'
    lat = f"sum by (le) (rate({LATENCY}{{{sel}}}[1m]))"
    charts = [
        ("Requests/s by code class", [(f'sum(rate({REQS}{{{sel},code=~"{c}.."}}[1m]))', f"{c}xx")
                                      for c in "2345"]),
        ("Latency (ms)", [(f"histogram_quantile(0.5, {lat})", "p50"), (f"histogram_quantile(0.99, {lat})", "p99")]),
        ("Rate-limited (429/s)", [(f'sum(rate({REQS}{{{sel},code="429",source="kong"}}[1m]))', "429")]),
        ("Bandwidth (bytes/s)", [(f'sum(rate({BYTES}{{{sel},direction="ingress"}}[1m]))', "in"),
                                 (f'sum(rate({BYTES}{{{sel},direction="egress"}}[1m]))', "out")]),
    ]
    out = []
    for title, qs in charts:
        pairs: list[tuple[str, str]] = []
        for expr, legend in qs:
            pairs += [("expr", expr), ("legend", legend)]
        out.append({"title": title, "src": "/ui/api/chart?" + urlencode([*pairs, *tr.params().items()]),
                    "series": [(legend, explore(expr, tr)) for expr, legend in qs]})
    return out
