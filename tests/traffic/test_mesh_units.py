"""Istio's semantics without sockets: host names, matches, retry policies, authorization, workloads, telemetry."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from pitwall.traffic import ServiceProxy
from pitwall.traffic.authz import AuthzRequest, compile_authz
from pitwall.traffic.mesh import DEFAULT_RETRY, Request, compile_mesh, fqdn, parse_duration
from pitwall.traffic.peerauth import compile_peer_auth
from pitwall.traffic.pods import pod_info
from pitwall.traffic.telemetry import DURATION_BUCKETS_MS, LABELS, MUTUAL_TLS, PLAINTEXT, MeshTelemetry

pytestmark = pytest.mark.timeout(10)

WEB = "web.default.svc.cluster.local"


def _vs(http: list[dict[str, Any]], ns: str = "default", hosts: list[str] | None = None,
        name: str = "web", created: str = "2026-01-01T00:00:00Z", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": created},
            "spec": {"hosts": hosts or ["web"], "http": http, **spec}}


def _req(path: str = "/", method: str = "GET", headers: dict[str, str] | None = None) -> Request:
    return Request(method, path, headers or {}, "web", 80, None)


def test_host_names_as_istio_reads_them() -> None:
    assert fqdn("reviews", "prod") == "reviews.prod.svc.cluster.local"
    assert fqdn("reviews.prod", "default") == "reviews.prod.svc.cluster.local"
    assert fqdn("reviews.prod.svc", "x") == "reviews.prod.svc.cluster.local"
    assert fqdn("Reviews.Prod.svc.cluster.local.", "x") == "reviews.prod.svc.cluster.local"
    assert fqdn("*.prod.svc.cluster.local", "x") == "*.prod.svc.cluster.local"
    assert parse_duration("1.5s", "t") == 1.5 and parse_duration("250ms", "t") == 0.25
    assert parse_duration("1h", "t") == 3600


def test_vs_short_name_is_relative_to_its_namespace_and_oldest_wins() -> None:
    route = [{"route": [{"destination": {"host": "web"}}]}]
    other_ns = _vs(route, ns="prod")  # names web.prod, not web.default
    older = _vs([{"name": "old", "route": [{"destination": {"host": "web"}}]}], name="a", created="2025-01-01T00:00:00Z")
    newer = _vs([{"name": "new", "route": [{"destination": {"host": "web"}}]}], name="b")
    cfg = compile_mesh([WEB, "web.prod.svc.cluster.local"], [newer, other_ns, older], [])
    routes = cfg.routes_for(WEB)
    assert routes is not None and routes[0].name == "old"
    assert cfg.routes_for("web.prod.svc.cluster.local") is not None
    gw_only = _vs(route, gateways=["istio-system/gw"])
    assert compile_mesh([WEB], [gw_only], []).routes_for(WEB) is None


def test_matches() -> None:
    cfg = compile_mesh([WEB], [_vs([
        {"match": [{"uri": {"prefix": "/API"}, "ignoreUriCase": True, "method": {"regex": "GET|HEAD"}}],
         "route": [{"destination": {"host": "web", "subset": "a"}}]},
        {"match": [{"withoutHeaders": {"x-beta": {}}}, {"queryParams": {"v": {"regex": "[0-9]+"}}}],
         "route": [{"destination": {"host": "web", "subset": "b"}}]}])], [])
    routes = cfg.routes_for(WEB)
    assert routes is not None
    a, b = routes
    assert a.test(_req("/api/x")) and a.test(_req("/Api/x", "HEAD")) and not a.test(_req("/api/x", "POST"))
    assert b.test(_req("/")) and not b.test(_req("/", headers={"x-beta": "1"}))
    assert b.test(_req("/?v=12", headers={"x-beta": "1"})) and not b.test(_req("/?v=1a", headers={"x-beta": "1"}))


def test_retry_policies() -> None:
    def retry(r: dict[str, Any] | None) -> Any:
        http: dict[str, Any] = {"route": [{"destination": {"host": "web"}}]}
        if r is not None:
            http["retries"] = r
        routes = compile_mesh([WEB], [_vs([http])], []).routes_for(WEB)
        assert routes is not None
        return routes[0].retry

    assert retry(None) == DEFAULT_RETRY and DEFAULT_RETRY.attempts == 2 and not DEFAULT_RETRY.codes
    assert retry({"attempts": 0}).attempts == 0
    r = retry({"attempts": 4, "retryOn": "gateway-error, 503,429", "perTryTimeout": "2s"})
    assert r.attempts == 4 and r.per_try_timeout_s == 2.0
    assert r.on == {"gateway-error", "retriable-status-codes"} and r.codes == {503, 429}
    assert retry({"attempts": 3}).on == DEFAULT_RETRY.on  # retryOn unset: Istio's default conditions


def test_bad_regex_skips_the_object_whole() -> None:
    bad = _vs([{"route": [{"destination": {"host": "web"}}]},
               {"match": [{"uri": {"regex": "a(?=b)"}}], "route": [{"destination": {"host": "web"}}]}])
    cfg = compile_mesh([WEB], [bad], [])
    assert cfg.routes_for(WEB) is None
    assert "spec.http[1].match[0].uri.regex" in cfg.errors["VirtualService default/web"]


def test_destination_rule_subset_policy_replaces_top_level_fields() -> None:
    dr = {"metadata": {"name": "web", "namespace": "default"}, "spec": {
        "host": "web", "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"},
                                         "connectionPool": {"tcp": {"maxConnections": 7}}},
        "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"},
                     "trafficPolicy": {"loadBalancer": {"consistentHash": {"useSourceIp": True}}}}]}}
    rule = compile_mesh([WEB], [], [dr]).dest_rule(WEB)
    assert rule is not None
    v1, v2 = rule.for_subset("v1"), rule.for_subset("v2")
    assert v1 is not None and v2 is not None and rule.for_subset("v3") is None
    assert v1[0] == (("version", "v1"),) and v1[1].lb.simple == "RANDOM"
    assert v2[1].lb.hash_source_ip and v2[1].pool.max_connections == 7  # pool inherited, lb replaced


def _pod(name: str, ns: str, sa: str, labels: dict[str, str], owner: tuple[str, str] | None = None) -> Any:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels}
    if owner:
        meta["ownerReferences"] = [{"kind": owner[0], "name": owner[1], "controller": True}]
    return pod_info({"metadata": meta, "spec": {"serviceAccountName": sa}})


def test_workload_identity() -> None:
    p = _pod("web-7d9f-abcde", "shop", "web", {"app": "web", "version": "v2", "pod-template-hash": "7d9f"},
             ("ReplicaSet", "web-7d9f"))
    assert p.workload == "web" and p.principal == "spiffe://cluster.local/ns/shop/sa/web"
    assert (p.app, p.version, p.canonical_service, p.canonical_revision) == ("web", "v2", "web", "v2")
    assert _pod("solo", "default", "", {}).workload == "solo"


def test_authorization_order_and_fields() -> None:
    web = _pod("web-1", "default", "web", {"app": "web"})
    sleep = _pod("sleep-1", "default", "sleep", {"app": "sleep"})
    other = _pod("x-1", "other", "x", {})

    def req(src: Any, method: str = "GET", path: str = "/", ip: str = "127.42.0.5",
            headers: dict[str, str] | None = None) -> AuthzRequest:
        return AuthzRequest(src, ip, method, path, "web.default.svc.cluster.local", 8080, headers or {})

    def policy(name: str, spec: dict[str, Any], ns: str = "default") -> dict[str, Any]:
        return {"metadata": {"name": name, "namespace": ns}, "spec": spec}

    assert compile_authz([]).allowed(web, req(None))
    allow_nothing = compile_authz([policy("deny-all", {})])
    assert not allow_nothing.allowed(web, req(sleep))
    allow_all = compile_authz([policy("all", {"rules": [{}]})])
    assert allow_all.allowed(web, req(None))
    cfg = compile_authz([
        policy("allow", {"selector": {"matchLabels": {"app": "web"}}, "rules": [
            {"from": [{"source": {"namespaces": ["default"], "notPrincipals": ["*/sa/blocked"]}}],
             "to": [{"operation": {"methods": ["GET", "HEAD"], "notPaths": ["/private*"], "ports": ["8080"]}}]},
            {"from": [{"source": {"ipBlocks": ["10.0.0.0/8"]}}]},
            {"when": [{"key": "request.headers[x-token]", "values": ["s3cr*"]}]}]}),
        policy("deny", {"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["*/admin"]}}]}]},
               ns="istio-system"),
        policy("custom", {"action": "CUSTOM", "provider": {"name": "opa"}, "rules": [{}]}),
    ])
    assert "default/custom" in cfg.skipped
    assert cfg.allowed(web, req(sleep))
    assert not cfg.allowed(web, req(sleep, "POST"))
    assert not cfg.allowed(web, req(sleep, path="/private/x"))
    assert not cfg.allowed(web, req(other))
    assert cfg.allowed(web, req(other, ip="10.1.2.3"))
    assert cfg.allowed(web, req(None, "DELETE", headers={"x-token": "s3cret"}))
    assert not cfg.allowed(web, req(sleep, path="/api/admin"))  # the root namespace's DENY applies everywhere
    assert cfg.allowed(sleep, req(other, "POST"))  # no ALLOW policy selects the sleep pod


def test_telemetry_rows_are_cumulative_histograms() -> None:
    t = MeshTelemetry(None)
    key = tuple(f"v{i}" for i in range(len(LABELS)))
    t.record(key, 0.3, 10, 2000)
    t.record(key, 7.0, 0, 5)
    rows = {(dict(lb)["__name__"], dict(lb).get("le"), dict(lb)["reporter"]): v for lb, _, v in t.rows(1000)}
    assert rows[("istio_requests_total", None, "source")] == 2 == rows[("istio_requests_total", None, "destination")]
    assert rows[("istio_request_duration_milliseconds_bucket", "0.5", "destination")] == 1
    assert rows[("istio_request_duration_milliseconds_bucket", "10", "destination")] == 2
    assert rows[("istio_request_duration_milliseconds_bucket", "+Inf", "destination")] == 2
    assert rows[("istio_request_duration_milliseconds_sum", None, "source")] == pytest.approx(7.3)
    assert rows[("istio_response_bytes_bucket", "10", "source")] == 1
    assert len(DURATION_BUCKETS_MS) == 19 and not math.isinf(DURATION_BUCKETS_MS[-1])


def test_outlier_detection_rules() -> None:
    from pitwall.traffic.balancer import Backend
    from pitwall.traffic.cluster import Cluster
    from pitwall.traffic.mesh import LbPolicy, Outlier

    a, b = Backend("127.42.0.1", 80), Backend("127.42.0.2", 80)
    gw = Outlier(consecutive_5xx=0, consecutive_gateway=2, base_ejection_s=10.0, max_ejection_percent=100)
    c = Cluster("outbound|80||web")
    for _ in range(3):
        c.result(a, 500, gw, 2, 0.0)  # a 500 is not a gateway error
    assert c.ejected(0.0) == 0
    c.result(a, 502, gw, 2, 0.0)
    c.result(a, 0, gw, 2, 0.0)  # a connect failure is one
    assert c.ejected(0.0) == 1 and c.host(a).ejected_until == 10.0
    assert c.pick([a, b], LbPolicy("ROUND_ROBIN"), None, set(), 1.0) == b
    assert c.pick([a, b], LbPolicy("ROUND_ROBIN"), None, set(), 1.0) == b
    c.result(a, 503, gw, 2, 11.0)
    c.result(a, 504, gw, 2, 11.0)  # back after 10 s, ejected again: 2 x baseEjectionTime
    assert c.host(a).ejected_until == 31.0 and c.host(a).times_ejected == 2
    c.result(b, 503, gw, 2, 12.0)
    c.result(b, 503, gw, 2, 12.0)
    assert c.pick([a, b], LbPolicy(), None, set(), 12.0) is None  # all out (maxEjectionPercent 100): no panic mode
    five = Outlier(consecutive_5xx=2, max_ejection_percent=10)
    d = Cluster("outbound|80||api")
    d.result(a, 500, five, 2, 0.0)
    d.result(a, 200, five, 2, 0.0)  # a success resets the count
    d.result(a, 500, five, 2, 0.0)
    assert d.ejected(0.0) == 0
    d.result(a, 500, five, 2, 0.0)
    assert d.ejected(0.0) == 0  # one of two hosts is 50 % > maxEjectionPercent 10: Envoy ejects none
    half = Outlier(consecutive_5xx=1, max_ejection_percent=50)
    e = Cluster("outbound|80||db")
    e.result(a, 500, half, 2, 0.0)
    e.result(b, 500, half, 2, 0.0)
    assert e.ejected(0.0) == 1  # 1 of 2 is 50 %: allowed; 2 of 2 is not


def test_retry_budget_window() -> None:
    from pitwall.traffic.cluster import RetryBudget

    b = RetryBudget(ratio=0.2, min_per_s=0.0, ttl_s=10.0)
    for _ in range(50):
        b.request(100.0)
    assert [b.withdraw(100.5) for _ in range(11)] == [True] * 10 + [False]  # 20% of 50 requests
    assert b.exhausted == 1
    assert not b.withdraw(109.0)  # the requests still count within 10 s...
    assert not b.withdraw(111.0)  # ...and once they are out of the window, so are their retries' allowance
    b.request(111.0)
    assert not b.withdraw(111.0)  # one request earns a fifth of a retry
    floor = RetryBudget(ratio=0.0, min_per_s=1.0, ttl_s=10.0)  # Linkerd's minRetriesPerSecond: 10 per window
    assert sum(floor.withdraw(5.0) for _ in range(20)) == 10
    assert sum(floor.withdraw(16.0) for _ in range(20)) == 10  # the old retries left the window


def _peer_auth(mode: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"mtls": {"mode": mode}}
    if labels:
        spec["selector"] = {"matchLabels": labels}
    return {"metadata": {"name": f"pa-{mode.lower()}", "namespace": "default"}, "spec": spec}


async def test_hop_security_follows_each_new_mesh_and_pod_change() -> None:
    """hop_security caches its answer per (destination, port, service): a swapped-in mesh snapshot and a
    relabelled pod must each give the answer of the new configuration, not the cached one."""
    proxy = ServiceProxy(None)  # type: ignore[arg-type]  # no API needed: mesh and pods are set by hand
    src = pod_info({"metadata": {"name": "sleep", "namespace": "default"}})
    pod = {"metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
           "status": {"podIP": "127.42.0.9"}}
    await proxy._on_pods([pod], None)
    dest = proxy.pods["127.42.0.9"]

    def use(*policies: dict[str, Any]) -> None:
        proxy.mesh = dataclasses.replace(compile_mesh([WEB], [], []), peer_auth=compile_peer_auth(policies))

    use(_peer_auth("DISABLE"))
    assert proxy.hop_security(src, dest, 80, WEB) == PLAINTEXT
    assert proxy.hop_security(src, dest, 80, WEB) == PLAINTEXT  # from the cache
    assert proxy.hop_security(None, dest, 80, WEB) == PLAINTEXT  # no mesh caller: never mutual TLS
    use(_peer_auth("STRICT"))
    assert proxy.hop_security(src, dest, 80, WEB) == MUTUAL_TLS
    use(_peer_auth("STRICT"), _peer_auth("DISABLE", {"tier": "edge"}))
    assert proxy.hop_security(src, dest, 80, WEB) == MUTUAL_TLS  # the workload policy selects no pod yet
    pod["metadata"]["labels"]["tier"] = "edge"  # the same pod, relabelled: now under the DISABLE policy
    await proxy._on_pods([], [("MODIFIED", pod)])
    assert proxy.hop_security(src, proxy.pods["127.42.0.9"], 80, WEB) == PLAINTEXT
