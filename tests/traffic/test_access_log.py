"""Envoy's access log from the mesh into the real log store, read back with LogQL.

Requests go through the proxy with httpx from a pod address; Istio's Telemetry
objects are applied through the kube client (the vendored CRD installed). Each
line is checked field by field against Istio's default format string
(istio/istio ``pilot/pkg/model/telemetry_logging.go``, ``EnvoyTextLogFormat``,
restated in ``_FIELDS`` below as the test's own reading of it).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest

from pitwall.config import load_settings
from pitwall.core.errors import ConfigError
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.incidents import ChangeLog
from pitwall.kube import KubeAPI
from pitwall.kube.wiring import build_kube
from pitwall.logs import LogQLEngine
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.logs_store import LogStore
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.traffic import ServiceProxy, build_traffic_part
from pitwall.traffic.accesslog import (
    TEXT_FORMAT,
    AccessLogSink,
    AccessRecord,
    CelError,
    TelemetryPolicies,
    compile_filter,
    format_text,
)
from pitwall.traffic.istio_crds import istio_crds
from pitwall.traffic.pods import PodInfo
from tests.traffic.conftest import cluster_ip, endpoint, eventually, make_service, pod_ips, put_slice
from tests.traffic.mesh_helpers import App, add_pod, apply, vs

pytestmark = pytest.mark.timeout(60)

FQDN = "web.default.svc.cluster.local"

# Istio's EnvoyTextLogFormat, one operator per field: the regex group each becomes in a line.
_FIELDS = [
    ("start_time", r"\[(?P<start_time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\]"),
    ("request", r'"(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)"'),
    ("response_code", r"(?P<response_code>\d+)"), ("response_flags", r"(?P<response_flags>\S+)"),
    ("response_code_details", r"(?P<response_code_details>\S+)"),
    ("connection_termination_details", r"(?P<connection_termination_details>\S+)"),
    ("upstream_transport_failure_reason", r'"(?P<upstream_transport_failure_reason>[^"]*)"'),
    ("bytes_received", r"(?P<bytes_received>\d+)"), ("bytes_sent", r"(?P<bytes_sent>\d+)"),
    ("duration", r"(?P<duration>\d+)"), ("upstream_service_time", r"(?P<upstream_service_time>\S+)"),
    ("x_forwarded_for", r'"(?P<x_forwarded_for>[^"]*)"'), ("user_agent", r'"(?P<user_agent>[^"]*)"'),
    ("request_id", r'"(?P<request_id>[^"]*)"'), ("authority", r'"(?P<authority>[^"]*)"'),
    ("upstream_host", r'"(?P<upstream_host>[^"]*)"'), ("upstream_cluster", r"(?P<upstream_cluster>\S+)"),
    ("upstream_local_address", r"(?P<upstream_local_address>\S+)"),
    ("downstream_local_address", r"(?P<downstream_local_address>\S+)"),
    ("downstream_remote_address", r"(?P<downstream_remote_address>\S+)"),
    ("requested_server_name", r"(?P<requested_server_name>\S+)"), ("route_name", r"(?P<route_name>\S+)"),
]
_LINE = re.compile("^" + " ".join(rx for _, rx in _FIELDS) + "$")


def _parse(line: str) -> dict[str, str]:
    m = _LINE.match(line)
    assert m is not None, line
    return m.groupdict()


def test_the_field_list_is_istios_format_string() -> None:
    ops = re.findall(r"%([A-Z_]+(?:\([^)]*\))?)%", TEXT_FORMAT)
    assert len(ops) == 24 and ops[0] == "START_TIME" and ops[-1] == "ROUTE_NAME"
    # method, path and protocol share one quoted field: 24 operators, 22 space-separated fields
    assert len(_FIELDS) == 24 - 2
    assert TEXT_FORMAT.startswith('[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ')


class World:
    def __init__(self, kube: KubeAPI, proxy: ServiceProxy, store: LogStore, sink: AccessLogSink) -> None:
        self.kube, self.proxy, self.store, self.sink = kube, proxy, store, sink
        self.client = kube.client
        self.apps: list[App] = []
        self.caller_ip, self.other_ip = pod_ips(2)
        self.ip = ""

    async def web(self, *opts: dict[str, Any]) -> None:
        """Service ``web`` with a pod per ``App`` options, callers ``sleep`` and ``other``, and Istio's root
        namespace."""
        await self.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}})
        ips = pod_ips(len(opts))
        for i, (ip, o) in enumerate(zip(ips, opts, strict=True)):
            await add_pod(self.client, f"web-{i}", ip, {"app": "web"}, sa="web")
            self.apps.append(await App(ip, 8080, f"web-{i}", **o).start())
        svc = await make_service(self.client, "web")
        await put_slice(self.client, "web", [endpoint(ip) for ip in ips])
        self.ip = cluster_ip(svc)
        await add_pod(self.client, "sleep", self.caller_ip, {"app": "sleep"}, sa="sleep")
        await add_pod(self.client, "other", self.other_ip, {"app": "other", "team": "x"}, sa="other")
        await eventually(lambda: len(self.proxy.endpoints(self.ip, 80)) == len(ips)
                         and self.caller_ip in self.proxy.pods and self.other_ip in self.proxy.pods)

    def http(self, source: str | None = None) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=source or self.caller_ip)
        return httpx.AsyncClient(base_url=f"http://{self.ip}", transport=transport, timeout=10)

    async def telemetry(self, name: str, namespace: str, spec: dict[str, Any]) -> None:
        await apply(self.client, {"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
                                  "metadata": {"name": name, "namespace": namespace}, "spec": spec})
        await eventually(lambda: (namespace, name) in self.proxy._istio["Telemetry"]
                         or any(name in k for k in self.proxy.mesh.errors))

    async def query(self, expr: str) -> list[tuple[dict[str, str], str]]:
        """Flush the sink, then ``expr`` over the last minute: (stream labels, line), oldest first."""
        await self.sink.flush()
        now = time.time_ns()
        res = LogQLEngine().query_range(self.store.querier("default"), expr, now - 60 * 10**9, now + 10**9, 10**9,
                                        limit=1000)
        out = [(dict(s.labels), e.ts_ns, e.line) for s in res.streams for e in s.entries]
        return [(lb, line) for lb, _, line in sorted(out, key=lambda x: x[1])]


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    rev = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await rev.start()
    kube = build_kube(rev)
    kube.add_builtin_crds(istio_crds())
    await kube.start()
    store = LogStore(TelemetryDB(tmp_path / "t.duckdb"), tmp_path / "wal", fsync=False)
    await store.start()
    sink = AccessLogSink(store, interval_s=3600)  # the tests flush by hand
    proxy = ServiceProxy(kube.client, drain_timeout_s=0.5, changes=ChangeLog(rev), access_log=sink)
    await proxy.start()
    await proxy.wait_synced(10)
    w = World(kube, proxy, store, sink)
    try:
        yield w
    finally:
        await proxy.stop()
        for a in w.apps:
            await a.stop()
        await store.stop()
        await kube.stop()
        await rev.stop()


_MESH_WIDE = {"accessLogging": [{"providers": [{"name": "envoy"}]}]}


async def test_a_200_line_has_envoys_fields(world: World) -> None:
    await world.web({})
    await world.telemetry("mesh-default", "istio-system", _MESH_WIDE)
    async with world.http() as c:
        r = await c.get("/hello?x=1", headers={"user-agent": "curl/8.5.0", "x-request-id": "rid-1",
                                               "x-forwarded-for": "10.1.2.3"})
        assert r.status_code == 200
        r2 = await c.post("/items", content=b"12345")  # no request id: the one the proxy made is logged
        assert r2.status_code == 200
    got = await world.query('{container="istio-proxy"} |= "GET /"')
    assert len(got) == 1
    labels, line = got[0]
    assert labels == {"namespace": "default", "pod": "sleep", "container": "istio-proxy", "app": "sleep",
                      "job": "default/sleep", "stream": "stdout"}
    f = _parse(line)
    app_ip = world.apps[0].ip
    assert f["method"] == "GET" and f["path"] == "/hello?x=1" and f["protocol"] == "HTTP/1.1"
    assert f["response_code"] == "200" and f["response_flags"] == "-"
    assert f["response_code_details"] == "via_upstream" and f["connection_termination_details"] == "-"
    assert f["upstream_transport_failure_reason"] == "-"
    assert f["bytes_received"] == "0" and int(f["bytes_sent"]) == len(r.content)
    assert int(f["upstream_service_time"]) <= int(f["duration"])
    assert f["x_forwarded_for"] == "10.1.2.3" and f["user_agent"] == "curl/8.5.0" and f["request_id"] == "rid-1"
    assert f["authority"] == world.ip and f["upstream_host"] == f"{app_ip}:8080"
    assert f["upstream_cluster"] == f"outbound|80||{FQDN}" and f["upstream_local_address"] == "-"
    assert f["downstream_local_address"] == f"{world.ip}:80"
    assert f["downstream_remote_address"].startswith(world.caller_ip + ":")
    assert f["requested_server_name"] == "-" and f["route_name"] == "default"
    post = _parse((await world.query('{job="default/sleep"} |= "POST /items"'))[0][1])
    assert post["bytes_received"] == "5"
    sent_id = world.apps[0].requests[-1]["headers"]["x-request-id"]
    assert post["request_id"] == sent_id and re.fullmatch(r"[0-9a-f-]{36}", sent_id)


async def test_503_lines_carry_uh_and_urx(world: World) -> None:
    await world.web({"status": 503})
    await world.telemetry("mesh-default", "istio-system", _MESH_WIDE)
    await world.client.create(vs("web", [{"route": [{"destination": {"host": "web"}}], "name": "primary",
                                          "retries": {"attempts": 2, "retryOn": "5xx"}}]))
    await eventually(lambda: world.proxy.mesh.routes_for(FQDN) is not None)
    async with world.http() as c:
        assert (await c.get("/flaky")).status_code == 503
    dead = await make_service(world.client, "dead")
    await put_slice(world.client, "dead", [endpoint(pod_ips(1)[0], ready=False)])
    await eventually(lambda: (cluster_ip(dead), 80) in world.proxy.listening())
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=world.caller_ip),
                                 timeout=10) as c:
        r = await c.get(f"http://{cluster_ip(dead)}/none")
        assert r.status_code == 503 and r.text == "no healthy upstream"
    urx = _parse((await world.query('{container="istio-proxy"} |= "GET /flaky"'))[0][1])
    assert urx["response_code"] == "503" and urx["response_flags"] == "URX"
    assert urx["response_code_details"] == "via_upstream" and urx["route_name"] == "primary"
    assert urx["upstream_host"] == f"{world.apps[0].ip}:8080"
    uh = _parse((await world.query('{container="istio-proxy"} |= "GET /none"'))[0][1])
    assert uh["response_code"] == "503" and uh["response_flags"] == "UH"
    assert uh["response_code_details"] == "no_healthy_upstream" and uh["upstream_host"] == "-"
    assert uh["upstream_cluster"] == "outbound|80||dead.default.svc.cluster.local"
    assert uh["bytes_sent"] == str(len("no healthy upstream")) and uh["upstream_service_time"] == "-"


async def test_namespace_disable_overrides_mesh_wide_and_workload_wins(world: World) -> None:
    await world.web({})
    await world.telemetry("mesh-default", "istio-system", _MESH_WIDE)
    await world.telemetry("quiet", "default", {"accessLogging": [{"providers": [{"name": "envoy"}],
                                                                  "disabled": True}]})
    async with world.http() as c:
        assert (await c.get("/from-sleep")).status_code == 200
    async with world.http(world.other_ip) as c:
        assert (await c.get("/from-other")).status_code == 200
    assert await world.query('{container="istio-proxy"}') == []
    # A workload-selected Telemetry beats its namespace's
    await world.telemetry("team-x", "default", {"selector": {"matchLabels": {"team": "x"}},
                                                "accessLogging": [{"providers": [{"name": "envoy"}]}]})
    async with world.http() as c:
        assert (await c.get("/from-sleep")).status_code == 200
    async with world.http(world.other_ip) as c:
        assert (await c.get("/from-other")).status_code == 200
    got = await world.query('{container="istio-proxy"}')
    assert [(lb["pod"], _parse(line)["path"]) for lb, line in got] == [("other", "/from-other")]


async def test_filter_logs_only_errors(world: World) -> None:
    await world.web({})
    await world.telemetry("errors-only", "istio-system", {"accessLogging": [
        {"providers": [{"name": "envoy"}], "filter": {"expression": "response.code >= 400"}}]})
    await world.client.create(vs("web", [
        {"match": [{"uri": {"prefix": "/broken"}}], "fault": {"abort": {"httpStatus": 418,
                                                                        "percentage": {"value": 100}}},
         "route": [{"destination": {"host": "web"}}]},
        {"route": [{"destination": {"host": "web"}}]}]))
    await eventually(lambda: world.proxy.mesh.routes_for(FQDN) is not None)
    async with world.http() as c:
        assert (await c.get("/fine")).status_code == 200
        assert (await c.get("/broken")).status_code == 418
    got = await world.query('{container="istio-proxy"}')
    assert len(got) == 1
    f = _parse(got[0][1])
    assert f["path"] == "/broken" and f["response_code"] == "418" and f["response_flags"] == "FI"
    assert f["response_code_details"] == "fault_filter_abort"


async def test_unsupported_filter_is_refused_with_the_field(world: World) -> None:
    await world.web({})
    await world.telemetry("bad", "istio-system", {"accessLogging": [
        {"providers": [{"name": "envoy"}], "filter": {"expression": "connection.mtls && request.headers['a']"}}]})
    await eventually(lambda: "Telemetry istio-system/bad" in world.proxy.mesh.errors)
    assert "spec.accessLogging[0].filter.expression" in world.proxy.mesh.errors["Telemetry istio-system/bad"]
    async with world.http() as c:
        assert (await c.get("/")).status_code == 200
    assert await world.query('{container="istio-proxy"}') == []  # refused whole: nothing enables logging


async def test_tcp_connection_line(world: World) -> None:
    await world.web({})
    await world.telemetry("mesh-default", "istio-system", _MESH_WIDE)
    ip = pod_ips(1)[0]
    await add_pod(world.client, "db-0", ip, {"app": "db"}, sa="db")

    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write((await r.readexactly(4)) * 2)
        await w.drain()
        w.close()
    server = await asyncio.start_server(echo, ip, 5432)
    try:
        svc = await make_service(world.client, "db", [{"name": "tcp-db", "port": 5432, "targetPort": 5432}])
        await put_slice(world.client, "db", [endpoint(ip)], ports=[{"name": "tcp-db", "port": 5432}])
        await eventually(lambda: len(world.proxy.endpoints(cluster_ip(svc), 5432)) == 1 and ip in world.proxy.pods)
        r, w = await asyncio.open_connection(cluster_ip(svc), 5432, local_addr=(world.caller_ip, 0))
        w.write(b"ping")
        assert await r.read() == b"pingping"
        w.close()
        await eventually(lambda: not world.proxy.open_connections())
    finally:
        server.close()
    got = await world.query('{pod="sleep"} |= "- - -"')
    assert len(got) == 1
    f = _parse(got[0][1])
    assert (f["method"], f["path"], f["protocol"], f["response_code"], f["response_flags"]) == ("-", "-", "-", "0",
                                                                                               "-")
    assert f["bytes_received"] == "4" and f["bytes_sent"] == "8" and f["upstream_host"] == f"{ip}:5432"
    assert f["upstream_cluster"] == "outbound|5432||db.default.svc.cluster.local" and f["route_name"] == "-"
    assert f["downstream_local_address"] == f"{cluster_ip(svc)}:5432" and f["request_id"] == "-"


async def test_json_encoding_parses_with_logql_json(tmp_path: Path) -> None:
    rev = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await rev.start()
    kube = build_kube(rev)
    kube.add_builtin_crds(istio_crds())
    await kube.start()
    store = LogStore(TelemetryDB(tmp_path / "t.duckdb"), tmp_path / "wal", fsync=False)
    await store.start()
    sink = AccessLogSink(store, interval_s=3600)
    proxy = ServiceProxy(kube.client, drain_timeout_s=0.5, access_log=sink, access_log_default="json")
    await proxy.start()
    w = World(kube, proxy, store, sink)
    try:
        await proxy.wait_synced(10)
        await w.web({})
        async with w.http() as c:
            assert (await c.get("/j", headers={"x-request-id": "rid-j"})).status_code == 200
        got = await w.query('{container="istio-proxy"} | json | response_code = 200 and path = "/j"')
        assert len(got) == 1
        labels, line = got[0]
        obj = json.loads(line)
        assert labels["request_id"] == "rid-j" and labels["upstream_cluster"] == f"outbound|80||{FQDN}"
        assert obj["response_code"] == 200 and obj["method"] == "GET" and obj["protocol"] == "HTTP/1.1"
        assert obj["upstream_local_address"] is None and obj["response_flags"] == "-"
        assert list(obj) == sorted(obj) and len(obj) == 24
    finally:
        await proxy.stop()
        for a in w.apps:
            await a.stop()
        await store.stop()
        await kube.stop()
        await rev.stop()


def _record(**kw: Any) -> AccessRecord:
    base: dict[str, Any] = dict(
        start_ns=1_700_000_000_123_456_789, method="GET", path="/a", protocol="HTTP/1.1", code=200, flags="-",
        details="via_upstream", failure_reason=None, bytes_received=0, bytes_sent=3, duration_ms=4,
        service_time_ms=2, forwarded_for=None, user_agent=None, request_id=None, authority="web",
        upstream_host="127.42.0.9:8080", upstream_cluster=f"outbound|80||{FQDN}", downstream_local="10.0.0.1:80",
        downstream_remote="127.42.0.2:5555", route_name="default")
    base.update(kw)
    return AccessRecord(**base)


def test_text_line_exact() -> None:
    assert format_text(_record()) == (
        '[2023-11-14T22:13:20.123Z] "GET /a HTTP/1.1" 200 - via_upstream - "-" 0 3 4 2 "-" "-" "-" "web" '
        f'"127.42.0.9:8080" outbound|80||{FQDN} - 10.0.0.1:80 127.42.0.2:5555 - default')
    tcp = _record(method=None, path=None, protocol=None, code=0, details=None, service_time_ms=None,
                  authority=None, route_name=None)
    assert format_text(tcp).startswith('[2023-11-14T22:13:20.123Z] "- - -" 0 - - - "-" 0 3 4 - "-" "-" "-" "-" ')


@pytest.mark.parametrize(("expr", "code", "method", "want"), [
    ("response.code >= 400", 404, "GET", True), ("response.code >= 400", 200, "GET", False),
    ("response.code >= 500 || request.method == 'POST'", 200, "POST", True),
    ("response.code >= 500 || request.method == \"POST\"", 201, "GET", False),
    ("!(response.code < 400) && request.url_path == '/a'", 500, "GET", True),
])
def test_filter_subset(expr: str, code: int, method: str, want: bool) -> None:
    policies = TelemetryPolicies([{"metadata": {"namespace": "istio-system", "name": "t"}, "spec": {
        "accessLogging": [{"filter": {"expression": expr}}]}}])
    policy = policies.for_pod(PodInfo("p", "default", "p"))
    assert policy is not None and policy.wants(_record(code=code, method=method)) is want


@pytest.mark.parametrize("expr", ["", "response.code >=", "response.code >= '4'", "request.method > 'A'",
                                  "has(request.headers)", "response.code >= 400 400", "xds.cluster_name == 'a'",
                                  "(response.code == 1", "response.code == 1; drop"])
def test_filter_refuses_outside_the_subset(expr: str) -> None:
    with pytest.raises(CelError):
        compile_filter(expr)


def test_default_setting_and_other_providers() -> None:
    pod = PodInfo("p", "default", "p")
    assert TelemetryPolicies([], "off").for_pod(pod) is None and not TelemetryPolicies([], "off").active
    on = TelemetryPolicies([], "json").for_pod(pod)
    assert on is not None and on.encoding == "json"
    otel_only = [{"metadata": {"namespace": "default", "name": "t"},
                  "spec": {"accessLogging": [{"providers": [{"name": "otel"}]}]}}]
    assert TelemetryPolicies(otel_only, "off").for_pod(pod) is None  # not the envoy provider: nothing to write


async def test_full_queue_drops_and_counts(tmp_path: Path) -> None:
    store = LogStore(TelemetryDB(tmp_path / "t.duckdb"), tmp_path / "wal", fsync=False)
    await store.start()
    try:
        sink = AccessLogSink(store, max_queue=2)
        pod = PodInfo("p", "default", "p", labels={"app": "p"})
        policy = TelemetryPolicies([], "text").for_pod(pod)
        assert policy is not None
        for i in range(5):
            sink.offer(policy, pod, _record(path=f"/{i}"))
        assert sink.dropped == 3
        assert await sink.flush() == 2 and sink.written == 2
        now = time.time_ns()
        res = LogQLEngine().query_range(store.querier("default"), '{job="default/p"}', now - 60 * 10**9,
                                        now + 10**9, 10**9)
        assert sorted(_parse(e.line)["path"] for s in res.streams for e in s.entries) == ["/0", "/1"]
    finally:
        await store.stop()


def test_settings_key_and_wiring(tmp_path: Path, kube: KubeAPI) -> None:
    settings = load_settings(None, data_dir=tmp_path, kube={"mesh_access_log": "json"})
    assert settings.kube.mesh_access_log == "json"
    assert load_settings(None, data_dir=tmp_path).kube.mesh_access_log == "off"
    with pytest.raises(ConfigError, match=r"kube\.mesh_access_log: Input should be 'off', 'text' or 'json'"):
        load_settings(None, data_dir=tmp_path, kube={"mesh_access_log": "verbose"})
    store = LogStore(TelemetryDB(tmp_path / "t.duckdb"), tmp_path / "wal", fsync=False)
    part = build_traffic_part(kube, logs=store, access_log="json")
    assert part.access_log is not None and part.access_log in part.components()
    assert part.proxy.access_policies.for_pod(PodInfo("p", "default", "p")) is not None
    metrics = SelfMetrics()
    part.register_metrics(metrics)
    part.access_log.dropped = 7
    text = generate_latest(metrics.registry).decode()
    assert "pitwall_mesh_access_log_dropped_total 7.0" in text
    assert build_traffic_part(kube).access_log is None  # no log store: no sink, Telemetry not watched
