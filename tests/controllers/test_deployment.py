"""The Deployment controller over a real KubeAPI (SQLite), with a simulated kubelet marking pods ready."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pitwall.controllers.deployment import DeploymentController
from pitwall.controllers.loop import ControllerRunner
from pitwall.controllers.replicaset import ReplicaSetController
from pitwall.controllers.rollout import REVISION, REVISION_HISTORY, max_surge, max_unavailable
from pitwall.incidents import ChangeLog
from pitwall.kube import KubeAPI, KubeClient
from tests.controllers.conftest import Kubelet, eventually, run_controller

Obj = dict[str, Any]


def deployment(replicas: int = 3, image: str = "web:v1", *, strategy: Obj | None = None, **spec: Any) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     **({"strategy": strategy} if strategy else {}), **spec,
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}}


@pytest.fixture
async def controllers(kube: KubeAPI) -> AsyncIterator[list[ControllerRunner]]:
    runners = [await run_controller(kube.client, ReplicaSetController(kube.client)),
               await run_controller(kube.client, DeploymentController(kube.client, changes=ChangeLog(kube.store)))]
    try:
        yield runners
    finally:
        for r in runners:
            await r.stop()


async def get_d(kube: KubeAPI) -> Obj:
    return await kube.client.get("apps/v1", "Deployment", "web", "default")


async def rss(kube: KubeAPI) -> list[Obj]:
    return (await kube.client.list("apps/v1", "ReplicaSet", "default")).items


async def live_pods(kube: KubeAPI) -> list[Obj]:
    return [p for p in (await kube.client.list("v1", "Pod", "default")).items
            if not p["metadata"].get("deletionTimestamp")]


def cond(d: Obj, type_: str) -> Obj:
    c: Obj = next((c for c in (d.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})
    return c


async def rolled_out(kube: KubeAPI, image: str, replicas: int) -> bool:
    """What ``kubectl rollout status`` calls done, and only pods of ``image`` left."""
    d = await get_d(kube)
    st = d.get("status") or {}
    if d["metadata"].get("generation", 0) > st.get("observedGeneration", 0):
        return False
    pods = await live_pods(kube)
    return (st.get("updatedReplicas", 0) == replicas and st.get("replicas", 0) == replicas
            and st.get("availableReplicas", 0) == replicas and len(pods) == replicas
            and all(p["spec"]["containers"][0]["image"] == image for p in pods))


async def set_image(client: KubeClient, image: str) -> None:
    await client.patch("apps/v1", "Deployment", "web",
                       {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}},
                       namespace="default", patch_type="strategic")


class PodMonitor:
    """Follows every pod change in order and records, after each, ready pods and pods by image."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.min_ready = 10**9
        self.max_total = 0
        self.mixed = False  # pods of two images alive at once
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PodMonitor:
        listed = await self.client.list("v1", "Pod", "default")
        pods = {p["metadata"]["name"]: p for p in listed.items}
        self._observe(pods)
        self._task = asyncio.get_running_loop().create_task(self._follow(pods, listed.resource_version))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def _observe(self, pods: dict[str, Obj]) -> None:
        live = [p for p in pods.values() if not p["metadata"].get("deletionTimestamp")]
        ready = [p for p in live if any(c["type"] == "Ready" and c["status"] == "True"
                                        for c in (p.get("status") or {}).get("conditions") or [])]
        self.min_ready = min(self.min_ready, len(ready))
        self.max_total = max(self.max_total, len(live))
        if len({p["spec"]["containers"][0]["image"] for p in live}) > 1:
            self.mixed = True

    async def _follow(self, pods: dict[str, Obj], rv: str) -> None:
        async for ev in self.client.watch("v1", "Pod", "default", resource_version=rv):
            name = ev.object["metadata"]["name"]
            if ev.type == "DELETED":
                pods.pop(name, None)
            elif ev.type in ("ADDED", "MODIFIED"):
                pods[name] = ev.object
            self._observe(pods)


