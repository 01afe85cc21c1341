"""Cost of Kubernetes routes in the gateway: rebuilding the table, and choosing a route per request.

    .venv/bin/python bench/gateway_kube_routes.py [--routes 1000]

Builds ``--routes`` Ingresses (one host, two paths each) and as many
HTTPRoutes (one hostname, a header match and a two-way weighted split each),
translates them as the gateway does after every settled change, and times
``find`` for requests that hit the last host, a middle one and no route.
Prints the median of 5 rebuilds and the mean per ``find`` (µs). In process,
no sockets. Not part of the tests.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from pitwall.traffic.gateway.context import Ctx, Request
from pitwall.traffic.gateway.gatewayapi import translate_gateway_api
from pitwall.traffic.gateway.ingress import translate_ingresses
from pitwall.traffic.gateway.kuberoutes import KubeRoutes

Obj = dict[str, Any]
GW = "gateway.networking.k8s.io/v1"


def objects(n: int) -> tuple[list[Obj], list[Obj], dict[tuple[str, str], Obj]]:
    ingresses, routes = [], []
    for i in range(n):
        paths = [{"path": p, "pathType": t, "backend": {"service": {"name": f"svc{i}", "port": {"number": 80}}}}
                 for p, t in (("/api", "Prefix"), ("/healthz", "Exact"))]
        ingresses.append({"metadata": {"name": f"ing{i}", "namespace": "default"},
                          "spec": {"ingressClassName": "pitwall", "rules": [
                              {"host": f"ing{i}.example.com", "http": {"paths": paths}}]}})
        routes.append({"metadata": {"name": f"rt{i}", "namespace": "default"}, "spec": {
            "parentRefs": [{"name": "gw"}], "hostnames": [f"rt{i}.example.com"],
            "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                                    "headers": [{"name": "x-canary", "value": "1"}]}],
                       "backendRefs": [{"name": f"svc{i}", "port": 80, "weight": 9},
                                       {"name": f"svc{i}", "port": 81, "weight": 1}]}]}})
    services = {("default", f"svc{i}"): {} for i in range(n)}
    return ingresses, routes, services


def build(ingresses: list[Obj], routes: list[Obj], services: dict[tuple[str, str], Obj]) -> KubeRoutes:
    classes = {"pitwall": {"spec": {"controller": "pitwall.dev/gateway"}}}
    t = translate_ingresses(ingresses, classes, services)
    g = translate_gateway_api([{"metadata": {"name": "pitwall"}, "spec": {"controllerName": "pitwall.dev/gateway"}}],
                              [{"metadata": {"name": "gw", "namespace": "default"}, "spec": {
                                  "gatewayClassName": "pitwall",
                                  "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}}],
                              routes, services, address="127.0.0.1")
    return KubeRoutes(g.table, t.routes)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--routes", type=int, default=1000)
    ap.add_argument("--finds", type=int, default=2000)
    a = ap.parse_args()
    objs = objects(a.routes)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        kr = build(*objs)
        times.append(time.perf_counter() - t0)
    print(f"{a.routes} Ingresses + {a.routes} HTTPRoutes: rebuild median {statistics.median(times) * 1000:.1f} ms")
    n = a.routes
    for label, host, hdr in (("last HTTPRoute host", f"rt{n - 1}.example.com", {"x-canary": "1"}),
                             ("middle Ingress host", f"ing{n // 2}.example.com", {}),
                             ("no route", "nothing.example.org", {})):
        t0 = time.perf_counter()
        for _ in range(a.finds):
            req = Request("GET", "/api/x", {"host": host, **hdr}, b"", "1.1", True)
            kr.find(req, Ctx(req, "127.0.0.1", 0.0))
        per = (time.perf_counter() - t0) / a.finds * 1e6
        print(f"find ({label}): {per:.1f} µs")


if __name__ == "__main__":
    main()
