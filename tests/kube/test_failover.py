"""Two `pitwall server`s on one etcd: one runs the controllers; kill -9 it and the other takes over.

Both serve the Kubernetes API over the shared store and each runs its own
node (disjoint pod ranges); the controllers (ReplicaSet, Deployment, ...) run
only on the leader of an election on an etcd lease.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import pod_subnet_pair
from tests.kube.servers import AUTH, Server, two_servers, until

pytestmark = [pytest.mark.slow, pytest.mark.peer, pytest.mark.timeout(180)]

APP = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"""


CIDRS = pod_subnet_pair()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Server, Server]]:
    with two_servers(tmp_path, CIDRS) as servers:
        yield servers


def _deployment(replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                         "terminationGracePeriodSeconds": 2,
                         "containers": [{"name": "web", "image": "python:3.11", "command": [sys.executable, "-c", APP],
                                         "ports": [{"containerPort": 8080}],
                                         "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}]}}}}


def _ready_pods(s: Server) -> list[dict[str, Any]]:
    pods = s.get("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")["items"]
    return [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                   for c in p.get("status", {}).get("conditions", []))]


def test_leader_failover_on_kill(pair: tuple[Server, Server]) -> None:
    a, b = pair
    leader = until("one leader", lambda: [s for s in pair if s.leading()])
    assert len(leader) == 1, "exactly one server runs the controllers"
    leader_, follower = leader[0], (b if leader[0] is a else a)
    assert {n["metadata"]["name"] for n in follower.get("/api/v1/nodes")["items"]} == {"node-a", "node-b"}

    # Written through the follower, reconciled by the leader, run by whichever node binds each pod first.
    r = httpx.post(follower.url + "/apis/apps/v1/namespaces/default/deployments", json=_deployment(2),
                   headers=AUTH, timeout=10)
    assert r.status_code == 201, r.text
    pods = until("2 ready pods", lambda: len(_ready_pods(follower)) == 2 and _ready_pods(follower))
    cidr = {"node-a": CIDRS[0].removesuffix("0/24"), "node-b": CIDRS[1].removesuffix("0/24")}
    for p in pods:  # each pod bound once, with an address of its own node's range
        assert p["status"]["podIP"].startswith(cidr[p["spec"]["nodeName"]])
    assert len({p["status"]["podIP"] for p in pods}) == 2

    leader_.stop(signal.SIGKILL)
    until("the follower to lead", follower.leading, timeout=30)
    # The new leader's controllers act: scaling up makes a new pod, run by the surviving node.
    r = httpx.patch(follower.url + "/apis/apps/v1/namespaces/default/deployments/web/scale",
                    json={"spec": {"replicas": 3}}, headers={**AUTH, "Content-Type": "application/merge-patch+json"},
                    timeout=10)
    assert r.status_code == 200, r.text
    before = {p["metadata"]["name"] for p in pods}

    def new_ready() -> list[dict[str, Any]]:
        return [p for p in _ready_pods(follower) if p["metadata"]["name"] not in before]

    made = until("a new ready pod after failover", new_ready)
    assert made[0]["spec"]["nodeName"] == follower.name
    rs = follower.get("/apis/apps/v1/namespaces/default/replicasets")["items"]
    assert [x["spec"]["replicas"] for x in rs] == [3]
