"""Istio's VirtualService and DestinationRule compiled into one immutable ``MeshConfig``.

The proxy reads the objects through the Kubernetes API; every change builds
a whole new ``MeshConfig`` (``compile_mesh``) and swaps it in with one
assignment, so a request that took the config at its start sees the old or
the new one, never half of each. Compilation validates what the CRD schema
cannot (RE2 regexes, durations): a VirtualService or DestinationRule with an
error is skipped whole and the error kept in ``MeshConfig.errors`` (the
previous behaviour of that host stays: no rule for it), never half applied.

Host names follow Istio: a short name (``reviews``) is relative to the
namespace of the object that names it; ``reviews.ns``, ``reviews.ns.svc``
and the FQDN ``reviews.ns.svc.cluster.local`` name the same Service;
``*.ns.svc.cluster.local`` and ``*`` are wildcards. When several
VirtualServices (or DestinationRules) claim a host, the oldest wins, as
Istio merges none for sidecars. A VirtualService applies to mesh traffic
when its ``gateways`` is empty or lists ``mesh``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from pitwall.core import regex as re2
from pitwall.traffic.authz import AuthzConfig
from pitwall.traffic.peerauth import PeerAuthConfig
from pitwall.traffic.pods import PodInfo
from pitwall.traffic.serviceentry import ServiceEntries

__all__ = [
    "DEFAULT_RETRY",
    "ConnPool",
    "DestRule",
    "Fault",
    "HeaderOps",
    "HttpMatch",
    "LbPolicy",
    "MeshConfig",
    "Outlier",
    "Redirect",
    "Request",
    "Retry",
    "Rewrite",
    "Route",
    "RouteDest",
    "StringMatch",
    "compile_mesh",
    "fqdn",
    "parse_duration",
]

Obj = dict[str, Any]
SvcKey = tuple[str, str]
DOMAIN = "svc.cluster.local"
UNLIMITED = 2**32 - 1
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(h|m|s|ms|us|µs|ns)$")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


class ConfigError(ValueError):
    """A field the schema accepts but the mesh cannot use (bad regex, bad duration)."""


def parse_duration(v: Any, path: str) -> float:
    """Seconds of a protobuf Duration string (``"1.5s"``, ``"100ms"``, ``"1h"``)."""
    m = _DURATION.match(str(v).strip()) if v is not None else None
    if not m:
        raise ConfigError(f"{path}: invalid duration {v!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def fqdn(host: str, namespace: str) -> str:
    """Istio's reading of a host name written in ``namespace``."""
    h = host.strip().lower().rstrip(".")
    if h == "*" or h.startswith("*."):
        return h
    parts = h.split(".")
    if len(parts) == 1:
        return f"{h}.{namespace}.{DOMAIN}"
    if len(parts) == 2:
        return f"{h}.{DOMAIN}"
    if len(parts) == 3 and parts[2] == "svc":
        return f"{h}.cluster.local"
    return h


