"""The watch cache (kube/watchcache.py): lists and watches served from memory keep the store's semantics.

Each test checks both the answer and where it came from (the cache's served/delegated counters), so a
cache that silently fell back to the store would not pass for one that works.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from pitwall.kube import Gone, KubeAPI
from pitwall.kube import watchcache as wcmod
from pitwall.kube.encryption import local_encryption
from pitwall.kube.resources import WatchEvent
from pitwall.kube.watchcache import WatchCache
from pitwall.kube.wiring import build_kube
from pitwall.storage.revstore import Op, RevStore
from pitwall.storage.revstore.sqlite import SqliteRevStore

pytestmark = pytest.mark.timeout(60)


def _cm(name: str, ns: str = "default", data: str = "v", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, "labels": labels},
            "data": {"k": data}}


def _names(items: list[dict[str, Any]]) -> list[str]:
    return [o["metadata"]["name"] for o in items]


def _wc(kube: KubeAPI) -> WatchCache:
    assert kube.watch_cache is not None
    return kube.watch_cache


async def _ready(kube: KubeAPI) -> WatchCache:
    wc = _wc(kube)
    for _ in range(500):
        if wc.ready:
            return wc
        await asyncio.sleep(0.01)
    raise AssertionError("the watch cache never loaded")


async def _take(events: AsyncIterator[WatchEvent], n: int) -> list[tuple[str, str, str]]:
    out = []
    async for ev in events:
        out.append((ev.type, ev.object["metadata"]["name"], ev.object["metadata"]["resourceVersion"]))
        if len(out) == n:
            break
    return out


async def test_read_your_writes_from_the_cache(kube: KubeAPI) -> None:
    wc = await _ready(kube)
    c = kube.client
    served = wc.lists_served
    for i in range(5):
        made = await c.create(_cm(f"c{i}"))
        got = await c.list("v1", "ConfigMap", "default")
        assert _names(got.items) == [f"c{j}" for j in range(i + 1)]
        assert int(got.resource_version) >= int(made["metadata"]["resourceVersion"])
    upd = await c.patch("v1", "ConfigMap", "c2", {"data": {"k": "new"}}, namespace="default")
    got = await c.list("v1", "ConfigMap", "default")
    assert [o["data"]["k"] for o in got.items if o["metadata"]["name"] == "c2"] == ["new"]
    assert [o["metadata"]["resourceVersion"] for o in got.items if o["metadata"]["name"] == "c2"] == [
        upd["metadata"]["resourceVersion"]]
    await c.delete("v1", "ConfigMap", "c3", namespace="default")
    assert _names((await c.list("v1", "ConfigMap", "default")).items) == ["c0", "c1", "c2", "c4"]
    assert wc.lists_served == served + 7 and wc.lists_delegated == 0
    # what a client gets is its own: changing it changes nothing cached
    got.items[0]["data"]["k"] = "scribbled"
    assert (await c.list("v1", "ConfigMap", "default")).items[0]["data"]["k"] == "v"


async def test_writes_outside_the_registry_do_not_hold_lists_back(kube: KubeAPI) -> None:
    wc = await _ready(kube)
    await kube.client.create(_cm("k"))
    for i in range(5):  # Consul KV, incidents, pipelines live in the same store: their revisions count too
        await kube.store.put(f"/pitwall/other/{i}", b"x")
        assert _names((await kube.client.list("v1", "ConfigMap", "default")).items) == ["k"]
        assert wc.revision >= await kube.store.revision()
    assert wc.lists_delegated == 0 and wc.range("/pitwall/") == []


async def test_list_at_rv_0_is_served_at_once(kube: KubeAPI) -> None:
    wc = await _ready(kube)
    rt = kube.client.resource_type("v1", "ConfigMap")
    await kube.client.create(_cm("a"))
    items, rv, _ = await kube.resources.list_encoded(rt, "default", resource_version="0")
    assert int(rv) == wc.revision and [o["metadata"]["name"] for o, _ in items] in (["a"], [])
    served = wc.lists_served
    await asyncio.sleep(0.05)  # the cache follows the store's watch
    items, rv, _ = await kube.resources.list_encoded(rt, "default", resource_version="0")
    assert [o["metadata"]["name"] for o, _ in items] == ["a"] and wc.lists_served == served + 1
    # an explicit revision is an exact read of the store, as before
    delegated = wc.lists_delegated
    exact, _, _ = await kube.resources.list_encoded(rt, "default", resource_version=rv)
    assert [o["metadata"]["name"] for o, _ in exact] == ["a"] and wc.lists_delegated == delegated + 1


async def test_selectors_match_the_store_read_at_the_same_revision(kube: KubeAPI) -> None:
    wc = await _ready(kube)
    c = kube.client
    rng = random.Random(7)
    for ns in ("team-a", "team-b"):
        await c.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for i in range(40):
        await c.create(_cm(f"m{i:02d}", rng.choice(["default", "team-a", "team-b"]),
                           tier=rng.choice(["web", "db"]), parity=str(i % 2)))
    for i in rng.sample(range(40), 10):
        await c.patch("v1", "ConfigMap", f"m{i:02d}", {"metadata": {"labels": {"tier": "cache"}}},
                      namespace=(await _find(kube, f"m{i:02d}")))
    rt = c.resource_type("v1", "ConfigMap")
    cases: list[tuple[str, str | None, str | None]] = [
        ("", "tier=web", None), ("", "tier in (db,cache),parity!=1", None), ("team-a", None, None),
        ("", None, "metadata.namespace=team-b"), ("", "!tier", None), ("default", "parity=0", "metadata.name!=m04")]
    for ns, ls, fs in cases:
        items, rv, _ = await kube.resources.list_encoded(rt, ns, label_selector=ls, field_selector=fs)
        exact, _, _ = await kube.resources.list_encoded(rt, ns, label_selector=ls, field_selector=fs,
                                                        resource_version=rv)
        assert [raw for _, raw in items] == [raw for _, raw in exact], (ns, ls, fs)
    assert wc.lists_served >= len(cases) and wc.lists_delegated == len(cases)


async def _find(kube: KubeAPI, name: str) -> str:
    got = await kube.client.list("v1", "ConfigMap", "", field_selector=f"metadata.name={name}")
    return str(got.items[0]["metadata"]["namespace"])


async def test_limit_and_continue_resume_exactly_across_writes(kube: KubeAPI) -> None:
    wc = await _ready(kube)
    c = kube.client
    for i in range(7):
        await c.create(_cm(f"p{i}", parity=str(i % 2)))
    p1 = await c.list("v1", "ConfigMap", "default", limit=3)
    assert _names(p1.items) == ["p0", "p1", "p2"] and p1.continue_token
    served = wc.lists_served
    p2 = await c.list("v1", "ConfigMap", "default", limit=3, continue_token=p1.continue_token)
    assert _names(p2.items) == ["p3", "p4", "p5"] and wc.lists_served == served + 1  # nothing changed: memory
    # writes between pages: the next page is still the list as of the first page's revision (from the store)
    await c.create(_cm("p45"))
    await c.delete("v1", "ConfigMap", "p6", namespace="default")
    await c.patch("v1", "ConfigMap", "p5", {"data": {"k": "changed"}}, namespace="default")
    delegated = wc.lists_delegated
    rest = await c.list("v1", "ConfigMap", "default", limit=3, continue_token=p2.continue_token)
    assert _names(rest.items) == ["p6"] and not rest.continue_token and wc.lists_delegated == delegated + 1
    assert rest.resource_version == p1.resource_version
    odd = await c.list("v1", "ConfigMap", "default", label_selector="parity=1", limit=2)
    assert _names(odd.items) == ["p1", "p3"] and odd.continue_token
    odd2 = await c.list("v1", "ConfigMap", "default", label_selector="parity=1", limit=2,
                        continue_token=odd.continue_token)
    assert _names(odd2.items) == ["p5"] and not odd2.continue_token
    assert odd2.items[0]["data"]["k"] == "changed"


async def test_watch_from_a_recent_revision_is_served_by_the_cache(kube: KubeAPI) -> None:
    wc = await _ready(kube)
    c = kube.client
    start = await c.list("v1", "ConfigMap", "default")
    await c.create(_cm("w1", sel="y"))
    made = await c.create(_cm("w2"))
    await c.patch("v1", "ConfigMap", "w2", {"metadata": {"labels": {"sel": "y"}}}, namespace="default")
    await c.patch("v1", "ConfigMap", "w1", {"metadata": {"labels": {"sel": None}}}, namespace="default")
    gone = await c.delete("v1", "ConfigMap", "w2", namespace="default")
    assert gone is not None
    served = wc.watches_served
    watchers = [c.watch("v1", "ConfigMap", "default", resource_version=start.resource_version, label_selector="sel=y")
                for _ in range(5)]
    results = await asyncio.wait_for(asyncio.gather(*(_take(w, 4) for w in watchers)), 10)
    assert wc.watches_served == served + 5 and wc.watches_delegated == 0
    for got in results:
        assert [(t, n) for t, n, _ in got] == [("ADDED", "w1"), ("ADDED", "w2"), ("DELETED", "w1"), ("DELETED", "w2")]
        assert int(got[1][2]) > int(made["metadata"]["resourceVersion"])  # w2 entered the selection by a patch
        assert int(got[3][2]) == wc.revision  # a deletion carries the deleting revision
    # live events reach watchers that joined before them
    live = c.watch("v1", "ConfigMap", "default", resource_version=str(wc.revision))
    task = asyncio.create_task(_take(live, 1))
    await asyncio.sleep(0.05)
    made = await c.create(_cm("w3"))
    assert await asyncio.wait_for(task, 10) == [("ADDED", "w3", made["metadata"]["resourceVersion"])]


async def test_watch_from_a_compacted_revision_is_gone(kube: KubeAPI) -> None:
    wc = await _ready(kube)
    c = kube.client
    first = await c.create(_cm("old"))
    await c.patch("v1", "ConfigMap", "old", {"data": {"k": "2"}}, namespace="default")
    rv = first["metadata"]["resourceVersion"]
    assert wc.covers(int(rv))
    await kube.store.compact(await kube.store.revision())
    with pytest.raises(Gone, match=f"too old resource version: {rv}"):
        async for _ in c.watch("v1", "ConfigMap", "default", resource_version=rv):
            pass


async def test_watch_older_than_the_ring_reads_the_store(kube: KubeAPI) -> None:
    wc = await _ready(kube)
    wc.capacity = 3
    c = kube.client
    start = await c.list("v1", "ConfigMap", "default")
    for i in range(6):
        await c.create(_cm(f"r{i}"))
    assert not wc.covers(int(start.resource_version))
    delegated = wc.watches_delegated
    got = await asyncio.wait_for(_take(c.watch("v1", "ConfigMap", "default", resource_version=start.resource_version), 6), 10)
    assert [n for _, n, _ in got] == [f"r{i}" for i in range(6)] and wc.watches_delegated == delegated + 1


async def test_slow_watcher_resumes_without_gap(kube: KubeAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    wc = await _ready(kube)
    monkeypatch.setattr(wcmod, "SUB_QUEUE", 2)
    c = kube.client
    start = await c.list("v1", "ConfigMap", "default")
    events = c.watch("v1", "ConfigMap", "default", resource_version=start.resource_version)
    first = await asyncio.wait_for(asyncio.gather(_take(events, 1), c.create(_cm("s0"))), 10)
    assert [n for _, n, _ in first[0]] == ["s0"]
    for i in range(1, 10):  # nobody reads: the watcher's queue overflows, then it resumes from the ring
        await c.create(_cm(f"s{i}"))
    wc.capacity = 4  # ... and part of what it missed has left the ring: that part comes from the store
    await c.create(_cm("s10"))
    got = await asyncio.wait_for(_take(events, 10), 10)
    assert [n for _, n, _ in got] == [f"s{i}" for i in range(1, 11)]
    assert [int(r) for _, _, r in got] == sorted(int(r) for _, _, r in got)


async def test_encrypted_secrets_stay_sealed_in_the_cache(tmp_path: Path) -> None:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store, encryption=local_encryption(tmp_path, env={}))
    await api.start()
    try:
        wc = await _ready(api)
        c = api.client
        value = "c2VjcmV0LXZhbHVl"  # "secret-value"
        await c.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
                        "data": {"k": value}})
        got = await c.list("v1", "Secret", "default")
        assert [s["data"] for s in got.items] == [{"k": value}] and wc.lists_served >= 1
        (kv,) = wc.range("/registry/secrets/default/")
        assert kv.value.startswith(b"k8s:enc:aesgcm:v1:") and value.encode() not in kv.value
        assert b"secret-value" not in kv.value
    finally:
        await api.stop()
        await store.stop()


async def test_crd_kinds_added_at_run_time(kube: KubeAPI) -> None:
    wc = await _ready(kube)
    c = kube.client
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                      "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]}}
    await c.create(crd)
    for _ in range(200):
        if kube.registry.get("example.com", "v1", "widgets") is not None:
            break
        await asyncio.sleep(0.02)
    start = await c.list("example.com/v1", "Widget", "default")
    assert start.items == []
    for i, size in enumerate((3, 5)):
        await c.create({"apiVersion": "example.com/v1", "kind": "Widget",
                        "metadata": {"name": f"w{i}", "namespace": "default"}, "spec": {"size": size}})
    got = await c.list("example.com/v1", "Widget", "default")
    assert [o["spec"]["size"] for o in got.items] == [3, 5] and wc.lists_delegated == 0
    events = await asyncio.wait_for(_take(c.watch("example.com/v1", "Widget", "default",
                                                  resource_version=start.resource_version), 2), 10)
    assert [(t, n) for t, n, _ in events] == [("ADDED", "w0"), ("ADDED", "w1")]


async def test_two_servers_on_one_store_see_each_others_writes(tmp_path: Path) -> None:
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    a, b = build_kube(store), build_kube(store)
    a.run_gc = b.run_gc = False
    await a.start()
    await b.start()
    try:
        await _ready(a)
        wb = await _ready(b)
        for i in range(5):
            await a.client.create(_cm(f"x{i}", data=str(i)))
            assert _names((await b.client.list("v1", "ConfigMap", "default")).items) == [f"x{j}" for j in range(i + 1)]
        # a writer that is not a Kubernetes API at all (e.g. a restore tool writing the store)
        raw = json.dumps(_cm("direct")).encode()
        await store.put("/registry/configmaps/default/direct", raw)
        assert "direct" in _names((await b.client.list("v1", "ConfigMap", "default")).items)
        # several keys in one revision
        await store.txn([], [Op.put(f"/registry/configmaps/default/t{i}", json.dumps(_cm(f"t{i}")).encode())
                             for i in range(3)] + [Op.delete("/registry/configmaps/default/direct")])
        names = _names((await b.client.list("v1", "ConfigMap", "default")).items)
        assert "direct" not in names and {"t0", "t1", "t2"} <= set(names)
        assert wb.lists_delegated == 0
    finally:
        await b.stop()
        await a.stop()
        await store.stop()


@pytest.mark.slow
async def test_two_servers_on_one_etcd_see_each_others_writes(tmp_path: Path) -> None:
    from pitwall.storage.revstore.etcd import EtcdRevStore
    from tests.storage.revstore.conftest import start_etcd

    etcd = start_etcd(tmp_path / "etcd")
    stores: list[RevStore] = [EtcdRevStore([etcd.url], compact_interval_s=None) for _ in range(2)]
    apis = [build_kube(s) for s in stores]
    try:
        for s, api in zip(stores, apis, strict=True):
            api.run_gc = False
            await s.start()
            await api.start()
        wc = await _ready(apis[1])
        start = await apis[1].client.list("v1", "ConfigMap", "default")
        for i in range(3):
            await apis[0].client.create(_cm(f"e{i}"))
            assert _names((await apis[1].client.list("v1", "ConfigMap", "default")).items) == [
                f"e{j}" for j in range(i + 1)]
        await apis[0].client.delete("v1", "ConfigMap", "e1", namespace="default")
        got = await asyncio.wait_for(_take(apis[1].client.watch(
            "v1", "ConfigMap", "default", resource_version=start.resource_version), 4), 10)
        assert [(t, n) for t, n, _ in got] == [("ADDED", "e0"), ("ADDED", "e1"), ("ADDED", "e2"), ("DELETED", "e1")]
        assert wc.lists_delegated == 0 and wc.watches_delegated == 0
    finally:
        for s, api in zip(stores, apis, strict=True):
            await api.stop()
            await s.stop()
        etcd.stop()


async def test_http_list_and_watch_from_the_cache(kube: KubeAPI) -> None:
    wc = await _ready(kube)
    app = FastAPI()
    kube.install(app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kube") as http:
        base = "/api/v1/namespaces/default/configmaps"
        r = await http.post(base, json=_cm("h1", app="x"))
        assert r.status_code == 201
        rv = r.json()["metadata"]["resourceVersion"]
        listed = (await http.get(base)).json()
        assert listed["kind"] == "ConfigMapList" and _names(listed["items"]) == ["h1"]
        assert int(listed["metadata"]["resourceVersion"]) >= int(rv)
        await http.patch(f"{base}/h1", json={"data": {"k": "2"}},
                         headers={"Content-Type": "application/merge-patch+json"})
        await http.patch(f"{base}/h1", json={"metadata": {"labels": {"app": "y"}}},
                         headers={"Content-Type": "application/merge-patch+json"})
        await http.delete(f"{base}/h1")
        r = await http.get(f"{base}?watch=1&resourceVersion={rv}&labelSelector=app%3Dx&timeoutSeconds=1")
        events = [json.loads(line) for line in r.text.splitlines()]
        assert [(e["type"], e["object"]["data"]["k"]) for e in events] == [("MODIFIED", "2"), ("DELETED", "2")]
        assert events[1]["object"]["metadata"]["labels"] == {"app": "y"}  # it left the selection by that patch
        assert wc.watches_served >= 1 and wc.lists_delegated == 0
        bad = await http.get(f"{base}?continue=not-a-token")
        assert bad.status_code == 400 and bad.json()["reason"] == "BadRequest"
