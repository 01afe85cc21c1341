"""The HTTP surface over ASGI: discovery, Status errors, tables, OpenAPI, watch streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from pitwall.kube import KubeAPI
from pitwall.kube.discovery import AGGREGATED_V2

pytestmark = pytest.mark.timeout(30)
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


@pytest.fixture
async def http(kube: KubeAPI) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    kube.install(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kube") as c:
        yield c


def _status(r: httpx.Response, code: int, reason: str) -> dict[str, Any]:
    body: dict[str, Any] = r.json()
    assert r.status_code == code, body
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == code
    assert body["reason"] == reason
    return body


DEP = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
       "spec": {"selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}


async def test_discovery(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api")).json()["versions"] == ["v1"]
    groups = (await http.get("/apis")).json()
    assert groups["kind"] == "APIGroupList"
    assert [g["name"] for g in groups["groups"]][:2] == ["apps", "events.k8s.io"]
    apps = (await http.get("/apis/apps")).json()
    assert apps["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    core = (await http.get("/api/v1")).json()
    names = {r["name"]: r for r in core["resources"]}
    assert names["pods"]["shortNames"] == ["po"] and names["pods"]["categories"] == ["all"]
    assert names["pods/status"]["verbs"] == ["get", "patch", "update"]
    scale = (await http.get("/apis/apps/v1")).json()
    sc = next(r for r in scale["resources"] if r["name"] == "deployments/scale")
    assert (sc["group"], sc["version"], sc["kind"]) == ("autoscaling", "v1", "Scale")
    agg = await http.get("/apis", headers={"Accept": AGGREGATED_V2 + ",application/json"})
    assert agg.headers["content-type"] == AGGREGATED_V2
    items = agg.json()["items"]
    dep = next(r for g in items if g["metadata"]["name"] == "apps" for r in g["versions"][0]["resources"]
               if r["resource"] == "deployments")
    assert dep["scope"] == "Namespaced" and {s["subresource"] for s in dep["subresources"]} == {"status", "scale"}
    assert (await http.get("/version")).json()["major"] == "1"
    assert (await http.get("/readyz")).text == "ok"


async def test_errors_are_status_objects(http: httpx.AsyncClient) -> None:
    _status(await http.get("/api/v1/namespaces/default/pods/nope"), 404, "NotFound")
    body = _status(await http.get("/apis/apps/v1/namespaces/default/nothings"), 404, "NotFound")
    assert body["message"] == "the server could not find the requested resource"
    _status(await http.put("/api/v1/namespaces/default/pods", json={}), 405, "MethodNotAllowed")
    _status(await http.post("/api/v1/namespaces/default/endpoints", content=b"k8s\x00",
                            headers={"Content-Type": "application/vnd.kubernetes.protobuf"}), 415,
            "UnsupportedMediaType")
    r = await http.post("/apis/apps/v1/namespaces/default/deployments", json=DEP)
    assert r.status_code == 201
    _status(await http.post("/apis/apps/v1/namespaces/default/deployments", json=DEP), 409, "AlreadyExists")
    stale = dict(DEP, metadata={"name": "web", "resourceVersion": "1"})
    body = _status(await http.put("/apis/apps/v1/namespaces/default/deployments/web", json=stale), 409, "Conflict")
    assert body["details"] == {"name": "web", "group": "apps", "kind": "deployments"}
    bad = json.loads(json.dumps(DEP))
    bad["metadata"]["name"] = "bad"
    bad["spec"]["template"]["spec"]["containers"][0]["ports"] = [{"containerPort": 0}]
    body = _status(await http.post("/apis/apps/v1/namespaces/default/deployments", json=bad), 422, "Invalid")
    assert body["details"]["causes"] == [{
        "reason": "FieldValueInvalid", "message": "Invalid value: 0: must be between 1 and 65535, inclusive",
        "field": "spec.template.spec.containers[0].ports[0].containerPort"}]
    assert body["details"]["kind"] == "Deployment" and body["details"]["group"] == "apps"
    _status(await http.get("/api/v1/pods?labelSelector=a%20in%20b"), 400, "BadRequest")
    _status(await http.get("/api/v1/configmaps?fieldSelector=status.phase%3DRunning"), 400, "BadRequest")
    _status(await http.patch("/apis/apps/v1/namespaces/default/deployments/web", content=b"{}",
                             headers={"Content-Type": "text/plain"}), 415, "UnsupportedMediaType")
    strict = dict(DEP, metadata={"name": "strict"}, spec={**DEP["spec"], "replicaz": 1})  # type: ignore[dict-item]
    body = _status(await http.post("/apis/apps/v1/namespaces/default/deployments?fieldValidation=Strict",
                                   json=strict), 400, "BadRequest")
    assert body["message"] == 'strict decoding error: unknown field "spec.replicaz"'
    warned = await http.post("/apis/apps/v1/namespaces/default/deployments?fieldValidation=Warn", json=strict)
    assert warned.status_code == 201 and 'unknown field \\"spec.replicaz\\"' in warned.headers["warning"]
    assert "replicaz" not in warned.json()["spec"]


async def test_table_and_scale(http: httpx.AsyncClient) -> None:
    await http.post("/apis/apps/v1/namespaces/default/deployments", json=DEP)
    t = (await http.get("/apis/apps/v1/namespaces/default/deployments", headers={"Accept": TABLE})).json()
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "Ready", "Up-to-date", "Available", "Age",
                                                           "Containers", "Images", "Selector"]
    assert [c["priority"] for c in t["columnDefinitions"]] == [0, 0, 0, 0, 0, 1, 1, 1]
    row = t["rows"][0]
    assert row["cells"][:4] == ["web", "0/1", 0, 0] and row["cells"][5:] == ["web", "nginx", "app=web"]
    assert row["object"]["kind"] == "PartialObjectMetadata"
    ns = (await http.get("/api/v1/namespaces", headers={"Accept": TABLE})).json()
    assert [c["name"] for c in ns["columnDefinitions"]] == ["Name", "Status", "Age"]
    sc = (await http.get("/apis/apps/v1/namespaces/default/deployments/web/scale")).json()
    assert sc["kind"] == "Scale" and sc["spec"] == {"replicas": 1}
    r = await http.patch("/apis/apps/v1/namespaces/default/deployments/web/scale", json={"spec": {"replicas": 4}},
                         headers={"Content-Type": "application/merge-patch+json"})
    assert r.json()["spec"]["replicas"] == 4
    dep = (await http.get("/apis/apps/v1/namespaces/default/deployments/web")).json()
    assert dep["spec"]["replicas"] == 4 and dep["metadata"]["generation"] == 2
    gone = await http.delete("/apis/apps/v1/namespaces/default/deployments/web")
    assert gone.json()["status"] == "Success" and gone.json()["details"]["kind"] == "deployments"


async def test_openapi(http: httpx.AsyncClient) -> None:
    root = (await http.get("/openapi/v3")).json()
    url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/apps/v1?hash=")
    doc = (await http.get(url)).json()
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {"group": "apps", "kind": "Deployment", "version": "v1"}
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    spec = doc["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]
    assert "revisionHistoryLimit" in spec["properties"]
    v2 = (await http.get("/openapi/v2", headers={"Accept": "application/json"})).json()
    assert v2["swagger"] == "2.0" and "io.k8s.api.core.v1.Pod" in v2["definitions"]
    pb = await http.get("/openapi/v2", headers={"Accept": "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"})
    assert pb.headers["content-type"] == "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    doc_fields = dict(_fields(pb.content))  # the last of a repeated field wins: fine for these
    assert doc_fields[1] == b"2.0"
    named = {dict(_fields(n))[1].decode(): dict(_fields(n))[2] for _, n in _fields(doc_fields[9])}
    assert named.keys() == v2["definitions"].keys()
    pod = _fields(named["io.k8s.api.core.v1.Pod"])
    ext = [dict(_fields(v)) for num, v in pod if num == 31]
    gvk = next(yaml.safe_load(dict(_fields(e[2]))[2]) for e in ext if e[1] == b"x-kubernetes-group-version-kind")
    assert gvk == [{"group": "", "kind": "Pod", "version": "v1"}]
    props = {dict(_fields(n))[1].decode() for num, v in pod if num == 25 for _, n in _fields(v)}
    assert props == set(v2["definitions"]["io.k8s.api.core.v1.Pod"]["properties"])
    assert (await http.get("/openapi/v2", headers={"Accept": "application/xml"})).status_code == 406


def _fields(data: bytes) -> list[tuple[int, bytes]]:
    """A protobuf message's length-delimited fields as (number, bytes); varints and doubles skipped."""
    out, i = [], 0

    def varint() -> int:
        nonlocal i
        n = shift = 0
        while True:
            b = data[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    while i < len(data):
        key = varint()
        wire = key & 7
        if wire == 0:
            varint()
        elif wire == 1:
            i += 8
        else:
            n = varint()
            out.append((key >> 3, data[i:i + n]))
            i += n
    return out


async def test_watch_stream_and_expired(http: httpx.AsyncClient, kube: KubeAPI) -> None:
    r = await http.get("/api/v1/namespaces?watch=1&timeoutSeconds=1")
    events = [json.loads(line) for line in r.text.splitlines()]
    assert {e["type"] for e in events} == {"ADDED"}
    assert {e["object"]["metadata"]["name"] for e in events} >= {"default", "kube-system"}
    rev = await kube.store.revision()
    await kube.store.compact(rev)
    r = await http.get("/api/v1/namespaces?watch=true&resourceVersion=1&timeoutSeconds=1")
    assert r.status_code == 200
    (ev,) = [json.loads(line) for line in r.text.splitlines()]
    assert ev["type"] == "ERROR" and ev["object"]["code"] == 410 and ev["object"]["reason"] == "Expired"
    assert ev["object"]["message"].startswith("too old resource version: 1 (")
    r = await http.get(f"/api/v1/namespaces?watch=true&resourceVersion={rev}&timeoutSeconds=1",
                       headers={"Accept": TABLE})
    assert r.text == ""


async def test_events_two_views(http: httpx.AsyncClient) -> None:
    ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "default"},
          "eventTime": "2026-01-01T00:00:00.000000Z", "reason": "Scaled", "note": "scaled up", "type": "Normal",
          "action": "Scale", "reportingController": "pitwall", "reportingInstance": "p1",
          "regarding": {"kind": "Deployment", "name": "web", "namespace": "default"}}
    assert (await http.post("/apis/events.k8s.io/v1/namespaces/default/events", json=ev)).status_code == 201
    core = (await http.get("/api/v1/namespaces/default/events/e1")).json()
    assert core["message"] == "scaled up" and core["involvedObject"]["name"] == "web"
    t = (await http.get("/api/v1/namespaces/default/events", headers={"Accept": TABLE})).json()
    assert [c["name"] for c in t["columnDefinitions"] if c["priority"] == 0] == \
        ["Last Seen", "Type", "Reason", "Object", "Message"]
    assert t["rows"][0]["cells"][3] == "deployment/web"
    back = (await http.get("/apis/events.k8s.io/v1/namespaces/default/events/e1")).json()
    assert back["note"] == "scaled up" and back["apiVersion"] == "events.k8s.io/v1"


