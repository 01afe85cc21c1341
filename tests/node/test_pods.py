"""Pods as processes: start, address, probes, restarts, back-off, limits, deletion (real child processes)."""

from __future__ import annotations

import os

import httpx
import pytest

from tests.node.conftest import (
    HTTP_SERVER,
    NODE,
    Node,
    alive,
    children_of,
    free_port,
    pod,
    py,
    until,
)


def ready(status: dict[str, object]) -> bool:
    conds = status.get("conditions") or []
    assert isinstance(conds, list)
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


@pytest.mark.timeout(60)
async def test_http_pod_binds_its_ip_gets_ready_and_deletion_leaves_no_process(node: Node) -> None:
    port = free_port()
    c = py("web", HTTP_SERVER, env=[{"name": "PORT", "value": str(port)}],
           ports=[{"name": "http", "containerPort": port}],
           readinessProbe={"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1})
    await node.client.create(pod("web", c))
    st = await until(lambda: _if(node.status("web"), ready))
    assert (await node.get("web"))["spec"]["nodeName"] == NODE  # bound by the node
    assert st["phase"] == "Running"
    ip = st["podIP"]
    assert ip.startswith("127.42.") and st["podIPs"] == [{"ip": ip}]
    async with httpx.AsyncClient(trust_env=False) as h:
        r = await h.get(f"http://{ip}:{port}/")
    assert r.text == f"hello from {ip}"
    pids = node.pids("web")
    assert pids and all(alive(p) for p in pids)
    await node.client.delete("v1", "Pod", "web", "default")
    await until(lambda: _gone(node, "web"))
    assert not any(alive(p) for p in pids)
    assert children_of(os.getpid()) == []
    assert "listening on " + ip + f" {port}" in node.sinks.lines(pod="web", container="web", app="web",
                                                                    namespace="default", job="default/web")


async def _if(coro: object, pred: object) -> object:
    v = await coro  # type: ignore[misc]
    return v if pred(v) else None  # type: ignore[operator]


async def _gone(node: Node, name: str) -> bool:
    from pitwall.kube import NotFoundError
    try:
        await node.get(name)
    except NotFoundError:
        return True
    return False
