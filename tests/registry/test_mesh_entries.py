"""Consul's discovery chain and intention precedence as translated for the mesh, without sockets: the
translated objects are compiled by the mesh's own compilers and decisions read from the compiled rules."""

from __future__ import annotations

from typing import Any

import pytest

from pitwall.registry.config_entries import validate_entry
from pitwall.registry.mesh_entries import mesh_objects, subset_labels
from pitwall.traffic.authz import AuthzRequest, compile_authz
from pitwall.traffic.mesh import compile_mesh
from pitwall.traffic.pods import PodInfo

pytestmark = pytest.mark.timeout(10)

SERVICES = {("default", n): {"spec": {"selector": {"app": n}}} for n in ("api", "web", "db")}
FQ = "{}.default.svc.cluster.local"


def _entries(*raw: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for r in raw:
        e = validate_entry(r)
        out[(e["Kind"], e["Name"])] = e
    return out


def _pod(app: str, sa: str) -> PodInfo:
    return PodInfo(name=f"{app}-0", namespace="default", workload=app, labels={"app": app}, service_account=sa)


def _allowed(entries: dict[tuple[str, str], dict[str, Any]], dest: str, caller: str | None, path: str = "/",
             method: str = "GET") -> bool:
    objs, errors = mesh_objects(entries, SERVICES)
    assert not errors
    authz = compile_authz(objs["AuthorizationPolicy"])
    src = _pod(caller, caller) if caller else None
    req = AuthzRequest(src, "10.0.0.9", method, path, FQ.format(dest), 8080, {})
    return authz.allowed(_pod(dest, dest), req)


def test_intention_precedence_exact_before_wildcard() -> None:
    e = _entries({"Kind": "service-intentions", "Name": "*", "Sources": [{"Name": "*", "Action": "deny"},
                                                                       {"Name": "web", "Action": "allow"}]},
                 {"Kind": "service-intentions", "Name": "db", "Sources": [{"Name": "web", "Action": "deny"},
                                                                        {"Name": "*", "Action": "allow"}]})
    assert _allowed(e, "api", "web")  # * -> * deny, but web -> * allow (precedence 6 over 5)
    assert not _allowed(e, "api", "db")
    assert not _allowed(e, "api", None)  # a caller that is no pod: only wildcard sources apply
    assert not _allowed(e, "db", "web")  # web -> db deny (9) over web -> * allow (6)
    assert _allowed(e, "db", "api")  # * -> db allow (8) over * -> * deny (5)


def test_no_intentions_allow_everything() -> None:
    assert _allowed({}, "api", "web")
    e = _entries({"Kind": "service-intentions", "Name": "api", "Sources": [{"Name": "web", "Action": "allow"}]})
    assert _allowed(e, "api", "db")  # no matching intention: the default (ACLs off) allows


def _dests(entries: dict[tuple[str, str], dict[str, Any]], svc: str) -> list[list[tuple[str, str, int]]]:
    objs, errors = mesh_objects(entries, SERVICES)
    assert not errors
    cfg = compile_mesh([FQ.format(n) for _, n in SERVICES], objs["VirtualService"], objs["DestinationRule"])
    assert not cfg.errors
    return [[(d.host.split(".")[0], d.subset, d.weight) for d in r.dests] for r in cfg.routes_for(FQ.format(svc)) or ()]


def test_nested_splitters_multiply_and_redirects_follow() -> None:
    e = _entries({"Kind": "service-splitter", "Name": "api", "Splits": [{"Weight": 50}, {"Weight": 50,
                                                                                        "Service": "web"}]},
                 {"Kind": "service-splitter", "Name": "web", "Splits": [{"Weight": 20, "ServiceSubset": "a"},
                                                                       {"Weight": 80, "ServiceSubset": "b"}]},
                 {"Kind": "service-resolver", "Name": "api", "DefaultSubset": "v1",
                  "Subsets": {"v1": {"Filter": "Service.Meta.version == v1"}}},
                 {"Kind": "service-resolver", "Name": "db", "Redirect": {"Service": "web", "ServiceSubset": "a"}})
    assert _dests(e, "api") == [[("api", "v1", 5000), ("web", "a", 1000), ("web", "b", 4000)]]
    assert _dests(e, "db") == [[("web", "a", 10000)]]


def test_router_retries_are_consuls_not_istios() -> None:
    e = _entries({"Kind": "service-router", "Name": "api", "Routes": [
        {"Match": {"HTTP": {"PathPrefix": "/a"}}, "Destination": {"NumRetries": 3, "RetryOnStatusCodes": [503]}},
        {"Match": {"HTTP": {"PathPrefix": "/b"}}, "Destination": {"RequestTimeout": "1500ms"}}]})
    objs, _ = mesh_objects(e, SERVICES)
    routes = compile_mesh([FQ.format("api")], objs["VirtualService"], []).routes_for(FQ.format("api"))
    assert routes is not None and len(routes) == 3
    assert routes[0].retry.attempts == 3 and routes[0].retry.codes == frozenset({503})
    assert routes[1].retry.attempts == 0 and routes[1].timeout_s == 1.5
    assert routes[2].retry.attempts == 0  # the catch-all Consul adds: no retries (Envoy's default)


def test_subset_filters_map_to_labels() -> None:
    assert subset_labels('Service.Meta.version == v1 and Service.Meta.track == "canary"') == {
        "version": "v1", "track": "canary"}
    with pytest.raises(ValueError, match=r"only Service\.Meta"):
        subset_labels("v1 in Service.Tags")


def test_peer_sources_match_no_local_caller() -> None:
    e = _entries({"Kind": "service-intentions", "Name": "api", "Sources": [
        {"Name": "web", "Peer": "other-cluster", "Action": "deny"}, {"Name": "db", "Action": "deny"}]})
    assert _allowed(e, "api", "web")
    assert not _allowed(e, "api", "db")