async def test_tenant_bound_token_is_forbidden(kube: KubeAPI) -> None:
    from pitwall.core.auth import BearerAuth, Principal

    app = FastAPI()
    kube.install(app)
    app.add_middleware(BearerAuth, tokens=[("t" * 20, Principal("team-a", frozenset({"read", "write"}),
                                                                 frozenset({"team-a"})))])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kube") as c:
        r = await c.get("/api/v1/namespaces", headers={"Authorization": "Bearer " + "t" * 20})
        _status(r, 403, "Forbidden")


async def test_access_review_follows_token_scopes(kube: KubeAPI) -> None:
    from pitwall.core.auth import BearerAuth, Principal

    app = FastAPI()
    kube.install(app)
    app.add_middleware(BearerAuth, tokens=[("r" * 20, Principal("reader", frozenset({"read"}), None))])
    ssar = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"verb": "list", "resource": "pods"}}}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kube",
                                 headers={"Authorization": "Bearer " + "r" * 20}) as c:
        url = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        r = await c.post(url, json=ssar)  # a question about the caller's own access: a read token may ask
        assert r.status_code == 201 and r.json()["status"]["allowed"] is True
        create = {**ssar, "spec": {"resourceAttributes": {"verb": "create", "resource": "pods"}}}
        r = await c.post(url, json=create)
        assert r.status_code == 201 and r.json()["status"]["allowed"] is False  # kubectl auth can-i create: no
        r = await c.post("/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "x"}})
        assert r.status_code == 403  # while a real create is refused
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=FastAPI(routes=kube.router().routes)),
                                 base_url="http://kube") as c:
        r = await c.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", json=ssar)
        assert r.status_code == 201 and r.json()["status"]["allowed"] is True
        assert (await c.get("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")).status_code == 405


