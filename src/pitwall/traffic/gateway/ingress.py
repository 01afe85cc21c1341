"""Kubernetes Ingress (``networking.k8s.io/v1``) as gateway routes.

An Ingress is pitwall's when its class is: the legacy annotation
``kubernetes.io/ingress.class`` (when set) or ``spec.ingressClassName`` names
an IngressClass whose ``spec.controller`` is ``pitwall.dev/gateway`` (the
annotation may also say ``pitwall``), or neither is set and such a class is
annotated ``ingressclass.kubernetes.io/is-default-class: "true"``.

Matching follows the Ingress specification and ingress-nginx: the rules of
all pitwall Ingresses are merged per host; a request's host picks exact
host rules first, else the wildcard rules (``*.foo.com`` covers exactly one
more label), else the rules without a host. Within that group the longest
matching path wins and, at equal length, ``Exact`` before ``Prefix``
(``ImplementationSpecific`` is ``Prefix``); ``Prefix`` matches element-wise
(``/foo`` matches ``/foo`` and ``/foo/bar``, not ``/foobar``; a trailing
``/`` is ignored). Ties go to the older Ingress (creation time, then
namespace/name). ``spec.defaultBackend`` (the oldest Ingress's) answers what
nothing else matched. Backends are Services by name and port number or port
name, reached through their ClusterIP (``<name>.<namespace>.svc``), with the
request's path and Host unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pitwall.traffic.gateway.runtime import RouteRT, ServiceRT

__all__ = ["CONTROLLER", "IngressRoutes", "IngressTranslation", "is_pitwall_class", "translate_ingresses"]

Obj = dict[str, Any]
CONTROLLER = "pitwall.dev/gateway"
LEGACY_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
# Kong's service defaults (ms), so a Kubernetes route behaves as a Kong service with a URL would.
_SERVICE_DEFAULTS: Obj = {"path": None, "protocol": "http", "retries": 5, "connect_timeout": 60_000,
                          "read_timeout": 60_000, "write_timeout": 60_000}
_ROUTE_DEFAULTS: Obj = {"strip_path": False, "preserve_host": True, "path_handling": "v0",
                        "protocols": ["http", "https"], "https_redirect_status_code": 426}


def kube_service(namespace: str, name: str, port: int, *, owner: str) -> ServiceRT:
    """A gateway service for a pitwall Service's ClusterIP (resolved per request through the Kubernetes API)."""
    host = f"{name}.{namespace}.svc"
    return ServiceRT({**_SERVICE_DEFAULTS, "id": f"{owner}:{host}:{port}", "name": f"{namespace}.{name}.{port}",
                      "host": host, "port": port}, kube=(namespace, name))


def kube_route(route_id: str, svc: ServiceRT | None) -> RouteRT:
    """A route without plugins, forwarding path and Host unchanged."""
    return RouteRT({**_ROUTE_DEFAULTS, "id": route_id, "name": route_id}, svc)


def is_pitwall_class(cls: Obj) -> bool:
    return (cls.get("spec") or {}).get("controller") == CONTROLLER


def _meta(o: Obj) -> Obj:
    m = o.get("metadata")
    return m if isinstance(m, dict) else {}


def _age_key(o: Obj) -> tuple[str, str, str]:
    m = _meta(o)
    return str(m.get("creationTimestamp") or ""), str(m.get("namespace") or ""), str(m.get("name") or "")


