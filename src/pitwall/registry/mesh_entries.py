"""Consul's config entries as the Istio objects the mesh already enforces.

The mesh compiles VirtualServices, DestinationRules and
AuthorizationPolicies into its rule model (``traffic.mesh``,
``traffic.authz``); Consul's discovery chain and intentions are translated
into those same objects here (in memory, never written to the Kubernetes
API), so there is one enforcement path. A Consul service ``S`` is every
Kubernetes Service named ``S`` (in any namespace: Consul without namespaces
sees one flat name space, as consul-k8s registers them).

- ``service-router`` ``S`` -> a VirtualService for ``S``: each route's
  ``Match.HTTP`` (PathExact/PathPrefix/PathRegex, Header, QueryParam,
  Methods) becomes an HTTP match; ``Destination`` its route (Service,
  ServiceSubset, PrefixRewrite, RequestTimeout, NumRetries, RetryOn,
  RetryOnConnectFailure, RetryOnStatusCodes, Request/ResponseHeaders); a
  catch-all route to ``S`` closes the list, as Consul injects one.
- ``service-splitter`` ``S`` -> weighted destinations wherever ``S`` is
  routed (the catch-all, or a router destination naming ``S`` without a
  subset); a split to another service with its own splitter is expanded,
  weights multiplied (in 0.01 % units, Consul's resolution).
- ``service-resolver`` ``S`` -> a DestinationRule for ``S``: ``Subsets`` by
  ``Filter`` (``Service.Meta.<key> == <value>``, joined with ``and``: the
  pod label ``<key>=<value>``), ``DefaultSubset`` (where no subset is named),
  ``Redirect`` (traffic for ``S`` goes to the other service/subset),
  ``ConnectTimeout`` and ``LoadBalancer``; ``Failover`` (by subset or ``*``:
  ``Service``/``ServiceSubset`` or ``Targets``, local ones only) as an
  ``x-failover`` list on each destination: the first target with a ready
  endpoint takes the request when the destination has none.
- ``service-intentions`` ``D`` -> one DENY AuthorizationPolicy per
  Kubernetes Service named ``D`` (selecting its pods), encoding Consul's
  evaluation: the matching source intention of highest precedence decides
  (exact source before ``*``; exact destination before ``*``), L7
  ``Permissions`` first match wins, and when nothing decides the request is
  allowed (Consul's default with ACLs off). A source service ``web`` is a
  caller running as ServiceAccount ``web`` (consul-k8s's rule), in any
  namespace. Two small extensions of the policy rule model carry what Istio
  cannot say: ``x-unless`` (rules that, when they match, stop this one:
  an earlier decision) and ``x-consul`` header / ``x-pathRegex`` matches.

Istio's own objects take precedence: the translated ones sort after every
real object, and the mesh keeps the oldest VirtualService/DestinationRule
per host, so an Istio VirtualService for ``S`` replaces ``S``'s router and
splitter and an Istio DestinationRule replaces its resolver. Policies of
both kinds apply together (any DENY denies).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from pitwall.registry.blocking import parse_go_duration

__all__ = ["LATEST", "MeshObjects", "mesh_objects", "subset_labels"]

Obj = dict[str, Any]
Entries = Mapping[tuple[str, str], Obj]
MeshObjects = tuple[dict[str, list[Obj]], dict[str, str]]
LATEST = "9999-12-31T23:59:59Z"  # sorts after every real object: Istio's objects win per host
_FILTER_TERM = re.compile(r'^\s*Service\.Meta\.([A-Za-z0-9_./-]+)\s*==\s*(?:"([^"]*)"|([^\s"]+))\s*$')
_MAX_DEPTH = 8


def subset_labels(flt: str) -> dict[str, str]:
    """The pod labels a resolver subset's ``Filter`` selects; ``ValueError`` for filters beyond
    ``Service.Meta.<key> == <value> [and ...]``."""
    labels: dict[str, str] = {}
    if not flt.strip():
        return labels
    for term in re.split(r"\s+and\s+", flt.strip()):
        m = _FILTER_TERM.match(term)
        if not m:
            raise ValueError(f"filter term {term.strip()!r}: only Service.Meta.<key> == <value> terms joined "
                             "with 'and' map to pod labels")
        labels[m.group(1)] = m.group(2) if m.group(2) is not None else m.group(3)
    return labels


def _meta(name: str, ns: str) -> Obj:
    return {"name": name, "namespace": ns, "creationTimestamp": LATEST}


def _secs(go: Any) -> str:
    return f"{parse_go_duration(str(go)):g}s"


class _Chain:
    """The discovery chain of the Consul services: where traffic for a service (and subset) goes."""

    def __init__(self, entries: Entries) -> None:
        self.entries = entries

    def get(self, kind: str, name: str) -> Obj | None:
        return self.entries.get((kind, name))

    def targets(self, svc: str, subset: str = "", depth: int = 0) -> list[tuple[str, str, int]]:
        """``(service, subset, weight in 0.01 % units)`` of the traffic sent to ``svc``/``subset``."""
        res = self.get("service-resolver", svc) or {}
        red = res.get("Redirect") or {}
        if red and depth < _MAX_DEPTH:
            return self.targets(str(red.get("Service") or svc), str(red.get("ServiceSubset") or ""), depth + 1)
        split = self.get("service-splitter", svc)
        if subset or split is None or depth >= _MAX_DEPTH:
            return [(svc, subset or str(res.get("DefaultSubset") or ""), 10000)]
        out: list[tuple[str, str, int]] = []
        for s in split.get("Splits") or []:
            w = round(float(s.get("Weight") or 0) * 100)
            to, sub = str(s.get("Service") or svc), str(s.get("ServiceSubset") or "")
            inner = (self.targets(to, sub, depth + 1) if to != svc or sub else
                     [(svc, str(res.get("DefaultSubset") or ""), 10000)])
            out += [(t, ts, w * tw // 10000) for t, ts, tw in inner]
        return [t for t in out if t[2] > 0] or out


def _failover(chain: _Chain, svc: str, subset: str) -> list[Obj]:
    """The resolver's ``Failover`` for ``subset`` (or ``*``): its ``Targets``, else ``Service``/``ServiceSubset``."""
    fo = ((chain.get("service-resolver", svc) or {}).get("Failover") or {})
    f = fo.get(subset or "*") or fo.get("*") or {}
    targets = f.get("Targets") or ([{"Service": f.get("Service"), "ServiceSubset": f.get("ServiceSubset")}]
                                   if f.get("Service") or f.get("ServiceSubset") else [])
    out = []
    for t in targets:
        one: Obj = {"host": str(t.get("Service") or svc)}
        if t.get("ServiceSubset"):
            one["subset"] = str(t["ServiceSubset"])
        out.append(one)
    return out


