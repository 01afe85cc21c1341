"""Discovery documents as kube-apiserver answers them.

Legacy discovery: ``/api`` (APIVersions), ``/apis`` (APIGroupList),
``/apis/<group>`` (APIGroup), ``/api/v1`` and ``/apis/<group>/<version>``
(APIResourceList, subresources as ``<plural>/<sub>`` entries). Aggregated
discovery (``apidiscovery.k8s.io/v2`` ``APIGroupDiscoveryList``), which
kubectl 1.30+ asks for first on ``/api`` and ``/apis``, answers the same in
one document per root.
"""

from __future__ import annotations

from typing import Any

from pitwall.kube.registry import Registry, ResourceType

__all__ = ["AGGREGATED_V2", "aggregated", "api_group", "api_group_list", "api_resource_list", "api_versions",
           "wants_aggregated"]

AGGREGATED_V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"

Obj = dict[str, Any]
_SUB_VERBS = {"status": ["get", "patch", "update"], "scale": ["get", "patch", "update"], "log": ["get"],
              "finalize": ["update"], "binding": ["create"]}


def wants_aggregated(accept: str) -> str:
    """The aggregated media type the client asked for ("" if none)."""
    for part in accept.split(","):
        params = {p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip()
                  for p in part.split(";")[1:] if "=" in p}
        if params.get("g") == "apidiscovery.k8s.io" and params.get("as") == "APIGroupDiscoveryList":
            if params.get("v") == "v2":
                return AGGREGATED_V2
            if params.get("v") == "v2beta1":
                return AGGREGATED_V2BETA1
    return ""


def api_versions(server_address: str) -> Obj:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]}


def _gv(group: str, version: str) -> Obj:
    return {"groupVersion": f"{group}/{version}", "version": version}


def api_group(group: str, versions: list[str]) -> Obj:
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group,
            "versions": [_gv(group, v) for v in versions], "preferredVersion": _gv(group, versions[0])}


def api_group_list(reg: Registry) -> Obj:
    groups = [api_group(g, vs) for g, vs in reg.groups() if g]
    for g in groups:
        del g["kind"], g["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _resource_entry(rt: ResourceType) -> Obj:
    e: Obj = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced, "kind": rt.kind,
              "verbs": list(rt.verbs)}
    if rt.short_names:
        e["shortNames"] = list(rt.short_names)
    if rt.categories:
        e["categories"] = list(rt.categories)
    return e


def api_resource_list(reg: Registry, group: str, version: str) -> Obj:
    resources: list[Obj] = []
    for rt in reg.resources(group, version):
        resources.append(_resource_entry(rt))
        for sub in rt.subresources:
            s: Obj = {"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced,
                      "kind": rt.kind, "verbs": _SUB_VERBS.get(sub, ["get"])}
            if sub == "scale":
                s.update(group="autoscaling", version="v1", kind="Scale")
            elif sub == "binding":
                s["kind"] = "Binding"
            resources.append(s)
    out: Obj = {"kind": "APIResourceList", "groupVersion": f"{group}/{version}" if group else version,
                "resources": resources}
    if group:
        out["apiVersion"] = "v1"
    return out


def _discovery_resource(rt: ResourceType) -> Obj:
    r: Obj = {
        "resource": rt.plural,
        "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "singularResource": rt.singular,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        r["shortNames"] = list(rt.short_names)
    if rt.categories:
        r["categories"] = list(rt.categories)
    subs = []
    for sub in rt.subresources:
        kind = {"group": "autoscaling", "version": "v1", "kind": "Scale"} if sub == "scale" else \
            {"group": "", "version": "v1", "kind": "Binding"} if sub == "binding" else \
            {"group": rt.group, "version": rt.version, "kind": rt.kind}
        subs.append({"subresource": sub, "responseKind": kind, "verbs": _SUB_VERBS.get(sub, ["get"])})
    if subs:
        r["subresources"] = subs
    return r


def aggregated(reg: Registry, core: bool, media_type: str) -> Obj:
    """The APIGroupDiscoveryList for ``/api`` (core) or ``/apis``."""
    items = []
    for group, versions in reg.groups():
        if (group == "") != core:
            continue
        items.append({
            "metadata": {"name": group} if group else {},
            "versions": [{"version": v, "resources": [_discovery_resource(rt) for rt in reg.resources(group, v)],
                          "freshness": "Current"} for v in versions],
        })
    version = "v2" if "v=v2;" in media_type or media_type.endswith("v=v2") else "v2beta1"
    return {"kind": "APIGroupDiscoveryList", "apiVersion": f"apidiscovery.k8s.io/{version}", "metadata": {},
            "items": items}
