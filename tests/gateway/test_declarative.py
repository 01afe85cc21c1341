"""The Kong 3.x declarative loader against decK's own fixtures: every file accepted, defaults as Kong fills them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pitwall.traffic.gateway.declarative import DeclarativeError, apply_declarative, dump, load_declarative
from tests.conftest import SHARED

pytestmark = pytest.mark.timeout(30)

DECK = SHARED / "conformance" / "wave2" / "kong-deck" / "tests" / "integration" / "testdata"
APPLY_006 = DECK / "apply" / "006-foreign-keys-routes"


def _yaml(p: Path) -> Any:
    return yaml.safe_load(p.read_text())


@pytest.mark.parametrize("name", ["002-create-services-and-routes", "003-create-a-plugin",
                                  "005-create-upstream-and-target-weight",
                                  "010-create-route-with-service-name-reference", "012-vaults",
                                  "024-consumers-with-custom_id-and-username"])
def test_sync_fixture_is_accepted(name: str) -> None:
    state = load_declarative(_yaml(DECK / "sync" / name / "kong3x.yaml"))
    assert state.services or state.plugins or state.upstreams or state.consumers


def test_apply_006_dump_equals_expected_state() -> None:
    state = load_declarative(_yaml(APPLY_006 / "route-01.yaml"))
    state = apply_declarative(state, _yaml(APPLY_006 / "plugin-01.yaml"))
    assert dump(state) == _yaml(APPLY_006 / "expected-state.yaml")


def test_plugin_referencing_an_unknown_route_is_rejected_alone() -> None:
    with pytest.raises(DeclarativeError) as e:
        load_declarative(_yaml(APPLY_006 / "plugin-01.yaml"))
    assert e.value.problems == ["plugins[0].route: route 'example-route' not found"]


def test_service_defaults_and_route_by_name() -> None:
    state = load_declarative(_yaml(DECK / "sync" / "010-create-route-with-service-name-reference" / "kong3x.yaml"))
    (svc,), (route,) = state.services, state.routes
    assert route["service"] == svc["id"] == "58076db2-28b6-423b-ba39-a797193017f7"
    assert svc["write_timeout"] == 60000 and svc["enabled"] is True and svc["path"] is None
    assert route["https_redirect_status_code"] == 301 and route["protocols"] == ["http", "https"]


def test_upstream_targets_get_port_and_healthcheck_defaults() -> None:
    state = load_declarative(_yaml(DECK / "sync" / "005-create-upstream-and-target-weight" / "kong3x.yaml"))
    (up,) = state.upstreams
    assert up["slots"] == 10000 and up["hash_on"] == "none"
    assert up["healthchecks"]["active"]["unhealthy"]["http_statuses"] == [429, 404, 500, 501, 502, 503, 504, 505]
    assert up["targets"][0]["target"] == "198.51.100.11:80" and up["targets"][0]["weight"] == 0
    one = load_declarative({"_format_version": "3.0", "upstreams": [{"name": "u", "targets": [{"target": "h"}]}]})
    assert one.upstreams[0]["targets"][0] == {**one.upstreams[0]["targets"][0], "target": "h:8000", "weight": 100}


def test_plugin_config_defaults() -> None:
    state = load_declarative({"_format_version": "3.0", "plugins": [
        {"name": "rate-limiting", "config": {"minute": 5}}, {"name": "key-auth"}, {"name": "correlation-id"}]})
    rl, ka, cid = state.plugins
    assert rl["config"]["limit_by"] == "consumer" and rl["config"]["policy"] == "local"
    assert rl["config"]["fault_tolerant"] is True and rl["config"]["error_message"] == "API rate limit exceeded"
    assert rl["protocols"] == ["grpc", "grpcs", "http", "https"] and rl["enabled"] is True
    assert ka["config"]["key_names"] == ["apikey"] and ka["config"]["key_in_body"] is False
    assert cid["config"] == {"header_name": "Kong-Request-ID", "generator": "uuid#counter", "echo_downstream": False}


def test_consumer_credentials_are_filled() -> None:
    state = load_declarative({"_format_version": "3.0", "consumers": [
        {"username": "alice", "keyauth_credentials": [{}], "jwt_secrets": [{"key": "k"}], "acls": [{"group": "g"}]}]})
    (c,) = state.consumers
    assert len(c["keyauth_credentials"][0]["key"]) == 32
    assert c["jwt_secrets"][0]["algorithm"] == "HS256" and c["jwt_secrets"][0]["secret"]
    assert c["acls"][0]["group"] == "g"


@pytest.mark.parametrize(("doc", "problem"), [
    ({"_format_version": "2.1"}, '_format_version: expected "3.0"'),
    ({"_format_version": "3.0", "services": [{"name": "s", "host": "h", "port": "80"}]},
     "services[0].port: expected an integer"),
    ({"_format_version": "3.0", "services": [{"name": "s", "host": "h", "routes": [{"paths": ["x"]}]}]},
     "services[0].routes[0].paths[0]: should start with: / (fixed path) or ~/ (regex path)"),
    ({"_format_version": "3.0", "routes": [{"name": "r"}]},
     "routes[0]: must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'http'"),
    ({"_format_version": "3.0", "plugins": [{"name": "nope"}]},
     "plugins[0].name: plugin 'nope' not enabled; add it to the 'plugins' configuration property"),
    ({"_format_version": "3.0", "plugins": [{"name": "rate-limiting", "config": {"second": 10, "minute": 5}}]},
     "plugins[0].config: The limit for minute(5.0) cannot be lower than the limit for second(10.0)"),
    ({"_format_version": "3.0", "plugins": [{"name": "acl", "config": {"allow": ["a"], "deny": ["b"]}}]},
     "plugins[0].config: only one of these fields must be non-empty: 'config.allow', 'config.deny'"),
    ({"_format_version": "3.0", "plugins": [{"name": "key-auth", "config": {"nope": 1}}]},
     "plugins[0].config.nope: unknown field"),
    ({"_format_version": "3.0", "routes": [{"paths": ["~/(a"]}]}, "routes[0].paths[0]: invalid regex"),
    ({"_format_version": "3.0", "services": [{"name": "a", "host": "h", "routes": [{"name": "r", "paths": ["/"]}]},
                                             {"name": "b", "host": "h", "routes": [{"name": "r", "paths": ["/"]}]}]},
     "services[1].routes[0].name: uniqueness violation: 'routes' entity with name set to 'r' already declared"),
    ({"_format_version": "3.0", "consumers": [{"username": "u"}, {"username": "u"}]},
     "consumers[1].username: uniqueness violation"),
    ({"_format_version": "3.0", "consumers": [{"tags": ["x"]}]},
     "consumers[0]: at least one of these fields must be non-empty: 'custom_id', 'username'"),
])
def test_invalid_config_is_rejected_with_its_field_path(doc: dict[str, Any], problem: str) -> None:
    with pytest.raises(DeclarativeError) as e:
        load_declarative(doc)
    assert any(p.startswith(problem) for p in e.value.problems), e.value.problems