@pytest.mark.timeout(60)
async def test_create_scale_and_status(kube: KubeAPI, controllers: list[ControllerRunner]) -> None:
    async with Kubelet(kube.client):
        await kube.client.create(deployment(3))
        await eventually(lambda: rolled_out(kube, "web:v1", 3))
        d = await get_d(kube)
        [rs] = await rss(kube)
        h = rs["metadata"]["labels"]["pod-template-hash"]
        assert rs["metadata"]["name"] == f"web-{h}"
        assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": h}
        assert rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == h
        assert rs["metadata"]["annotations"][REVISION] == "1" and d["metadata"]["annotations"][REVISION] == "1"
        assert rs["metadata"]["ownerReferences"][0]["uid"] == d["metadata"]["uid"]
        st = d["status"]
        assert st["observedGeneration"] == d["metadata"]["generation"]
        assert (st["replicas"], st["updatedReplicas"], st["readyReplicas"], st["availableReplicas"]) == (3, 3, 3, 3)
        assert "unavailableReplicas" not in st
        assert cond(d, "Available")["reason"] == "MinimumReplicasAvailable"
        assert cond(d, "Progressing")["reason"] == "NewReplicaSetAvailable"
        await kube.client.set_scale("apps/v1", "Deployment", "web", 5, "default")
        await eventually(lambda: rolled_out(kube, "web:v1", 5))
        await kube.client.set_scale("apps/v1", "Deployment", "web", 1, "default")
        await eventually(lambda: rolled_out(kube, "web:v1", 1))
        assert len(await rss(kube)) == 1
        reasons = [e["reason"] for e in (await kube.client.list("v1", "Event", "default")).items
                   if e["involvedObject"]["kind"] == "Deployment"]
        assert "ScalingReplicaSet" in reasons and "NewReplicaSetAvailable" in reasons


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("surge", "unavailable", "replicas"), [(1, 1, 4), ("25%", "25%", 4), (0, 1, 3),
                                                                 (2, 0, 3)])
async def test_rolling_update_keeps_availability(kube: KubeAPI, controllers: list[ControllerRunner],
                                                 surge: Any, unavailable: Any, replicas: int) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}
    async with Kubelet(kube.client):
        await kube.client.create(deployment(replicas, strategy=strategy))
        await eventually(lambda: rolled_out(kube, "web:v1", replicas))
        d = await get_d(kube)
        floor, ceiling = replicas - max_unavailable(d), replicas + max_surge(d)
        async with PodMonitor(kube.client) as mon:
            await set_image(kube.client, "web:v2")
            await eventually(lambda: rolled_out(kube, "web:v2", replicas))
        assert mon.min_ready >= floor, (mon.min_ready, floor)
        assert mon.max_total <= ceiling, (mon.max_total, ceiling)
        assert mon.mixed  # it rolled, not recreated
    d = await get_d(kube)
    assert d["metadata"]["annotations"][REVISION] == "2"
    sets = {rs["metadata"]["annotations"][REVISION]: rs for rs in await rss(kube)}
    assert set(sets) == {"1", "2"} and sets["1"]["spec"]["replicas"] == 0 and sets["2"]["spec"]["replicas"] == replicas
    assert cond(d, "Progressing")["reason"] == "NewReplicaSetAvailable"


@pytest.mark.timeout(60)
async def test_recreate_never_mixes_versions(kube: KubeAPI, controllers: list[ControllerRunner]) -> None:
    async with Kubelet(kube.client):
        await kube.client.create(deployment(3, strategy={"type": "Recreate"}))
        await eventually(lambda: rolled_out(kube, "web:v1", 3))
        async with PodMonitor(kube.client) as mon:
            await set_image(kube.client, "web:v2")
            await eventually(lambda: rolled_out(kube, "web:v2", 3))
        assert not mon.mixed
        assert mon.min_ready == 0  # everything went down first


@pytest.mark.timeout(60)
async def test_rollback_as_kubectl_undo_does(kube: KubeAPI, controllers: list[ControllerRunner]) -> None:
    async with Kubelet(kube.client):
        await kube.client.create(deployment(2))
        await eventually(lambda: rolled_out(kube, "web:v1", 2))
        await set_image(kube.client, "web:v2")
        await eventually(lambda: rolled_out(kube, "web:v2", 2))
        # kubectl rollout undo: the template of the previous revision's ReplicaSet, hash label removed
        old = next(rs for rs in await rss(kube) if rs["metadata"]["annotations"][REVISION] == "1")
        template = old["spec"]["template"]
        del template["metadata"]["labels"]["pod-template-hash"]
        await kube.client.patch("apps/v1", "Deployment", "web", [{"op": "replace", "path": "/spec/template",
                                                                  "value": template}],
                                namespace="default", patch_type="json")
        await eventually(lambda: rolled_out(kube, "web:v1", 2))
    sets = await rss(kube)
    assert len(sets) == 2  # the old ReplicaSet came back: no third one
    back = next(rs for rs in sets if rs["metadata"]["uid"] == old["metadata"]["uid"])
    assert back["metadata"]["annotations"][REVISION] == "3"
    assert back["metadata"]["annotations"][REVISION_HISTORY] == "1"
    assert (await get_d(kube))["metadata"]["annotations"][REVISION] == "3"
    # Each rollout, the rollback and each completion went on the incident timeline's change stream.
    changes = [(c.kind, c.summary) for c in await ChangeLog(kube.store).between(0, 2**62, service="default/web")]
    assert [s for k, s in changes if k == "deploy" and "started" in s] == [
        "Deployment default/web: rollout of revision 1 started (web:v1)",
        "Deployment default/web: rollout of revision 2 started (web:v2)"]
    assert [s for k, s in changes if k == "rollback"] == [
        f"Deployment default/web: rolled back to replica set {old['metadata']['name']} (revision 1 is now 3)"]
    assert sum("successfully progressed" in s for _, s in changes) >= 3