async def test_prometheus_paths_stay_reachable(kube: KubeAPI) -> None:
    from starlette.responses import PlainTextResponse

    app = FastAPI()
    kube.install(app)  # before the Prometheus API's routes, as server.py may order them

    @app.get("/api/v1/query")
    async def query() -> PlainTextResponse:
        return PlainTextResponse("promql")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kube") as c:
        assert (await c.get("/api/v1/query")).text == "promql"
        assert (await c.get("/api/v1/namespaces")).json()["kind"] == "NamespaceList"
        assert (await c.get("/api/v1/pods")).json()["kind"] == "PodList"


async def test_watch_bookmarks(http: httpx.AsyncClient, kube: KubeAPI) -> None:
    kube.bookmark_interval_s = 0
    rev = await kube.store.revision()
    r = await http.get(f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rev}"
                       "&allowWatchBookmarks=true&timeoutSeconds=3")
    events = [json.loads(line) for line in r.text.splitlines()]
    assert events and {e["type"] for e in events} == {"BOOKMARK"}
    assert events[0]["object"] == {"kind": "ConfigMap", "apiVersion": "v1",
                                   "metadata": {"resourceVersion": str(rev)}}


async def test_hpa_v1_view_of_v2(http: httpx.AsyncClient) -> None:
    base = "/apis/autoscaling/{}/namespaces/default/horizontalpodautoscalers"
    pods = {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}
    cpu = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
           "metadata": {"name": "h", "namespace": "default"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 1, "maxReplicas": 5, "metrics": [cpu, pods]}}
    assert (await http.post(base.format("v2"), json=hpa)).status_code == 201
    status = {"currentReplicas": 2, "desiredReplicas": 3, "currentMetrics": [
        {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 75, "averageValue": "150m"}}}]}
    cur = (await http.get(base.format("v2") + "/h")).json()
    cur["status"] = status
    assert (await http.put(base.format("v2") + "/h/status", json=cur)).status_code == 200
    v1 = (await http.get(base.format("v1") + "/h")).json()
    assert v1["apiVersion"] == "autoscaling/v1"
    assert v1["spec"] == {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                          "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 60}
    assert v1["status"]["currentCPUUtilizationPercentage"] == 75 and v1["status"]["desiredReplicas"] == 3
    ann = v1["metadata"]["annotations"]
    assert json.loads(ann["autoscaling.alpha.kubernetes.io/metrics"]) == [  # upstream's v1 field names
        {"type": "Pods", "pods": {"metricName": "rps", "targetAverageValue": "10"}}]
    assert json.loads(ann["autoscaling.alpha.kubernetes.io/current-metrics"]) == [
        {"type": "Resource", "resource": {"name": "cpu", "currentAverageUtilization": 75,
                                          "currentAverageValue": "150m"}}]
    # A v1 write keeps the other metrics (from the annotation) and changes the cpu target.
    v1["spec"]["targetCPUUtilizationPercentage"] = 40
    r = await http.put(base.format("v1") + "/h", json=v1)
    assert r.status_code == 200, r.text
    v2 = (await http.get(base.format("v2") + "/h")).json()
    assert v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 40
    assert v2["spec"]["metrics"][1] == pods and "annotations" not in v2["metadata"]
    assert v2["status"]["currentMetrics"] == status["currentMetrics"]
    lst = (await http.get(base.format("v1"))).json()
    assert lst["kind"] == "HorizontalPodAutoscalerList" and lst["items"][0]["apiVersion"] == "autoscaling/v1"
    # A v1 object with no cpu target gets upstream's default (80%) in storage.
    bare = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "b"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 2}}
    assert (await http.post(base.format("v1"), json=bare)).status_code == 201
    assert (await http.get(base.format("v1") + "/b")).json()["spec"]["targetCPUUtilizationPercentage"] == 80


