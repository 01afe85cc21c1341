"""Reload on config change: Reloader's annotations decide which ConfigMap/Secret changes roll a Deployment."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from pitwall.controllers.loop import ControllerRunner
from pitwall.incidents import ChangeEvent
from pitwall.kube import KubeAPI
from pitwall.registry.reload import (
    HASHES_ANNOTATION,
    LAST_RELOADED_FROM,
    ReloadController,
    Target,
    config_hash,
    targets_of,
)
from tests.controllers.conftest import eventually, kube  # noqa: F401 (the fixture)

pytestmark = pytest.mark.timeout(60)


def deployment(name: str, annotations: dict[str, str], *, env_from: str = "", volume_secret: str = "",
               key_ref: str = "") -> dict[str, Any]:
    c: dict[str, Any] = {"name": "app", "image": "x"}
    if env_from:
        c["envFrom"] = [{"configMapRef": {"name": env_from}}]
    if key_ref:
        c["env"] = [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": key_ref, "key": "pw"}}}]
    spec: dict[str, Any] = {"containers": [c]}
    if volume_secret:
        spec["volumes"] = [{"name": "v", "projected": {"sources": [{"secret": {"name": volume_secret}}]}}]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def configmap(name: str, data: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations or {}}, "data": data}


def secret(name: str, pw: bytes) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "default"},
            "data": {"pw": base64.b64encode(pw).decode()}}


def test_targets_follow_reloaders_annotations() -> None:
    both = deployment("d", {}, env_from="cm", key_ref="s")
    assert targets_of(both) == []  # not opted in
    both["metadata"]["annotations"] = {"reloader.stakater.com/auto": "true"}
    assert set(targets_of(both)) == {Target("configmap", "cm"), Target("secret", "s")}
    both["metadata"]["annotations"] = {"pitwall.dev/reload-on-config": "true"}
    assert set(targets_of(both)) == {Target("configmap", "cm"), Target("secret", "s")}
    both["metadata"]["annotations"] = {"secret.reloader.stakater.com/auto": "true"}
    assert targets_of(both) == [Target("secret", "s")]
    both["metadata"]["annotations"] = {"configmap.reloader.stakater.com/reload": "other, cm"}
    assert set(targets_of(both)) == {Target("configmap", "other"), Target("configmap", "cm")}
    both["metadata"]["annotations"] = {"reloader.stakater.com/search": "true"}
    assert set(targets_of(both)) == {Target("configmap", "cm", search=True), Target("secret", "s", search=True)}
    vol = deployment("v", {"reloader.stakater.com/auto": "true"}, volume_secret="tls")
    assert targets_of(vol) == [Target("secret", "tls")]


def test_hash_is_reloaders() -> None:
    # SHA-1 of the sorted "k=v" joined by ";" (what Reloader writes, so its annotations compare equal)
    import hashlib

    assert config_hash("configmap", configmap("c", {"b": "2", "a": "1"})) == hashlib.sha1(b"a=1;b=2").hexdigest()
    assert config_hash("secret", secret("s", b"hunter2")) == hashlib.sha1(b"pw=hunter2").hexdigest()
    assert config_hash("configmap", configmap("c", {"a": "1"})) != config_hash("configmap", configmap("c", {"a": "2"}))


class Sink:
    def __init__(self) -> None:
        self.events: list[ChangeEvent] = []

    async def record(self, ev: ChangeEvent) -> ChangeEvent:
        self.events.append(ev)
        return ev


@pytest.fixture
async def reloader(kube: KubeAPI) -> AsyncIterator[tuple[KubeAPI, Sink]]:  # noqa: F811
    sink = Sink()
    runner = ControllerRunner(kube.client, ReloadController(kube.client, sink), workers=1, resync_s=0)
    await runner.start()
    try:
        yield kube, sink
    finally:
        await runner.stop()


async def _ann(api: KubeAPI, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    d = await api.client.get("apps/v1", "Deployment", name, "default")
    return d["metadata"].get("annotations") or {}, d["spec"]["template"]["metadata"].get("annotations") or {}


async def test_a_changed_configmap_rolls_only_the_deployments_that_asked(reloader: tuple[KubeAPI, Sink]) -> None:
    api, sink = reloader
    c = api.client
    await c.create(configmap("cfg", {"GREETING": "hello"}))
    await c.create(deployment("auto", {"reloader.stakater.com/auto": "true"}, env_from="cfg"))
    await c.create(deployment("plain", {}, env_from="cfg"))
    await c.create(deployment("named", {"configmap.reloader.stakater.com/reload": "cfg"}))
    for name in ("auto", "named"):
        async def recorded(name: str = name) -> bool:
            return HASHES_ANNOTATION in (await _ann(api, name))[0]
        await eventually(recorded)
    assert LAST_RELOADED_FROM not in (await _ann(api, "auto"))[1]  # first sight records, never reloads

    cur = await c.get("v1", "ConfigMap", "cfg", "default")
    cur["data"] = {"GREETING": "bonjour"}
    await c.update(cur)

    async def reloaded() -> bool:  # the change event is recorded just after the patch
        return all([LAST_RELOADED_FROM in (await _ann(api, n))[1] for n in ("auto", "named")]) and \
            len(sink.events) == 2
    await eventually(reloaded)
    src = orjson.loads((await _ann(api, "auto"))[1][LAST_RELOADED_FROM])
    assert src["type"] == "CONFIGMAP" and src["name"] == "cfg" and src["namespace"] == "default"
    assert src["hash"] == config_hash("configmap", cur) and src["containerRefs"] == ["app"]
    assert (await _ann(api, "plain")) == ({}, {})  # not opted in: untouched
    assert sorted(e.service for e in sink.events) == ["default/auto", "default/named"]
    assert all(e.kind == "config" and "cfg" in e.summary for e in sink.events)
    events = (await c.list("v1", "Event", "default")).items
    assert {e["involvedObject"]["name"] for e in events if e["reason"] == "Reloaded"} == {"auto", "named"}

    # a metadata-only change of the ConfigMap (same data) reloads nothing more
    cur = await c.get("v1", "ConfigMap", "cfg", "default")
    cur["metadata"].setdefault("labels", {})["x"] = "y"
    await c.update(cur)
    # one worker, a FIFO queue: once a Deployment created after the label change is seen, it was handled
    await c.create(deployment("after", {"reloader.stakater.com/auto": "true"}, env_from="cfg"))
    await eventually(lambda: _has_ann(api, "after"))
    assert len(sink.events) == 2


async def test_search_match_ignore_and_secrets(reloader: tuple[KubeAPI, Sink]) -> None:
    api, sink = reloader
    c = api.client
    await c.create(configmap("matched", {"a": "1"}, {"reloader.stakater.com/match": "true"}))
    await c.create(configmap("unmatched", {"a": "1"}))
    await c.create(secret("db", b"old-password"))
    d = deployment("s", {"reloader.stakater.com/search": "true"}, env_from="unmatched")
    d["spec"]["template"]["spec"]["containers"].append({"name": "m", "image": "x",
                                                        "envFrom": [{"configMapRef": {"name": "matched"}}]})
    await c.create(d)
    await c.create(deployment("sec", {"secret.reloader.stakater.com/auto": "true"}, key_ref="db"))

    async def recorded() -> bool:
        return all([HASHES_ANNOTATION in (await _ann(api, n))[0] for n in ("s", "sec")])
    await eventually(recorded)
    assert set(orjson.loads((await _ann(api, "s"))[0][HASHES_ANNOTATION])) == {"configmap/matched"}

    for name in ("unmatched", "matched"):
        cur = await c.get("v1", "ConfigMap", name, "default")
        cur["data"] = {"a": "2"}
        await c.update(cur)
    cur = await c.get("v1", "Secret", "db", "default")
    cur["data"] = {"pw": base64.b64encode(b"new-password").decode()}
    await c.update(cur)

    async def reloaded() -> bool:
        return all([LAST_RELOADED_FROM in (await _ann(api, n))[1] for n in ("s", "sec")]) and len(sink.events) == 2
    await eventually(reloaded)
    assert orjson.loads((await _ann(api, "s"))[1][LAST_RELOADED_FROM])["name"] == "matched"
    src = orjson.loads((await _ann(api, "sec"))[1][LAST_RELOADED_FROM])
    assert src["type"] == "SECRET" and "new-password" not in str(await _ann(api, "sec"))

    # an ignored ConfigMap never reloads, even for an auto Deployment
    await c.create(configmap("quiet", {"a": "1"}, {"reloader.stakater.com/ignore": "true"}))
    await c.create(deployment("q", {"reloader.stakater.com/auto": "true"}, env_from="quiet"))
    await eventually(lambda: _has_ann(api, "q"))
    cur = await c.get("v1", "ConfigMap", "quiet", "default")
    cur["data"] = {"a": "2"}
    await c.update(cur)
    await c.create(deployment("later", {"reloader.stakater.com/auto": "true"}, env_from="quiet"))
    await eventually(lambda: _has_ann(api, "later"))  # the queue moved past the ConfigMap's change
    assert LAST_RELOADED_FROM not in (await _ann(api, "q"))[1]
    assert sorted(e.service for e in sink.events) == ["default/s", "default/sec"]


async def _has_ann(api: KubeAPI, name: str) -> bool:
    return HASHES_ANNOTATION in (await _ann(api, name))[0]


def test_configmap_events_wake_only_the_deployments_that_reload_on_it() -> None:
    rc = ReloadController(None)  # type: ignore[arg-type]  # keys_for reads no API
    cm = configmap("cfg", {})
    d = deployment("a", {"reloader.stakater.com/auto": "true"}, env_from="cfg")
    assert rc.keys_for("apps/v1", "Deployment", d) == ["default/a"]
    rc.keys_for("apps/v1", "Deployment", deployment("b", {}, env_from="cfg"))  # not opted in
    assert rc.keys_for("v1", "ConfigMap", cm) == ["default/a"]
    assert rc.keys_for("v1", "ConfigMap", configmap("other", {})) == []
    assert rc.keys_for("v1", "Secret", {"metadata": {"name": "cfg", "namespace": "default"}}) == []
    rc.keys_for("apps/v1", "Deployment", deployment("a", {"reloader.stakater.com/auto": "true"}, env_from="new"))
    assert rc.keys_for("v1", "ConfigMap", cm) == []  # no longer referenced
    assert rc.keys_for("v1", "ConfigMap", configmap("new", {})) == ["default/a"]
    assert rc.keys_for("v1", "ConfigMap", configmap("new", {}, {"reloader.stakater.com/ignore": "true"})) == []
