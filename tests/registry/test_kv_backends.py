"""Consul KV through py-consul on each state-store backend: SQLite (embedded) and a real etcd (Debian's etcd-server).

The same cases (``kv_cases``) run on both, and both keep everything over a restart.
"""

from __future__ import annotations

from collections.abc import Iterator

import consul
import pytest

from tests.conftest import LiveServer
from tests.registry import kv_cases
from tests.registry.conftest import ADMIN, client_for, consul_server
from tests.storage.revstore.conftest import start_etcd

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("etcd", marks=[pytest.mark.slow, pytest.mark.peer])])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp(f"consul-{request.param}")
    if request.param == "etcd":
        etcd = start_etcd(data / "etcd")
        request.addfinalizer(etcd.stop)
        srv = consul_server(data / "data", backend="etcd", endpoints=[etcd.url], compact_interval="0s")
    else:
        srv = consul_server(data / "data")
    yield srv
    srv.stop()


@pytest.fixture
def c(server: LiveServer) -> consul.Consul:
    return client_for(server)


def test_put_get_delete(c: consul.Consul) -> None:
    kv_cases.kv_roundtrip(c, "rt")


def test_cas(c: consul.Consul) -> None:
    kv_cases.kv_cas(c, "cas")


def test_recurse_keys_separator(c: consul.Consul) -> None:
    kv_cases.kv_recurse_and_keys(c, "tree")


def test_blocking_reads(c: consul.Consul) -> None:
    kv_cases.kv_blocking(c, "block")


def test_txn(c: consul.Consul) -> None:
    kv_cases.kv_txn(c, "txn")


def test_bad_input_answered_as_consul(server: LiveServer) -> None:
    kv_cases.kv_bad_input(server.url, ADMIN, "bad")


def test_lock(c: consul.Consul) -> None:
    s1 = c.session.create(name="a", lock_delay=0, ttl=10)
    s2 = c.session.create(name="b")
    assert c.kv.put("lock/k", "1", acquire=s1) and not c.kv.put("lock/k", "2", acquire=s2)
    c.session.destroy(s1)
    assert c.kv.put("lock/k", "2", acquire=s2)
    c.session.destroy(s2)


def test_restart_loses_nothing(server: LiveServer, c: consul.Consul) -> None:
    for i in range(20):
        c.kv.put(f"durable/{i:02d}", f"v{i}")
    _, before = c.kv.get("durable/", recurse=True)
    server.restart()
    c2 = client_for(server)
    _, after = c2.kv.get("durable/", recurse=True)
    assert after == before
    assert c2.kv.put("durable/00", "w", cas=before[0]["ModifyIndex"]) is True
