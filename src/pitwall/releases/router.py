"""Flagger's routing on the Istio provider, over pitwall's mesh.

The Kubernetes router makes three ClusterIP Services: the apex ``<name>``
and ``<name>-primary`` select the primary's pods, ``<name>-canary`` the
target's. The Istio router makes a DestinationRule per backing Service
(``host: <name>-primary`` / ``<name>-canary``, the Canary's
``service.trafficPolicy``) and a VirtualService ``<name>`` on the apex host
whose first HTTP route splits traffic by weight between the two hosts, as
``pkg/router/istio.go`` writes it: with ``analysis.match`` a first route
with the A/B conditions and a second sending the rest to the primary; with
mirroring, ``mirror``/``mirrorPercentage`` on the first route.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any

from pitwall.kube import KubeClient, NotFoundError
from pitwall.releases.affinity import Affinity, sticky_routes
from pitwall.releases.model import API_VERSION, CANARY, TOTAL_WEIGHT, CanaryView

__all__ = ["Routes", "delete_routing", "get_routes", "reconcile_routing", "reconcile_services", "set_routes"]

NET = "networking.istio.io/v1"
Obj = dict[str, Any]
# Fields of ``spec.service`` copied onto each HTTP route (Flagger's HTTPRoute fields).
_ROUTE_FIELDS = (("rewrite", "rewrite"), ("timeout", "timeout"), ("retries", "retries"),
                 ("corsPolicy", "corsPolicy"), ("headers", "headers"))


@dataclass(frozen=True)
class Routes:
    """The split the VirtualService holds now."""

    primary: int
    canary: int
    mirrored: bool


def _owner(cd: CanaryView) -> Obj:
    return {"apiVersion": API_VERSION, "kind": CANARY, "name": cd.name, "uid": str(cd.meta.get("uid") or ""),
            "controller": True, "blockOwnerDeletion": True}


async def _upsert(client: KubeClient, obj: Obj, fields: tuple[str, ...]) -> bool:
    """Create ``obj`` or bring the named top-level ``fields`` of the stored one to ``obj``'s; True if written."""
    m = obj["metadata"]
    try:
        old = await client.get(obj["apiVersion"], obj["kind"], m["name"], m["namespace"])
    except NotFoundError:
        await client.create(obj)
        return True
    if all(old.get(f) == obj.get(f) for f in fields):
        return False
    new = copy.deepcopy(old)
    for f in fields:
        new[f] = obj.get(f)
    await client.update(new)
    return True


def _ports(cd: CanaryView) -> list[Obj]:
    svc = cd.service
    port = svc.get("port")
    target = svc.get("targetPort", port)
    return [{"name": str(svc.get("portName") or "http"), "port": port, "targetPort": target, "protocol": "TCP"}]


async def reconcile_services(client: KubeClient, cd: CanaryView, label: str, value: str) -> None:
    """The apex, primary and canary ClusterIP Services (Flagger's KubernetesDefaultRouter)."""
    apex, primary, canary = cd.service_names()
    for name, selected in ((apex, f"{value}-primary"), (primary, f"{value}-primary"), (canary, value)):
        svc: Obj = {"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": cd.namespace, "labels": {label: name},
                                 "ownerReferences": [_owner(cd)]},
                    "spec": {"type": "ClusterIP", "selector": {label: selected}, "ports": _ports(cd)}}
        try:
            old = await client.get("v1", "Service", name, cd.namespace)
        except NotFoundError:
            await client.create(svc)
            continue
        spec = old.get("spec") or {}
        if spec.get("selector") != svc["spec"]["selector"] or _port_view(spec) != _port_view(svc["spec"]):
            new = copy.deepcopy(old)
            new["spec"]["selector"] = svc["spec"]["selector"]
            new["spec"]["ports"] = svc["spec"]["ports"]
            await client.update(new)


def _port_view(spec: Obj) -> list[tuple[Any, Any, Any]]:
    return [(p.get("name"), p.get("port"), p.get("targetPort")) for p in spec.get("ports") or []]


def _dest(cd: CanaryView, host: str, weight: int) -> Obj:
    d: Obj = {"destination": {"host": host}, "weight": weight}
    if cd.service.get("portDiscovery"):
        d["destination"]["port"] = {"number": cd.service.get("port")}
    return d


def _route(cd: CanaryView, match: list[Obj] | None, dests: list[Obj]) -> Obj:
    r: Obj = {}
    if match:
        r["match"] = match
    for src, dst in _ROUTE_FIELDS:
        if cd.service.get(src) is not None:
            r[dst] = copy.deepcopy(cd.service[src])
    r["route"] = dests
    return r


def _merge_matches(canary: list[Obj], defaults: list[Obj]) -> list[Obj]:
    """Every A/B condition combined with every ``service.match`` one (Flagger's mergeMatchConditions)."""
    if not defaults:
        return copy.deepcopy(canary)
    out: list[Obj] = []
    for c in canary:
        for d in defaults:
            m = copy.deepcopy(d)
            for k, v in c.items():
                m[k] = {**m[k], **v} if isinstance(v, dict) and isinstance(m.get(k), dict) else copy.deepcopy(v)
            out.append(m)
    return out


