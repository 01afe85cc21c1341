"""Pods' egress listeners: unmodified clients in real pod processes (Python's urllib, Debian's curl) call a
Service through ``<NAME>_SERVICE_HOST/PORT`` and ``HTTP_PROXY``, and the mesh recognises their pod.

Each pod runs with ``LD_PRELOAD`` emptied, so the source-address shim is off and its connections leave from
127.0.0.1: only the egress listener can tell who calls. The kubelet, the service proxy and the egress
listeners run in the test's loop over one Kubernetes API; the Service's backend is an in-process HTTP
server on a pod address (its pod is bound to another node, so this kubelet leaves it alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from pitwall.config import load_settings
from pitwall.kube import KubeAPI
from pitwall.kube.wiring import build_kube
from pitwall.node import Kubelet
from pitwall.node.podconfig import container_env
from pitwall.node.runtime import kill_leftovers
from pitwall.storage.revstore.sqlite import SqliteRevStore
from pitwall.traces import SpanAppender
from pitwall.traffic import ServiceProxy, build_traffic_part
from pitwall.traffic.accesslog import AccessLogSink
from pitwall.traffic.egress import EGRESS_PORT, EgressListeners
from pitwall.traffic.istio_crds import istio_crds
from pitwall.traffic.telemetry import LABELS, MeshTelemetry
from pitwall.traffic.tracing import MeshTracer
from tests.conftest import WORKER, free_port, start_pitwall_process, stop_pitwall_process, wait_ready
from tests.node.conftest import FAST, PY, Sinks
from tests.traffic.conftest import cluster_ip, endpoint, eventually, make_service, put_slice
from tests.traffic.mesh_helpers import App, apply, authz
from tests.traffic.test_mesh_e2e import APP, Live, _deployment, _until

pytestmark = pytest.mark.timeout(120)

Obj = dict[str, Any]
NODE = "egress-node"
NO_SHIM = {"name": "LD_PRELOAD", "value": ""}  # connections leave from 127.0.0.1, as without pitwall's shim

URLLIB = """
import os, sys, urllib.error, urllib.request
print("proxy", os.environ.get("http_proxy"), os.environ.get("no_proxy"), flush=True)
for url in sys.argv[1:]:
    url = os.path.expandvars(url)
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            print("answer", url, r.status, r.read().decode()[:200], flush=True)
    except urllib.error.HTTPError as e:
        print("answer", url, e.code, e.read().decode(), flush=True)
import time
time.sleep(300)
"""
SELF_SERVER = """
import http.server, os, threading, urllib.request
seen = []
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        seen.append(self.path); self.send_response(200); self.end_headers(); self.wfile.write(b"self")
    def log_message(self, *a): pass
srv = http.server.HTTPServer((os.environ["POD_IP"], 8080), H)
threading.Thread(target=srv.serve_forever, daemon=True).start()
with urllib.request.urlopen("http://%s:8080/self-call" % os.environ["POD_IP"], timeout=20) as r:
    print("self", r.status, r.read().decode(), "seen", seen, flush=True)
