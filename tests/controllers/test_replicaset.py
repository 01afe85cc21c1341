"""The ReplicaSet controller: counts, names, owners, adoption, release, deletion order, status."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from pitwall.controllers.loop import ControllerRunner
from pitwall.controllers.replicaset import ReplicaSetController, pod_from_template, pods_to_delete
from pitwall.kube import Conflict, KubeAPI, KubeClient
from tests.controllers.conftest import eventually, run_controller, set_ready

NAME = re.compile(r"^web-[bcdfghjklmnpqrstvwxz2456789]{5}$")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def rs(replicas: int = 3, min_ready: int = 0) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": replicas, "minReadySeconds": min_ready, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}


def pod(name: str, *, node: str = "", phase: str = "Running", ready: bool = True, ready_s: float = 100,
        restarts: int = 0, age_s: float = 1000) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "containerStatuses": [{"restartCount": restarts}]}
    if ready:
        status["conditions"] = [{"type": "Ready", "status": "True",
                                 "lastTransitionTime": (T0 - timedelta(seconds=ready_s)).isoformat()}]
    return {"metadata": {"name": name, "uid": name,
                         "creationTimestamp": (T0 - timedelta(seconds=age_s)).isoformat()},
            "spec": {"nodeName": node}, "status": status}


def names(pods: list[dict[str, Any]]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


def test_deletion_order_as_upstream() -> None:
    pods = [
        pod("running-ready", node="n"),
        pod("unscheduled", node="", phase="Pending", ready=False),
        pod("pending", node="n", phase="Pending", ready=False),
        pod("unknown", node="n", phase="Unknown", ready=False),
        pod("not-ready", node="n", ready=False),
    ]
    assert names(pods_to_delete(pods, 5, at=T0)) == ["unscheduled", "pending", "unknown", "not-ready",
                                                      "running-ready"]


def test_deletion_prefers_restarts_recent_readiness_newer_and_doubled_up() -> None:
    assert names(pods_to_delete([pod("calm", node="n"), pod("crashy", node="n", restarts=5)], 1, at=T0)) == ["crashy"]
    assert names(pods_to_delete([pod("old-ready", node="n", ready_s=5000), pod("new-ready", node="n", ready_s=3)],
                                1, at=T0)) == ["new-ready"]
    assert names(pods_to_delete([pod("old", node="n", age_s=5000), pod("young", node="n", age_s=3)],
                                1, at=T0)) == ["young"]
    cheap, dear = pod("cheap", node="n", restarts=0), pod("dear", node="n", restarts=9)
    cheap["metadata"]["annotations"] = {"controller.kubernetes.io/pod-deletion-cost": "-5"}
    dear["metadata"]["annotations"] = {"controller.kubernetes.io/pod-deletion-cost": "100"}
    assert names(pods_to_delete([dear, cheap], 1, at=T0)) == ["cheap"]  # cost before restarts
    crowded = [pod("a1", node="a"), pod("a2", node="a"), pod("b1", node="b")]
    assert names(pods_to_delete(crowded, 1, at=T0))[0] in ("a1", "a2")
    assert pods_to_delete(crowded, 0, at=T0) == []


def test_pod_from_template() -> None:
    obj = rs()
    obj["metadata"]["uid"] = "u1"
    p = pod_from_template(obj)
    assert p["metadata"]["generateName"] == "web-"
    assert p["metadata"]["labels"] == {"app": "web"}
    assert p["metadata"]["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web",
                                                 "uid": "u1", "controller": True, "blockOwnerDeletion": True}]
    assert p["spec"]["containers"][0]["image"] == "nginx"


@pytest.fixture
async def controller(kube: KubeAPI) -> AsyncIterator[ControllerRunner]:
    r = await run_controller(kube.client, ReplicaSetController(kube.client))
    try:
        yield r
    finally:
        await r.stop()


async def pods_of(kube: KubeAPI) -> list[dict[str, Any]]:
    return [p for p in (await kube.client.list("v1", "Pod", "default")).items
            if not p["metadata"].get("deletionTimestamp")]


async def status(kube: KubeAPI) -> dict[str, Any]:
    s: dict[str, Any] = (await kube.client.get("apps/v1", "ReplicaSet", "web", "default")).get("status") or {}
    return s


@pytest.mark.timeout(30)
async def test_scale_up_and_down_with_status(kube: KubeAPI, controller: ControllerRunner) -> None:
    created = await kube.client.create(rs(3))

    async def three() -> bool:
        return len(await pods_of(kube)) == 3 and (await status(kube)).get("replicas") == 3

    await eventually(three)
    pods = await pods_of(kube)
    for p in pods:
        assert NAME.match(p["metadata"]["name"]), p["metadata"]["name"]
        [ref] = p["metadata"]["ownerReferences"]
        assert ref["uid"] == created["metadata"]["uid"] and ref["controller"] and ref["blockOwnerDeletion"]
    for p in pods:
        await set_ready(kube.client, p)

    async def all_ready() -> bool:
        s = await status(kube)
        return (s.get("readyReplicas") == 3 and s.get("availableReplicas") == 3 and s.get("fullyLabeledReplicas") == 3
                and s.get("observedGeneration") == 1)

    await eventually(all_ready)
    # one pod turns not ready: scaling down to 2 deletes it first
    unready = pods[1]["metadata"]["name"]
    await set_ready(kube.client, pods[1], ready=False)
    await eventually(lambda: _is((status(kube)), "readyReplicas", 2))
    await kube.client.set_scale("apps/v1", "ReplicaSet", "web", 2, "default")

    async def two() -> bool:
        return len(await pods_of(kube)) == 2 and (await status(kube)).get("replicas") == 2

    await eventually(two)
    assert unready not in names(await pods_of(kube))
    await kube.client.set_scale("apps/v1", "ReplicaSet", "web", 0, "default")

    async def none() -> bool:
        return not await pods_of(kube) and (await status(kube)).get("replicas") == 0

    await eventually(none)
    reasons = {e["reason"] for e in (await kube.client.list("v1", "Event", "default")).items
               if e["involvedObject"]["kind"] == "ReplicaSet"}
    assert {"SuccessfulCreate", "SuccessfulDelete"} <= reasons


async def _is(status_coro: Any, field: str, value: int) -> bool:
    s = await status_coro
    return bool(s.get(field) == value)


@pytest.mark.timeout(30)
async def test_deleted_pods_are_replaced(kube: KubeAPI, controller: ControllerRunner) -> None:
    await kube.client.create(rs(2))

    async def two() -> bool:
        return len(await pods_of(kube)) == 2

    await eventually(two)
    first = names(await pods_of(kube))
    await kube.client.delete("v1", "Pod", first[0], "default")

    async def replaced() -> bool:
        now = names(await pods_of(kube))
        return len(now) == 2 and first[0] not in now

    await eventually(replaced)


@pytest.mark.timeout(30)
async def test_adopts_orphans_and_releases_pods_that_stop_matching(kube: KubeAPI,
                                                                    controller: ControllerRunner) -> None:
    orphan = {"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "orphan", "namespace": "default", "labels": {"app": "web"}},
              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    await kube.client.create(orphan)
    created = await kube.client.create(rs(3))

    async def three_with_orphan() -> bool:
        pods = await pods_of(kube)
        adopted = [p for p in pods if p["metadata"]["name"] == "orphan"
                   and (p["metadata"].get("ownerReferences") or [{}])[0].get("uid") == created["metadata"]["uid"]]
        return len(pods) == 3 and len(adopted) == 1

    await eventually(three_with_orphan)
    # the adopted pod stops matching: released (no owner) and replaced
    await kube.client.patch("v1", "Pod", "orphan", {"metadata": {"labels": {"app": "other"}}}, namespace="default")

    async def released() -> bool:
        pods = await pods_of(kube)
        o = next(p for p in pods if p["metadata"]["name"] == "orphan")
        owned = [p for p in pods if p["metadata"].get("ownerReferences")]
        return not o["metadata"].get("ownerReferences") and len(owned) == 3

    await eventually(released)


class _KubeletRacingClient:
    """The controller's client, but each pod list (and each pod get, when ``on_get``) is followed by a
    kubelet-like status write to the pods read: the copies the controller holds are stale when it tries to
    adopt them."""

    def __init__(self, client: KubeClient, on_get: bool = False) -> None:
        self._client = client
        self._on_get = on_get
        self._writes = 0

    async def _kubelet_writes(self, pod: dict[str, Any]) -> None:
        self._writes += 1  # a new restart count each time: never a no-op write
        await set_ready(self._client, pod, ready=False, restarts=self._writes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def list(self, api_version: str, kind: str, namespace: str = "", **kw: Any) -> Any:
        listed = await self._client.list(api_version, kind, namespace, **kw)
        if kind == "Pod":
            for p in listed.items:
                await self._kubelet_writes(p)
        return listed

    async def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> Any:
        got = await self._client.get(api_version, kind, name, namespace)
        if kind == "Pod" and self._on_get:
            await self._kubelet_writes(got)
        return got


@pytest.mark.timeout(30)
async def test_an_orphan_changed_under_its_adoption_is_adopted_not_replaced(kube: KubeAPI) -> None:
    """A pod Velero restored (no owner), written to by its kubelet while the ReplicaSet adopts it: the
    ReplicaSet re-reads it and adopts it; it makes no second pod (which it would then delete one of as
    surplus, perhaps the restored one, still held by its restore-wait)."""
    orphan = {"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "restored", "namespace": "default", "labels": {"app": "web"}},
              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    await kube.client.create(orphan)
    created = await kube.client.create(rs(1))
    rsc = ReplicaSetController(cast(KubeClient, _KubeletRacingClient(kube.client)))
    await rsc.reconcile("default/web")
    [p] = await pods_of(kube)
    assert p["metadata"]["name"] == "restored"
    assert [r["uid"] for r in p["metadata"]["ownerReferences"]] == [created["metadata"]["uid"]]


@pytest.mark.timeout(30)
async def test_an_orphan_that_keeps_changing_fails_the_sync_without_a_new_pod(kube: KubeAPI) -> None:
    """Never adopted (it changes after every read): the sync fails with Conflict, for the work queue to retry,
    instead of making a pod beside it."""
    await kube.client.create({"apiVersion": "v1", "kind": "Pod",
                              "metadata": {"name": "restored", "namespace": "default", "labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
    await kube.client.create(rs(1))
    rsc = ReplicaSetController(cast(KubeClient, _KubeletRacingClient(kube.client, on_get=True)))
    with pytest.raises(Conflict, match="restored"):
        await rsc.reconcile("default/web")
    [p] = await pods_of(kube)
    assert p["metadata"]["name"] == "restored" and not p["metadata"].get("ownerReferences")


@pytest.mark.timeout(30)
async def test_min_ready_seconds_delays_availability(kube: KubeAPI, controller: ControllerRunner) -> None:
    await kube.client.create(rs(1, min_ready=3600))

    async def one() -> bool:
        return len(await pods_of(kube)) == 1

    await eventually(one)
    [p] = await pods_of(kube)
    await set_ready(kube.client, p)  # ready just now: not available for an hour
    await eventually(lambda: _is(status(kube), "readyReplicas", 1))
    assert not (await status(kube)).get("availableReplicas")
    long_ago = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    await set_ready(kube.client, p, since=long_ago)
    await eventually(lambda: _is(status(kube), "availableReplicas", 1))
