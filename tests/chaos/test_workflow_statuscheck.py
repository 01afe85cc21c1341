"""Chaos Mesh's StatusCheck (its own controller and as a Workflow template), the Workflow `Schedule` template and
the abort annotation: HTTP checks against a local server, real pods under pod-failure, and kubectl annotate."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from pitwall.chaos.crds import chaos_mesh_crds
from pitwall.chaos.events import ChaosReport
from pitwall.chaos.statuscheck import (
    HttpProbe,
    StatusCheckReconciler,
    service_resolver,
    spec_error,
    status_code_matches,
)
from pitwall.chaos.wiring import build_chaos_runners
from pitwall.controllers import ControllerRunner
from pitwall.kube import Invalid, KubeAPI
from tests.chaos.conftest import CHAOS_MESH
from tests.chaos.pod_env import SLEEPER, Env
from tests.kube.conftest import KubeServer
from tests.node.conftest import PY, until

pytestmark = pytest.mark.timeout(150)

API = "chaos-mesh.org/v1alpha1"


class Answers:
    """A local HTTP server answering every request with ``code`` (the test changes it), counting requests."""

    def __init__(self, code: int = 200) -> None:
        self.code = code
        self.seen: list[int] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Answers:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/healthz"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            code = self.code
            self.seen.append(code)
            writer.write(f"HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode())
            await writer.drain()
        writer.close()


def conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}


def reasons(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c.get("reason") or "" for c in (obj.get("status") or {}).get("conditions") or []}


async def nodes(client: Any) -> dict[str, dict[str, Any]]:
    return {o["spec"]["templateName"]: o for o in (await client.list(API, "WorkflowNode", "default")).items}


async def events(client: Any, reason: str) -> list[dict[str, Any]]:
    return [e for e in (await client.list("v1", "Event", "default")).items if e.get("reason") == reason]


def http_check(url: str, mode: str, **extra: Any) -> dict[str, Any]:
    return {"mode": mode, "type": "HTTP", "intervalSeconds": 1, "timeoutSeconds": 1,
            "http": {"url": url, "method": "GET", "headers": {"X-Probe": ["pitwall"]},
                     "criteria": {"statusCode": "200"}}, **extra}


@pytest.mark.parametrize(("criteria", "code", "want"), [
    ("200", 200, True), ("200", 201, False), ("200-299", 204, True), ("200-299", 299, True),
    ("200-299", 300, False), ("2xx", 200, False), ("-200", 200, False), ("", 200, False)])
def test_status_code_criteria(criteria: str, code: int, want: bool) -> None:
    assert status_code_matches(criteria, code) is want


@contextlib.asynccontextmanager
async def statuscheck_controller(kube: KubeAPI) -> AsyncIterator[None]:
    r = ControllerRunner(kube.client, StatusCheckReconciler(kube.client), workers=2, resync_s=0)
    await r.start()
    try:
        yield
    finally:
        await r.stop()


async def _completed(kube: KubeAPI, name: str) -> dict[str, Any] | None:
    sc = await kube.client.get(API, "StatusCheck", name, "default")
    return sc if conditions(sc).get("Completed") == "True" else None


async def test_synchronous_needs_consecutive_successes(kube: KubeAPI) -> None:
    async with Answers(500) as srv, statuscheck_controller(kube):
        spec = http_check(srv.url, "Synchronous", successThreshold=2, failureThreshold=3)
        spec["http"]["criteria"]["statusCode"] = "200-299"
        await kube.client.create({"apiVersion": API, "kind": "StatusCheck",
                                  "metadata": {"name": "sync", "namespace": "default"}, "spec": spec})
        await until(lambda: _n_records(kube, "sync", 1), timeout=30)
        srv.code = 204
        sc = await until(lambda: _completed(kube, "sync"), timeout=30)
    st = sc["status"]
    assert [r["outcome"] for r in st["records"]] == ["Failure", "Success", "Success"]
    assert st["count"] == 3 and srv.seen == [500, 204, 204] and st["completionTime"]
    assert conditions(sc) == {"Completed": "True", "DurationExceed": "False", "FailureThresholdExceed": "False",
                              "SuccessThresholdExceed": "True"}
    assert reasons(sc)["Completed"] == "StatusCheckSuccessThresholdExceed"
    assert [e["message"] for e in await events(kube.client, "StatusCheckExecutionFailed")] == [
        "HTTP status check execution failed: unexpected status code: 500"]


async def _two(evs: Any) -> list[dict[str, Any]] | None:
    got: list[dict[str, Any]] = await evs
    return got if len(got) >= 2 else None


async def _n_records(kube: KubeAPI, name: str, n: int) -> bool:
    sc = await kube.client.get(API, "StatusCheck", name, "default")
    return len((sc.get("status") or {}).get("records") or []) >= n


async def test_continuous_runs_for_its_duration_and_keeps_a_bounded_history(kube: KubeAPI) -> None:
    async with Answers(200) as srv, statuscheck_controller(kube):
        await kube.client.create({"apiVersion": API, "kind": "StatusCheck",
                                  "metadata": {"name": "cont", "namespace": "default"},
                                  "spec": http_check(srv.url, "Continuous", duration="4s", recordsHistoryLimit=2)})
        sc = await until(lambda: _completed(kube, "cont"), timeout=40)
    st = sc["status"]
    assert reasons(sc)["Completed"] == "StatusCheckDurationExceed"
    assert conditions(sc)["DurationExceed"] == "True" and conditions(sc)["SuccessThresholdExceed"] == "True"
    assert st["count"] >= 2 and len(st["records"]) == 2  # Continuous did not stop at the first success
    assert st["count"] == len(srv.seen)


async def test_unreachable_target_fails_at_the_threshold(kube: KubeAPI) -> None:
    async with Answers() as srv:
        url = srv.url  # closed on exit: connections to it are refused
    async with statuscheck_controller(kube):
        await kube.client.create({"apiVersion": API, "kind": "StatusCheck",
                                  "metadata": {"name": "down", "namespace": "default"},
                                  "spec": http_check(url, "Synchronous", failureThreshold=2)})
        sc = await until(lambda: _completed(kube, "down"), timeout=30)
    assert [r["outcome"] for r in sc["status"]["records"]] == ["Failure", "Failure"]
    assert reasons(sc)["Completed"] == "StatusCheckFailureThresholdExceed"
    [failed] = await events(kube.client, "StatusCheckExecutionFailed")  # one Event, counted
    assert "do http request" in failed["message"] and failed.get("count", 1) >= 1


async def test_invalid_statuscheck_refused_with_the_field(kube: KubeAPI) -> None:
    bad = {"apiVersion": API, "kind": "StatusCheck", "metadata": {"name": "bad", "namespace": "default"},
           "spec": http_check("http://127.0.0.1:1/", "Sometimes")}
    with pytest.raises(Invalid) as e:
        await kube.client.create(bad)
    assert "spec.mode" in str(e.value)
    assert not (await kube.client.list(API, "StatusCheck", "default")).items


@pytest.mark.parametrize(("http", "field"), [
    (None, "spec.http"), ({"url": "", "criteria": {"statusCode": "200"}}, "spec.http.url"),
    ({"url": "not a url", "criteria": {"statusCode": "200"}}, "spec.http.url"),
    ({"url": "http://x/", "criteria": {"statusCode": "2xx"}}, "spec.http.criteria.statusCode"),
    ({"url": "http://x/", "criteria": {"statusCode": "200-1000"}}, "spec.http.criteria.statusCode"),
    ({"url": "http://x/", "criteria": {}}, "spec.http.criteria.statusCode"),
    ({"url": "http://x/", "criteria": {"statusCode": "200-299"}}, None)])
def test_spec_errors_name_the_field(http: dict[str, Any] | None, field: str | None) -> None:
    err = spec_error({"type": "HTTP", **({"http": http} if http is not None else {})})
    assert (err.split(":")[0] if err else None) == field


async def test_a_spec_upstream_would_refuse_is_reported_and_not_run(kube: KubeAPI) -> None:
    async with Answers(200) as srv, statuscheck_controller(kube):
        spec = http_check(srv.url, "Synchronous")
        spec["http"]["criteria"]["statusCode"] = "2xx"
        await kube.client.create({"apiVersion": API, "kind": "StatusCheck",
                                  "metadata": {"name": "odd", "namespace": "default"}, "spec": spec})
        await kube.client.create({"apiVersion": API, "kind": "StatusCheck",
                                  "metadata": {"name": "when", "namespace": "default"},
                                  "spec": http_check(srv.url, "Continuous", duration="soon")})
        got = await until(lambda: _two(events(kube.client, "InvalidSpec")), timeout=30)
        by_name = {e["involvedObject"]["name"]: e["message"] for e in got}
        assert by_name["odd"].startswith("spec.http.criteria.statusCode: Invalid value: '2xx'")
        assert by_name["when"] == 'spec.duration: invalid duration "soon"'
        assert srv.seen == []
        assert not (await kube.client.get(API, "StatusCheck", "odd", "default")).get("status", {}).get("records")


def _wf(name: str, entry: str, *templates: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Workflow", "metadata": {"name": name, "namespace": "default"},
            "spec": {"entry": entry, "templates": list(templates)}}


async def _accomplished(client: Any, name: str) -> dict[str, Any] | None:
    wf = await client.get(API, "Workflow", name, "default")
    return wf if conditions(wf).get("Accomplished") == "True" else None


async def _none(client: Any, kind: str) -> bool:
    return not (await client.list(API, kind, "default")).items


async def test_synchronous_statuscheck_node_accomplished(env: Env) -> None:
    async with Answers(200) as srv:
        await env.client.create(_wf("probe", "check", {
            "name": "check", "templateType": "StatusCheck", "deadline": "60s", "abortWithStatusCheck": True,
            "statusCheck": http_check(srv.url, "Synchronous")}))
        wf = await until(lambda: _accomplished(env.client, "probe"), timeout=60)
        srv.code = 500  # answers 200, then 500: a Synchronous check stopped at its first success
        node = (await nodes(env.client))["check"]
        assert conditions(node)["Accomplished"] == "True" and reasons(node)["Accomplished"] == "StatusCheckCompleted"
        assert conditions(node)["Aborted"] == "False" and "DeadlineExceed" not in conditions(node)
        assert conditions(wf) == {"Scheduled": "True", "Accomplished": "True"}
        assert "annotations" not in wf["metadata"] or not wf["metadata"]["annotations"]
        await until(lambda: _none(env.client, "StatusCheck"), timeout=30)  # a finished node deletes its check
        assert srv.seen == [200]
    [done] = await events(env.client, "Completed")
    assert done["message"] == "Status check completed: StatusCheckSuccessThresholdExceed"
    assert done["involvedObject"]["name"].startswith(node["metadata"]["name"] + "-")


async def test_failing_continuous_check_aborts_the_workflow_and_recovers_the_sibling(env: Env) -> None:
    await env.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "victim", "namespace": "default",
                                                                             "labels": {"app": "victim"}},
                             "spec": {"containers": [{"name": "c", "image": "x", "command": [PY, "-c", SLEEPER]}]}})
    pod_failure = {"action": "pod-failure", "mode": "all", "selector": {"labelSelectors": {"app": "victim"}}}
    async with Answers(200) as srv:
        await env.client.create(_wf("guarded", "the-entry",
                                    {"name": "the-entry", "templateType": "Parallel", "deadline": "120s",
                                     "children": ["watch", "break-pod"]},
                                    {"name": "watch", "templateType": "StatusCheck", "deadline": "120s",
                                     "abortWithStatusCheck": True,
                                     "statusCheck": http_check(srv.url, "Continuous", failureThreshold=2)},
                                    {"name": "break-pod", "templateType": "PodChaos", "deadline": "120s",
                                     "podChaos": pod_failure}))
        # the fault is in place while the check passes
        await until(lambda: _held_and_passing(env, srv), timeout=60)
        srv.code = 500
        wf = await until(lambda: _accomplished(env.client, "guarded"), timeout=60)
    assert wf["metadata"]["annotations"]["workflow.chaos-mesh.org/abort"] == "true"
    assert conditions(wf)["Aborted"] == "True" and reasons(wf)["Aborted"] == "WorkflowAborted"
    got = await nodes(env.client)
    assert reasons(got["watch"])["Aborted"] == "StatusCheckNotExceedSuccessThreshold"
    assert conditions(got["the-entry"])["Aborted"] == "True" and reasons(got["the-entry"])["Aborted"] == "WorkflowAborted"
    assert reasons(got["break-pod"])["Aborted"] == "ParentNodeAborted"
    assert all("DeadlineExceed" not in conditions(n) for n in got.values())
    await until(lambda: _none(env.client, "PodChaos"), timeout=30)  # deleted: gone only once recovered
    assert not env.kubelet.is_held("default", "victim")
    await until(lambda: _none(env.client, "StatusCheck"), timeout=30)
    assert srv.seen[-2:] == [500, 500] and 200 in srv.seen
    [done] = await events(env.client, "Completed")
    assert done["message"] == "Status check completed: StatusCheckFailureThresholdExceed"
    timeline = [c.summary for c in await env.changes.between(0, 2**62)]
    assert "chaos workflow default/guarded aborted: annotation workflow.chaos-mesh.org/abort" in timeline
    assert any(t.startswith("PodChaos pod-failure reverted on default/victim") for t in timeline), timeline


async def _held_and_passing(env: Env, srv: Answers) -> bool:
    return env.kubelet.is_held("default", "victim") and 200 in srv.seen


async def test_schedule_template_spawns_on_its_cron_until_the_deadline(env: Env) -> None:
    await env.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "victim", "namespace": "default",
                                                                             "labels": {"app": "victim"}},
                             "spec": {"containers": [{"name": "c", "image": "x", "command": [PY, "-c", SLEEPER]}]}})
    await env.client.create(_wf("cron", "every", {
        "name": "every", "templateType": "Schedule", "deadline": "9s",
        "schedule": {"schedule": "@every 2s", "concurrencyPolicy": "Allow", "historyLimit": 5, "type": "PodChaos",
                     "podChaos": {"action": "pod-failure", "mode": "all", "duration": "1s",
                                  "selector": {"labelSelectors": {"app": "victim"}}}}}))
    spawned: set[str] = set()
    schedules: list[dict[str, Any]] = []

    async def two_spawned() -> bool:
        items = (await env.client.list(API, "Schedule", "default")).items
        schedules[:] = items or schedules
        for o in (await env.client.list(API, "PodChaos", "default")).items:
            spawned.add(o["metadata"]["labels"]["managed-by"])
            spawned.add(o["metadata"]["name"])
        return len(spawned) >= 3  # the schedule's name and at least two spawned objects
    await until(two_spawned, timeout=60)
    [sched] = schedules
    node = (await nodes(env.client))["every"]
    assert sched["metadata"]["ownerReferences"][0]["uid"] == node["metadata"]["uid"]
    assert sched["spec"]["schedule"] == "@every 2s" and sched["spec"]["type"] == "PodChaos"
    assert sched["metadata"]["name"] in spawned
    node = await until(lambda: _node_with(env, "every", "chaosResource"), timeout=30)
    assert node["status"]["chaosResource"] == {"kind": "Schedule", "name": sched["metadata"]["name"],
                                               "apiGroup": "chaos-mesh.org"}
    assert conditions(node)["ChaosInjected"] == "True"
    await until(lambda: _accomplished(env.client, "cron"), timeout=60)
    assert conditions((await nodes(env.client))["every"])["DeadlineExceed"] == "True"
    await until(lambda: _none(env.client, "Schedule"), timeout=30)  # removed at the deadline
    await until(lambda: _none(env.client, "PodChaos"), timeout=30)  # its spawned chaos with it
    assert not env.kubelet.is_held("default", "victim")


async def _node_with(env: Env, template: str, field: str) -> dict[str, Any] | None:
    node = (await nodes(env.client)).get(template)
    return node if node and (node.get("status") or {}).get(field) else None


class ChaosServer(KubeServer):
    """A live Kubernetes API for kubectl whose lifespan also runs the chaos controllers (no node: PodChaos is
    created and reported, not injected)."""

    def __init__(self, data: Path) -> None:
        super().__init__(data)
        self.kube.add_builtin_crds(chaos_mesh_crds())
        inner = self.app.router.lifespan_context

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            async with inner(app):
                runners = build_chaos_runners(self.kube.client, node=None, store=self.kube.store,
                                              report=ChaosReport())
                for r in runners:
                    await r.start()
                try:
                    yield
                finally:
                    for r in runners:
                        await r.stop()

        self.app.router.lifespan_context = lifespan


@pytest.fixture
def chaos_server(tmp_path: Path) -> Iterator[ChaosServer]:
    with ChaosServer(tmp_path) as s:
        yield s


def _kget(s: ChaosServer, *args: str) -> Any:
    import json

    return json.loads(s.kubectl("get", *args, "-o", "json").stdout)


def test_kubectl_annotate_aborts_a_running_workflow(chaos_server: ChaosServer, tmp_path: Path) -> None:
    import time

    manifest = tmp_path / "wf.yaml"
    manifest.write_text("""
