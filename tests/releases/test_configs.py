"""Tracked configs (Flagger's ConfigTracker): the target's ConfigMaps and Secrets copied to ``-primary`` versions
the primary uses, their checksums in ``status.trackedConfigs``, and a changed ConfigMap starting an analysis."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from pitwall.kube import KubeAPI
from pitwall.releases.configs import checksum
from pitwall.releases.settings import ReleasesSettings
from tests.releases.harness import Answers, Driver, canary

pytestmark = pytest.mark.timeout(60)

ANALYSIS = {"interval": "1s", "threshold": 2, "maxWeight": 20, "stepWeight": 10}


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _deployment() -> dict[str, Any]:
    pod = {"containers": [{"name": "app", "image": "podinfo:v1",
                           "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "a"}}},
                                   {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "b",
                                                                                     "optional": True}}}],
                           "envFrom": [{"secretRef": {"name": "token"}}]}],
           "initContainers": [{"name": "init", "image": "busybox",
                               "envFrom": [{"configMapRef": {"name": "settings"}}]}],
           "imagePullSecrets": [{"name": "registry"}],
           "volumes": [{"name": "static", "configMap": {"name": "untracked"}},
                       {"name": "all", "projected": {"sources": [{"configMap": {"name": "files"}},
                                                                 {"secret": {"name": "registry"}}]}}]}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "podinfo", "namespace": "default"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "podinfo"}},
                     "template": {"metadata": {"labels": {"app": "podinfo"}}, "spec": pod}}}


def _cm(name: str, data: dict[str, str], **annotations: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default",
                                                                  "labels": {"team": "web"},
                                                                  "annotations": annotations}, "data": data}


async def _setup(d: Driver, dep: dict[str, Any] | None = None, **settings_labels: str) -> None:
    c = d.client
    settings = _cm("settings", {"a": "1"})
    settings["metadata"]["labels"].update(settings_labels)
    await c.create(settings)
    await c.create(_cm("files", {"index.html": "<p>hi</p>"}))
    await c.create(_cm("untracked", {"x": "y"}, **{"flagger.app/config-tracking": "disabled"}))
    await c.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token", "namespace": "default"},
                    "type": "Opaque", "data": {"TOKEN": _b64("s3cret")}})
    await c.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "registry", "namespace": "default"},
                    "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": _b64("{}")}})
    await c.create(dep or _deployment())
    await c.create(canary(ANALYSIS))
    for _ in range(5):
        if (await d.tick()).get("status", {}).get("phase") == "Initialized":
            return
    raise AssertionError("not initialized")


def test_checksum_is_flaggers() -> None:
    # Go's json.Marshal of a map: sorted keys, no spaces, <, > and & escaped; sha256, first 8 bytes in hex
    assert checksum({"b": "2", "a": "<&>"}) == hashlib.sha256(b'{"a":"\\u003c\\u0026\\u003e","b":"2"}').digest()[
        :8].hex()
    assert checksum(None) == hashlib.sha256(b"null").digest()[:8].hex()


async def test_configs_are_copied_tracked_and_a_change_starts_an_analysis(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    await _setup(d)
    c = d.client
    cd = await c.get("flagger.app/v1beta1", "Canary", "podinfo", "default")
    assert cd["status"]["trackedConfigs"] == {"configmap/files": checksum({"index.html": "<p>hi</p>"}),
                                              "configmap/settings": checksum({"a": "1"}),
                                              "secret/token": checksum({"TOKEN": _b64("s3cret")})}
    copy_ = await c.get("v1", "ConfigMap", "settings-primary", "default")
    assert copy_["data"] == {"a": "1"} and copy_["metadata"]["labels"] == {}  # Flagger's default prefixes: none
    assert copy_["metadata"]["ownerReferences"][0]["kind"] == "Canary"
    assert (await c.get("v1", "Secret", "token-primary", "default"))["data"] == {"TOKEN": _b64("s3cret")}
    pod = (await d.deployment("podinfo-primary"))["spec"]["template"]["spec"]
    app = pod["containers"][0]
    assert app["env"][0]["valueFrom"]["configMapKeyRef"]["name"] == "settings-primary"
    assert app["env"][1]["valueFrom"]["configMapKeyRef"]["name"] == "absent"  # optional and missing: untracked
    assert app["envFrom"] == [{"secretRef": {"name": "token-primary"}}]
    assert pod["initContainers"][0]["envFrom"] == [{"configMapRef": {"name": "settings-primary"}}]
    assert pod["volumes"][0]["configMap"]["name"] == "untracked"  # opted out
    assert pod["volumes"][1]["projected"]["sources"] == [{"configMap": {"name": "files-primary"}},
                                                         {"secret": {"name": "registry"}}]  # registry: not tracked
    target_pod = (await d.deployment("podinfo"))["spec"]["template"]["spec"]
    assert target_pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "token"}}]
    # nothing changed: nothing starts
    assert (await d.tick())["status"]["phase"] == "Initialized"
    # the untracked ConfigMap changes: still nothing
    cm = await c.get("v1", "ConfigMap", "untracked", "default")
    cm["data"] = {"x": "z"}
    await c.update(cm)
    assert (await d.tick())["status"]["phase"] == "Initialized"
    # a tracked ConfigMap changes (the pod template does not): an analysis, then the primary's copy follows and
    # the primary's pods roll (a new flagger-id annotation), since env from a config is read at pod start
    first_id = (await d.deployment("podinfo-primary"))["spec"]["template"]["metadata"]["annotations"]["flagger-id"]
    cm = await c.get("v1", "ConfigMap", "settings", "default")
    cm["data"] = {"a": "2"}
    await c.update(cm)
    phases = []
    for _ in range(8):
        cd = await d.tick()
        phases.append(cd["status"]["phase"])
        if phases[-1] == "Progressing":
            assert (await c.get("v1", "ConfigMap", "settings-primary", "default"))["data"] == {"a": "1"}
        if phases[-1] == "Succeeded":
            break
    assert phases[0] == "Progressing" and phases[-1] == "Succeeded"
    assert (await c.get("v1", "ConfigMap", "settings-primary", "default"))["data"] == {"a": "2"}
    assert (await d.deployment("podinfo-primary"))["spec"]["template"]["metadata"]["annotations"][
        "flagger-id"] not in ("", first_id)
    assert cd["status"]["trackedConfigs"]["configmap/settings"] == checksum({"a": "2"})
    assert (await d.tick())["status"]["phase"] == "Succeeded"  # and it stays so


async def test_a_config_change_during_the_analysis_restarts_it(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    await _setup(d)
    c = d.client
    sec = await c.get("v1", "Secret", "token", "default")
    sec["data"] = {"TOKEN": _b64("rotated")}
    await c.update(sec)
    await d.tick()
    cd = await d.tick()
    assert cd["status"]["phase"] == "Progressing" and cd["status"]["canaryWeight"] == 10
    sec = await c.get("v1", "Secret", "token", "default")
    sec["data"] = {"TOKEN": _b64("rotated again")}
    await c.update(sec)
    cd = await d.tick()
    assert cd["status"]["phase"] == "Progressing" and cd["status"]["canaryWeight"] == 0
    msgs = [e["message"] for e in (await c.list("v1", "Event", "default")).items]
    assert "New revision detected! Restarting analysis for podinfo.default" in msgs


async def test_a_missing_required_config_is_reported(mesh_kube: KubeAPI) -> None:
    d = Driver(mesh_kube, Answers())
    dep = _deployment()
    dep["spec"]["template"]["spec"] = {"containers": [{"name": "app", "image": "podinfo:v1",
                                                       "envFrom": [{"configMapRef": {"name": "nowhere"}}]}]}
    await d.client.create(dep)
    await d.client.create(canary(ANALYSIS))
    for _ in range(3):
        cd = await d.tick()
    assert cd["status"]["phase"] == "Initializing"
    msgs = [e["message"] for e in (await d.client.list("v1", "Event", "default")).items]
    assert 'configmap nowhere.default get query error: configmaps "nowhere" not found' in msgs



async def test_include_label_prefix_picks_what_primaries_and_copies_carry(mesh_kube: KubeAPI) -> None:
    """Flagger's -include-label-prefix (``releases.include_label_prefix``): the target's labels with a listed
    prefix go to the primary Deployment (its selector label always), annotations all at creation and filtered at
    promotion, tracked configs' copies the same labels; Flux's ``toolkit.fluxcd.io`` ones never."""
    d = Driver(mesh_kube, Answers())
    d.ctl.configure(ReleasesSettings(include_label_prefix=["team", "app.kubernetes.io/"]))
    c = d.client
    flux = {"kustomize.toolkit.fluxcd.io/name": "apps"}
    dep = _deployment()
    dep["metadata"]["labels"] = {"team": "web", "app.kubernetes.io/part-of": "shop", "tier": "front", **flux}
    dep["metadata"]["annotations"] = {"team/owner": "ana", "note": "x", **flux}
    dep["spec"]["template"]["metadata"]["labels"] = {"app": "podinfo", "tier": "front", **flux}
    await _setup(d, dep, tier="front", **flux)
    for _ in range(5):
        if (await d.tick()).get("status", {}).get("phase") == "Initialized":
            break
    primary = await d.deployment("podinfo-primary")
    assert primary["metadata"]["labels"] == {"team": "web", "app.kubernetes.io/part-of": "shop",
                                             "app": "podinfo-primary"}
    assert primary["metadata"]["annotations"] == {"team/owner": "ana", "note": "x"}  # Flagger's filterMetadata
    assert primary["spec"]["template"]["metadata"]["labels"] == {"app": "podinfo-primary", "tier": "front"}
    assert (await c.get("v1", "ConfigMap", "settings-primary", "default"))["metadata"]["labels"] == {"team": "web"}

    target = await c.get("apps/v1", "Deployment", "podinfo", "default")
    target["metadata"]["labels"]["team"] = "payments"
    target["spec"]["template"]["spec"]["containers"][0]["image"] = "podinfo:v2"
    await c.update(target)
    for _ in range(12):
        if (await d.tick())["status"]["phase"] == "Succeeded":
            break
    primary = await d.deployment("podinfo-primary")
    assert primary["metadata"]["labels"] == {"team": "payments", "app.kubernetes.io/part-of": "shop",
                                             "app": "podinfo-primary"}
    assert primary["metadata"]["annotations"] == {"team/owner": "ana"}  # at promotion: by prefix, as labels
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"] == "podinfo:v2"