def _http(cd: CanaryView, primary_w: int, canary_w: int, mirrored: bool,
          state: Affinity = Affinity()) -> tuple[list[Obj], Affinity]:
    """The HTTP routes of the VirtualService (Flagger's IstioRouter.SetRoutes) and the session-affinity cookies
    they use (unchanged without ``analysis.sessionAffinity``)."""
    _, primary, canary = cd.service_names()
    svc_match = [m for m in cd.service.get("match") or [] if isinstance(m, dict)]
    weighted = _route(cd, svc_match, [_dest(cd, primary, primary_w), _dest(cd, canary, canary_w)])
    http = [weighted]
    if cd.session_affinity is not None:
        http, state = sticky_routes(cd.session_affinity, weighted, canary_w, state, hosts=(primary, canary),
                                    interval_s=cd.interval_s(), merge=lambda c: _merge_matches(c, svc_match))
    if mirrored:
        http[0]["mirror"] = {"host": canary}
        if cd.mirror_weight > 0:
            http[0]["mirrorPercentage"] = {"value": float(cd.mirror_weight)}
    if cd.match:
        ab = _route(cd, _merge_matches(cd.match, svc_match),
                    [_dest(cd, primary, primary_w), _dest(cd, canary, canary_w)])
        return [ab, _route(cd, svc_match, [_dest(cd, primary, TOTAL_WEIGHT)])], state
    return http, state


def _vs_spec(cd: CanaryView, http: list[Obj]) -> Obj:
    apex, _, _ = cd.service_names()
    hosts = [h for h in cd.service.get("hosts") or [] if isinstance(h, str)]
    if apex not in hosts and "*" not in hosts:
        hosts.append(apex)
    gateways = [g for g in cd.service.get("gateways") or [] if isinstance(g, str)] or ["mesh"]
    return {"hosts": hosts, "gateways": gateways, "http": http}


async def reconcile_routing(client: KubeClient, cd: CanaryView) -> Affinity:
    """The DestinationRules and the VirtualService; a new VirtualService routes 100% to the primary, an existing
    one keeps its weights (the analysis owns them) but follows the Canary's hosts, gateways and match. Returns
    the session-affinity cookies the routes use (the caller keeps them in the Canary's status)."""
    apex, primary, canary = cd.service_names()
    for host in (canary, primary):
        dr: Obj = {"apiVersion": NET, "kind": "DestinationRule",
                   "metadata": {"name": host, "namespace": cd.namespace, "ownerReferences": [_owner(cd)]},
                   "spec": {"host": host, **({"trafficPolicy": cd.service["trafficPolicy"]}
                                             if cd.service.get("trafficPolicy") else {})}}
        await _upsert(client, dr, ("spec",))
    state = Affinity.of(cd.status)
    try:
        old = await client.get(NET, "VirtualService", apex, cd.namespace)
    except NotFoundError:
        http, state = _http(cd, TOTAL_WEIGHT, 0, False, state)
        await client.create({"apiVersion": NET, "kind": "VirtualService",
                             "metadata": {"name": apex, "namespace": cd.namespace, "ownerReferences": [_owner(cd)]},
                             "spec": _vs_spec(cd, http)})
        return state
    now = routes_of(cd, old)
    http, state = _http(cd, now.primary, now.canary, now.mirrored, state)
    want = _vs_spec(cd, http)
    if old.get("spec") != want:
        new = copy.deepcopy(old)
        new["spec"] = want
        await client.update(new)
    return state


def routes_of(cd: CanaryView, vs: Obj) -> Routes:
    """The weights of the primary and canary hosts in the VirtualService's first HTTP route (under session
    affinity: in the route whose destinations set the cookie, as Flagger's GetRoutes reads them)."""
    _, primary, canary = cd.service_names()
    http = [r for r in (vs.get("spec") or {}).get("http") or [] if isinstance(r, dict)]
    if not http:
        return Routes(TOTAL_WEIGHT, 0, False)
    first = http[0]
    p, c = _weights(first, primary, canary)
    if cd.session_affinity is not None:
        for r in http:
            if any(d.get("headers") for d in r.get("route") or []):
                p, c = _weights(r, primary, canary)
    if p == 0 and c == 0:
        p = TOTAL_WEIGHT  # one destination without a weight takes everything
    return Routes(p, c, bool((first.get("mirror") or {}).get("host")))


def _weights(route: Obj, primary: str, canary: str) -> tuple[int, int]:
    p = c = 0
    for d in route.get("route") or []:
        host = (d.get("destination") or {}).get("host")
        if host == primary:
            p = int(d.get("weight") or 0)
        elif host == canary:
            c = int(d.get("weight") or 0)
    return p, c


async def get_routes(client: KubeClient, cd: CanaryView) -> Routes:
    apex, _, _ = cd.service_names()
    return routes_of(cd, await client.get(NET, "VirtualService", apex, cd.namespace))


async def set_routes(client: KubeClient, cd: CanaryView, primary: int, canary: int, mirrored: bool) -> Affinity:
    """Write the split (Flagger's IstioRouter.SetRoutes); returns the session-affinity cookies written."""
    apex, _, _ = cd.service_names()
    http, state = _http(cd, primary, canary, mirrored, Affinity.of(cd.status))
    spec = _vs_spec(cd, http)
    await client.modify(await client.get(NET, "VirtualService", apex, cd.namespace),
                        lambda vs: vs.__setitem__("spec", copy.deepcopy(spec)))
    return state


async def delete_routing(client: KubeClient, cd: CanaryView) -> None:
    """Remove the VirtualService and DestinationRules the Canary made (the Canary is being deleted)."""
    apex, primary, canary = cd.service_names()
    for kind, name in (("VirtualService", apex), ("DestinationRule", primary), ("DestinationRule", canary)):
        with contextlib.suppress(NotFoundError):
            await client.delete(NET, kind, name, cd.namespace)
