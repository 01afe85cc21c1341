"""Istio's TCP metrics for relayed connections, read back with PromQL from a real metric store.

A TCP Service (port name ``tcp``) in front of a real backend on a pod address that answers every chunk
with twice its bytes (so the two directions differ); callers are a mesh pod (the client socket bound to
its pod IP) or an outside client (127.0.0.1). The proxy's ``MeshTelemetry`` appends into a ``MetricStore``
over DuckDB and the assertions are PromQL instant queries over it, as Kiali or Grafana would ask.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pitwall.core.labels import Labels
from pitwall.metrics import Engine, QueryResult
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore
from pitwall.traffic import ServiceProxy
from pitwall.traffic.http import H2_PREFACE
from pitwall.traffic.pods import PodInfo
from pitwall.traffic.telemetry import LABELS, MUTUAL_TLS, MeshTelemetry, mesh_labels
from tests.kube_fixture import started_kube
from tests.traffic.conftest import cluster_ip, endpoint, eventually, make_service, pod_ips, put_slice
from tests.traffic.mesh_helpers import add_pod
from tests.traffic.test_meshtls import Mesh as TwoNodes
from tests.traffic.test_meshtls import add_pod as add_pod_on
from tests.traffic.test_meshtls import mesh as two_nodes  # noqa: F401 (a fixture: two mesh nodes, mTLS between)

pytestmark = pytest.mark.timeout(60)

FQDN = "db.default.svc.cluster.local"
SLEEP_PRINCIPAL = "spiffe://cluster.local/ns/default/sa/sleep"


class Doubler:
    """A TCP server answering each chunk it reads with that chunk twice; half-closes after the client did."""

    def __init__(self, ip: str, port: int) -> None:
        self.ip, self.port = ip, port
        self.server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[Any]] = set()

    async def start(self) -> Doubler:
        self.server = await asyncio.start_server(self._handle, self.ip, self.port, reuse_address=True)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self._conns):
            t.cancel()
        for t in list(self._conns):
            with contextlib.suppress(BaseException):
                await t

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while data := await r.read(65536):
                w.write(data + data)
                await w.drain()
            w.write_eof()
        except OSError:
            pass
        finally:
            self._conns.discard(task)
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()


@dataclass
class Mesh:
    proxy: ServiceProxy
    telemetry: MeshTelemetry
    store: MetricStore
    engine: Engine
    ip: str  # the Service's ClusterIP
    caller_ip: str  # the ``sleep`` pod's address

    def query(self, expr: str) -> dict[str, float]:
        """A PromQL instant query now: the value of each series, keyed by its ``reporter``."""
        res = self.engine.instant(self.store.querier("default"), expr, int(time.time() * 1000))
        return {dict(lbl).get("reporter", ""): v for lbl, v in _vector(res)}

    def labels(self, expr: str) -> list[dict[str, str]]:
        res = self.engine.instant(self.store.querier("default"), expr, int(time.time() * 1000))
        return [dict(lbl) for lbl, _ in _vector(res)]


def _vector(res: QueryResult) -> list[tuple[Labels, float]]:
    """``(labels, value)`` of each sample of an instant vector result."""
    assert res.result_type == "vector", res
    return [(lbl, float(v[-1])) for lbl, v in zip(res.series, res.values, strict=True)]


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    tdb = TelemetryDB(tmp_path / "m.duckdb")
    store = MetricStore(tdb, tmp_path / "mwal", fsync=False, block_ms=60_000)
    await store.start()
    tel = MeshTelemetry(store)
    doubler: Doubler | None = None
    async with started_kube(tmp_path) as kube:
        proxy = ServiceProxy(kube.client, drain_timeout_s=0.5, connect_budget_s=1.0, attempt_timeout_s=0.3,
                             telemetry=tel)
        await proxy.start()
        try:
            await proxy.wait_synced(10)
            c = kube.client
            db_ip, caller_ip = pod_ips(2)
            await add_pod(c, "db", db_ip, {"app": "db", "version": "v1"}, sa="db")
            await add_pod(c, "sleep", caller_ip, {"app": "sleep"}, sa="sleep")
            doubler = await Doubler(db_ip, 5432).start()
            svc = await make_service(c, "db", [{"name": "tcp", "port": 5432, "targetPort": 5432},
                                               {"name": "http", "port": 80, "targetPort": 5432}])
            await put_slice(c, "db", [endpoint(db_ip)], ports=[{"name": "tcp", "port": 5432, "protocol": "TCP"},
                                                                {"name": "http", "port": 5432, "protocol": "TCP"}])
            ip = cluster_ip(svc)
            await eventually(lambda: len(proxy.endpoints(ip, 5432)) == 1 and len(proxy.endpoints(ip, 80)) == 1
                             and db_ip in proxy.pods and caller_ip in proxy.pods)
            yield Mesh(proxy, tel, store, Engine(), ip, caller_ip)
        finally:
            await proxy.stop()
            if doubler is not None:
                await doubler.stop()
            await store.stop()
            tdb.close()


async def _connect(m: Mesh, port: int, source: str | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(
        m.ip, port, local_addr=(source, 0) if source else None), 5)


async def _exchange(r: asyncio.StreamReader, w: asyncio.StreamWriter, data: bytes) -> bytes:
    """Send ``data``, read back its doubled answer."""
    w.write(data)
    await w.drain()
    return await asyncio.wait_for(r.readexactly(2 * len(data)), 5)


async def _close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write_eof()
    assert await asyncio.wait_for(r.read(), 5) == b""
    w.close()
    with contextlib.suppress(OSError):
        await w.wait_closed()


def _sel(**labels: str) -> str:
    return ",".join(f'{k}="{v}"' for k, v in labels.items())


async def test_pod_client_connection_counts_with_istios_labels(mesh: Mesh) -> None:
    n = 70_000  # more than one relay chunk
    r, w = await _connect(mesh, 5432, mesh.caller_ip)
    assert await _exchange(r, w, b"x" * n) == b"x" * (2 * n)
    await _close(r, w)
    await eventually(lambda: mesh.telemetry.open_connections() == 0)
    assert await mesh.telemetry.flush() > 0
    edge = _sel(source_workload="sleep", destination_workload="db", destination_service=FQDN,
                request_protocol="tcp")
    both = {"source": 1.0, "destination": 1.0}
    assert mesh.query(f"istio_tcp_connections_opened_total{{{edge}}}") == both
    assert mesh.query(f"istio_tcp_connections_closed_total{{{edge}}}") == both
    # received: from the client (request direction); sent: to the client (response direction)
    assert mesh.query(f"istio_tcp_received_bytes_total{{{edge}}}") == {"source": n, "destination": n}
    assert mesh.query(f"istio_tcp_sent_bytes_total{{{edge}}}") == {"source": 2 * n, "destination": 2 * n}
    [lb] = mesh.labels(f'istio_tcp_sent_bytes_total{{{edge},reporter="destination"}}')
    assert lb == {
        "__name__": "istio_tcp_sent_bytes_total", "reporter": "destination",
        "source_workload": "sleep", "source_workload_namespace": "default", "source_principal": SLEEP_PRINCIPAL,
        "source_app": "sleep", "source_version": "unknown", "source_canonical_service": "sleep",
        "source_canonical_revision": "latest", "source_cluster": "Kubernetes",
        "destination_service": FQDN, "destination_service_name": "db", "destination_service_namespace": "default",
        "destination_workload": "db", "destination_workload_namespace": "default",
        "destination_principal": "spiffe://cluster.local/ns/default/sa/db", "destination_app": "db",
        "destination_version": "v1", "destination_canonical_service": "db", "destination_canonical_revision": "v1",
        "destination_cluster": "Kubernetes", "request_protocol": "tcp", "response_flags": "-",
        # two pods of one node, PERMISSIVE: the node authenticated the caller (docs/traffic.md, Telemetry)
        "connection_security_policy": "mutual_tls"}  # no response_code / grpc_response_status on TCP metrics
    [src] = mesh.labels(f'istio_tcp_sent_bytes_total{{{edge},reporter="source"}}')
    assert src == {**lb, "reporter": "source", "connection_security_policy": "unknown"}  # Istio's source reporter
    assert mesh.query("istio_requests_total") == {}  # a TCP port: no HTTP request was counted


async def test_outside_client_is_unknown(mesh: Mesh) -> None:
    r, w = await _connect(mesh, 5432, None)
    assert await _exchange(r, w, b"ping") == b"pingping"
    await _close(r, w)
    await eventually(lambda: mesh.telemetry.open_connections() == 0)
    await mesh.telemetry.flush()
    edge = _sel(source_workload="unknown", source_principal="unknown", destination_workload="db",
                destination_principal="unknown")
    assert mesh.query(f"istio_tcp_connections_closed_total{{{edge}}}") == {"source": 1.0, "destination": 1.0}
    # plaintext into the destination (PERMISSIVE takes it): "none" there, "unknown" at the source
    assert mesh.query(f'istio_tcp_connections_closed_total{{{edge},connection_security_policy="none"}}') == {
        "destination": 1.0}
    assert mesh.query(f'istio_tcp_connections_closed_total{{{edge},connection_security_policy="unknown"}}') == {
        "source": 1.0}
    assert mesh.query(f"istio_tcp_received_bytes_total{{{edge}}}") == {"source": 4.0, "destination": 4.0}
    assert mesh.query(f"istio_tcp_sent_bytes_total{{{edge}}}") == {"source": 8.0, "destination": 8.0}
    assert mesh.query('istio_tcp_connections_opened_total{source_workload="sleep"}') == {}


async def test_long_lived_connection_reports_bytes_before_it_closes(mesh: Mesh) -> None:
    mesh.telemetry.interval_s = 0.1
    await mesh.telemetry.start()  # the periodic flush, as the server runs it
    edge = _sel(source_workload="sleep", destination_workload="db", reporter="destination")
    try:
        r, w = await _connect(mesh, 5432, mesh.caller_ip)
        assert await _exchange(r, w, b"a" * 1000) == b"a" * 2000

        async def shows(received: float, sent: float) -> bool:
            return (mesh.query(f"istio_tcp_received_bytes_total{{{edge}}}") == {"destination": received}
                    and mesh.query(f"istio_tcp_sent_bytes_total{{{edge}}}") == {"destination": sent})

        await eventually(lambda: shows(1000.0, 2000.0))
        assert mesh.query(f"istio_tcp_connections_opened_total{{{edge}}}") == {"destination": 1.0}
        assert mesh.query(f"istio_tcp_connections_closed_total{{{edge}}}") == {"destination": 0.0}
        assert await _exchange(r, w, b"b" * 500) == b"b" * 1000
        await eventually(lambda: shows(1500.0, 3000.0))  # still open: the counters keep growing
        await _close(r, w)
        await eventually(lambda: mesh.query(f"istio_tcp_connections_closed_total{{{edge}}}") == {"destination": 1.0})
        assert await shows(1500.0, 3000.0)
    finally:
        await mesh.telemetry.stop()


async def test_http2_preface_on_an_http_port_counts_as_tcp(mesh: Mesh) -> None:
    r, w = await _connect(mesh, 80, mesh.caller_ip)
    frames = H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # the preface and an empty SETTINGS frame
    assert await _exchange(r, w, frames) == frames * 2
    await _close(r, w)
    await eventually(lambda: mesh.telemetry.open_connections() == 0)
    await mesh.telemetry.flush()
    edge = _sel(source_workload="sleep", destination_workload="db", request_protocol="tcp", reporter="source")
    assert mesh.query(f"istio_tcp_connections_closed_total{{{edge}}}") == {"source": 1.0}
    assert mesh.query(f"istio_tcp_received_bytes_total{{{edge}}}") == {"source": float(len(frames))}
    assert mesh.query(f"istio_tcp_sent_bytes_total{{{edge}}}") == {"source": float(2 * len(frames))}
    assert mesh.query("istio_requests_total") == {}


async def test_http1_on_an_http_port_is_no_tcp_connection(mesh: Mesh) -> None:
    r, w = await _connect(mesh, 80, mesh.caller_ip)
    w.write(b"GET / HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n")
    await w.drain()
    await asyncio.wait_for(r.read(), 5)  # the doubler answers no HTTP: whatever comes back, the session ends
    w.close()
    await eventually(lambda: mesh.proxy.open_connections() == 0)
    await mesh.telemetry.flush()
    assert mesh.query("istio_tcp_connections_opened_total") == {}
    assert mesh.query('istio_requests_total{request_protocol="http"}') != {}


async def test_tcp_and_http_label_the_same_caller_and_destination_alike(mesh: Mesh) -> None:
    r, w = await _connect(mesh, 5432, mesh.caller_ip)
    assert await _exchange(r, w, b"q") == b"qq"
    await _close(r, w)
    r, w = await _connect(mesh, 80, mesh.caller_ip)
    w.write(b"GET / HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n")
    await w.drain()
    await asyncio.wait_for(r.read(), 5)
    w.close()
    await eventually(lambda: mesh.proxy.open_connections() == 0)
    await mesh.telemetry.flush()
    [tcp] = mesh.labels('istio_tcp_connections_closed_total{reporter="source"}')
    [http] = mesh.labels('istio_requests_total{reporter="source"}')
    per_request = {"__name__", "request_protocol", "response_code", "grpc_response_status", "response_flags"}
    assert {k: v for k, v in tcp.items() if k not in per_request} == {
        k: v for k, v in http.items() if k not in per_request}
    assert tcp["destination_workload"] == "db" and tcp["source_workload"] == "sleep"


async def test_connection_no_endpoint_took_counts_with_envoys_flags(mesh: Mesh) -> None:
    c = mesh.proxy.client
    down_ip = pod_ips(1)[0]
    svc = await make_service(c, "gone", [{"name": "tcp", "port": 6000, "targetPort": 6000}])
    await put_slice(c, "gone", [endpoint(down_ip)], ports=[{"name": "tcp", "port": 6000, "protocol": "TCP"}])
    ip = cluster_ip(svc)
    await eventually(lambda: len(mesh.proxy.endpoints(ip, 6000)) == 1)
    r, w = await asyncio.wait_for(asyncio.open_connection(ip, 6000, local_addr=(mesh.caller_ip, 0)), 5)
    with contextlib.suppress(OSError):
        assert await asyncio.wait_for(r.read(), 5) == b""  # reset once the connect budget is spent
    w.close()
    await eventually(lambda: mesh.proxy.open_connections() == 0)
    await mesh.telemetry.flush()
    sel = _sel(destination_service_name="gone", destination_workload="unknown", response_flags="UF,URX",
               source_workload="sleep")
    assert mesh.query(f"istio_tcp_connections_opened_total{{{sel}}}") == {"source": 1.0, "destination": 1.0}
    assert mesh.query(f"istio_tcp_connections_closed_total{{{sel}}}") == {"source": 1.0, "destination": 1.0}
    assert mesh.query(f"istio_tcp_sent_bytes_total{{{sel}}}") == {"source": 0.0, "destination": 0.0}


async def test_tcp_across_nodes_over_mutual_tls_counts_once(two_nodes: TwoNodes) -> None:  # noqa: F811
    m = two_nodes
    tel = MeshTelemetry(None)
    m.proxy.telemetry = tel  # node A's proxy reports for the hop; node B's inbound side relays uncounted
    (echo_ip,) = pod_ips(1)
    await add_pod_on(m.client, "echo-b", echo_ip, "node-b", "echo", {"app": "echo"})
    backend = await Doubler(echo_ip, 7000).start()
    try:
        svc = await make_service(m.client, "echo", [{"name": "tcp", "port": 7000, "targetPort": 7000}])
        await put_slice(m.client, "echo", [endpoint(echo_ip)], ports=[{"name": "tcp", "port": 7000}])
        ip = cluster_ip(svc)
        await eventually(lambda: len(m.proxy.endpoints(ip, 7000)) == 1 and echo_ip in m.proxy.pods)
        before = len(m.tls_relay.sent)
        r, w = await asyncio.wait_for(asyncio.open_connection(ip, 7000, local_addr=(m.caller_ip, 0)), 5)
        assert await _exchange(r, w, b"m" * 3000) == b"m" * 6000
        w.transport.abort()
        await eventually(lambda: tel.open_connections() == 0 and m.proxy.open_connections() == 0)
        assert m.tls_relay.sent[before:before + 1] == b"\x16"  # the hop between the nodes was TLS
    finally:
        await backend.stop()
    [(key, acc)] = tel.tcp_series().items()
    lb = dict(zip(LABELS, key, strict=True))
    assert (acc.opened, acc.closed, acc.received, acc.sent) == (1, 1, 3000, 6000)
    assert (lb["source_workload"], lb["source_principal"], lb["destination_workload"],
            lb["destination_principal"], lb["destination_service_name"], lb["request_protocol"],
            lb["connection_security_policy"]) == (
        "sleep", SLEEP_PRINCIPAL, "echo-b", "spiffe://cluster.local/ns/default/sa/echo", "echo", "tcp", "mutual_tls")
    # Istio's definitions: "mutual_tls" on the destination reporter of an mTLS connection, "unknown" on the
    # source reporter; both principals from the certificates (istio/proxy testdata/metric/tcp_server_*).
    policy = {dict(r)["reporter"]: dict(r)["connection_security_policy"] for r, _, _ in tel.rows(0)
              if dict(r)["__name__"] == "istio_tcp_connections_opened_total"}
    assert policy == {"source": "unknown", "destination": "mutual_tls"}
    # A caller that is no mesh pod crosses in plaintext (PERMISSIVE): "none", no principal on either side.
    backend = await Doubler(echo_ip, 7000).start()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(ip, 7000), 5)
        assert await _exchange(r, w, b"p") == b"pp"
        w.transport.abort()
        await eventually(lambda: tel.open_connections() == 0 and m.proxy.open_connections() == 0)
    finally:
        await backend.stop()
    [plain] = [dict(zip(LABELS, k, strict=True)) for k in tel.tcp_series() if k != key]
    assert (plain["source_workload"], plain["source_principal"], plain["destination_workload"],
            plain["destination_principal"], plain["connection_security_policy"]) == (
        "unknown", "unknown", "echo-b", "unknown", "none")


def test_tcp_rows_carry_no_http_labels_and_read_meters_at_flush() -> None:
    class Meter:
        up_bytes = 0
        down_bytes = 0

    t = MeshTelemetry(None)
    src = PodInfo(name="sleep-1", namespace="default", workload="sleep", app="sleep", canonical_service="sleep")
    key = mesh_labels(src, None, (FQDN, "db", "default"), "tcp", "", "", "-")
    assert len(key) == len(LABELS)
    meter = Meter()
    report = t.tcp_opened(key, meter)
    meter.up_bytes, meter.down_bytes = 10, 30
    [acc] = t.tcp_series().values()
    assert (acc.opened, acc.closed, acc.received, acc.sent) == (1, 0, 10, 30)
    meter.up_bytes += 5
    t.tcp_closed(report)
    t.tcp_closed(report)  # a second close counts nothing
    meter.up_bytes += 100  # after the close: not counted
    assert (acc.opened, acc.closed, acc.received, acc.sent) == (1, 1, 15, 30)
    rows = {(dict(lb)["__name__"], dict(lb)["reporter"]): (dict(lb), v) for lb, _, v in t.rows(1000)}
    assert len(rows) == 8
    lb, v = rows[("istio_tcp_received_bytes_total", "source")]
    assert v == 15 and "response_code" not in lb and "grpc_response_status" not in lb
    assert lb["destination_workload"] == "unknown" and lb["destination_principal"] == "unknown"
    assert lb["source_principal"] == "unknown"  # no mutual TLS said so (mesh_labels' default: plaintext)
    assert lb["connection_security_policy"] == "unknown"
    assert rows[("istio_tcp_received_bytes_total", "destination")][0]["connection_security_policy"] == "none"
    key = mesh_labels(src, None, (FQDN, "db", "default"), "tcp", "", "", "-", MUTUAL_TLS)
    assert dict(zip(LABELS, key, strict=True))["source_principal"] == "spiffe://cluster.local/ns/default/sa/default"
