"""A ``KongState`` compiled for serving: router, services with their targets, plugin chains per route.

``compile_state`` does all the work a request would otherwise repeat:
plugin instances built once, each route's chain chosen by Kong's
precedence (consumer+route+service, consumer+route, consumer+service,
route+service, consumer, route, service, global) and sorted by plugin
priority, consumer-scoped chains built on first use. The result is
immutable once built, so a reload swaps one reference and a request in
flight keeps the configuration it started with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pitwall.traffic.gateway.declarative import KongState
from pitwall.traffic.gateway.plugins import PLUGIN_TYPES, Consumers, Env, Plugin
from pitwall.traffic.gateway.router import Router

__all__ = ["GatewayConfig", "RouteRT", "ServiceRT", "compile_state"]

Entity = dict[str, Any]
# Kong's plugin precedence: (consumer, route, service) set, most specific first.
_PRECEDENCE = [(True, True, True), (True, True, False), (True, False, True), (False, True, True),
               (True, False, False), (False, True, False), (False, False, True), (False, False, False)]
KUBE_SUFFIXES = (".svc", ".svc.cluster.local")


class Targets:
    """Kong's round-robin balancer over an upstream's targets: each target ``weight`` times per cycle."""

    def __init__(self, targets: Sequence[Entity]) -> None:
        live = [t for t in targets if t["weight"] > 0]  # weight 0: the target takes no traffic
        self.peers = [_host_port(t["target"]) for t in live]
        # Smooth weighted round-robin (nginx's): weights interleaved rather than in bursts.
        self.weights = [int(t["weight"]) for t in live]
        self.current = [0] * len(self.peers)
        self.total = sum(self.weights)

    def next(self) -> tuple[str, int] | None:
        if not self.peers:
            return None
        best = 0
        for i, w in enumerate(self.weights):
            self.current[i] += w
            if self.current[i] > self.current[best]:
                best = i
        self.current[best] -= self.total
        return self.peers[best]


@dataclass
class ServiceRT:
    """A service as the proxy needs it; ``targets`` set when its host names a Kong upstream."""

    entity: Entity
    targets: Targets | None = None
    kube: tuple[str, str] | None = None  # (namespace, name) of a pitwall Service

    def __post_init__(self) -> None:
        e = self.entity
        self.id: str = e["id"]
        self.name: str = e.get("name") or e["id"]
        self.host: str = e["host"]
        self.port: int = e["port"]
        self.key = (self.host, self.port)  # its upstream pool, for a fixed host
        self.path: str | None = e.get("path")
        self.retries: int = e["retries"]
        self.connect_timeout_s = e["connect_timeout"] / 1000.0
        self.read_timeout_s = e["read_timeout"] / 1000.0
        self.write_timeout_s = e["write_timeout"] / 1000.0
        default_port = 443 if e["protocol"] == "https" else 80
        self.host_header = self.host if self.port == default_port else f"{self.host}:{self.port}"


@dataclass
class RouteRT:
    """A route with its service and its plugin chain (without a consumer)."""

    entity: Entity
    service: ServiceRT | None
    plugins: tuple[Plugin, ...] = ()
    response_plugins: tuple[Plugin, ...] = ()
    log_plugins: tuple[Plugin, ...] = ()
    consumer_scoped: bool = False
    by_consumer: dict[str, tuple[Plugin, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        e = self.entity
        self.id: str = e["id"]
        self.name: str = e.get("name") or e["id"]
        self.strip_path: bool = e["strip_path"]
        self.preserve_host: bool = e["preserve_host"]
        self.path_handling: str = e["path_handling"]
        self.https_only = "http" not in e["protocols"]  # this listener is plain HTTP
        self.https_redirect_status: int = e["https_redirect_status_code"]


class GatewayConfig:
    """One compiled configuration; never changed after ``compile_state``."""

    def __init__(self, state: KongState, stats: Any = None) -> None:
        self.state = state
        self.consumers = Consumers.of(state.consumers)
        self.env = Env(self.consumers, {s["id"]: s for s in state.services}, stats)
        self.instances = {p["id"]: PLUGIN_TYPES[p["name"]](p, self.env) for p in state.plugins if p["enabled"]}
        upstreams = {u["name"]: u for u in state.upstreams}
        self.services = {s["id"]: _service(s, upstreams) for s in state.services if s["enabled"]}
        self.routes: list[RouteRT] = []
        for r in state.routes:
            if not any(p in ("http", "https") for p in r["protocols"]):
                continue  # stream and gRPC-only routes are not served by this HTTP listener
            svc = self.services.get(r["service"]) if r.get("service") else None
            if r.get("service") and svc is None:
                continue  # its service is disabled: Kong leaves the route out of the router
            rt = RouteRT(r, svc)
            chain = self.chain(rt, None)
            rt.plugins = chain
            rt.response_plugins = tuple(p for p in chain if p.has_response)
            rt.log_plugins = tuple(p for p in chain if p.has_log)
            rt.consumer_scoped = any(p.entity.get("consumer") is not None for p in self.instances.values())
            self.routes.append(rt)
        self.router = Router([(rt, rt.entity) for rt in self.routes])

    def chain(self, route: RouteRT, consumer_id: str | None) -> tuple[Plugin, ...]:
        """The plugins that apply to ``route`` (and ``consumer_id``), one per name, by priority."""
        service_id = route.service.id if route.service is not None else None
        best: dict[str, tuple[int, Plugin]] = {}
        for p in self.instances.values():
            e = p.entity
            c, r, s = e.get("consumer"), e.get("route"), e.get("service")
            if (c is not None and c != consumer_id) or (r is not None and r != route.id) or \
                    (s is not None and s != service_id):
                continue
            rank = _PRECEDENCE.index((c is not None, r is not None, s is not None))
            if e["name"] not in best or rank < best[e["name"]][0]:
                best[e["name"]] = (rank, p)
        plugins = [p for _rank, p in best.values() if any(x in ("http", "https") for x in p.entity["protocols"])]
        return tuple(sorted(plugins, key=lambda p: -p.priority))

    def consumer_chain(self, route: RouteRT, consumer_id: str) -> tuple[Plugin, ...]:
        got = route.by_consumer.get(consumer_id)
        if got is None:
            got = route.by_consumer[consumer_id] = self.chain(route, consumer_id)
        return got


def _service(s: Entity, upstreams: dict[str, Entity]) -> ServiceRT:
    up = upstreams.get(s["host"])
    if up is not None:
        return ServiceRT(s, targets=Targets(up.get("targets") or []))
    for suffix in KUBE_SUFFIXES:
        if s["host"].endswith(suffix):
            parts = s["host"][: -len(suffix)].split(".")
            if len(parts) == 2 and all(parts):
                return ServiceRT(s, kube=(parts[1], parts[0]))
    return ServiceRT(s)


def compile_state(state: KongState, stats: Any = None) -> GatewayConfig:
    """``state`` ready to serve (plugin instances built, routes sorted)."""
    return GatewayConfig(state, stats)


def _host_port(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)