import time
time.sleep(300)
"""


async def _wait(get: Any, tries: int = 400) -> Any:
    """``await get()`` until it gives something truthy (bounded)."""
    for _ in range(tries):
        got = await get()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


class Mesh:
    """A Kubernetes API with Istio's CRDs, a kubelet on its own /24 of pod addresses, the service proxy
    with Istio's telemetry, and the egress listeners handed to the kubelet."""

    def __init__(self, kube: KubeAPI, kubelet: Kubelet, proxy: ServiceProxy, egress: EgressListeners,
                 telemetry: MeshTelemetry, sinks: Sinks, subnet: int, tracer: MeshTracer,
                 access_log: AccessLogSink) -> None:
        self.kube, self.kubelet, self.proxy, self.egress = kube, kubelet, proxy, egress
        self.telemetry, self.sinks, self.subnet = telemetry, sinks, subnet
        self.tracer, self.access_log = tracer, access_log
        self.client = kube.client
        self.apps: list[App] = []
        self.web_ip = ""
        self.handed_out: set[str] = set()

    def spare_ip(self) -> str:
        """An address of the second /24 that no address handed out before has (they are drawn at random)."""
        while True:
            ip = f"127.42.{self.subnet + 1}.{random.randrange(2, 250)}"
            if ip not in self.handed_out:
                self.handed_out.add(ip)
                return ip

    async def web(self) -> App:
        """Service ``web`` (port 80, name http) with one backend pod (serviceAccount web)."""
        ip = self.spare_ip()
        await self.client.create({"apiVersion": "v1", "kind": "ServiceAccount",
                                  "metadata": {"name": "web", "namespace": "default"}})
        pod = await self.client.create({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "default",
                                                             "labels": {"app": "web"}},
            "spec": {"nodeName": "elsewhere", "serviceAccountName": "web",
                     "containers": [{"name": "c", "image": "app"}]}})
        pod["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
        await self.client.update_status(pod)
        app = await App(ip, 8080, "web-0").start()
        self.apps.append(app)
        svc = await make_service(self.client, "web")
        await put_slice(self.client, "web", [endpoint(ip)])
        self.web_ip = cluster_ip(svc)
        await eventually(lambda: bool(self.proxy.endpoints(self.web_ip, 80)) and ip in self.proxy.pods)
        return app

    async def run_pod(self, name: str, command: list[str], sa: str = "default", **spec: Any) -> str:
        """Start a pod (its container runs ``command``, with the shim off); its pod IP once running."""
        if sa != "default":
            with contextlib.suppress(Exception):
                await self.client.create({"apiVersion": "v1", "kind": "ServiceAccount",
                                          "metadata": {"name": sa, "namespace": "default"}})
        await self.client.create({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                             "labels": {"app": name}},
            "spec": {"serviceAccountName": sa, "terminationGracePeriodSeconds": 1, "restartPolicy": "Never",
                     "containers": [{"name": "main", "image": "x", "command": command, "env": [NO_SHIM]}],
                     **spec}})

        async def ip() -> str:
            st = (await self.client.get("v1", "Pod", name, "default")).get("status") or {}
            return str(st.get("podIP") or "")
        got = ""
        for _ in range(600):
            got = await ip()
            if got:
                return got
            await asyncio.sleep(0.05)
        raise AssertionError(f"pod {name} got no IP")

    async def lines(self, pod: str, prefix: str, n: int = 1) -> list[str]:
        """The pod's stdout lines starting with ``prefix``, once there are ``n``."""
        out: list[str] = []

        def got() -> bool:
            out[:] = [ln for ln in self.sinks.lines(pod=pod) if ln.startswith(prefix)]
            return len(out) >= n
        await eventually(got, tries=1500, every_s=0.05)
        return out

    def series(self, **want: str) -> int:
        """Requests counted (``istio_requests_total`` once flushed, for each reporter) under label values
        ``want``."""
        total = 0
        for key, acc in self.telemetry.series().items():
            labels = dict(zip(LABELS, key, strict=True))
            if all(labels.get(k) == v for k, v in want.items()):
                total += acc.count
        return total


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    kube = build_kube(store)
    kube.add_builtin_crds(istio_crds())
    await kube.start()
    tel = MeshTelemetry(None)
    # Every new trace sampled; the spans stay buffered in the tracer (never flushed: no appender).
    tracer = MeshTracer(cast(SpanAppender, None), sampling=1.0)
    sinks = Sinks()
    access_log = AccessLogSink(sinks)  # flushed by the test into the in-memory log sink
    proxy = ServiceProxy(kube.client, drain_timeout_s=0.5, telemetry=tel, tracer=tracer, access_log=access_log,
                         access_log_default="text")
    egress = EgressListeners(proxy)
    subnet = 64 * WORKER + random.randrange(32, 62, 2)  # this kubelet's /24; the next one holds the backends
    data = tmp_path / "node"
    kubelet = Kubelet(kube, data_dir=data, logs=sinks, metrics=sinks, node_name=NODE,
                      pod_cidr=f"127.42.{subnet}.0/24", **FAST)
    kubelet.egress = egress
    m = Mesh(kube, kubelet, proxy, egress, tel, sinks, subnet, tracer, access_log)
    try:
        await proxy.start()
        await proxy.wait_synced(10)
        await egress.start()
        await kubelet.start()
        await kubelet.wait_synced()
        yield m
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(kubelet.stop(), 30)
        kill_leftovers(data / "pods")
        await egress.stop()
        await proxy.stop()
        for a in m.apps:
            await a.stop()
        await kube.stop()
        await store.stop()


