"""The verbs' semantics over the real SQLite RevStore, in process (no HTTP)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from pitwall.kube import AlreadyExists, Conflict, Gone, Invalid, KubeAPI, NotFoundError
from pitwall.kube.errors import Forbidden

pytestmark = pytest.mark.timeout(30)


def _cm(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default",
                                                                  "labels": labels}, "data": {"k": "v"}}


def _dep(name: str = "web", replicas: int = 1) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}


async def test_create_get_conflict_generation(kube: KubeAPI) -> None:
    c = kube.client
    d = await c.create(_dep())
    assert d["metadata"]["generation"] == 1 and d["metadata"]["uid"]
    assert await kube.store.get("/registry/deployments/default/web") is not None
    with pytest.raises(AlreadyExists, match=re.escape('deployments.apps "web" already exists')):
        await c.create(_dep())
    d2 = dict(d, spec={**d["spec"], "replicas": 2})
    d2 = await c.update(d2)
    assert d2["metadata"]["generation"] == 2
    assert int(d2["metadata"]["resourceVersion"]) > int(d["metadata"]["resourceVersion"])
    with pytest.raises(Conflict, match="the object has been modified"):
        await c.update(d)  # stale resourceVersion
    labelled = await c.patch("apps/v1", "Deployment", "web", {"metadata": {"labels": {"x": "y"}}}, namespace="default")
    assert labelled["metadata"]["generation"] == 2  # metadata is not spec
    same = await c.patch("apps/v1", "Deployment", "web", {"metadata": {"labels": {"x": "y"}}}, namespace="default")
    assert same["metadata"]["resourceVersion"] == labelled["metadata"]["resourceVersion"]  # a no-op writes nothing
    st = await c.update_status({**labelled, "status": {"replicas": 2}, "spec": {"replicas": 9}})
    assert st["status"] == {"replicas": 2} and st["spec"]["replicas"] == 2  # status subresource: status only
    main = await c.update({**st, "status": {"replicas": 7}})
    assert main["status"] == {"replicas": 2}  # main resource: status kept
    with pytest.raises(NotFoundError, match=re.escape('deployments.apps "nope" not found')):
        await c.get("apps/v1", "Deployment", "nope", "default")
    with pytest.raises(NotFoundError, match='namespaces "nowhere" not found'):
        await c.create({**_cm("x"), "metadata": {"name": "x", "namespace": "nowhere"}})


async def test_validation_and_generate_name(kube: KubeAPI) -> None:
    bad = _dep()
    bad["spec"]["template"]["spec"]["containers"][0].pop("image")
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other"}
    with pytest.raises(Invalid) as err:
        await kube.client.create(bad)
    fields = [c["field"] for c in err.value.details["causes"]]  # type: ignore[index]
    assert fields == ["spec.template.metadata.labels", "spec.template.spec.containers[0].image"]
    made = await kube.client.create({"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"generateName": "cfg-", "namespace": "default"}})
    assert made["metadata"]["name"].startswith("cfg-") and len(made["metadata"]["name"]) == 9
    dry = await kube.resources.create(kube.registry.get("", "v1", "configmaps"), "default",  # type: ignore[arg-type]
                                      _cm("dry"), dry_run=True)
    assert dry["metadata"]["name"] == "dry"
    with pytest.raises(NotFoundError):
        await kube.client.get("v1", "ConfigMap", "dry", "default")


async def test_list_selectors_and_pages(kube: KubeAPI) -> None:
    for i in range(7):
        await kube.client.create(_cm(f"c{i}", parity="even" if i % 2 == 0 else "odd"))
    evens = await kube.client.list("v1", "ConfigMap", "default", label_selector="parity=even")
    assert [o["metadata"]["name"] for o in evens.items] == ["c0", "c2", "c4", "c6"]
    names: list[str] = []
    token = ""
    for _ in range(10):
        page = await kube.client.list("v1", "ConfigMap", "default", limit=3, continue_token=token)
        names += [o["metadata"]["name"] for o in page.items]
        token = page.continue_token
        if not token:
            break
    assert names == [f"c{i}" for i in range(7)]
    odd_page = await kube.client.list("v1", "ConfigMap", "default", label_selector="parity=odd", limit=2)
    assert [o["metadata"]["name"] for o in odd_page.items] == ["c1", "c3"] and odd_page.continue_token
    byname = await kube.client.list("v1", "ConfigMap", "", field_selector="metadata.name=c5")
    assert [o["metadata"]["name"] for o in byname.items] == ["c5"]


async def test_watch_events_and_gone(kube: KubeAPI) -> None:
    start = await kube.client.list("v1", "ConfigMap", "default")
    events = kube.client.watch("v1", "ConfigMap", "default", resource_version=start.resource_version,
                               label_selector="w=1")

    async def collect() -> list[tuple[str, str]]:
        seen = []
        async for ev in events:
            seen.append((ev.type, ev.object["metadata"]["name"]))
            if len(seen) == 4:
                return seen
        return seen

    task = asyncio.create_task(collect())
    await kube.client.create(_cm("a", w="1"))
    await kube.client.create(_cm("b"))
    await kube.client.patch("v1", "ConfigMap", "a", {"data": {"k": "2"}}, namespace="default")
    await kube.client.patch("v1", "ConfigMap", "b", {"metadata": {"labels": {"w": "1"}}}, namespace="default")
    await kube.client.patch("v1", "ConfigMap", "a", {"metadata": {"labels": {"w": None}}}, namespace="default")
    assert await asyncio.wait_for(task, 10) == [("ADDED", "a"), ("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]
    rev = await kube.store.revision()
    await kube.store.compact(rev)
    with pytest.raises(Gone, match="too old resource version"):
        async for _ in kube.client.watch("v1", "ConfigMap", "default", resource_version="1"):
            pass


async def test_finalizers_and_gc(kube: KubeAPI) -> None:
    c = kube.client
    cm = _cm("held")
    cm["metadata"]["finalizers"] = ["example.com/hold"]
    await c.create(cm)
    await c.delete("v1", "ConfigMap", "held", "default")
    held = await c.get("v1", "ConfigMap", "held", "default")
    assert held["metadata"]["deletionTimestamp"]
    await c.patch("v1", "ConfigMap", "held", {"metadata": {"finalizers": None}}, namespace="default")
    with pytest.raises(NotFoundError):
        await c.get("v1", "ConfigMap", "held", "default")

    owner = await c.create(_dep("owner"))
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "owner", "uid": owner["metadata"]["uid"]}
    for name in ("dep1", "dep2"):
        o = _cm(name)
        o["metadata"]["ownerReferences"] = [ref]
        await c.create(o)
    await c.delete("apps/v1", "Deployment", "owner", "default", propagation="Orphan")
    for _ in range(3):
        await kube.gc.sweep()
    with pytest.raises(NotFoundError):
        await c.get("apps/v1", "Deployment", "owner", "default")
    assert "ownerReferences" not in (await c.get("v1", "ConfigMap", "dep1", "default"))["metadata"]

    owner = await c.create(_dep("owner2"))
    o = _cm("dep3")
    o["metadata"]["ownerReferences"] = [{**ref, "name": "owner2", "uid": owner["metadata"]["uid"]}]
    await c.create(o)
    await c.delete("apps/v1", "Deployment", "owner2", "default", propagation="Foreground")
    assert (await c.get("apps/v1", "Deployment", "owner2", "default"))["metadata"]["finalizers"] == ["foregroundDeletion"]
    for _ in range(3):
        await kube.gc.sweep()
    for name, kind, av in (("dep3", "ConfigMap", "v1"), ("owner2", "Deployment", "apps/v1")):
        with pytest.raises(NotFoundError):
            await c.get(av, kind, name, "default")


async def test_namespace_deletion(kube: KubeAPI) -> None:
    c = kube.client
    await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "temp"}})
    await c.create({**_cm("x"), "metadata": {"name": "x", "namespace": "temp"}})
    ns = await c.delete("v1", "Namespace", "temp")
    assert ns["status"]["phase"] == "Terminating"
    with pytest.raises(Forbidden, match="because it is being terminated"):
        await c.create({**_cm("y"), "metadata": {"name": "y", "namespace": "temp"}})
    with pytest.raises(Forbidden, match="may not be deleted"):
        await c.delete("v1", "Namespace", "default")
    for _ in range(3):
        await kube.gc.sweep()
    with pytest.raises(NotFoundError):
        await c.get("v1", "Namespace", "temp")
    assert not (await c.list("v1", "ConfigMap", "temp")).items


async def test_crd_serves_kind_validates_prunes(kube: KubeAPI) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wg"]},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "subresources": {"status": {}},
                                  "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                      "spec": {"type": "object", "required": ["size"], "properties": {
                                          "size": {"type": "integer", "minimum": 1},
                                          "color": {"type": "string", "enum": ["red", "blue"], "default": "red"},
                                          "code": {"type": "string", "pattern": "^[A-Z]+$"},
                                          "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}},
                                      "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]}}
    made = await kube.client.create(crd)
    assert {c["type"] for c in made["status"]["conditions"]} == {"NamesAccepted", "Established"}
    w = await kube.client.create({"apiVersion": "example.com/v1", "kind": "Widget",
                                  "metadata": {"name": "w1", "namespace": "default"},
                                  "spec": {"size": 2, "junk": 1, "free": {"any": {"thing": 1}}}})
    assert w["spec"] == {"size": 2, "color": "red", "free": {"any": {"thing": 1}}}
    assert await kube.store.get("/registry/example.com/widgets/default/w1") is not None
    with pytest.raises(Invalid) as err:
        await kube.client.create({"apiVersion": "example.com/v1", "kind": "Widget",
                                  "metadata": {"name": "w2", "namespace": "default"},
                                  "spec": {"size": 0, "color": "green", "code": "abc"}})
    msg = str(err.value)
    assert "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1" in msg
    assert 'spec.color: Unsupported value: "green": supported values: "red", "blue"' in msg
    assert "spec.code in body should match '^[A-Z]+$'" in msg
    with pytest.raises(Invalid, match=re.escape("spec.size: Required value")):
        await kube.client.create({"apiVersion": "example.com/v1", "kind": "Widget",
                                  "metadata": {"name": "w3", "namespace": "default"}, "spec": {}})
    await kube.client.delete("apiextensions.k8s.io/v1", "CustomResourceDefinition", "widgets.example.com")
    with pytest.raises(NotFoundError, match="no matches for kind"):
        await kube.client.get("example.com/v1", "Widget", "w1", "default")
    assert await kube.store.get("/registry/example.com/widgets/default/w1") is None


async def test_service_cluster_ip_and_defaults(kube: KubeAPI) -> None:
    svc = await kube.client.create({"apiVersion": "v1", "kind": "Service",
                                    "metadata": {"name": "s", "namespace": "default"},
                                    "spec": {"selector": {"app": "s"}, "ports": [{"port": 80}]}})
    assert svc["spec"]["clusterIP"].startswith("127.96.") and svc["spec"]["clusterIPs"] == [svc["spec"]["clusterIP"]]
    assert svc["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["sessionAffinity"] == "None"
    upd = await kube.client.patch("v1", "Service", "s", {"metadata": {"labels": {"a": "b"}}}, namespace="default")
    assert upd["spec"]["clusterIP"] == svc["spec"]["clusterIP"]
    pod = await kube.client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
                                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    assert pod["status"]["phase"] == "Pending" and pod["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    job = await kube.client.create({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "default"},
                                    "spec": {"template": {"spec": {"restartPolicy": "Never",
                                                                   "containers": [{"name": "c", "image": "busybox"}]}}}})
    uid = job["metadata"]["uid"]
    assert job["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert job["spec"]["template"]["metadata"]["labels"]["job-name"] == "j"
    assert job["spec"]["backoffLimit"] == 6 and job["spec"]["completions"] == 1


async def test_pod_graceful_deletion(kube: KubeAPI) -> None:
    c = kube.client
    spec = {"containers": [{"name": "c", "image": "busybox"}]}
    await c.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "free", "namespace": "default"},
                    "spec": spec})
    await c.delete("v1", "Pod", "free", "default")  # not bound to a node: gone at once
    with pytest.raises(NotFoundError):
        await c.get("v1", "Pod", "free", "default")
    await c.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bound", "namespace": "default"},
                    "spec": {**spec, "nodeName": "pitwall", "terminationGracePeriodSeconds": 20}})
    pod = await c.delete("v1", "Pod", "bound", "default")
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 20 and pod["metadata"]["deletionTimestamp"]
    pod = await c.update_status({**pod, "status": {"phase": "Running"}})  # the node still reports on it
    assert pod["metadata"]["deletionTimestamp"]
    pod = await c.delete("v1", "Pod", "bound", "default", grace_period=5)
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 5
    await c.delete("v1", "Pod", "bound", "default", grace_period=0)  # the node is done
    with pytest.raises(NotFoundError):
        await c.get("v1", "Pod", "bound", "default")


async def test_restart_keeps_objects_and_crd_kinds(tmp_path: Any) -> None:
    from pitwall.kube.wiring import build_kube
    from pitwall.storage.revstore.sqlite import SqliteRevStore

    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "gadgets.example.com"},
           "spec": {"group": "example.com", "scope": "Cluster", "names": {"plural": "gadgets", "kind": "Gadget"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                                                 "x-kubernetes-preserve-unknown-fields": True}}}]}}
    for round_ in range(2):
        store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
        await store.start()
        api = build_kube(store)
        await api.start()
        try:
            if round_ == 0:
                await api.client.create(crd)
                await api.client.create({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"},
                                         "spec": {"x": 1}})
                await api.client.create(_cm("kept"))
            else:
                assert (await api.client.get("example.com/v1", "Gadget", "g"))["spec"] == {"x": 1}
                assert (await api.client.get("v1", "ConfigMap", "kept", "default"))["data"] == {"k": "v"}
                names = [n["metadata"]["name"] for n in (await api.client.list("v1", "Namespace")).items]
                assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]
        finally:
            await api.stop()
            await store.stop()


async def test_secret_string_data_becomes_data(kube: KubeAPI) -> None:
    s = await kube.client.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
                                  "stringData": {"pw": "hunter2"}, "data": {"user": "YWRtaW4="}})
    assert s["data"] == {"user": "YWRtaW4=", "pw": "aHVudGVyMg=="} and "stringData" not in s and s["type"] == "Opaque"


async def test_client_scale(kube: KubeAPI) -> None:
    await kube.client.create(_dep("sc", replicas=2))
    sc = await kube.client.get_scale("apps/v1", "Deployment", "sc", "default")
    assert sc["spec"] == {"replicas": 2} and sc["status"]["selector"] == "app=sc"
    assert (await kube.client.set_scale("apps/v1", "Deployment", "sc", 5, "default"))["spec"] == {"replicas": 5}
    assert (await kube.client.get("apps/v1", "Deployment", "sc", "default"))["spec"]["replicas"] == 5
    with pytest.raises(NotFoundError, match="no scale subresource"):
        await kube.client.get_scale("v1", "ConfigMap", "x", "default")


async def test_admission_hooks(kube: KubeAPI) -> None:
    from pitwall.kube.errors import Cause

    def default(obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        obj.setdefault("data", {}).setdefault("stamp", "set-by-hook")

    def validate(obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
        if obj.get("data", {}).get("k") == "forbidden":
            return [Cause("data.k", "FieldValueForbidden", "Forbidden: not this value")]
        return []

    kube.resources.add_admission("", "ConfigMap", default=default, validate=validate)
    made = await kube.client.create(_cm("hooked"))
    assert made["data"] == {"k": "v", "stamp": "set-by-hook"}
    with pytest.raises(Invalid, match=re.escape("data.k: Forbidden: not this value")):
        await kube.client.patch("v1", "ConfigMap", "hooked", {"data": {"k": "forbidden"}}, namespace="default")


async def test_explicit_nulls_dropped_as_go_decoding_does(kube: KubeAPI) -> None:
    c = kube.client
    d = _dep("nulls")
    d["metadata"]["annotations"] = None
    d["spec"]["template"]["metadata"]["creationTimestamp"] = None  # what kubectl rollout undo sends
    d["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": None}]
    d["spec"]["strategy"] = None
    made = await c.create(d)
    assert "creationTimestamp" not in made["spec"]["template"]["metadata"]
    assert "annotations" not in made["metadata"]
    assert made["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "A"}]
    assert made["spec"]["strategy"]["type"] == "RollingUpdate"  # defaulted, not null
    made["spec"]["template"]["metadata"]["creationTimestamp"] = None
    made["spec"]["paused"] = None
    upd = await c.update(made)
    assert upd["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"]  # nothing changed
    raw = (await kube.store.get("/registry/deployments/default/nulls"))
    assert raw is not None and b":null" not in raw.value
    # Free-form JSON values in a built-in kind keep their nulls (a CRD schema's example) ...
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "gadgets.example.com", "annotations": None},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "shortNames": None},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                      "spec": {"type": "object", "properties": {
                                          "n": {"type": "string", "nullable": True, "example": None},
                                          "s": {"type": "string"},
                                          "free": {"type": "object", "example": {"a": None},
                                                   "x-kubernetes-preserve-unknown-fields": True}}}}}}}]}}
    made_crd = await c.create(crd)
    props = made_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert props["n"] == {"type": "string", "nullable": True}  # a null *JSON is nil in Go: dropped
    assert props["free"]["example"] == {"a": None}  # inside the JSON value, nulls are data
    assert "shortNames" not in made_crd["spec"]["names"] and "annotations" not in made_crd["metadata"]
    # ... and custom objects follow their schema: nullable and preserved nulls stay, others go.
    g = await c.create({"apiVersion": "example.com/v1", "kind": "Gadget",
                        "metadata": {"name": "g", "namespace": "default", "labels": None},
                        "spec": {"n": None, "s": None, "free": {"x": None}}})
    assert g["spec"] == {"n": None, "free": {"x": None}} and "labels" not in g["metadata"]


async def test_builtin_crds_installed_on_start_and_upgraded(tmp_path: Any) -> None:
    from pitwall.kube.wiring import build_kube
    from pitwall.storage.revstore.sqlite import SqliteRevStore

    def crd(version: str) -> dict[str, Any]:
        return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": "sprockets.example.com"},
                "spec": {"group": "example.com", "scope": "Namespaced",
                         "names": {"plural": "sprockets", "kind": "Sprocket"},
                         "versions": [{"name": version, "served": True, "storage": True,
                                       "schema": {"openAPIV3Schema": {
                                           "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}

    versions: list[str] = []
    # first install, restart unchanged (read only: no create or update is even prepared), newer schema
    for version, writes in (("v1", ["create"]), ("v1", []), ("v2", ["modify"])):
        store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
        await store.start()
        api = build_kube(store)
        api.add_builtin_crds([crd(version)])
        calls: list[str] = []
        for verb in ("create", "modify"):
            def counted(rt: Any, *a: Any, _verb: str = verb, _real: Any = getattr(api.resources, verb), _calls: list[str] = calls,
                        **kw: Any) -> Any:
                if rt.kind == "CustomResourceDefinition":
                    _calls.append(_verb)
                return _real(rt, *a, **kw)
            setattr(api.resources, verb, counted)
        await api.start()
        try:
            assert calls == writes
            got = await api.client.get("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                                       "sprockets.example.com")
            assert [v["name"] for v in got["spec"]["versions"]] == [version]
            assert got["spec"]["conversion"] == {"strategy": "None"}  # defaulted, as the apiserver does
            versions.append(got["metadata"]["resourceVersion"])
            made = await api.client.create({"apiVersion": f"example.com/{version}", "kind": "Sprocket",
                                            "metadata": {"generateName": "s-", "namespace": "default"}})
            assert made["kind"] == "Sprocket"
        finally:
            await api.stop()
            await store.stop()
    assert versions[0] == versions[1] != versions[2]


async def test_modify_retries_a_stale_read_on_the_stored_object(kube: KubeAPI) -> None:
    c = kube.client
    stale = await c.create(_cm("retry"))
    await c.update({**stale, "data": {"k": "v", "other": "writer"}})  # someone else writes first
    seen: list[dict[str, str]] = []

    def change(o: dict[str, Any]) -> None:
        seen.append(dict(o["data"]))
        o["data"]["mine"] = "1"

    out = await c.modify(stale, change)
    assert out is not None and out["data"] == {"k": "v", "other": "writer", "mine": "1"}  # nothing lost
    assert seen == [{"k": "v"}, {"k": "v", "other": "writer"}]  # applied afresh after the conflict
    again = await c.modify(out, change)
    assert again is not None and again["metadata"]["resourceVersion"] == out["metadata"]["resourceVersion"]
    assert await c.modify(again, lambda o: False) is again  # False: nothing to write

    st = await c.create(_dep("st"))
    done = await c.modify(st, lambda o: o.__setitem__("status", {"replicas": 3}), status=True)
    assert done is not None and done["status"] == {"replicas": 3}

    await c.delete("v1", "ConfigMap", "retry", "default")
    assert await c.modify(out, lambda o: o["data"].__setitem__("late", "1")) is None  # deleted meanwhile


async def test_modify_gives_up_after_its_attempts(kube: KubeAPI) -> None:
    c = kube.client
    stale = await c.create(_cm("busy"))
    await c.update({**stale, "data": {"n": "1"}})
    with pytest.raises(Conflict, match="the object has been modified"):
        await c.modify(stale, lambda o: o["data"].__setitem__("x", "1"), attempts=1)
    assert (await c.get("v1", "ConfigMap", "busy", "default"))["data"] == {"n": "1"}