def _dests(chain: _Chain, targets: list[tuple[str, str, int]], d: Obj) -> list[Obj]:
    headers = {k: _header_ops(d.get(f"{cap}Headers") or {}) for k, cap in (("request", "Request"), ("response", "Response"))
               if d.get(f"{cap}Headers")}
    out = []
    for svc, subset, w in targets:
        dst: Obj = {"host": svc}
        if subset:
            dst["subset"] = subset
        one: Obj = {"destination": dst, "weight": w}
        failover = _failover(chain, svc, subset)
        if failover:
            one["x-failover"] = failover
        if headers:
            one["headers"] = headers
        out.append(one)
    return out


def _header_ops(h: Obj) -> Obj:
    return {"add": dict(h.get("Add") or {}), "set": dict(h.get("Set") or {}), "remove": list(h.get("Remove") or [])}


def _string(kind: str, value: str) -> Obj:
    return {kind: value}


def _match(http: Obj) -> Obj:
    m: Obj = {}
    if http.get("PathExact"):
        m["uri"] = _string("exact", http["PathExact"])
    elif http.get("PathPrefix"):
        m["uri"] = _string("prefix", http["PathPrefix"])
    elif http.get("PathRegex"):
        m["uri"] = _string("regex", http["PathRegex"])
    methods = list(http.get("Methods") or [])
    if methods:
        m["method"] = _string("regex", "|".join(methods))
    heads: Obj = {}
    without: Obj = {}
    for h in http.get("Header") or []:
        name = str(h["Name"]).lower()
        cond: Obj | None
        if h.get("Present"):
            cond = None
        elif h.get("Exact"):
            cond = _string("exact", h["Exact"])
        elif h.get("Prefix"):
            cond = _string("prefix", h["Prefix"])
        elif h.get("Suffix"):
            cond = _string("regex", ".*" + re.escape(str(h["Suffix"])))
        else:
            cond = _string("regex", str(h.get("Regex") or ".*"))
        (without if h.get("Invert") else heads)[name] = cond or {}
    if heads:
        m["headers"] = heads
    if without:
        m["withoutHeaders"] = without
    qp: Obj = {}
    for q in http.get("QueryParam") or []:
        qp[str(q["Name"])] = ({} if q.get("Present") else _string("exact", q["Exact"]) if q.get("Exact") else
                              _string("regex", str(q.get("Regex") or ".*")))
    if qp:
        m["queryParams"] = qp
    return m