@pytest.mark.timeout(60)
async def test_paused_deployment_does_not_roll(kube: KubeAPI, controllers: list[ControllerRunner]) -> None:
    async with Kubelet(kube.client):
        await kube.client.create(deployment(2))
        await eventually(lambda: rolled_out(kube, "web:v1", 2))
        await kube.client.patch("apps/v1", "Deployment", "web", {"spec": {"paused": True}}, namespace="default")
        await set_image(kube.client, "web:v2")

        async def paused_seen() -> bool:
            d = await get_d(kube)
            return (d["status"].get("observedGeneration") == d["metadata"]["generation"]
                    and cond(d, "Progressing").get("reason") == "DeploymentPaused")

        await eventually(paused_seen)
        assert len(await rss(kube)) == 1  # no new ReplicaSet while paused
        await kube.client.set_scale("apps/v1", "Deployment", "web", 3, "default")  # scaling still works
        await eventually(lambda: _n_pods(kube, 3))
        await kube.client.patch("apps/v1", "Deployment", "web", {"spec": {"paused": False}}, namespace="default")
        await eventually(lambda: rolled_out(kube, "web:v2", 3))
    reasons = {e["reason"] for e in (await kube.client.list("v1", "Event", "default")).items
               if e["involvedObject"]["kind"] == "Deployment"}
    assert {"DeploymentPaused", "DeploymentResumed"} <= reasons


async def _n_pods(kube: KubeAPI, n: int) -> bool:
    return len(await live_pods(kube)) == n


@pytest.mark.timeout(60)
async def test_progress_deadline_exceeded(kube: KubeAPI, controllers: list[ControllerRunner]) -> None:
    async with Kubelet(kube.client) as kubelet:
        kubelet.admit = lambda pod: pod["spec"]["containers"][0]["image"] == "web:v1"  # v2 never gets ready
        await kube.client.create(deployment(2, progressDeadlineSeconds=1))
        await eventually(lambda: rolled_out(kube, "web:v1", 2))
        await set_image(kube.client, "web:v2")

        async def stalled() -> bool:
            c = cond(await get_d(kube), "Progressing")
            return c.get("reason") == "ProgressDeadlineExceeded" and c.get("status") == "False"

        await eventually(stalled, tries=300, every_s=0.05)
        d = await get_d(kube)
        assert d["status"]["availableReplicas"] >= 1  # the old pods keep serving
        events = [e for e in (await kube.client.list("v1", "Event", "default")).items
                  if e["reason"] == "ProgressDeadlineExceeded"]
        assert events and events[0]["type"] == "Warning"
        # a fixed image makes progress again
        kubelet.admit = lambda pod: True
        await set_image(kube.client, "web:v3")
        await eventually(lambda: rolled_out(kube, "web:v3", 2))
        assert cond(await get_d(kube), "Progressing")["reason"] == "NewReplicaSetAvailable"


@pytest.mark.timeout(60)
async def test_revision_history_limit(kube: KubeAPI, controllers: list[ControllerRunner]) -> None:
    async with Kubelet(kube.client):
        await kube.client.create(deployment(1, revisionHistoryLimit=1))
        for v in ("v1", "v2", "v3", "v4"):
            if v != "v1":
                await set_image(kube.client, f"web:{v}")
            await eventually(lambda v=v: rolled_out(kube, f"web:{v}", 1))  # type: ignore[misc]

        async def two_left() -> bool:
            return len(await rss(kube)) == 2

        await eventually(two_left)
        revisions = sorted(int(rs["metadata"]["annotations"][REVISION]) for rs in await rss(kube))
        assert revisions == [3, 4]


@pytest.mark.timeout(60)
async def test_restart_rolls_new_pods(kube: KubeAPI, controllers: list[ControllerRunner]) -> None:
    async with Kubelet(kube.client):
        await kube.client.create(deployment(2))
        await eventually(lambda: rolled_out(kube, "web:v1", 2))
        before = {p["metadata"]["name"] for p in await live_pods(kube)}
        await kube.client.patch("apps/v1", "Deployment", "web", {"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": "2026-12-05T12:00:00Z"}}}}}, namespace="default",
            patch_type="strategic")

        async def replaced() -> bool:
            now = {p["metadata"]["name"] for p in await live_pods(kube)}
            return await rolled_out(kube, "web:v1", 2) and not (now & before)

        await eventually(replaced)
