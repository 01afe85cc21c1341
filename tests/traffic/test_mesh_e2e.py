"""The mesh on a live `pitwall server`: real pods (processes on 127.42.x.y) behind a Service, Istio's objects
through the Kubernetes API, traffic through httpx, and Istio's metrics read back with PromQL."""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port, start_pitwall_process, stop_pitwall_process, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

APP = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        status = int(self.path.split("/")[2]) if self.path.startswith("/status/") else 200
        body = os.environ["HOSTNAME"].encode()
        self.send_response(status); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"""
SLEEP = "import time\nwhile True: time.sleep(1)\n"


class Live:
    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def create(self, path: str, obj: dict[str, Any]) -> None:
        r = self.http.post(path, json=obj)
        assert r.status_code == 201, r.text

    def get(self, path: str) -> dict[str, Any]:
        r = self.http.get(path)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def promql(self, query: str) -> list[dict[str, Any]]:
        data = self.get(f"/api/v1/query?query={httpx.QueryParams({'q': query})['q']}")
        res: list[dict[str, Any]] = data["data"]["result"]
        return res


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
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


def _deployment(name: str, labels: dict[str, str], program: str, sa: str = "default") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "serviceAccountName": sa, "terminationGracePeriodSeconds": 2,
                         "containers": [{"name": "app", "image": "python:3.11",
                                         "command": [sys.executable, "-u", "-c", program],
                                         "ports": [{"name": "http", "containerPort": 8080}]}]}}}}


def _until(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, AssertionError, KeyError, IndexError) as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    raise AssertionError(f"not reached in {timeout}s; last: {last!r}")


def test_mesh_on_a_live_server(live: Live) -> None:
    ns = "/api/v1/namespaces/default"
    for sa in ("web", "sleep"):
        live.create(f"{ns}/serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}})
    live.create("/apis/apps/v1/namespaces/default/deployments",
                _deployment("web-v1", {"app": "web", "version": "v1"}, APP, "web"))
    live.create("/apis/apps/v1/namespaces/default/deployments",
                _deployment("web-v2", {"app": "web", "version": "v2"}, APP, "web"))
    live.create("/apis/apps/v1/namespaces/default/deployments", _deployment("sleep", {"app": "sleep"}, SLEEP, "sleep"))
    live.create(f"{ns}/services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                   "spec": {"selector": {"app": "web"},
                                            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    net = "/apis/networking.istio.io/v1/namespaces/default"
    live.create(f"{net}/destinationrules", {
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": "web"},
        "spec": {"host": "web", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                            {"name": "v2", "labels": {"version": "v2"}}]}})
    live.create(f"{net}/virtualservices", {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "web"},
        "spec": {"hosts": ["web"], "http": [
            {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
             "route": [{"destination": {"host": "web", "subset": "v2"}}]},
            {"route": [{"destination": {"host": "web", "subset": "v1"}, "weight": 70},
                       {"destination": {"host": "web", "subset": "v2"}, "weight": 30}]}]}})
    live.create("/apis/security.istio.io/v1/namespaces/default/authorizationpolicies", {
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "action": "ALLOW", "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}}]}]}})

    ip = live.get(f"{ns}/services/web")["spec"]["clusterIP"]

    def sleep_ip() -> str:
        pods = live.get(f"{ns}/pods?labelSelector=app%3Dsleep")["items"]
        return str(pods[0]["status"]["podIP"])

    caller = _until(sleep_ip)

    def both_ready() -> bool:
        eps = live.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector="
                       "kubernetes.io%2Fservice-name%3Dweb")["items"]
        return sum(1 for s in eps for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")) == 2

    _until(both_ready)
    with httpx.Client(base_url=f"http://{ip}", timeout=10,
                      transport=httpx.HTTPTransport(local_address=caller)) as as_sleep:
        _check(live, ip, as_sleep)


def _check(live: Live, ip: str, as_sleep: httpx.Client) -> None:
    """Traffic from the sleep pod (and from nobody), then what the stores hold of it."""
    _until(lambda: as_sleep.get("/").status_code == 200)
    got: collections.Counter[str] = collections.Counter()
    for _ in range(200):
        r = as_sleep.get("/")
        assert r.status_code == 200
        got[r.text.rsplit("-", 2)[0]] += 1  # the pod name without its ReplicaSet and pod suffixes
    assert set(got) == {"web-v1", "web-v2"}
    assert 38 <= got["web-v2"] <= 82  # 60 expected; binomial sd 6.5
    assert all(as_sleep.get("/", headers={"end-user": "jason"}).text.startswith("web-v2-") for _ in range(5))
    assert as_sleep.get("/status/500").status_code == 500
    # Not the sleep pod's identity: denied by the ALLOW policy, as Envoy answers.
    with httpx.Client(base_url=f"http://{ip}", timeout=10) as anon:
        denied = anon.get("/")
        assert denied.status_code == 403 and denied.text == "RBAC: access denied"

    def counted() -> dict[tuple[str, str], float]:
        res = live.promql('sum by (destination_workload, response_code) (istio_requests_total{reporter="destination",'
                          'destination_service_name="web",source_workload="sleep"})')
        return {(s["metric"]["destination_workload"], s["metric"]["response_code"]): float(s["value"][1])
                for s in res}

    by = _until(lambda: (c := counted()) and sum(v for (_, code), v in c.items() if code == "200") >= 206 and c,
                timeout=30)
    assert by[("web-v1", "200")] + by[("web-v2", "200")] == 200 + 5 + 1  # the first probe request too
    assert by[("web-v2", "200")] >= got["web-v2"] + 5
    assert sum(v for (_, code), v in by.items() if code == "500") == 1
    denied_total = live.promql('sum(istio_requests_total{reporter="source",response_code="403",'
                               'source_workload="unknown",destination_service="web.default.svc.cluster.local"})')
    assert float(denied_total[0]["value"][1]) == 1
    # A sampled caller's trace is continued: the hop's span is in the trace store (Zipkin's API) and the
    # dependency graph links the caller to the Service.
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    seen = as_sleep.get("/", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert seen.status_code == 200

    def hop_span() -> list[dict[str, Any]]:
        r = live.http.get(f"/api/v2/trace/{trace_id}")
        spans: list[dict[str, Any]] = r.json() if r.status_code == 200 else []
        return spans

    (span,) = _until(hop_span, timeout=30)
    assert span["parentId"] == "00f067aa0ba902b7" and span["kind"] == "CLIENT"
    assert span["localEndpoint"]["serviceName"] == "sleep.default"
    assert span["remoteEndpoint"]["serviceName"] == "web.default"
    assert span["tags"]["http.status_code"] == "200" and span["name"] == "web.default.svc.cluster.local:80/*"
    buckets = live.promql('count(istio_request_duration_milliseconds_bucket{reporter="destination",'
                          'destination_service_name="web",response_code="500"})')
    assert float(buckets[0]["value"][1]) == 20  # Istio's 19 bounds and +Inf