def _route(chain: _Chain, name: str, r: Obj) -> Obj:
    d = r.get("Destination") or {}
    http = (r.get("Match") or {}).get("HTTP") or {}
    targets = chain.targets(str(d.get("Service") or name), str(d.get("ServiceSubset") or ""))
    out: Obj = {"route": _dests(chain, targets, d)}
    m = _match(http)
    if m:
        out["match"] = [m]
    if d.get("PrefixRewrite"):
        out["rewrite"] = {"uri": d["PrefixRewrite"]}
    if d.get("RequestTimeout"):
        out["timeout"] = _secs(d["RequestTimeout"])
    out["retries"] = _retries(d)
    return out


def _retries(d: Obj) -> Obj:
    """Consul sets no retry policy unless asked (Envoy's default: none), unlike Istio's two retries."""
    on = list(d.get("RetryOn") or [])
    if d.get("RetryOnConnectFailure"):
        on.append("connect-failure")
    on += [str(c) for c in d.get("RetryOnStatusCodes") or []]
    n = int(d.get("NumRetries") or 0)
    if not n and on:
        n = 1  # Consul: retry conditions without NumRetries retry once (Envoy's num_retries default)
    out: Obj = {"attempts": n}
    if n and on:
        out["retryOn"] = ",".join(on)
    return out


def _virtual_service(chain: _Chain, name: str, ns: str) -> Obj | None:
    router = chain.get("service-router", name)
    res = chain.get("service-resolver", name) or {}
    if router is None and chain.get("service-splitter", name) is None and not res.get("DefaultSubset") \
            and not res.get("Redirect") and not res.get("Failover"):
        return None
    http = [_route(chain, name, r) for r in (router or {}).get("Routes") or []]
    http.append({"name": "consul-default", "route": _dests(chain, chain.targets(name), {}),
                 "retries": {"attempts": 0}})
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": _meta(f"consul-chain-{name}", ns), "spec": {"hosts": [name], "http": http}}


_LB = {"round_robin": "ROUND_ROBIN", "least_request": "LEAST_REQUEST", "random": "RANDOM"}


def _load_balancer(lb: Obj) -> Obj | None:
    pol = str(lb.get("Policy") or "")
    if pol in _LB:
        return {"simple": _LB[pol]}
    if pol in ("ring_hash", "maglev"):
        for hp in lb.get("HashPolicies") or []:
            field, value = hp.get("Field"), str(hp.get("FieldValue") or "")
            if field == "header":
                return {"consistentHash": {"httpHeaderName": value}}
            if field == "cookie":
                return {"consistentHash": {"httpCookie": {"name": value, "ttl": "0s"}}}
            if field == "query_parameter":
                return {"consistentHash": {"httpQueryParameterName": value}}
            if hp.get("SourceIP"):
                return {"consistentHash": {"useSourceIp": True}}
    return None


def _destination_rule(res: Obj, name: str, ns: str) -> Obj:
    policy: Obj = {}
    lb = _load_balancer(res.get("LoadBalancer") or {})
    if lb:
        policy["loadBalancer"] = lb
    if res.get("ConnectTimeout"):
        policy["connectionPool"] = {"tcp": {"connectTimeout": _secs(res["ConnectTimeout"])}}
    subsets = [{"name": sub, "labels": subset_labels(str((spec or {}).get("Filter") or ""))}
               for sub, spec in sorted((res.get("Subsets") or {}).items())]
    spec: Obj = {"host": name, "subsets": subsets}
    if policy:
        spec["trafficPolicy"] = policy
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": _meta(f"consul-resolver-{name}", ns), "spec": spec}


def _from(source: str) -> list[Obj]:
    return [] if source == "*" else [{"source": {"principals": [f"*/sa/{source}"]}}]