apiVersion: chaos-mesh.org/v1alpha1
kind: Workflow
metadata: {name: long-drill}
spec:
  entry: the-entry
  templates:
    - {name: the-entry, templateType: Serial, deadline: 300s, children: [together, never]}
    - {name: together, templateType: Parallel, children: [hold, break-pod]}
    - {name: hold, templateType: Suspend, deadline: 300s}
    - name: break-pod
      templateType: PodChaos
      deadline: 300s
      podChaos: {action: pod-failure, mode: all, selector: {labelSelectors: {app: web}}}
    - {name: never, templateType: Suspend, deadline: 1s}
""")
    chaos_server.kubectl("apply", "-f", str(manifest))
    deadline = time.monotonic() + 60
    while not _kget(chaos_server, "podchaos")["items"]:  # the workflow reached its chaos node
        assert time.monotonic() < deadline, "the workflow's PodChaos was never created"
        time.sleep(0.2)
    chaos_server.kubectl("annotate", "workflow", "long-drill", "workflow.chaos-mesh.org/abort=true")
    while True:
        wf = _kget(chaos_server, "workflow", "long-drill")
        if conditions(wf).get("Accomplished") == "True" and not _kget(chaos_server, "podchaos")["items"]:
            break
        assert time.monotonic() < deadline + 60, f"not aborted: {wf.get('status')}"
        time.sleep(0.2)
    assert conditions(wf)["Aborted"] == "True"
    got = {n["spec"]["templateName"]: n for n in _kget(chaos_server, "workflownodes")["items"]}
    assert set(got) == {"the-entry", "together", "hold", "break-pod"}  # "never" was not started
    assert reasons(got["the-entry"])["Aborted"] == "WorkflowAborted"
    for child in ("together", "hold", "break-pod"):
        assert reasons(got[child])["Aborted"] == "ParentNodeAborted", child
        assert "DeadlineExceed" not in conditions(got[child])


async def test_service_names_go_to_the_cluster_ip_with_their_host_header(kube: KubeAPI) -> None:
    await kube.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    svc = await kube.client.create({"apiVersion": "v1", "kind": "Service",
                                    "metadata": {"name": "web", "namespace": "shop"},
                                    "spec": {"ports": [{"port": 8080}], "selector": {"app": "web"}}})
    ip = svc["spec"]["clusterIP"]
    sent: list[tuple[str, str, str]] = []

    def answer(req: httpx.Request) -> httpx.Response:
        sent.append((str(req.url), req.headers["host"], req.headers.get("x-probe", "")))
        return httpx.Response(503 if req.url.path == "/down" else 200)
    probe = HttpProbe(service_resolver(kube.client), transport=httpx.MockTransport(answer))
    crit = {"statusCode": "200-299"}
    for url in ("http://web.shop:8080/", "http://web.shop.svc:8080/", "http://web.shop.svc.cluster.local:8080/"):
        assert await probe({"url": url, "criteria": crit, "headers": {"X-Probe": ["a"]}}, 1) == (True, "")
    assert await probe({"url": "http://web.shop:8080/down", "criteria": crit}, 1) == (
        False, "unexpected status code: 503")
    assert await probe({"url": "http://nosuch.shop/", "criteria": crit}, 1) == (True, "")  # left as it is
    ok, why = await probe({"url": "http://[::1/", "criteria": crit}, 1)
    assert not ok and why.startswith("do http request: InvalidURL: ")
    assert sent == [(f"http://{ip}:8080/", "web.shop:8080", "a"), (f"http://{ip}:8080/", "web.shop.svc:8080", "a"),
                    (f"http://{ip}:8080/", "web.shop.svc.cluster.local:8080", "a"),
                    (f"http://{ip}:8080/down", "web.shop:8080", ""), ("http://nosuch.shop/", "nosuch.shop", "")]


async def test_upstream_status_check_example_runs_to_its_deadline_without_aborting(kube: KubeAPI) -> None:
    """``examples/workflow/status-check.yaml`` (its URL pointed at a local server that fails): without
    ``abortWithStatusCheck`` a failing check does not abort; both nodes end at their 20 s deadline."""
    if not CHAOS_MESH.is_dir():
        pytest.skip("../shared is absent")
    wf = yaml.safe_load((CHAOS_MESH / "examples" / "workflow" / "status-check.yaml").read_text())
    async with Answers(500) as srv:
        [check] = [t for t in wf["spec"]["templates"] if t["templateType"] == "StatusCheck"]
        check["statusCheck"]["http"]["url"] = srv.url
        wf["metadata"]["namespace"] = "default"
        runners = build_chaos_runners(kube.client, node=None, store=kube.store, report=ChaosReport())
        for r in runners:
            await r.start()
        try:
            await kube.client.create(wf)
            done = await until(lambda: _accomplished(kube.client, wf["metadata"]["name"]), timeout=90)
            got = await nodes(kube.client)
            await until(lambda: _none(kube.client, "NetworkChaos"), timeout=30)
            await until(lambda: _none(kube.client, "StatusCheck"), timeout=30)
        finally:
            for r in runners:
                await r.stop()
    assert not (done["metadata"].get("annotations") or {}) and "Aborted" not in conditions(done)
    for name in ("workflow-status-check", "workflow-network-chaos"):
        assert conditions(got[name])["DeadlineExceed"] == "True" and conditions(got[name]).get("Aborted") != "True"
    assert srv.seen and set(srv.seen) == {500}  # it did run (interval 10 s by the schema's default)
