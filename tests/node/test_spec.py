"""Environment expansion, service variables and quantities as Kubernetes computes them."""

from __future__ import annotations

import pytest

from pitwall.node.spec import expand, parse_quantity, service_env


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("text", "want"), [
    ("$(A)", "a"), ("x$(A)y", "xay"), ("$(MISSING)", "$(MISSING)"), ("$$(A)", "$(A)"), ("$$", "$"),
    ("$(A", "$(A"), ("$B", "$B"), ("a$", "a$"), ("$(A)$(B)", "ab"), ("$$$(A)", "$a"),
])
def test_expand(text: str, want: str) -> None:
    assert expand(text, {"A": "a", "B": "b"}) == want


@pytest.mark.timeout(10)
def test_quantities() -> None:
    assert parse_quantity("128Mi") == 128 * 2**20
    assert parse_quantity("1G") == 1e9
    assert parse_quantity("250m") == 0.25
    assert parse_quantity("2") == 2
    assert parse_quantity("1e3") == 1000
    with pytest.raises(ValueError):
        parse_quantity("lots")


@pytest.mark.timeout(10)
def test_service_env() -> None:
    svc = {"metadata": {"name": "redis-primary"},
           "spec": {"clusterIP": "127.96.0.11", "ports": [{"name": "redis", "port": 6379, "protocol": "TCP"}]}}
    headless = {"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}}
    env = service_env([svc, headless])
    assert env == {
        "REDIS_PRIMARY_SERVICE_HOST": "127.96.0.11", "REDIS_PRIMARY_SERVICE_PORT": "6379",
        "REDIS_PRIMARY_SERVICE_PORT_REDIS": "6379", "REDIS_PRIMARY_PORT": "tcp://127.96.0.11:6379",
        "REDIS_PRIMARY_PORT_6379_TCP": "tcp://127.96.0.11:6379", "REDIS_PRIMARY_PORT_6379_TCP_PROTO": "tcp",
        "REDIS_PRIMARY_PORT_6379_TCP_PORT": "6379", "REDIS_PRIMARY_PORT_6379_TCP_ADDR": "127.96.0.11",
    }