async def test_pod_binding(http: httpx.AsyncClient) -> None:
    pods = "/api/v1/namespaces/default/pods"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b"},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    assert (await http.post(pods, json=pod)).status_code == 201
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b", "annotations": {"x": "y"}},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}}
    r = await http.post(f"{pods}/b/binding", json=binding)
    assert r.status_code == 201 and r.json()["status"] == "Success", r.text
    got = (await http.get(f"{pods}/b")).json()
    assert got["spec"]["nodeName"] == "n1" and got["metadata"]["annotations"] == {"x": "y"}
    assert [(c["type"], c["status"]) for c in got["status"]["conditions"]] == [("PodScheduled", "True")]
    again = await http.post(f"{pods}/b/binding", json={**binding, "target": {"kind": "Node", "name": "n2"}})
    assert again.status_code == 409
    assert again.json()["message"] == 'Operation cannot be fulfilled on pods/binding "b": pod b is already ' \
        'assigned to node "n1"'
    bad = await http.post(f"{pods}/b/binding", json={"apiVersion": "v1", "kind": "Binding", "target": {}})
    assert bad.status_code == 422 and "target.name: Required value" in bad.json()["message"]
    other = await http.post(f"{pods}/b/binding", json={**binding, "metadata": {"name": "other"}})
    assert other.status_code == 400
    missing = await http.post(f"{pods}/nope/binding", json={**binding, "metadata": {"name": "nope"}})
    assert missing.status_code == 404
    assert (await http.get(f"{pods}/b/binding")).status_code == 405
    res = {r["name"]: r for r in (await http.get("/api/v1")).json()["resources"]}
    assert res["pods/binding"]["verbs"] == ["create"] and res["pods/binding"]["kind"] == "Binding"