def _operation(http: Obj) -> tuple[Obj, list[Obj]]:
    """A permission's HTTP match as an AuthorizationPolicy ``to.operation`` and ``when`` conditions."""
    op: Obj = {}
    if http.get("PathExact"):
        op["paths"] = [http["PathExact"]]
    elif http.get("PathPrefix"):
        op["paths"] = [str(http["PathPrefix"]) + "*"]
    elif http.get("PathRegex"):
        op["x-pathRegex"] = http["PathRegex"]
    if http.get("Methods"):
        op["methods"] = list(http["Methods"])
    when = [{"key": f"request.headers[{str(h['Name']).lower()}]", "x-consul": h} for h in http.get("Header") or []]
    return op, when


def _perm_rule(source: str, perm: Obj) -> Obj:
    op, when = _operation(perm.get("HTTP") or {})
    rule: Obj = {"from": _from(source)}
    if op:
        rule["to"] = [{"operation": op}]
    if when:
        rule["when"] = when
    return rule


def _intention_rules(sources: list[Obj]) -> list[Obj]:
    """DENY rules equivalent to Consul's first-match evaluation of ``sources`` (highest precedence first)."""
    rules: list[Obj] = []
    earlier: list[Obj] = []  # rules matching callers an earlier (higher precedence) source decides for
    for s in sources:
        name = str(s["Name"])
        perms = s.get("Permissions") or []
        if not perms:
            if s.get("Action") == "deny":
                rules.append({"from": _from(name), **({"x-unless": list(earlier)} if earlier else {})})
        else:
            allowed: list[Obj] = []
            for p in perms:
                r = _perm_rule(name, p)
                if p.get("Action") == "deny":
                    unless = earlier + allowed
                    rules.append({**r, **({"x-unless": unless} if unless else {})})
                else:
                    allowed.append(r)
        if name == "*":
            break  # every caller is decided by now
        earlier.append({"from": _from(name)})
    return rules


def _authorization(entries: Entries, name: str, ns: str, selector: Obj) -> Obj | None:
    own = (entries.get(("service-intentions", name)) or {}).get("Sources") or []
    wild = (entries.get(("service-intentions", "*")) or {}).get("Sources") or []
    # Sources on a cluster peer or sameness group are never a local pod: they match no caller here.
    local = [s for s in [*own, *wild] if not s.get("Peer") and not s.get("SamenessGroup")]
    ordered = sorted(local, key=lambda s: -int(s.get("Precedence") or 0))
    # Of two sources with one name, the exact destination's intention wins (it sorted first).
    sources: list[Obj] = []
    for s in ordered:
        if all(s["Name"] != t["Name"] for t in sources):
            sources.append(s)
    rules = _intention_rules(sources)
    if not rules or not selector:
        return None
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": _meta(f"consul-intentions-{name}", ns),
            "spec": {"action": "DENY", "selector": {"matchLabels": dict(selector)}, "rules": rules}}


def _resolver_rule(chain: _Chain, name: str, ns: str) -> Obj | None:
    res = chain.get("service-resolver", name)
    return _destination_rule(res, name, ns) if res is not None else None


def _translate(out: dict[str, list[Obj]], errors: dict[str, str], kind: str, label: str,
               build: Callable[..., Obj | None], *args: Any) -> None:
    try:
        o = build(*args)
    except (ValueError, TypeError, KeyError) as e:
        errors[label] = str(e)
        return
    if o is not None:
        out[kind].append(o)


def mesh_objects(entries: Entries, services: Mapping[tuple[str, str], Obj]) -> MeshObjects:
    """The Istio objects equivalent to ``entries`` for the Kubernetes ``services`` ((namespace, name) ->
    Service), and the entries that could not be translated (name -> why)."""
    out: dict[str, list[Obj]] = {"VirtualService": [], "DestinationRule": [], "AuthorizationPolicy": []}
    errors: dict[str, str] = {}
    if not entries:
        return out, errors
    chain = _Chain(entries)
    for (ns, name), svc in sorted(services.items()):
        # Each part on its own: a resolver that cannot be translated never drops the service's intentions.
        where = f"{name} (for {ns}/{name})"
        _translate(out, errors, "VirtualService", f"Consul service-router/splitter {where}",
                   _virtual_service, chain, name, ns)
        _translate(out, errors, "DestinationRule", f"Consul service-resolver {where}", _resolver_rule, chain, name, ns)
        _translate(out, errors, "AuthorizationPolicy", f"Consul service-intentions {where}", _authorization,
                   entries, name, ns, (svc.get("spec") or {}).get("selector") or {})
    return out, errors
