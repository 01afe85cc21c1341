"""The workloads pages over a real KubeAPI (SQLite) through ``KubeWorkloads``, on a small ASGI app."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from fastapi import FastAPI
from tests.kube_fixture import started_kube
from tests.ui.app import ui_client, ui_deps

from pitwall.kube import KubeAPI, KubeClient, KubeWorkloads
from pitwall.ui.routes import ui_router
from pitwall.ui.web import UIDeps
from pitwall.ui.workloads_view import deployment_row, history, logs_link, pod_row


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeAPI]:
    async with started_kube(tmp_path) as api:
        yield api


def _deps(workloads: KubeWorkloads | None) -> UIDeps:
    return ui_deps(workloads=workloads)


async def _seed(c: KubeClient) -> None:
    tmpl = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "web:2"}]}}
    d = await c.create({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "web", "namespace": "default",
                                     "annotations": {"deployment.kubernetes.io/revision": "2"}},
                        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": tmpl}})
    d["status"] = {"replicas": 2, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                   "observedGeneration": 1,
                   "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                                   "message": 'ReplicaSet "web-2" is progressing.'}]}
    await c.update_status(d)
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": d["metadata"]["uid"],
             "controller": True}
    rss = []
    for rev, image in (("1", "web:1"), ("2", "web:2")):
        rs = await c.create({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                             "metadata": {"name": f"web-{rev}", "namespace": "default", "ownerReferences": [owner],
                                          "annotations": {"deployment.kubernetes.io/revision": rev}},
                             "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                                      "template": {**tmpl, "spec": {"containers": [{"name": "app", "image": image}]}}}})
        rss.append(rs)
    rs_owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-2", "uid": rss[1]["metadata"]["uid"],
                "controller": True}
    p = await c.create({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": "web-2-abcde", "namespace": "default", "labels": {"app": "web"},
                                     "ownerReferences": [rs_owner]},
                        "spec": {"nodeName": "pitwall", "containers": [{"name": "app", "image": "web:2"}]}})
    p["status"] = {"phase": "Running", "podIP": "127.42.0.9",
                   "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
                   "containerStatuses": [{"name": "app", "ready": False, "restartCount": 3, "image": "web:2",
                                          "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff",
                                                                               "message": "back-off 40s"}},
                                          "lastState": {"terminated": {"reason": "Error", "exitCode": 1}}}]}
    await c.update_status(p)
    await c.create({"apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": "web-2-abcde.1", "namespace": "default"},
                    "involvedObject": {"kind": "Pod", "name": "web-2-abcde", "namespace": "default",
                                       "apiVersion": "v1"},
                    "reason": "Unhealthy", "type": "Warning", "message": "Readiness probe failed: HTTP 503",
                    "source": {"component": "kubelet"}, "lastTimestamp": _now(), "count": 2})
    await c.create({"apiVersion": "v1", "kind": "Event",
                    "metadata": {"name": "web.1", "namespace": "default"},
                    "involvedObject": {"kind": "Deployment", "name": "web", "namespace": "default",
                                       "apiVersion": "apps/v1"},
                    "reason": "ScalingReplicaSet", "type": "Normal", "message": "Scaled up replica set web-2 to 1",
                    "source": {"component": "deployment-controller"}, "lastTimestamp": _now()})
    cj = await c.create({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick", "namespace": "default"},
                         "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                             "restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}}})
    job = await c.create({"apiVersion": "batch/v1", "kind": "Job",
                          "metadata": {"name": "tick-1", "namespace": "default", "ownerReferences": [
                              {"apiVersion": "batch/v1", "kind": "CronJob", "name": "tick",
                               "uid": cj["metadata"]["uid"], "controller": True}]},
                          "spec": {"template": {"spec": {"restartPolicy": "Never",
                                                         "containers": [{"name": "c", "image": "x"}]}}}})
    job["status"] = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
    await c.update_status(job)


@pytest.mark.timeout(30)
async def test_workloads_page_lists_deployments_and_pods(kube: KubeAPI) -> None:
    await _seed(kube.client)
    async with ui_client(_deps(KubeWorkloads(kube.client))) as client:
        r = await client.get("/workloads")
    assert r.status_code == 200, r.text
    t = r.text
    assert 'aria-current="page"' in t and ">Workloads</a>" in t  # the nav entry, current
    dep = t.split('class="data deployments"')[1].split("</table>")[0]
    assert "/workloads/default/deployment/web" in dep and ">progressing<" in dep
    assert "1/2" in dep and "True: ReplicaSetUpdated" in dep
    pods = t.split('class="data pods"')[1].split("</table>")[0]
    assert "web-2-abcde" in pods and "CrashLoopBackOff" in pods and "0/1" in pods and "127.42.0.9" in pods
    assert "Readiness probe failed: HTTP 503" in pods
    logs = unquote_plus(pods.split('href="/logs?')[1].split('"')[0])
    assert logs.startswith('query={namespace="default",pod="web-2-abcde"}')
    others = t.split('class="data others"')[1].split("</table>")[0]
    assert "/workloads/default/cronjob/tick" in others and "*/5 * * * *" in others
    assert "/workloads/default/job/tick-1" in others and "Complete" in others and "1/1 succeeded" in others
    graph = unquote_plus(pods.split('href="/graph?')[1].split('"')[0].replace("&amp;", "&"))
    assert 'container_cpu_usage_seconds_total{namespace="default",pod="web-2-abcde",container!=""}' in graph


@pytest.mark.timeout(30)
async def test_deployment_and_pod_pages(kube: KubeAPI) -> None:
    await _seed(kube.client)
    async with ui_client(_deps(KubeWorkloads(kube.client))) as client:
        r = await client.get("/workloads/default/deployment/web")
        pod = await client.get("/workloads/default/pod/web-2-abcde")
        missing = await client.get("/workloads/default/deployment/nope")
        bad_kind = await client.get("/workloads/default/secret/x")
        cron = await client.get("/workloads/default/cronjob/tick")
    assert r.status_code == 200, r.text
    hist = r.text.split('class="data history"')[1].split("</table>")[0]
    assert hist.index("web-2") < hist.index("web-1") and "current" in hist and "web:1" in hist
    assert "Scaled up replica set web-2 to 1" in r.text  # the deployment's events
    assert "web-2-abcde" in r.text.split('class="data pods"')[1]  # its pods, through its ReplicaSets
    assert "container_memory_working_set_bytes" in unquote_plus(r.text)
    assert pod.status_code == 200
    containers = pod.text.split('class="data containers"')[1].split("</table>")[0]
    assert "CrashLoopBackOff" in containers and "back-off 40s" in containers and "Error (exit 1)" in containers
    assert "Readiness probe failed" in pod.text.split('class="data events"')[1]
    assert missing.status_code == 404 and "not found" in missing.text
    assert bad_kind.status_code == 404
    assert cron.status_code == 200 and "tick-1" in cron.text.split('class="data others"')[1]


@pytest.mark.timeout(30)
async def test_without_kubernetes_the_page_says_so() -> None:
    async with ui_client(_deps(None)) as client:
        r = await client.get("/workloads")
    assert r.status_code == 200 and "is not available" in r.text


@pytest.mark.timeout(10)
def test_rollout_states_and_history_order() -> None:
    d: dict[str, Any] = {"metadata": {"name": "a", "namespace": "n", "generation": 3, "uid": "u",
                      "annotations": {"deployment.kubernetes.io/revision": "3"}},
         "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}},
         "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}}
    assert deployment_row(d).state == "complete"
    d["status"] = {**d["status"], "conditions": [{"type": "Progressing", "status": "False",
                                                  "reason": "ProgressDeadlineExceeded"}]}
    assert deployment_row(d).state == "stalled"
    d["spec"]["paused"] = True
    assert deployment_row(d).state == "paused"
    rs = [{"metadata": {"name": f"a-{i}", "ownerReferences": [{"uid": "u"}],
                        "annotations": {"deployment.kubernetes.io/revision": str(i)}}} for i in (2, 10, 3)]
    rs.append({"metadata": {"name": "other", "ownerReferences": [{"uid": "x"}]}})
    assert [h.revision for h in history(d, rs)] == [10, 3, 2]
    assert [h.current for h in history(d, rs)] == [False, True, False]
    assert pod_row({"metadata": {"name": "p", "deletionTimestamp": _now()}}).status == "Terminating"
    assert logs_link("n", app="web") == "/logs?query=%7Bnamespace%3D%22n%22%2Capp%3D%22web%22%7D"


@pytest.mark.timeout(60)
async def test_screenshot(kube: KubeAPI, tmp_path: Path) -> None:
    """A real browser renders the page (skipped without chromium)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed")
    pw = pytest.importorskip("playwright.async_api")
    import asyncio
    import socket

    import uvicorn

    await _seed(kube.client)
    app = FastAPI()
    app.include_router(ui_router(_deps(KubeWorkloads(kube.client))))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.02)
        async with pw.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium)
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{port}/workloads")
            assert await page.locator("table.deployments tbody tr").count() == 1
            await page.screenshot(path=str(tmp_path / "workloads.png"), full_page=True)
            await browser.close()
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
