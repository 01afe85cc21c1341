"""Two `pitwall server`s on one etcd (Debian's), each its own node: a pod on node-a calls a pod on node-b.

The caller is a pod of node-a (the test binds its pod IP as the source address, as a mesh client must);
the Service's only pod runs on node-b. Node-b's advertised inbound address is replaced by a recording
relay, so the bytes between the nodes are seen. Both servers serve every ClusterIP (SO_REUSEPORT):
a connection the kernel hands to node-b's own proxy stays on node-b (plaintext, pod IP identity), one
handed to node-a's crosses over mutual TLS; the test makes enough connections that both happen.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import pod_subnet_pair
from tests.kube.servers import AUTH, Server, two_servers, until

pytestmark = [pytest.mark.slow, pytest.mark.peer, pytest.mark.timeout(240)]

ANNOTATION = "mesh.pitwall.dev/inbound"
APP = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"""


class Relay:
    """A thread relaying 127.0.0.1:<port> to a target, recording what callers send."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sent = bytearray()
        self.lock = threading.Lock()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=10)
            except OSError:
                c.close()
                continue
            threading.Thread(target=self._pipe, args=(c, u, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:
                    with self.lock:
                        self.sent += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


CIDRS = pod_subnet_pair()


@pytest.fixture
def pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Server, Server]]:
    # One Secrets key for both servers, so both can read the mesh CA's Secret.
    monkeypatch.setenv("PITWALL_SECRETS_KEY", base64.b64encode(os.urandom(32)).decode())
    with two_servers(tmp_path, CIDRS) as servers:
        yield servers


def _pod(name: str, node: str, sa: str, code: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"nodeName": node, "serviceAccountName": sa, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": name, "image": "python:3.11", "command": [sys.executable, "-c", code]}]}}


def _pod_ip(s: Server, name: str) -> str:
    st = s.req("GET", f"/api/v1/namespaces/default/pods/{name}").json().get("status", {})
    return str(st.get("podIP") or "") if st.get("phase") == "Running" else ""


def test_pods_on_two_servers_talk_over_mutual_tls(pair: tuple[Server, Server]) -> None:
    a, b = pair
    for sa in ("sleep", "web"):
        assert a.req("POST", "/api/v1/namespaces/default/serviceaccounts",
                     {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}}).status_code in (201, 409)
    assert a.req("POST", "/api/v1/namespaces/default/pods",
                 _pod("sleep", "node-a", "sleep", "import time; time.sleep(3600)")).status_code == 201
    assert a.req("POST", "/api/v1/namespaces/default/pods", _pod("web", "node-b", "web", APP)).status_code == 201
    svc = a.req("POST", "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}).json()
    caller = until("the caller pod running on node-a", lambda: _pod_ip(a, "sleep"), timeout=90)
    until("the web pod running on node-b", lambda: _pod_ip(b, "web"), timeout=90)
    assert caller.startswith(CIDRS[0].removesuffix("0/24"))
    inbound = until("node-b's inbound address", lambda: a.req("GET", "/api/v1/nodes/node-b").json()[
        "metadata"].get("annotations", {}).get(ANNOTATION), timeout=60)
    host, ports = inbound.rsplit(":", 1)
    tls_port, plain_port = (int(p) for p in ports.split(","))
    relay = Relay((host, tls_port))
    try:
        patch = {"metadata": {"annotations": {ANNOTATION: f"127.0.0.1:{relay.port},{plain_port}"}}}
        r = httpx.patch(f"{a.url}/api/v1/nodes/node-b", headers={**AUTH, "Content-Type":
                                                                    "application/merge-patch+json"},
                        json=patch, timeout=15)
        assert r.status_code == 200, r.text
        url = f"http://{svc['spec']['clusterIP']}/"

        def get() -> int:
            with httpx.Client(transport=httpx.HTTPTransport(local_address=caller), timeout=10) as c:
                return c.get(url).status_code

        until("the Service answering", lambda: get() == 200, timeout=60)
        for _ in range(30):  # new connections: the kernel spreads them over both servers' proxies
            assert get() == 200
        assert a.metric("pitwall_mesh_outbound_tls") >= 1 and b.metric("pitwall_mesh_inbound_tls") >= 1
        with relay.lock:
            wire = bytes(relay.sent)
        assert wire[:1] == b"\x16" and b"GET / HTTP" not in wire and b"CONNECT" not in wire
        # Node-b authorises by the certificate: only ServiceAccount "other" may call; node-a's hops are
        # denied there (node-b's own direct hops are decided by node-b's proxy, by pod IP: denied too).
        pol = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
               "metadata": {"name": "web-allow", "namespace": "default"},
               "spec": {"selector": {"matchLabels": {"app": "web"}}, "action": "ALLOW",
                        "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/other"]}}]}]}}
        assert a.req("POST", "/apis/security.istio.io/v1/namespaces/default/authorizationpolicies",
                     pol).status_code == 201
        until("the policy in force", lambda: get() == 403, timeout=30)
        denied_before = b.metric("pitwall_mesh_denied")
        assert all(get() == 403 for _ in range(20))
        assert b.metric("pitwall_mesh_denied") > denied_before
        # STRICT: a plaintext client on node-b's inbound listener is reset.
        a.req("DELETE", "/apis/security.istio.io/v1/namespaces/default/authorizationpolicies/web-allow")
        strict = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                  "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}
        web_ip = _pod_ip(b, "web")

        def plaintext() -> bytes:
            with socket.create_connection((host, plain_port), timeout=10) as s:
                s.sendall(f"CONNECT {web_ip}:8080 HTTP/1.1\r\nx-pitwall-protocol: http\r\n\r\n"
                          "GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n".encode())
                try:
                    return s.recv(65536)
                except ConnectionResetError:
                    return b""

        assert b"ok" in plaintext()  # PERMISSIVE (no policy yet): plaintext is taken
        assert a.req("POST", "/apis/security.istio.io/v1/namespaces/istio-system/peerauthentications",
                     strict).status_code == 201
        until("STRICT in force on node-b", lambda: plaintext() == b"", timeout=30)
        assert b.metric("pitwall_mesh_rejected_plaintext") >= 1
        assert all(get() == 200 for _ in range(10))  # the mesh caller still gets through
    finally:
        relay.close()
