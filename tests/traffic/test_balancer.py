"""PortBalancer and the slice reading of the proxy: pure, no sockets."""

from __future__ import annotations

from typing import Any

from pitwall.traffic import Backend, PortBalancer
from pitwall.traffic.proxy import endpoints_of, port_specs

A, B, C = Backend("127.42.0.1", 80), Backend("127.42.0.2", 80), Backend("127.42.0.3", 80)


def test_round_robin_rotates_and_lists_every_candidate() -> None:
    bal = PortBalancer()
    bal.set_endpoints([C, A, B])
    firsts = [bal.candidates("c", 0)[0] for _ in range(6)]
    assert firsts == [A, B, C, A, B, C]
    assert sorted(bal.candidates("c", 0), key=str) == [A, B, C]


def test_fallback_only_without_ready_endpoints() -> None:
    bal = PortBalancer()
    bal.set_endpoints([A], [B])
    assert bal.candidates("c", 0) == [A]
    bal.set_endpoints([], [B])
    assert bal.candidates("c", 0) == [B]
    assert bal.active() == {B}
    bal.set_endpoints([], [])
    assert bal.candidates("c", 0) == []


def test_client_ip_affinity_expires_and_follows_endpoint_removal() -> None:
    bal = PortBalancer(affinity_timeout_s=10)
    bal.set_endpoints([A, B, C])
    first = bal.candidates("10.0.0.1", 0)[0]
    bal.chosen("10.0.0.1", first, 0)
    assert all(bal.candidates("10.0.0.1", t)[0] == first for t in (1, 2, 9))
    assert bal.candidates("10.0.0.2", 1)[0] != first or len(bal.ready) == 1
    bal.set_endpoints([b for b in (A, B, C) if b != first])
    assert bal.candidates("10.0.0.1", 3)[0] != first


def test_port_specs_skip_headless_external_and_udp() -> None:
    svc = {"spec": {"clusterIP": "127.96.0.9", "sessionAffinity": "ClientIP",
                    "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}}
    (spec,) = port_specs(("default", "web"), svc)
    assert (spec.cluster_ip, spec.port, spec.port_name, spec.affinity_timeout_s) == ("127.96.0.9", 80, "http", 10800)
    assert port_specs(("d", "h"), {"spec": {"clusterIP": "None", "ports": [{"port": 80}]}}) == []
    assert port_specs(("d", "x"), {"spec": {"type": "ExternalName", "externalName": "example.com"}}) == []


def test_endpoints_of_matches_the_port_by_name() -> None:
    slices: list[dict[str, Any]] = [
        {"addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
         "endpoints": [{"addresses": ["127.42.0.1"], "conditions": {"ready": True}},
                       {"addresses": ["127.42.0.2"], "conditions": {"ready": False, "serving": True,
                                                                    "terminating": True}},
                       {"addresses": ["127.42.0.3"], "conditions": {"ready": False}},
                       {"addresses": ["127.42.0.4"]}]},  # conditions unset: ready, as upstream
        {"addressType": "IPv4", "ports": [{"name": "metrics", "port": 9100}],
         "endpoints": [{"addresses": ["127.42.0.5"]}]},
        {"addressType": "IPv6", "ports": [{"name": "http", "port": 8080}], "endpoints": [{"addresses": ["::1"]}]},
    ]
    ready, fallback = endpoints_of(slices, "http")
    assert ready == [Backend("127.42.0.1", 8080), Backend("127.42.0.4", 8080)]
    assert fallback == [Backend("127.42.0.2", 8080)]
