"""The same Consul KV behaviour with the state store on a real etcd (Debian's etcd-server), and a restart."""

from __future__ import annotations

from collections.abc import Iterator

import consul
import pytest

from tests.conftest import LiveServer
from tests.registry import kv_cases
from tests.registry.conftest import ADMIN, client_for, consul_server
from tests.storage.revstore.conftest import EtcdServer, start_etcd

pytestmark = [pytest.mark.slow, pytest.mark.peer, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    e = start_etcd(tmp_path_factory.mktemp("etcd") / "data")
    yield e
    e.stop()


@pytest.fixture(scope="module")
def server(etcd: EtcdServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = consul_server(tmp_path_factory.mktemp("consul-etcd") / "data", backend="etcd", endpoints=[etcd.url],
                        compact_interval="0s")
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


def test_bad_input(server: LiveServer) -> None:
    kv_cases.kv_bad_input(server.url, ADMIN, "bad")


def test_lock_on_etcd(c: consul.Consul) -> None:
    s1 = c.session.create(name="a", lock_delay=0, ttl=10)
    s2 = c.session.create(name="b")
    assert c.kv.put("lock/etcd", "1", acquire=s1) and not c.kv.put("lock/etcd", "2", acquire=s2)
    c.session.destroy(s1)
    assert c.kv.put("lock/etcd", "2", acquire=s2)
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
