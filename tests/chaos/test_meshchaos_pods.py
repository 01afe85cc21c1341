"""HTTPChaos and NetworkChaos on real pods: a Deployment run by pitwall's node, its Service's endpoints
written by the EndpointSlice controller, callers through the cluster IP (the service proxy), and the chaos
controllers restarted mid-fault."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pitwall.traffic import ServiceProxy
from tests.chaos.pod_env import Env as PodEnv
from tests.conftest import WORKER, pod_subnets
from tests.node.conftest import PY, until

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

GROUP = "chaos-mesh.org/v1alpha1"
SERVER = """
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = os.environ["HOSTNAME"].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8080), H).serve_forever()
"""


class Env(PodEnv):
    """The pod environment with the service proxy, whose fault table the chaos controllers fill; a service
    range and a pod range of its own (other pitwalls on this machine serve theirs)."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp, service_cidr=f"127.{97 + 6 * WORKER + random.randrange(6)}.0.0/16",
                         pod_cidr=pod_subnets()[0])

    async def start_chaos(self) -> None:
        """The service proxy and the chaos controllers, as a pitwall process starts them."""
        self.proxy = ServiceProxy(self.client, drain_timeout_s=0.5, connect_budget_s=1.0, attempt_timeout_s=0.5)
        await self.proxy.start()
        await self.proxy.wait_synced(10)
        self.mesh = self.proxy.faults
        await super().start_chaos()

    async def stop_chaos(self) -> None:
        await super().stop_chaos()
        await self.proxy.stop()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with Env(tmp_path) as e:
        yield e


async def web(env: Env) -> str:
    """Deployment ``web`` (2 pods serving HTTP on 8080) behind Service ``web`` port 80; its cluster IP."""
    await env.client.create({"apiVersion": "apps/v1", "kind": "Deployment",
                             "metadata": {"name": "web", "namespace": "default"},
                             "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                                      "template": {"metadata": {"labels": {"app": "web"}},
                                                   "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                                                       {"name": "main", "image": "python:3.11",
                                                        "command": [PY, "-u", "-c", SERVER],
                                                        "readinessProbe": {"tcpSocket": {"port": 8080},
                                                                           "periodSeconds": 1}}]}}}})
    svc = await env.client.create({"apiVersion": "v1", "kind": "Service",
                                   "metadata": {"name": "web", "namespace": "default"},
                                   "spec": {"selector": {"app": "web"},
                                            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
    ip = str(svc["spec"]["clusterIP"])

    async def serving() -> bool:
        return len(env.proxy.endpoints(ip, 80)) == 2
    await until(serving, 60)
    return ip


async def get(ip: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://{ip}", timeout=10) as c:
        return await c.get(path)


async def test_http_chaos_on_real_pods_survives_a_restart_and_is_gone_after_delete(env: Env) -> None:
    ip = await web(env)
    assert (await get(ip, "/teapot")).status_code == 200
    await env.client.create({"apiVersion": GROUP, "kind": "HTTPChaos",
                             "metadata": {"name": "teapot", "namespace": "default"},
                             "spec": {"mode": "all", "selector": {"labelSelectors": {"app": "web"}},
                                      "target": "Response", "port": 8080, "path": "/teapot",
                                      "replace": {"code": 418}}})

    async def injected() -> bool:
        return (await env.cond("HTTPChaos", "teapot")).get("AllInjected") == "True"
    await until(injected, 30)
    r = await get(ip, "/teapot")
    assert r.status_code == 418 and r.text.startswith("web-")  # the pod's own body, the code replaced
    assert (await get(ip, "/")).status_code == 200
    await env.stop_chaos()  # pitwall goes: the proxy and its faults with it
    await env.start_chaos()
    await until(lambda: _serving(env, ip), 30)

    async def teapot_again() -> bool:
        return (await get(ip, "/teapot")).status_code == 418
    await until(teapot_again, 30)  # the experiment still runs: applied again
    await env.client.delete(GROUP, "HTTPChaos", "teapot", "default")
    await until(lambda: env.gone("HTTPChaos", "teapot"), 30)
    assert env.proxy.faults.keys() == set()
    assert (await get(ip, "/teapot")).status_code == 200


async def test_network_partition_on_real_pods_until_its_duration_ends(env: Env) -> None:
    ip = await web(env)
    await env.client.create({"apiVersion": GROUP, "kind": "NetworkChaos",
                             "metadata": {"name": "cut", "namespace": "default"},
                             "spec": {"action": "partition", "mode": "all", "duration": "5s",
                                      "selector": {"labelSelectors": {"app": "web"}}}})

    async def injected() -> bool:
        return (await env.cond("NetworkChaos", "cut")).get("AllInjected") == "True"
    await until(injected, 30)
    r = await get(ip, "/")
    assert r.status_code == 503 and b"remote connection failure" in r.content

    async def recovered() -> bool:
        return (await env.cond("NetworkChaos", "cut")).get("AllRecovered") == "True"
    await until(recovered, 30)
    assert (await get(ip, "/")).status_code == 200


async def _serving(env: Env, ip: str) -> bool:
    return len(env.proxy.endpoints(ip, 80)) == 2
