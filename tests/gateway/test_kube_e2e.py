"""``pitwall server`` with its gateway on: kubectl creates an IngressClass, Services (selector-less, with
EndpointSlices naming plain HTTP servers on pod addresses) and Ingresses; httpx goes through the gateway."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port, start_pitwall_process, stop_pitwall_process, wait_ready
from tests.kube.conftest import KUBECTL
from tests.kube.test_pitwall_server import _kubectl_for, _tls_config

EXAMPLES = Path(__file__).parent / "data" / "gateway-api"  # the Gateway API's own examples (PROVENANCE.md)
GW = "gateway.networking.k8s.io/v1"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


class _Named(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"server": self.server.name, "path": self.path,  # type: ignore[attr-defined]
                           "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


class Backends:
    """Plain HTTP servers, one per name, on distinct pod-range loopback addresses (port 8080)."""

    def __init__(self) -> None:
        self.servers: dict[str, ThreadingHTTPServer] = {}
        self.base = f"127.43.{random.randrange(1, 250)}"

    def start(self, name: str) -> str:
        ip = f"{self.base}.{len(self.servers) + 10}"
        srv = ThreadingHTTPServer((ip, 8080), _Named)
        srv.name = name  # type: ignore[attr-defined]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.servers[name] = srv
        return ip

    def stop(self) -> None:
        for s in self.servers.values():
            s.shutdown()
            s.server_close()


@pytest.fixture
def backends() -> Iterator[Backends]:
    b = Backends()
    try:
        yield b
    finally:
        b.stop()


class Live:
    def __init__(self, kubectl: Callable[..., str], gateway: str) -> None:
        self.kubectl = kubectl
        self.http = httpx.Client(base_url=gateway, verify=False, timeout=10)

    def apply(self, *objs: dict[str, Any]) -> str:
        return self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objs))

    def service(self, name: str, ip: str, port: int = 80) -> None:
        self.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                    "spec": {"ports": [{"name": "http", "port": port, "targetPort": 8080}]}},
                   {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4", "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})

    def get(self, path: str, host: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        r = self.http.get(path, headers={"Host": host, **(headers or {})})
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text


def until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, AssertionError, KeyError) as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"not reached in {timeout}s; last: {last!r}")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    if not os.path.exists(KUBECTL):
        pytest.skip(f"kubectl is not installed at {KUBECTL}")
    cfg = _tls_config(tmp_path)
    gw_port, port = free_port(), free_port()
    doc = yaml.safe_load(cfg.read_text())
    doc["gateway"] = {"listen": f"127.0.0.1:{gw_port}"}
    cfg.write_text(yaml.safe_dump(doc))
    data = tmp_path / "data"
    data.mkdir()
    proc = start_pitwall_process(data, port, config=cfg)
    try:
        wait_ready(f"https://127.0.0.1:{port}", timeout=90, proc=proc, verify=False)
        server = Live(_kubectl_for(f"https://127.0.0.1:{port}", tmp_path), f"https://127.0.0.1:{gw_port}")
        with server.http:
            yield server
    finally:
        stop_pitwall_process(proc)


def test_ingress_through_kubectl(live: Live, backends: Backends) -> None:
    for name in ("web", "api"):
        live.service(name, backends.start(name))
    live.apply({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "pitwall"},
                "spec": {"controller": "pitwall.dev/gateway"}})
    out = live.kubectl("create", "ingress", "site", "--class=pitwall", "--rule=www.example.com/*=web:80",
                       "--rule=/api/*=api:http", "--rule=/exact=web:80")
    assert "ingress.networking.k8s.io/site created" in out
    assert until(lambda: live.get("/", "www.example.com")[1]["server"] == "web")
    status, body = live.get("/api/users?x=1", "other.example.com")
    assert (status, body["server"], body["path"]) == (200, "api", "/api/users?x=1")
    assert body["headers"]["host"] == "other.example.com"  # the Host is kept, as ingress-nginx does
    assert live.get("/apix", "other.example.com")[0] == 404  # element-wise prefix; no Kong route, no default
    assert live.get("/exact", "other.example.com")[1]["server"] == "web"
    assert live.get("/exact/more", "other.example.com")[0] == 404

    def row() -> list[str]:
        lines = live.kubectl("get", "ingress", "site").splitlines()
        assert lines[0].split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
        cols = lines[1].split()
        assert cols[:5] == ["site", "pitwall", "www.example.com", "127.0.0.1", "80"], cols
        return cols

    until(row)
    assert "pathType" in live.kubectl("explain", "ingress.spec.rules.http.paths")  # the upstream schema
    classes = live.kubectl("get", "ingressclass").splitlines()
    assert classes[0].split() == ["NAME", "CONTROLLER", "PARAMETERS", "AGE"]
    assert classes[1].split()[:3] == ["pitwall", "pitwall.dev/gateway", "<none>"]
    # an edit swaps the routes
    live.kubectl("delete", "ingress", "site")
    assert until(lambda: live.get("/", "www.example.com")[0] == 404)


def test_gateway_api_examples_through_kubectl(live: Live, backends: Backends) -> None:
    """The upstream http-routing guide's Gateway and HTTPRoutes, applied unchanged (our GatewayClass is named
    as their Gateway expects), then the routing the guide describes checked through the gateway."""
    live.service("example-svc", backends.start("example-svc"))
    for name in ("foo-svc", "bar-svc", "bar-svc-canary", "echo"):
        live.service(name, backends.start(name), port=8080)
    live.apply({"apiVersion": GW, "kind": "GatewayClass", "metadata": {"name": "example-gateway-class"},
                "spec": {"controllerName": "pitwall.dev/gateway"}},
               {"apiVersion": GW, "kind": "Gateway", "metadata": {"name": "acme-gw"},
                "spec": {"gatewayClassName": "example-gateway-class",
                         "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}]}})
    for f in ("http-routing-gateway.yaml", "http-routing-foo-httproute.yaml", "http-routing-bar-httproute.yaml",
              "http-request-header-add.yaml"):
        live.kubectl("apply", "-f", str(EXAMPLES / f))
    assert until(lambda: live.get("/", "example.com")[1]["server"] == "example-svc")
    assert until(lambda: live.get("/add-a-request-header", "x")[0] == 200)  # the last one applied is in force
    assert live.get("/login/x", "foo.example.com")[1]["server"] == "foo-svc"
    assert live.get("/logout", "foo.example.com")[0] == 404
    assert live.get("/", "bar.example.com", {"env": "canary"})[1]["server"] == "bar-svc-canary"
    assert live.get("/", "bar.example.com")[1]["server"] == "bar-svc"
    status, body = live.get("/add-a-request-header", "anything.example.org", {"my-header-name": "first"})
    assert status == 200, body
    assert body["server"] == "echo" and body["headers"]["my-header-name"] == "first,my-header-value"

    def programmed() -> bool:
        gw = json.loads(live.kubectl("get", "gateway", "example-gateway", "-o", "json"))
        conds = {c["type"]: c["status"] for c in gw["status"]["conditions"]}
        return conds.get("Programmed") == "True" and gw["status"]["listeners"][0]["attachedRoutes"] == 3

    until(programmed)
    rows = live.kubectl("get", "gateway", "example-gateway").splitlines()
    assert rows[0].split()[:4] == ["NAME", "CLASS", "ADDRESS", "PROGRAMMED"]
    assert rows[1].split()[:4] == ["example-gateway", "example-gateway-class", "127.0.0.1", "True"]

    routes = live.kubectl("get", "httproutes").splitlines()
    assert routes[0].split() == ["NAME", "HOSTNAMES", "AGE"]
    assert any(r.split()[:2] == ["foo-route", '["foo.example.com"]'] for r in routes[1:]), routes

    # a bad route (a Service that does not exist): ResolvedRefs False, BackendNotFound; others unharmed
    live.apply({"apiVersion": GW, "kind": "HTTPRoute", "metadata": {"name": "bad"},
                "spec": {"parentRefs": [{"name": "example-gateway"}], "hostnames": ["bad.example.com"],
                         "rules": [{"backendRefs": [{"name": "no-such-svc", "port": 80}]}]}})

    def resolved_refs() -> dict[str, str]:
        rt = json.loads(live.kubectl("get", "httproute", "bad", "-o", "json"))
        got = {c["type"]: c for c in rt["status"]["parents"][0]["conditions"]}["ResolvedRefs"]
        assert got["status"] == "False"
        return dict(got)

    assert until(resolved_refs)["reason"] == "BackendNotFound"
    assert live.get("/", "bad.example.com")[0] == 500
    assert live.get("/login", "foo.example.com")[1]["server"] == "foo-svc"