async def test_urllib_and_curl_are_recognised_as_their_pod(mesh: Mesh) -> None:
    """Clients that only read the Service variables and ``HTTP_PROXY`` reach the Service through the
    mesh as their pod (``source_workload``, spans, access logs), by ClusterIP and by name; the listener
    goes with the pod."""
    app = await mesh.web()
    py_ip = await mesh.run_pod("py-caller", [PY, "-u", "-c", URLLIB,
                                             "http://$WEB_SERVICE_HOST:$WEB_SERVICE_PORT/from-urllib",
                                             "http://web/by-name?x=1", "http://web.default.svc.cluster.local/fqdn"])
    assert shutil.which("curl"), "Debian's curl is needed"
    curl = ("curl -sS -o /dev/null -w 'curl %{http_code}\\n' "
            "http://$WEB_SERVICE_HOST:$WEB_SERVICE_PORT/from-curl; sleep 300")
    await mesh.run_pod("curl-caller", ["sh", "-c", curl])
    (proxy_line,) = await mesh.lines("py-caller", "proxy ")
    assert proxy_line == f"proxy http://{py_ip}:{EGRESS_PORT} localhost,127.0.0.1,{py_ip}"
    answers = await mesh.lines("py-caller", "answer ", 3)
    assert all(" 200 " in a and '"name": "web-0"' in a for a in answers), answers
    assert await mesh.lines("curl-caller", "curl ") == ["curl 200"]
    paths = [r["path"] for r in app.requests]
    assert sorted(paths) == ["/by-name?x=1", "/fqdn", "/from-curl", "/from-urllib"]
    assert all(r["headers"].get("x-request-id") for r in app.requests)  # the mesh's HTTP path handled them
    assert "proxy-connection" not in next(r for r in app.requests if r["path"] == "/from-curl")["headers"]
    common = {"destination_service_name": "web", "destination_workload": "web-0",
              "response_code": "200"}
    assert mesh.series(source_workload="py-caller", source_principal="spiffe://cluster.local/ns/default/sa/default",
                       **common) == 3
    assert mesh.series(source_workload="curl-caller", **common) == 1
    assert mesh.series(source_workload="unknown") == 0
    assert mesh.egress.stats.service_requests == 4 and mesh.egress.stats.passthrough_requests == 0
    # A span per hop under the calling workload, and Envoy's access line under the caller's sidecar.
    spans = mesh.tracer._cols
    callers = sorted(svc for svc, name in zip(spans.service, spans.name, strict=True)
                     if name == "web.default.svc.cluster.local:80/*")
    assert callers == ["curl-caller.default"] + ["py-caller.default"] * 3
    await mesh.access_log.flush()
    lines = [(s, e.line) for s in mesh.sinks.log_streams for e in s.entries if "outbound|80||web" in e.line]
    # Both downstream addresses are the pod's (its listener, its own IP), not where the client connected from.
    assert all(f" {py_ip}:{EGRESS_PORT} " in line and "127.0.0.1" not in line
               for s, line in lines if dict(s.labels).get("pod") == "py-caller"), lines
    logged = {(dict(s.labels).get("pod"), dict(s.labels).get("container"), line.split('"')[1]) for s, line in lines}
    assert logged == {("py-caller", "istio-proxy", "GET /from-urllib HTTP/1.1"),
                      ("py-caller", "istio-proxy", "GET /by-name?x=1 HTTP/1.1"),
                      ("py-caller", "istio-proxy", "GET /fqdn HTTP/1.1"),
                      ("curl-caller", "istio-proxy", "GET /from-curl HTTP/1.1")}

    # The listener closes with the pod.
    assert py_ip in mesh.egress.listening()
    await mesh.client.delete("v1", "Pod", "py-caller", "default")
    await eventually(lambda: py_ip not in mesh.egress.listening(), tries=1500, every_s=0.05)
    with pytest.raises(OSError):
        _, w = await asyncio.open_connection(py_ip, EGRESS_PORT)
        w.close()
    assert mesh.proxy.pods.get(py_ip) is None