def ours(ing: Obj, classes: Mapping[str, Obj]) -> bool:
    """Whether pitwall's gateway serves ``ing`` (see the module docstring)."""
    annotated = (_meta(ing).get("annotations") or {}).get(LEGACY_ANNOTATION)
    if annotated is not None:
        return annotated == "pitwall" or (annotated in classes and is_pitwall_class(classes[annotated]))
    name = (ing.get("spec") or {}).get("ingressClassName")
    if name:
        return name in classes and is_pitwall_class(classes[name])
    defaults = [c for c in classes.values()
                if (_meta(c).get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"]
    return any(is_pitwall_class(c) for c in defaults)


@dataclass(frozen=True)
class _Path:
    exact: bool
    path: str  # Exact: as written; Prefix: without its trailing "/" ("" for "/")
    order: tuple[str, str, str]
    route: RouteRT

    def matches(self, path: str) -> bool:
        if self.exact:
            return path == self.path
        return path == self.path or path.startswith(self.path + "/") or not self.path


@dataclass
class IngressRoutes:
    """Compiled Ingress rules; never changed once built (a change builds a new one)."""

    exact_hosts: dict[str, list[_Path]] = field(default_factory=dict)
    wildcard_hosts: dict[str, list[_Path]] = field(default_factory=dict)  # "foo.com" for "*.foo.com"
    any_host: list[_Path] = field(default_factory=list)
    default: RouteRT | None = None
    count: int = 0  # Ingresses served

    def find(self, host_header: str, path: str) -> RouteRT | None:
        """The route for a request (not the default backend), or None."""
        host = _host_only(host_header)
        paths = self.exact_hosts.get(host)
        if paths is None:
            _, dot, parent = host.partition(".")
            paths = self.wildcard_hosts.get(parent) if dot else None
        if paths is None:
            paths = self.any_host
        for p in paths:
            if p.matches(path):
                return p.route
        return None


@dataclass
class IngressTranslation:
    """The routes, and per Ingress (``ns/name``) the problems found (a backend port name not found...)."""

    routes: IngressRoutes
    served: list[Obj]
    problems: dict[str, list[str]]


def translate_ingresses(ingresses: Iterable[Obj], classes: Mapping[str, Obj],
                        services: Mapping[tuple[str, str], Obj]) -> IngressTranslation:
    """pitwall's Ingresses as routes; ``services`` by (namespace, name) resolve backend port names."""
    mine = sorted((i for i in ingresses if ours(i, classes)), key=_age_key)
    out = IngressRoutes(count=len(mine))
    problems: dict[str, list[str]] = {}
    for ing in mine:
        ns = str(_meta(ing).get("namespace") or "default")
        key = f"{ns}/{_meta(ing).get('name', '')}"
        spec = ing.get("spec") or {}
        errs: list[str] = []
        if out.default is None and spec.get("defaultBackend"):
            svc = _backend(ns, spec["defaultBackend"], services, key, "spec.defaultBackend", errs)
            if svc is not None:
                out.default = kube_route(f"ingress:{key}:default", svc)
        for i, rule in enumerate(spec.get("rules") or []):
            host = str(rule.get("host") or "").lower()
            bucket = out.any_host
            if host.startswith("*."):
                bucket = out.wildcard_hosts.setdefault(host[2:], [])
            elif host:
                bucket = out.exact_hosts.setdefault(host, [])
            for j, hp in enumerate((rule.get("http") or {}).get("paths") or []):
                where = f"spec.rules[{i}].http.paths[{j}]"
                svc = _backend(ns, hp.get("backend") or {}, services, key, f"{where}.backend", errs)
                if svc is None:
                    continue
                exact = hp.get("pathType") == "Exact"
                raw = str(hp.get("path") or "/")
                bucket.append(_Path(exact, raw if exact else raw.rstrip("/"), _age_key(ing),
                                    kube_route(f"ingress:{key}:{where}", svc)))
        if errs:
            problems[key] = errs
    for paths in (*out.exact_hosts.values(), *out.wildcard_hosts.values(), out.any_host):
        # longest path first, Exact before Prefix at equal length, older Ingress first (sort is stable)
        paths.sort(key=lambda p: (-len(p.path), not p.exact, p.order))
    return IngressTranslation(out, mine, problems)


def _backend(ns: str, backend: Obj, services: Mapping[tuple[str, str], Obj], key: str, where: str,
             errs: list[str]) -> ServiceRT | None:
    ref = backend.get("service")
    if not isinstance(ref, dict) or not ref.get("name"):
        errs.append(f"{where}: only Service backends are supported")
        return None
    name = str(ref["name"])
    port = ref.get("port") or {}
    number = port.get("number")
    if number is None and port.get("name"):
        svc = services.get((ns, name))
        number = next((p.get("port") for p in ((svc or {}).get("spec") or {}).get("ports") or []
                       if p.get("name") == port["name"]), None)
        if number is None:
            errs.append(f"{where}.service.port.name: Service {ns}/{name} has no port named {port['name']!r}")
            return None
    if not isinstance(number, int):
        errs.append(f"{where}.service.port: a number or a name is required")
        return None
    return kube_service(ns, name, number, owner=f"ingress:{key}")


def _host_only(h: str) -> str:
    h = h.lower()
    if h.startswith("["):
        return h[: h.find("]") + 1]
    return h.partition(":")[0]