async def test_lists_reuse_encoded_objects_until_they_change(http: httpx.AsyncClient, kube: KubeAPI) -> None:
    base = "/apis/apps/v1/namespaces/default/deployments"
    for n in ("a", "b", "c"):
        assert (await http.post(base, json={**DEP, "metadata": {"name": n, "labels": {"tier": n}}})).status_code == 201
    first = (await http.get(base)).json()
    cache = kube.resources.cache
    misses = cache.misses
    again = (await http.get(base)).json()
    assert again == first and cache.misses == misses  # nothing decoded or encoded again
    r = await http.patch(base + "/b", json={"metadata": {"labels": {"tier": "x"}}},
                         headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 200
    after = (await http.get(base)).json()
    assert cache.misses == misses + 1  # only the changed object
    assert [d["metadata"]["labels"]["tier"] for d in after["items"]] == ["a", "x", "c"]
    assert after["items"][1]["metadata"]["resourceVersion"] == r.json()["metadata"]["resourceVersion"]
    assert int(after["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    # Selectors, pages and the v1/v2 views still apply per request.
    sel = (await http.get(base, params={"labelSelector": "tier in (a,c)"})).json()
    assert [d["metadata"]["name"] for d in sel["items"]] == ["a", "c"]
    page = (await http.get(base, params={"limit": "2"})).json()
    assert [d["metadata"]["name"] for d in page["items"]] == ["a", "b"] and page["metadata"]["continue"]
    rest = (await http.get(base, params={"limit": "2", "continue": page["metadata"]["continue"]})).json()
    assert [d["metadata"]["name"] for d in rest["items"]] == ["c"] and "continue" not in rest["metadata"]
    empty = (await http.get("/apis/apps/v1/namespaces/none/deployments")).json()
    assert empty["items"] == [] and empty["kind"] == "DeploymentList"


def test_the_object_cache_is_bounded_by_size() -> None:
    from pitwall.kube.objcache import ObjectCache
    from pitwall.storage.revstore import KeyValue

    cache = ObjectCache(max_bytes=10_000)
    for i in range(100):
        kv = KeyValue(f"/registry/x/{i}", b"", 1, i + 1, 1)
        cache.get("v1", kv, lambda _kv: {"data": "x" * 1000})
    assert len(cache) <= 10 and cache.misses == 100
    cache.get("v1", KeyValue("/registry/x/99", b"", 1, 100, 1), lambda _kv: {"never": "called"})
    assert cache.hits == 1  # the newest entries stay