async def test_authorization_policy_admits_the_callers_service_account_only(mesh: Mesh) -> None:
    """An ALLOW by principal decides on the identity the egress listener gives: the ServiceAccount
    ``sleep`` is admitted, ``other`` gets Envoy's ``403 RBAC: access denied``."""
    app = await mesh.web()
    await apply(mesh.client, authz("web-viewer", {
        "selector": {"matchLabels": {"app": "web"}}, "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}]}]}))
    await eventually(lambda: mesh.proxy.mesh.authz is not None and bool(mesh.proxy.mesh.authz.policies))
    url = "http://$WEB_SERVICE_HOST:$WEB_SERVICE_PORT/policy"
    await mesh.run_pod("sleep", [PY, "-u", "-c", URLLIB, url], sa="sleep")
    await mesh.run_pod("intruder", [PY, "-u", "-c", URLLIB, url], sa="other")
    curl = "curl -sS -w ' curl %{http_code}\\n' http://$WEB_SERVICE_HOST:$WEB_SERVICE_PORT/policy-curl; sleep 300"
    await mesh.run_pod("intruder-curl", ["sh", "-c", curl], sa="other")
    (ok,) = await mesh.lines("sleep", "answer ")
    assert " 200 " in ok
    (denied,) = await mesh.lines("intruder", "answer ")
    assert denied.endswith(" 403 RBAC: access denied"), denied
    (denied_curl,) = await mesh.lines("intruder-curl", "RBAC")
    assert denied_curl == "RBAC: access denied curl 403"
    assert [r["path"] for r in app.requests] == ["/policy"]
    assert mesh.series(source_workload="intruder", source_principal="spiffe://cluster.local/ns/default/sa/other",
                       response_code="403") == 1


async def test_no_proxy_keeps_pod_local_calls_direct_and_other_hosts_pass_through(mesh: Mesh) -> None:
    """A pod's call to its own IP does not touch its listener; a call to an address that is no Service
    is forwarded (Istio's ALLOW_ANY) and leaves from the caller's pod IP."""
    self_ip = await mesh.run_pod("selfish", [PY, "-u", "-c", SELF_SERVER])
    (line,) = await mesh.lines("selfish", "self ")
    assert line == "self 200 self seen ['/self-call']"
    assert mesh.egress.stats.connections_total == 0
    assert self_ip in mesh.egress.listening()

    ip = mesh.spare_ip()
    peers: list[str] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        peers.append(f"{w.get_extra_info('peername')[0]} {head.split(b' ')[1].decode()}")
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\npass")
        await w.drain()
        w.close()
    server = await asyncio.start_server(handle, ip, 8081)
    try:
        caller = await mesh.run_pod("passer", [PY, "-u", "-c", URLLIB, f"http://{ip}:8081/elsewhere"])
        (ans,) = await mesh.lines("passer", "answer ")
        assert ans == f"answer http://{ip}:8081/elsewhere 200 pass"
        assert peers == [f"{caller} /elsewhere"]
        assert mesh.egress.stats.passthrough_requests == 1
    finally:
        server.close()


async def test_a_tcp_service_port_keeps_the_byte_relay_and_knows_the_pod(mesh: Mesh) -> None:
    """A Service port Istio treats as TCP (``appProtocol: tcp``) is served as its ClusterIP serves it: the
    request is relayed as bytes (no mesh headers, no Istio metrics), from the pod's IP, so the relay's
    access line is the calling pod's."""
    app = await mesh.web()
    backend = app.ip
    svc = await make_service(mesh.client, "tcpweb", [{"name": "raw", "appProtocol": "tcp", "port": 8081,
                                                      "targetPort": 8080}])
    await put_slice(mesh.client, "tcpweb", [endpoint(backend)], ports=[{"name": "raw", "port": 8080,
                                                                        "protocol": "TCP"}])
    await eventually(lambda: bool(mesh.proxy.endpoints(cluster_ip(svc), 8081)))
    await mesh.run_pod("raw-caller", [PY, "-u", "-c", URLLIB,
                                      "http://$TCPWEB_SERVICE_HOST:$TCPWEB_SERVICE_PORT/raw"])
    (ans,) = await mesh.lines("raw-caller", "answer ")
    assert " 200 " in ans
    (req,) = app.requests
    assert req["path"] == "/raw" and "x-request-id" not in req["headers"]
    assert mesh.series(destination_service_name="tcpweb") == 0
    assert mesh.egress.stats.tcp_service_requests == 1 and mesh.egress.stats.service_requests == 0

    async def relay_line() -> list[str]:
        await mesh.access_log.flush()
        return [e.line for s in mesh.sinks.log_streams for e in s.entries
                if dict(s.labels).get("pod") == "raw-caller" and "outbound|8081||tcpweb" in e.line]
    (line,) = await _wait(relay_line)
    assert '"- - -" 0 -' in line  # Envoy's TCP line: no method, path or protocol; response code 0

async def test_connect_tunnels_to_a_service_as_the_pod_and_bad_requests_harm_nothing(mesh: Mesh) -> None:
    """``CONNECT web:80`` opens a TCP tunnel that reaches the Service's ClusterIP from the pod's IP (the
    service proxy sees the pod); a request naming no host gets 400, an oversized head 431."""
    app = await mesh.web()
    pod_ip = await mesh.run_pod("tunneler", ["sleep", "300"])
    await eventually(lambda: pod_ip in mesh.egress.listening())
    r, w = await asyncio.open_connection(pod_ip, EGRESS_PORT)
    try:
        w.write(b"CONNECT web:80 HTTP/1.1\r\nHost: web:80\r\n\r\n")
        assert await r.readuntil(b"\r\n\r\n") == b"HTTP/1.1 200 Connection established\r\n\r\n"
        w.write(b"GET /tunnelled HTTP/1.1\r\nHost: web\r\n\r\n")
        head = await r.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
    finally:
        w.close()
    assert [x["path"] for x in app.requests] == ["/tunnelled"]
    await eventually(lambda: mesh.series(source_workload="tunneler", destination_service_name="web") == 1)

    async def ask(raw: bytes) -> bytes:
        r, w = await asyncio.open_connection(pod_ip, EGRESS_PORT)
        try:
            w.write(raw)
            return await r.read()
        finally:
            w.close()
    assert (await ask(b"GET /no-host HTTP/1.1\r\nConnection: close\r\n\r\n")).startswith(b"HTTP/1.1 400")
    assert (await ask(b"GET ftp://web/x HTTP/1.1\r\nConnection: close\r\n\r\n")).startswith(b"HTTP/1.1 400")
    big = b"GET http://web/ HTTP/1.1\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n"
    assert (await ask(big)).startswith(b"HTTP/1.1 431")
    assert (await ask(b"CONNECT web HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400")
    assert [x["path"] for x in app.requests] == ["/tunnelled"]
    await eventually(lambda: mesh.egress.open_connections() == 0)


async def test_connections_per_pod_are_bounded_and_stop_closes_everything(mesh: Mesh) -> None:
    """Past ``max_connections`` a pod's new connections are reset (the open ones keep working); ``stop``
    closes the listeners and their connections, and later ``open`` calls give no proxy."""
    await mesh.web()
    bounded = EgressListeners(mesh.proxy, max_connections=2)
    ip = mesh.spare_ip()
    pod = {"metadata": {"name": "bounded", "namespace": "default"}, "spec": {"serviceAccountName": "default"}}
    assert await bounded.open(pod, ip) == f"http://{ip}:{EGRESS_PORT}"
    kept = [await asyncio.open_connection(ip, EGRESS_PORT) for _ in range(2)]
    await eventually(lambda: bounded.open_connections() == 2)
    r, w = await asyncio.open_connection(ip, EGRESS_PORT)
    with contextlib.suppress(ConnectionResetError):
        assert await r.read() == b""
    w.close()
    assert bounded.stats.rejected == 1
    kr, kw = kept[0]
    kw.write(b"GET http://web/ok HTTP/1.1\r\nHost: web\r\n\r\n")
    head = await kr.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = next(int(ln.split(b":")[1]) for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length"))
    assert b'"name": "web-0"' in await kr.readexactly(length)
    await bounded.stop()
    assert bounded.listening() == {} and bounded.open_connections() == 0
    for kr, kw in kept:
        with contextlib.suppress(ConnectionResetError):
            assert await kr.read() == b""
        kw.close()
    with pytest.raises(OSError):
        await asyncio.open_connection(ip, EGRESS_PORT)
    assert await bounded.open(pod, ip) is None
    assert mesh.proxy.pods.get(ip) is None

async def test_the_variables_and_the_setting(tmp_path: Path, kube: KubeAPI) -> None:
    """A container gets the four variables only when its pod has a listener, its own ``env`` overrides
    them; ``kube.mesh_egress_listener`` (on by default) decides whether the traffic part builds one."""
    pod: Obj = {"metadata": {"name": "p", "namespace": "default"}, "spec": {"enableServiceLinks": False}}
    args: dict[str, Any] = {"pod_ip": "127.42.9.9", "node_name": NODE, "root": tmp_path, "volumes": {},
                            "volume_error": ""}
    plain = await container_env(kube.client, pod, {"name": "c"}, **args)
    assert not {"HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"} & set(plain)
    spec = {"name": "c", "env": [{"name": "http_proxy", "value": ""}]}
    env = await container_env(kube.client, pod, spec, proxy_url="http://127.42.9.9:15001", **args)
    assert env["HTTP_PROXY"] == "http://127.42.9.9:15001" and env["http_proxy"] == ""
    assert env["NO_PROXY"] == env["no_proxy"] == "localhost,127.0.0.1,127.42.9.9"
    assert load_settings(None).kube.mesh_egress_listener is True
    assert load_settings(None, kube={"mesh_egress_listener": False}).kube.mesh_egress_listener is False
    on = build_traffic_part(kube, egress=True)
    assert isinstance(on.egress, EgressListeners) and on.components()[-1] is on.egress
    assert build_traffic_part(kube, egress=False).egress is None

CALLER = """
import os, time, urllib.error, urllib.request
url = "http://%s:%s/from-caller" % (os.environ["WEB_SERVICE_HOST"], os.environ["WEB_SERVICE_PORT"])
print("proxy", os.environ.get("http_proxy"), flush=True)
while True:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            print("answer", r.status, flush=True)
    except (OSError, urllib.error.URLError) as e:
        print("error", e, flush=True)
    time.sleep(0.5)
"""


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """A ``pitwall server`` (its own process) with the mesh and the egress listeners on by default."""
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"fsync": False}}))
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=60, proc=proc)
        server = Live(f"http://127.0.0.1:{port}")
        with server.http:
            yield server
    finally:
        stop_pitwall_process(proc)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_pod_of_a_live_server_is_recognised_through_its_egress_listener(live: Live) -> None:
    """On ``pitwall server``: a Deployment's pod (urllib, the source shim off) calls the Service ``web`` by
    its variables; ``istio_requests_total`` read back with PromQL carries the caller's workload."""
    ns = "/api/v1/namespaces/default"
    live.create(f"{ns}/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                   "spec": {"selector": {"app": "web"},
                                            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    live.create("/apis/apps/v1/namespaces/default/deployments", _deployment("web", {"app": "web"}, APP))
    caller = _deployment("caller", {"app": "caller"}, CALLER)
    caller["spec"]["template"]["spec"]["containers"][0]["env"] = [NO_SHIM]
    caller["spec"]["template"]["spec"]["containers"][0]["command"] = [sys.executable, "-u", "-c", CALLER]
    live.create("/apis/apps/v1/namespaces/default/deployments", caller)

    def pod_ip() -> str:
        pods = live.get(f"{ns}/pods?labelSelector=app%3Dcaller")["items"]
        return str(pods[0]["status"]["podIP"])
    ip = _until(pod_ip)

    def counted() -> float:
        res = live.promql('sum(istio_requests_total{reporter="destination",destination_service_name="web",'
                          'source_workload="caller",source_principal="spiffe://cluster.local/ns/default/sa/default",'
                          'response_code="200"})')
        return float(res[0]["value"][1]) if res else 0.0
    assert _until(counted, timeout=90) >= 1
    assert _egress_metric(live) >= 1
    assert live.promql('sum(istio_requests_total{source_workload="unknown",destination_service_name="web"})') == []
    logs = live.http.get(f"{ns}/pods/{_pod_name(live)}/log")
    assert f"proxy http://{ip}:{EGRESS_PORT}" in logs.text


def _pod_name(live: Live) -> str:
    return str(live.get("/api/v1/namespaces/default/pods?labelSelector=app%3Dcaller")["items"][0]["metadata"]["name"])


def _egress_metric(live: Live) -> float:
    """``pitwall_mesh_egress_service_requests`` from the server's own /metrics."""
    for line in live.http.get("/metrics").text.splitlines():
        if line.startswith("pitwall_mesh_egress_service_requests "):
            return float(line.split()[1])
    return 0.0
