"""Gateway API (``gateway.networking.k8s.io/v1``) GatewayClass, Gateway and HTTPRoute as gateway routes.

A GatewayClass is pitwall's when ``spec.controllerName`` is
``pitwall.dev/gateway``; every listener (HTTP or HTTPS) of every Gateway of
such a class is served on the one gateway socket (``gateway.listen``). An
HTTPRoute attaches through ``parentRefs`` (``sectionName``/``port`` pick
listeners; ``allowedRoutes`` namespaces ``Same``/``All``/``Selector`` and
kinds are honoured); its effective hostnames are the intersection of the listener's
hostname and its own (Gateway API wildcards cover any number of labels).

Matching precedence is the specification's ("HTTPRouteRule" matches): the
most specific matching hostname (exact before wildcard, longer first), then
an ``Exact`` path, then the ``PathPrefix`` with the most characters
(element-wise, as Ingress), then a method match, more header matches, more
query-parameter matches, then the oldest route, then ``namespace/name``,
then rule and match order. ``RegularExpression`` paths (RE2, whole path)
rank after every prefix (implementation-specific in the spec). Weighted
``backendRefs`` are split by smooth weighted round-robin; a backend that
does not resolve takes its share as a 500, as the spec asks. Filters:
RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite;
``timeouts`` bound each upstream attempt.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from pitwall.core.regex import Regex, RegexError
from pitwall.core.regex import compile as re2_compile
from pitwall.kube import match_label_selector_object
from pitwall.traffic.gateway.context import Ctx, Reply, Request, ResponseHead, kong_error
from pitwall.traffic.gateway.ingress import kube_route, kube_service
from pitwall.traffic.gateway.runtime import RouteRT, ServiceRT

__all__ = ["CONTROLLER", "GROUP", "HTTPRouteTable", "Translation", "translate_gateway_api"]

Obj = dict[str, Any]
CONTROLLER = "pitwall.dev/gateway"
GROUP = "gateway.networking.k8s.io"
SUPPORTED_FILTERS = frozenset({"RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite"})
_SCHEME_PORTS = {"http": 80, "https": 443}
CRD_BUNDLE = "v1.6.1"  # the vendored CRDs' gateway.networking.k8s.io/bundle-version


def _meta(o: Obj) -> Obj:
    m = o.get("metadata")
    return m if isinstance(m, dict) else {}


def _ns(o: Obj) -> str:
    return str(_meta(o).get("namespace") or "default")


def _name(o: Obj) -> str:
    return str(_meta(o).get("name") or "")


# --- hostnames -----------------------------------------------------------------------------------


def host_matches(pattern: str, host: str) -> bool:
    """``*.example.com`` covers any name below example.com (not example.com itself)."""
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def intersect(listener: str | None, route: list[str]) -> list[str] | None:
    """The hostnames a route serves on a listener; None for any, [] for none in common."""
    if not route:
        return None if listener is None else [listener]
    if listener is None:
        return route
    out: list[str] = []
    for h in route:
        if h == listener or host_matches(listener, h):
            out.append(h)
        elif host_matches(h, listener):
            out.append(listener)
    return out


# --- one match of one rule -----------------------------------------------------------------------


class _Backends:
    """Smooth weighted round-robin (nginx's) over a rule's backends; None stands for an unresolved one."""

    def __init__(self, items: list[tuple[RouteRT | None, int]]) -> None:
        live = [(r, w) for r, w in items if w > 0]
        self.routes = [r for r, _ in live]
        self.weights = [w for _, w in live]
        self.current = [0] * len(live)
        self.total = sum(self.weights)

    def next(self) -> RouteRT | None:
        if not self.routes:
            return None
        best = 0
        for i, w in enumerate(self.weights):
            self.current[i] += w
            if self.current[i] > self.current[best]:
                best = i
        self.current[best] -= self.total
        return self.routes[best]


@dataclass
class _Filters:
    request_set: list[tuple[str, str]] = field(default_factory=list)
    request_add: list[tuple[str, str]] = field(default_factory=list)
    request_remove: list[str] = field(default_factory=list)
    response: list[tuple[str, str, str]] = field(default_factory=list)  # (op, name, value)
    redirect: Obj | None = None
    rewrite: Obj | None = None


@dataclass
class _Entry:
    host: str | None
    path_type: str
    path: str  # Exact/RegularExpression: as written; PathPrefix: without a trailing "/"
    regex: Regex | None
    method: str | None
    headers: list[tuple[str, str | None, Regex | None]]
    query: list[tuple[str, str | None, Regex | None]]
    key: tuple[Any, ...]
    backends: _Backends
    filters: _Filters
    route_key: str

    def matches(self, host: str, req: Request, query: dict[str, str]) -> bool:
        if self.host is not None and not host_matches(self.host, host):
            return False
        p = req.path
        if self.path_type == "Exact":
            if p != self.path:
                return False
        elif self.path_type == "PathPrefix":
            if self.path and p != self.path and not p.startswith(self.path + "/"):
                return False
        elif self.regex is None or self.regex.search(p) is None:
            return False
        if self.method is not None and req.method != self.method:
            return False
        for name, exact, rx in self.headers:
            v = req.headers.get(name)
            if v is None or (v != exact if rx is None else rx.search(v) is None):
                return False
        for name, exact, rx in self.query:
            v = query.get(name)
            if v is None or (v != exact if rx is None else rx.search(v) is None):
                return False
        return True


def _value_matcher(m: Obj, lower: bool) -> tuple[str, str | None, Regex | None]:
    name = str(m.get("name", ""))
    value = str(m.get("value", ""))
    if m.get("type") == "RegularExpression":
        return name.lower() if lower else name, None, re2_compile("^(?:" + value + ")$")
    return name.lower() if lower else name, value, None


# --- the compiled table --------------------------------------------------------------------------


@dataclass
class HTTPRouteTable:
    """HTTPRoute matches in precedence order; never changed once built."""

    entries: list[_Entry] = field(default_factory=list)  # in precedence order
    scheme: str = "http"
    port: int = 80

    def __post_init__(self) -> None:
        # Indexed by hostname so a request looks at its own host's matches only. The hostname ranks
        # first in the precedence, so exact host, then wildcards by longest suffix, then no hostname
        # visits the entries in the same order as one scan of ``entries``.
        self.exact: dict[str, list[_Entry]] = {}
        self.wildcard: dict[str, list[_Entry]] = {}  # ".example.com" for "*.example.com"
        self.any_host: list[_Entry] = []
        for e in self.entries:
            if e.host is None:
                self.any_host.append(e)
            elif e.host.startswith("*."):
                self.wildcard.setdefault(e.host[1:], []).append(e)
            else:
                self.exact.setdefault(e.host, []).append(e)

    def _candidates(self, host: str) -> Iterator[_Entry]:
        yield from self.exact.get(host, ())
        if self.wildcard:
            i = host.find(".")
            while i >= 0:
                yield from self.wildcard.get(host[i:], ())
                i = host.find(".", i + 1)
        yield from self.any_host

    def find(self, req: Request, ctx: Ctx) -> RouteRT | None:
        """The route (backend) for ``req`` with the rule's filters applied, or None; a redirect or an
        unresolved backend answers through ``Reply``."""
        if not self.entries:
            return None
        host = _host_only(req.host)
        query: dict[str, str] | None = None
        for e in self._candidates(host):
            if query is None:
                query = {k: v for k, v in reversed(parse_qsl(req.query, keep_blank_values=True))}  # first value
            if e.matches(host, req, query):
                return self._apply(e, req, ctx)
        return None

    def _apply(self, e: _Entry, req: Request, ctx: Ctx) -> RouteRT:
        f = e.filters
        if f.redirect is not None:
            raise self._redirect(e, f.redirect, req)
        for name, value in f.request_set:
            req.headers[name] = value
        for name, value in f.request_add:
            cur = req.headers.get(name)
            req.headers[name] = value if cur is None else f"{cur},{value}"
        for name in f.request_remove:
            req.headers.pop(name, None)
        if f.rewrite is not None:
            host = f.rewrite.get("hostname")
            if host:
                req.host = req.headers["host"] = str(host)
            path = f.rewrite.get("path")
            if path:
                ctx.upstream_path = _new_path(path, req.path, e.path)
        if f.response:
            ctx.on_response = _response_modifier(f.response)
        route = e.backends.next()
        if route is None:  # no backends, or this share's backend does not resolve
            raise kong_error(500, "the HTTPRoute's backend is not resolved")
        return route

    def _redirect(self, e: _Entry, r: Obj, req: Request) -> Reply:
        scheme = str(r.get("scheme") or self.scheme)
        host = str(r.get("hostname") or _host_only(req.host))
        port = r.get("port")
        if port is None:
            port = _SCHEME_PORTS.get(scheme, self.port) if r.get("scheme") else self.port
        path = _new_path(r["path"], req.path, e.path) if r.get("path") else req.path
        target = f"{path}?{req.query}" if req.query else path
        hostport = host if _SCHEME_PORTS.get(scheme) == port else f"{host}:{port}"
        return Reply(int(r.get("statusCode") or 302), b"", [("Location", f"{scheme}://{hostport}{target}")])


def _new_path(mod: Obj, path: str, matched_prefix: str) -> str:
    if mod.get("type") == "ReplaceFullPath":
        return str(mod.get("replaceFullPath") or "/")
    value = str(mod.get("replacePrefixMatch") or "/")
    rest = path[len(matched_prefix):]
    if not rest:
        return value
    return (value.rstrip("/") + rest) or "/"


def _response_modifier(ops: list[tuple[str, str, str]]) -> Callable[[ResponseHead], None]:
    def modify(head: ResponseHead) -> None:
        for op, name, value in ops:
            if op == "set":
                head.set(name, value)
            elif op == "add":
                cur = head.get(name)
                head.set(name, value if cur is None else f"{cur},{value}")
            else:
                head.remove(name)

    return modify


# --- translation ---------------------------------------------------------------------------------


@dataclass
class Translation:
    """The table, and the status each object should have (by kind and (namespace, name))."""

    table: HTTPRouteTable
    class_status: dict[str, Obj]
    gateway_status: dict[tuple[str, str], Obj]
    route_parents: dict[tuple[str, str], list[Obj]]  # our entries of status.parents


def _cond(typ: str, ok: bool, reason: str, message: str, generation: int) -> Obj:
    return {"type": typ, "status": "True" if ok else "False", "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": ""}


def translate_gateway_api(classes: Iterable[Obj], gateways: Iterable[Obj], routes: Iterable[Obj],
                          services: Mapping[tuple[str, str], Obj], *, address: str, scheme: str = "http",
                          port: int = 80, namespaces: Mapping[str, Obj] | None = None) -> Translation:
    """pitwall's Gateways and the HTTPRoutes attached to them as a table, with every status to write;
    ``namespaces`` (by name) give the labels ``allowedRoutes.namespaces.from: Selector`` is matched on."""
    labels = {n: (_meta(o).get("labels") or {}) for n, o in (namespaces or {}).items()}
    ours = {_name(c): c for c in classes if (c.get("spec") or {}).get("controllerName") == CONTROLLER}
    class_status = {n: {"conditions": [
        _cond("Accepted", True, "Accepted", "handled by pitwall's gateway", int(_meta(c).get("generation") or 0)),
        _cond("SupportedVersion", True, "SupportedVersion", f"pitwall serves the Gateway API CRDs {CRD_BUNDLE}",
              int(_meta(c).get("generation") or 0))]} for n, c in ours.items()}
    gws = {(_ns(g), _name(g)): g for g in gateways if (g.get("spec") or {}).get("gatewayClassName") in ours}
    attached: dict[tuple[str, str, str], int] = {}
    entries: list[_Entry] = []
    route_parents: dict[tuple[str, str], list[Obj]] = {}
    for rt in sorted(routes, key=lambda r: (str(_meta(r).get("creationTimestamp") or ""), _ns(r), _name(r))):
        parents = _route(rt, gws, services, attached, entries, labels)
        if parents:
            route_parents[(_ns(rt), _name(rt))] = parents
    entries.sort(key=lambda e: e.key)
    gateway_status = {k: _gateway_status(g, attached, address) for k, g in gws.items()}
    return Translation(HTTPRouteTable(entries, scheme, port), class_status, gateway_status, route_parents)


def _listeners(gw: Obj) -> list[Obj]:
    return [ls for ls in (gw.get("spec") or {}).get("listeners") or [] if isinstance(ls, dict)]


def _listener_ok(ls: Obj) -> bool:
    return ls.get("protocol") in ("HTTP", "HTTPS")


def _allows(ls: Obj, gw: Obj, route_ns: str, ns_labels: Mapping[str, dict[str, str]]) -> bool:
    allowed = ls.get("allowedRoutes") or {}
    kinds = allowed.get("kinds")
    if kinds and not any(k.get("kind") == "HTTPRoute" and k.get("group", GROUP) == GROUP for k in kinds):
        return False
    namespaces = allowed.get("namespaces") or {}
    frm = namespaces.get("from", "Same")
    if frm == "Selector":
        return route_ns in ns_labels and match_label_selector_object(namespaces.get("selector") or {},
                                                                    ns_labels[route_ns])
    return frm == "All" or (frm == "Same" and route_ns == _ns(gw))


def _route(rt: Obj, gws: Mapping[tuple[str, str], Obj], services: Mapping[tuple[str, str], Obj],
           attached: dict[tuple[str, str, str], int], entries: list[_Entry],
           ns_labels: Mapping[str, dict[str, str]]) -> list[Obj]:
    ns, spec = _ns(rt), rt.get("spec") or {}
    gen = int(_meta(rt).get("generation") or 0)
    route_hosts = [str(h).lower() for h in spec.get("hostnames") or []]
    rules = [r for r in spec.get("rules") or [] if isinstance(r, dict)]
    compiled, resolved, unsupported = _rules(rt, rules, services)
    out: list[Obj] = []
    for ref in spec.get("parentRefs") or []:
        if ref.get("group", GROUP) != GROUP or ref.get("kind", "Gateway") != "Gateway":
            continue
        gw = gws.get((str(ref.get("namespace") or ns), str(ref.get("name", ""))))
        if gw is None:
            continue  # not a Gateway of ours: its status is another controller's to write
        hosts_per_listener: list[tuple[Obj, list[str] | None]] = []
        reason, message = "Accepted", "attached to the gateway"
        picked = [ls for ls in _listeners(gw) if _listener_ok(ls)
                  and (ref.get("sectionName") is None or ls.get("name") == ref["sectionName"])
                  and (ref.get("port") is None or ls.get("port") == ref["port"])]
        if not picked:
            reason, message = "NoMatchingParent", "no HTTP listener matches sectionName/port"
        else:
            allowed = [ls for ls in picked if _allows(ls, gw, ns, ns_labels)]
            if not allowed:
                reason, message = "NotAllowedByListeners", "the listeners' allowedRoutes do not admit this route"
            for ls in allowed:
                hosts = intersect(str(ls["hostname"]).lower() if ls.get("hostname") else None, route_hosts)
                if hosts != []:
                    hosts_per_listener.append((ls, hosts))
            if allowed and not hosts_per_listener:
                reason, message = "NoMatchingListenerHostname", "no hostname in common with the listeners"
        if unsupported and reason == "Accepted":
            reason, message = "UnsupportedValue", unsupported
        accepted = reason == "Accepted"
        if accepted:
            for ls, hosts in hosts_per_listener:
                key = (_ns(gw), _name(gw), str(ls.get("name", "")))
                attached[key] = attached.get(key, 0) + 1
                for host in hosts if hosts is not None else [None]:
                    entries.extend(_entries(rt, compiled, host))
        res_reason, res_message = resolved
        out.append({"parentRef": ref, "controllerName": CONTROLLER, "conditions": [
            _cond("Accepted", accepted, reason, message, gen),
            _cond("ResolvedRefs", res_reason == "ResolvedRefs", res_reason, res_message, gen)]})
    return out


@dataclass
class _Compiled:
    matches: list[Obj]
    backends: _Backends
    filters: _Filters
    index: int


def _rules(rt: Obj, rules: list[Obj], services: Mapping[tuple[str, str], Obj]) \
        -> tuple[list[_Compiled], tuple[str, str], str]:
    """Each rule compiled; the ResolvedRefs reason and message; an unsupported-feature message ("" if none)."""
    ns = _ns(rt)
    resolved = ("ResolvedRefs", "all backend references resolved")
    unsupported = ""
    out: list[_Compiled] = []
    for i, rule in enumerate(rules):
        items: list[tuple[RouteRT | None, int]] = []
        for j, ref in enumerate(rule.get("backendRefs") or []):
            route, problem = _backend(ns, ref, services, f"httproute:{ns}/{_name(rt)}:{i}:{j}")
            if problem is not None and resolved[0] == "ResolvedRefs":
                resolved = problem
            if route is not None and route.service is not None:
                _apply_timeouts(route.service, rule.get("timeouts") or {})
            items.append((route, int(ref.get("weight", 1))))
        filters = _Filters()
        for f in rule.get("filters") or []:
            if f.get("type") not in SUPPORTED_FILTERS:
                unsupported = unsupported or f"spec.rules[{i}].filters: {f.get('type')} is not supported"
                continue
            _filter(f, filters)
        for ref in rule.get("backendRefs") or []:
            if ref.get("filters"):
                unsupported = unsupported or f"spec.rules[{i}].backendRefs[].filters are not supported"
        matches = rule.get("matches") or [{"path": {"type": "PathPrefix", "value": "/"}}]
        for m in matches:
            rx = (m.get("path") or {}).get("type") == "RegularExpression"
            try:
                if rx:
                    re2_compile("^(?:" + str(m["path"].get("value", "")) + ")$")
                for h in [*(m.get("headers") or []), *(m.get("queryParams") or [])]:
                    _value_matcher(h, False)
            except RegexError as e:
                unsupported = unsupported or f"spec.rules[{i}].matches: invalid RE2 regular expression: {e}"
        out.append(_Compiled(matches, _Backends(items), filters, i))
    return out, resolved, unsupported


_DURATION = re.compile(r"([0-9]+)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def duration_s(text: str) -> float:
    """A Gateway API Duration (``1h``, ``10s``, ``500ms``, ``1m30s``) in seconds; the CRD validates the form."""
    return sum(int(n) * _UNIT_S[u] for n, u in _DURATION.findall(text))


def _apply_timeouts(svc: ServiceRT, timeouts: Obj) -> None:
    """``timeouts.request`` and ``backendRequest`` bound each upstream attempt (504 when one runs out);
    ``0s`` (or absent) leaves Kong's 60 s defaults."""
    limits = [duration_s(str(timeouts[k])) for k in ("request", "backendRequest") if timeouts.get(k)]
    limits = [x for x in limits if x > 0]
    if limits:
        t = min(limits)
        svc.connect_timeout_s = min(svc.connect_timeout_s, t)
        svc.read_timeout_s = min(svc.read_timeout_s, t)
        svc.write_timeout_s = min(svc.write_timeout_s, t)


def _backend(ns: str, ref: Obj, services: Mapping[tuple[str, str], Obj], owner: str) \
        -> tuple[RouteRT | None, tuple[str, str] | None]:
    kind, group = ref.get("kind", "Service"), ref.get("group", "")
    name, ref_ns = str(ref.get("name", "")), str(ref.get("namespace") or ns)
    if kind != "Service" or group not in ("", "core"):
        return None, ("InvalidKind", f"backendRef {group}/{kind} {name}: only Services are supported")
    if ref_ns != ns:
        return None, ("RefNotPermitted", f"backendRef Service {ref_ns}/{name}: cross-namespace references "
                                         "need a ReferenceGrant, which pitwall does not serve")
    if (ns, name) not in services:
        return None, ("BackendNotFound", f"Service {ns}/{name} not found")
    port = ref.get("port")
    if not isinstance(port, int):
        return None, ("UnsupportedValue", f"backendRef Service {ns}/{name}: port is required")
    return kube_route(owner, kube_service(ns, name, port, owner=owner)), None


def _filter(f: Obj, out: _Filters) -> None:
    typ = f["type"]
    if typ == "RequestHeaderModifier":
        m = f.get("requestHeaderModifier") or {}
        out.request_set += [(str(h["name"]).lower(), str(h["value"])) for h in m.get("set") or []]
        out.request_add += [(str(h["name"]).lower(), str(h["value"])) for h in m.get("add") or []]
        out.request_remove += [str(n).lower() for n in m.get("remove") or []]
    elif typ == "ResponseHeaderModifier":
        m = f.get("responseHeaderModifier") or {}
        out.response += [("set", str(h["name"]), str(h["value"])) for h in m.get("set") or []]
        out.response += [("add", str(h["name"]), str(h["value"])) for h in m.get("add") or []]
        out.response += [("remove", str(n), "") for n in m.get("remove") or []]
    elif typ == "RequestRedirect":
        out.redirect = f.get("requestRedirect") or {}
    elif typ == "URLRewrite":
        out.rewrite = f.get("urlRewrite") or {}


def _entries(rt: Obj, compiled: list[_Compiled], host: str | None) -> list[_Entry]:
    age = (str(_meta(rt).get("creationTimestamp") or ""), f"{_ns(rt)}/{_name(rt)}")
    host_key = (0, 0) if host is None else ((-len(host), -len(host)) if not host.startswith("*.") else
                                            (0, -len(host)))
    out: list[_Entry] = []
    for c in compiled:
        for k, m in enumerate(c.matches):
            p = m.get("path") or {"type": "PathPrefix", "value": "/"}
            typ, value = str(p.get("type", "PathPrefix")), str(p.get("value", "/"))
            path = value.rstrip("/") if typ == "PathPrefix" else value
            try:
                regex = re2_compile("^(?:" + value + ")$") if typ == "RegularExpression" else None
                headers = [_value_matcher(h, True) for h in m.get("headers") or []]
                query = [_value_matcher(q, False) for q in m.get("queryParams") or []]
            except RegexError:
                continue  # reported as UnsupportedValue; this match is left out
            path_rank = {"Exact": 0, "PathPrefix": 1}.get(typ, 2)
            key = (*host_key, path_rank, -len(path), 0 if m.get("method") else 1, -len(headers), -len(query),
                   *age, c.index, k)
            out.append(_Entry(host, typ, path, regex, m.get("method"), headers, query, key, c.backends, c.filters,
                              age[1]))
    return out


def _gateway_status(gw: Obj, attached: Mapping[tuple[str, str, str], int], address: str) -> Obj:
    gen = int(_meta(gw).get("generation") or 0)
    listeners = []
    for ls in _listeners(gw):
        ok = _listener_ok(ls)
        name = str(ls.get("name", ""))
        listeners.append({
            "name": name, "attachedRoutes": attached.get((_ns(gw), _name(gw), name), 0),
            "supportedKinds": [{"group": GROUP, "kind": "HTTPRoute"}] if ok else [],
            "conditions": [
                _cond("Accepted", ok, "Accepted" if ok else "UnsupportedProtocol",
                      "served on the gateway's listener" if ok else f"protocol {ls.get('protocol')} is not served",
                      gen),
                _cond("Programmed", ok, "Programmed" if ok else "Invalid", "", gen),
                _cond("ResolvedRefs", True, "ResolvedRefs", "", gen)]})
    return {"addresses": [{"type": "IPAddress", "value": address}], "listeners": listeners,
            "conditions": [_cond("Accepted", True, "Accepted", "handled by pitwall's gateway", gen),
                           _cond("Programmed", True, "Programmed", "served on the gateway's listener", gen)]}


def with_transition_times(new: list[Obj], old: list[Obj] | None) -> list[Obj]:
    """Conditions keep their ``lastTransitionTime`` while status and reason are unchanged (else: now)."""
    before = {c.get("type"): c for c in old or []}
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = []
    for c in new:
        prev = before.get(c["type"])
        same = prev is not None and prev.get("status") == c["status"] and prev.get("reason") == c["reason"]
        out.append({**c, "lastTransitionTime": prev.get("lastTransitionTime", now) if same and prev else now})
    return out


def _host_only(h: str) -> str:
    h = h.lower()
    if h.startswith("["):
        return h[: h.find("]") + 1]
    return h.partition(":")[0]