def _host_matches(pattern: str, name: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return pattern == name


# -- requests as the matcher sees them --------------------------------------------------------


@dataclass(slots=True)
class Request:
    """What a route match reads of one request (headers lower-cased, last value wins for matching)."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]
    authority: str
    port: int
    source: PodInfo | None
    scheme: str = "http"

    @property
    def uri_path(self) -> str:
        return self.path.split("?", 1)[0]

    def query(self) -> dict[str, str]:
        q = self.path.split("?", 1)
        return dict(parse_qsl(q[1], keep_blank_values=True)) if len(q) == 2 else {}


# -- matching ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StringMatch:
    """Istio's StringMatch: exact, prefix or (RE2, whole string) regex."""

    kind: str
    value: str
    ignore_case: bool = False
    rx: re2.Regex | None = None

    def test(self, s: str) -> bool:
        if self.kind == "regex":
            assert self.rx is not None
            return self.rx.matches(s)
        if self.ignore_case:
            s, v = s.lower(), self.value.lower()
        else:
            v = self.value
        return s == v if self.kind == "exact" else s.startswith(v)


def _string_match(m: Any, path: str, ignore_case: bool = False) -> StringMatch:
    if not isinstance(m, dict) or len(m) != 1:
        raise ConfigError(f"{path}: one of exact, prefix, regex is required")
    kind, value = next(iter(m.items()))
    if kind not in ("exact", "prefix", "regex"):
        raise ConfigError(f"{path}: unknown match type {kind!r}")
    rx = None
    if kind == "regex":
        try:
            rx = re2.compile(str(value), anchored=True)
        except re2.RegexError as e:
            raise ConfigError(f"{path}.regex: {e}") from e
    return StringMatch(kind, str(value), ignore_case, rx)


@dataclass(frozen=True)
class HttpMatch:
    """One HTTPMatchRequest: every given condition must hold."""

    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: tuple[tuple[str, StringMatch | None], ...] = ()  # None: present with any value
    without_headers: tuple[tuple[str, StringMatch | None], ...] = ()
    query: tuple[tuple[str, StringMatch | None], ...] = ()
    source_labels: tuple[tuple[str, str], ...] = ()
    source_namespace: str = ""
    port: int = 0

    def test(self, r: Request) -> bool:
        if self.port and r.port != self.port:
            return False
        if self.uri is not None and not self.uri.test(r.uri_path):
            return False
        if self.method is not None and not self.method.test(r.method):
            return False
        if self.scheme is not None and not self.scheme.test(r.scheme):
            return False
        if self.authority is not None and not self.authority.test(r.authority):
            return False
        for name, sm in self.headers:
            v = r.headers.get(name)
            if v is None or (sm is not None and not sm.test(v)):
                return False
        for name, sm in self.without_headers:
            v = r.headers.get(name)
            if v is not None and (sm is None or sm.test(v)):
                return False
        if self.query:
            q = r.query()
            for name, sm in self.query:
                v = q.get(name)
                if v is None or (sm is not None and not sm.test(v)):
                    return False
        if self.source_labels or self.source_namespace:
            src = r.source
            if src is None:
                return False
            if self.source_namespace and src.namespace != self.source_namespace:
                return False
            if any(src.labels.get(k) != v for k, v in self.source_labels):
                return False
        return True


def _header_matches(m: Any, path: str, lower: bool = True) -> tuple[tuple[str, StringMatch | None], ...]:
    out: list[tuple[str, StringMatch | None]] = []
    for name, sm in (m or {}).items():
        key = str(name).lower() if lower else str(name)
        out.append((key, _string_match(sm, f"{path}.{name}") if sm else None))
    return tuple(out)


def _http_match(m: Obj, path: str) -> HttpMatch:
    ic = bool(m.get("ignoreUriCase"))
    return HttpMatch(
        uri=_string_match(m["uri"], f"{path}.uri", ic) if m.get("uri") else None,
        scheme=_string_match(m["scheme"], f"{path}.scheme") if m.get("scheme") else None,
        method=_string_match(m["method"], f"{path}.method") if m.get("method") else None,
        authority=_string_match(m["authority"], f"{path}.authority") if m.get("authority") else None,
        headers=_header_matches(m.get("headers"), f"{path}.headers"),
        without_headers=_header_matches(m.get("withoutHeaders"), f"{path}.withoutHeaders"),
        query=_header_matches(m.get("queryParams"), f"{path}.queryParams", lower=False),
        source_labels=tuple(sorted((str(k), str(v)) for k, v in (m.get("sourceLabels") or {}).items())),
        source_namespace=str(m.get("sourceNamespace") or ""),
        port=int(m.get("port") or 0),
    )


# -- route actions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class HeaderOps:
    """Headers set, added, removed (Istio's HeaderOperations)."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)

    def apply(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        drop = {k.lower() for k in self.remove} | {k.lower() for k, _ in self.set}
        out = [(k, v) for k, v in headers if k.lower() not in drop]
        out += self.set
        out += self.add
        return out


def _header_ops(h: Any) -> HeaderOps:
    h = h or {}
    return HeaderOps(set=tuple((str(k), str(v)) for k, v in (h.get("set") or {}).items()),
                     add=tuple((str(k), str(v)) for k, v in (h.get("add") or {}).items()),
                     remove=tuple(str(k) for k in h.get("remove") or []))


@dataclass(frozen=True)
class RouteDest:
    """One weighted destination: a Service (by FQDN), its subset and port."""

    host: str
    subset: str = ""
    port: int = 0
    weight: int = 100
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()
    # Where to go, in order, when this destination has no ready endpoint (Consul's resolver Failover; Istio
    # has no such field: only translated objects set ``x-failover``).
    failover: tuple[RouteDest, ...] = ()


@dataclass(frozen=True)
class Redirect:
    uri: str = ""
    authority: str = ""
    scheme: str = ""
    port: int = 0
    code: int = 301


@dataclass(frozen=True)
class Rewrite:
    uri: str | None = None
    authority: str = ""
    regex: re2.Regex | None = None
    regex_rewrite: str = ""


@dataclass(frozen=True)
class Retry:
    """A retry policy as Envoy runs it: ``attempts`` retries after the first try."""

    attempts: int
    per_try_timeout_s: float | None = None
    on: frozenset[str] = frozenset()
    codes: frozenset[int] = frozenset()


# Istio's route default when ``retries`` is unset (pilot/pkg/networking/core/route/retry).
DEFAULT_RETRY = Retry(2, None, frozenset({"connect-failure", "refused-stream", "unavailable", "cancelled",
                                          "retriable-status-codes"}))
NO_RETRY = Retry(0)


@dataclass(frozen=True)
class Fault:
    delay_s: float = 0.0
    delay_pct: float = 0.0
    abort_status: int = 0
    abort_grpc: int | None = None
    abort_pct: float = 0.0

    def delay(self) -> float:
        return self.delay_s if self.delay_s and random.random() * 100 < self.delay_pct else 0.0

    def abort(self) -> bool:
        return bool(self.abort_status or self.abort_grpc is not None) and random.random() * 100 < self.abort_pct


@dataclass(frozen=True)
class Route:
    """One HTTPRoute of a VirtualService (or the default route of a Service without one)."""

    name: str
    matches: tuple[HttpMatch, ...]
    dests: tuple[RouteDest, ...]
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    direct: tuple[int, bytes] | None = None
    timeout_s: float | None = None
    retry: Retry = DEFAULT_RETRY
    fault: Fault | None = None
    request_headers: HeaderOps = HeaderOps()
    response_headers: HeaderOps = HeaderOps()
    mirrors: tuple[tuple[RouteDest, float], ...] = ()  # (destination, percent of requests copied)

    def test(self, r: Request) -> bool:
        return not self.matches or any(m.test(r) for m in self.matches)

    def pick(self) -> RouteDest:
        if len(self.dests) == 1:
            return self.dests[0]
        total = sum(d.weight for d in self.dests)
        x = random.random() * total
        for d in self.dests:
            x -= d.weight
            if x < 0:
                return d
        return self.dests[-1]


def _retry(r: Any, path: str) -> Retry:
    if r is None:
        return DEFAULT_RETRY
    attempts = int(r.get("attempts") or 0)
    if attempts <= 0:
        return NO_RETRY
    on, codes = DEFAULT_RETRY.on, frozenset[int]()
    if r.get("retryOn"):
        names: set[str] = set()
        cs: set[int] = set()
        for part in str(r["retryOn"]).split(","):
            part = part.strip()
            if part.isdigit() and 100 <= int(part) <= 599:
                cs.add(int(part))
            elif part:
                names.add(part)
        if cs:
            names.add("retriable-status-codes")
        on, codes = frozenset(names), frozenset(cs)
    per_try = parse_duration(r["perTryTimeout"], f"{path}.perTryTimeout") if r.get("perTryTimeout") else None
    return Retry(attempts, per_try, on, codes)


def _pct(p: Any) -> float:
    if isinstance(p, dict):
        return float(p.get("value") or 0.0)
    return 100.0


def _fault(f: Any, path: str) -> Fault | None:
    if not f:
        return None
    d, a = f.get("delay") or {}, f.get("abort") or {}
    delay_s = 0.0
    if d.get("fixedDelay"):
        delay_s = parse_duration(d["fixedDelay"], f"{path}.delay.fixedDelay")
    elif d.get("exponentialDelay"):
        delay_s = parse_duration(d["exponentialDelay"], f"{path}.delay.exponentialDelay")
    delay_pct = _pct(d.get("percentage")) if "percentage" in d else float(d.get("percent", 100))
    status = int(a.get("httpStatus") or 0)
    grpc = a.get("grpcStatus")
    grpc_code = _GRPC_CODES.get(str(grpc)) if grpc is not None else None
    return Fault(delay_s, delay_pct if d else 0.0, status, grpc_code, _pct(a.get("percentage")) if a else 0.0)


_GRPC_CODES = {n: i for i, n in enumerate(
    ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
     "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
     "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"])}


def _http_route(r: Obj, ns: str, path: str, index: int) -> Route:
    dests = []
    for j, d in enumerate(r.get("route") or []):
        dst = d.get("destination") or {}
        if not dst.get("host"):
            raise ConfigError(f"{path}.route[{j}].destination.host: required")
        h = d.get("headers") or {}
        dests.append(RouteDest(fqdn(str(dst["host"]), ns), str(dst.get("subset") or ""),
                               int((dst.get("port") or {}).get("number") or 0),
                               int(d["weight"]) if d.get("weight") is not None else 100,
                               _header_ops(h.get("request")), _header_ops(h.get("response")),
                               tuple(RouteDest(fqdn(str(f["host"]), ns), str(f.get("subset") or ""))
                                     for f in d.get("x-failover") or ())))
    if len(dests) > 1:
        dests = [d for d in dests if d.weight > 0]  # 0-weight destinations are dropped, as Istio does
    redirect = rewrite = None
    direct: tuple[int, bytes] | None = None
    if r.get("redirect"):
        rd = r["redirect"]
        redirect = Redirect(str(rd.get("uri") or ""), str(rd.get("authority") or ""), str(rd.get("scheme") or ""),
                            int(rd.get("port") or 0), int(rd.get("redirectCode") or 301))
    elif r.get("directResponse"):
        dr = r["directResponse"]
        body = dr.get("body") or {}
        direct = (int(dr.get("status") or 200), str(body.get("string") or "").encode())
    elif not dests:
        raise ConfigError(f"{path}: one of route, redirect, directResponse is required")
    if r.get("rewrite"):
        rw = r["rewrite"]
        rx = None
        rr = rw.get("uriRegexRewrite") or {}
        if rr.get("match"):
            try:
                rx = re2.compile(str(rr["match"]))
            except re2.RegexError as e:
                raise ConfigError(f"{path}.rewrite.uriRegexRewrite.match: {e}") from e
        rewrite = Rewrite(str(rw["uri"]) if "uri" in rw else None, str(rw.get("authority") or ""), rx,
                          re.sub(r"\\(\d)", r"${\1}", str(rr.get("rewrite") or "")))
    fault = _fault(r.get("fault"), f"{path}.fault")
    timeout = parse_duration(r["timeout"], f"{path}.timeout") if r.get("timeout") else None
    retry = _retry(r.get("retries"), f"{path}.retries")
    if fault is not None:  # Istio: a faulted route has no retries and no timeout
        timeout, retry = None, NO_RETRY
    h = r.get("headers") or {}
    return Route(str(r.get("name") or f"route-{index}"),
                 tuple(_http_match(m, f"{path}.match[{k}]") for k, m in enumerate(r.get("match") or [])),
                 tuple(dests), redirect, rewrite, direct, timeout, retry, fault,
                 _header_ops(h.get("request")), _header_ops(h.get("response")), _mirrors(r, ns))


def _mirror_dest(d: Any, ns: str) -> RouteDest | None:
    if not isinstance(d, dict) or not d.get("host"):
        return None
    return RouteDest(fqdn(str(d["host"]), ns), str(d.get("subset") or ""), int((d.get("port") or {}).get("number") or 0))


def _mirrors(r: Obj, ns: str) -> tuple[tuple[RouteDest, float], ...]:
    """``mirror`` with ``mirrorPercentage`` (100 % when unset, as Istio), and the newer ``mirrors`` list."""
    out: list[tuple[RouteDest, float]] = []
    one = _mirror_dest(r.get("mirror"), ns)
    if one is not None:
        out.append((one, _pct(r["mirrorPercentage"]) if "mirrorPercentage" in r else 100.0))
    for m in r.get("mirrors") or []:
        d = _mirror_dest((m or {}).get("destination"), ns)
        if d is not None:
            out.append((d, _pct(m["percentage"]) if "percentage" in m else 100.0))
    return tuple(out)


# -- DestinationRule ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LbPolicy:
    simple: str = "LEAST_REQUEST"  # Istio's default
    hash_header: str = ""
    hash_cookie: str = ""
    hash_query: str = ""
    hash_source_ip: bool = False

    @property
    def consistent(self) -> bool:
        return bool(self.hash_header or self.hash_cookie or self.hash_query or self.hash_source_ip)


@dataclass(frozen=True)
class ConnPool:
    max_connections: int = UNLIMITED
    max_pending: int = UNLIMITED
    max_requests: int = UNLIMITED
    max_retries: int = UNLIMITED
    max_requests_per_connection: int = 0
    connect_timeout_s: float = 10.0  # Istio's default connectTimeout


@dataclass(frozen=True)
class Outlier:
    consecutive_5xx: int = 5
    consecutive_gateway: int = 0
    interval_s: float = 10.0
    base_ejection_s: float = 30.0
    max_ejection_percent: int = 10


@dataclass(frozen=True)
class Policy:
    lb: LbPolicy = LbPolicy()
    pool: ConnPool = ConnPool()
    outlier: Outlier | None = None


@dataclass(frozen=True)
class DestRule:
    """A DestinationRule: the top-level policy and each subset's labels and (merged) policy."""

    name: str
    policy: Policy
    subsets: Mapping[str, tuple[tuple[tuple[str, str], ...], Policy]] = field(default_factory=dict)
    tls_mode: str = ""  # trafficPolicy.tls.mode: ISTIO_MUTUAL / DISABLE steer the mesh hop between nodes

    def for_subset(self, subset: str) -> tuple[tuple[tuple[str, str], ...], Policy] | None:
        if not subset:
            return (), self.policy
        return self.subsets.get(subset)


def _lb(lb: Any) -> LbPolicy | None:
    if not lb:
        return None
    ch = lb.get("consistentHash")
    if ch:
        return LbPolicy("RING_HASH", str(ch.get("httpHeaderName") or "").lower(),
                        str((ch.get("httpCookie") or {}).get("name") or ""), str(ch.get("httpQueryParameterName") or ""),
                        bool(ch.get("useSourceIp")))
    simple = str(lb.get("simple") or "LEAST_REQUEST")
    return LbPolicy("LEAST_REQUEST" if simple in ("UNSPECIFIED", "LEAST_CONN") else simple)


def _int(v: Any, default: int) -> int:
    return int(v) if isinstance(v, int) and v > 0 else default


def _pool(cp: Any, path: str) -> ConnPool | None:
    if not cp:
        return None
    tcp, http = cp.get("tcp") or {}, cp.get("http") or {}
    return ConnPool(max_connections=_int(tcp.get("maxConnections"), UNLIMITED),
                    max_pending=_int(http.get("http1MaxPendingRequests"), UNLIMITED),
                    max_requests=_int(http.get("http2MaxRequests") or http.get("maxConcurrentStreams"), UNLIMITED),
                    max_retries=_int(http.get("maxRetries"), UNLIMITED),
                    max_requests_per_connection=_int(http.get("maxRequestsPerConnection"), 0),
                    connect_timeout_s=parse_duration(tcp["connectTimeout"], f"{path}.tcp.connectTimeout")
                    if tcp.get("connectTimeout") else 10.0)


def _outlier(od: Any, path: str) -> Outlier | None:
    if not od:
        return None
    c5 = od.get("consecutive5xxErrors", od.get("consecutiveErrors"))
    return Outlier(
        consecutive_5xx=int(c5) if isinstance(c5, int) else 5,
        consecutive_gateway=int(od.get("consecutiveGatewayErrors") or 0),
        interval_s=parse_duration(od["interval"], f"{path}.interval") if od.get("interval") else 10.0,
        base_ejection_s=parse_duration(od["baseEjectionTime"], f"{path}.baseEjectionTime")
        if od.get("baseEjectionTime") else 30.0,
        max_ejection_percent=int(od["maxEjectionPercent"]) if isinstance(od.get("maxEjectionPercent"), int) else 10)


def _policy(tp: Any, path: str, base: Policy | None = None) -> Policy:
    """A TrafficPolicy; a subset's fields replace the top-level ones they set (Istio's merge)."""
    base = base or Policy()
    tp = tp or {}
    return Policy(lb=_lb(tp.get("loadBalancer")) or base.lb,
                  pool=_pool(tp.get("connectionPool"), f"{path}.connectionPool") or base.pool,
                  outlier=_outlier(tp.get("outlierDetection"), f"{path}.outlierDetection") or base.outlier)


def _dest_rule(o: Obj) -> DestRule:
    spec = o.get("spec") or {}
    top = _policy(spec.get("trafficPolicy"), "spec.trafficPolicy")
    subsets = {}
    for i, s in enumerate(spec.get("subsets") or []):
        labels = tuple(sorted((str(k), str(v)) for k, v in (s.get("labels") or {}).items()))
        subsets[str(s.get("name") or "")] = (labels, _policy(s.get("trafficPolicy"),
                                                             f"spec.subsets[{i}].trafficPolicy", top))
    tls = ((spec.get("trafficPolicy") or {}).get("tls") or {}).get("mode")
    return DestRule(_name(o), top, subsets, str(tls or ""))


# -- the compiled mesh -------------------------------------------------------------------------


@dataclass(frozen=True)
class MeshConfig:
    """Everything a request needs to be routed, immutable: swapped whole on each change."""

    routes: Mapping[str, tuple[Route, ...]] = field(default_factory=dict)  # service FQDN -> routes
    dest_rules: Mapping[str, DestRule] = field(default_factory=dict)
    errors: Mapping[str, str] = field(default_factory=dict)  # "kind ns/name" -> error
    authz: AuthzConfig | None = None
    peer_auth: PeerAuthConfig | None = None
    entries: ServiceEntries = field(default_factory=ServiceEntries)  # ServiceEntry hosts (traffic.serviceentry)

    def routes_for(self, host: str) -> tuple[Route, ...] | None:
        return self.routes.get(host)

    def dest_rule(self, host: str) -> DestRule | None:
        return self.dest_rules.get(host)


def _name(o: Obj) -> str:
    m = o.get("metadata") or {}
    return f"{m.get('namespace') or 'default'}/{m.get('name') or ''}"


def _age(o: Obj) -> tuple[str, str]:
    m = o.get("metadata") or {}
    return str(m.get("creationTimestamp") or ""), _name(o)


def compile_mesh(services: Iterable[str], virtual_services: Iterable[Obj], dest_rules: Iterable[Obj],
                 authz: AuthzConfig | None = None) -> MeshConfig:
    """Build the config for the Service FQDNs ``services`` from the current Istio objects."""
    names = list(services)
    routes: dict[str, tuple[Route, ...]] = {}
    drs: dict[str, DestRule] = {}
    errors: dict[str, str] = {}
    for vs in sorted(virtual_services, key=_age):
        spec = vs.get("spec") or {}
        gateways = spec.get("gateways") or []
        if gateways and "mesh" not in gateways:
            continue
        ns = str((vs.get("metadata") or {}).get("namespace") or "default")
        try:
            compiled = tuple(_http_route(r, ns, f"spec.http[{i}]", i) for i, r in enumerate(spec.get("http") or []))
        except (ConfigError, ValueError, TypeError, KeyError) as e:
            errors[f"VirtualService {_name(vs)}"] = str(e)
            continue
        for h in spec.get("hosts") or []:
            pat = fqdn(str(h), ns)
            for svc in names:
                if _host_matches(pat, svc) and svc not in routes:
                    routes[svc] = compiled
    for dr in sorted(dest_rules, key=_age):
        spec = dr.get("spec") or {}
        ns = str((dr.get("metadata") or {}).get("namespace") or "default")
        try:
            rule = _dest_rule(dr)
        except (ConfigError, ValueError, TypeError, KeyError) as e:
            errors[f"DestinationRule {_name(dr)}"] = str(e)
            continue
        pat = fqdn(str(spec.get("host") or ""), ns)
        for svc in names:
            if _host_matches(pat, svc) and svc not in drs:
                drs[svc] = rule
    return MeshConfig(routes, drs, errors, authz)
