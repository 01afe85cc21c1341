"""The Job controller: completions with parallelism, back-off limit, deadline, suspend, TTL, status."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pitwall.controllers.job import JobController, backoff_delay
from pitwall.kube import Conflict, KubeAPI, KubeClient, NotFoundError
from tests.controllers.conftest import eventually, run_controller


def job(name: str = "pi", *, completions: int | None = 3, parallelism: int = 2, backoff: int = 6,
        restart: str = "Never", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"parallelism": parallelism, "backoffLimit": backoff,
                            "template": {"spec": {"restartPolicy": restart,
                                                  "containers": [{"name": "c", "image": "pi"}]}}, **extra}
    if completions is not None:
        spec["completions"] = completions
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": "default"},
            "spec": spec}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def finish(client: KubeClient, pod: dict[str, Any], phase: str) -> None:
    """What a kubelet writes when the pod's only container exits (0: Succeeded, else Failed)."""
    m = pod["metadata"]
    for _ in range(10):
        try:
            cur = await client.get("v1", "Pod", m["name"], m["namespace"])
        except NotFoundError:
            return
        code = 0 if phase == "Succeeded" else 1
        cur["status"] = {"phase": phase, "conditions": [{"type": "Ready", "status": "False",
                                                          "reason": "PodCompleted", "lastTransitionTime": _now()}],
                         "containerStatuses": [{"name": "c", "ready": False, "restartCount": 0, "image": "pi",
                                                "imageID": "", "state": {"terminated": {
                                                    "exitCode": code, "startedAt": _now(), "finishedAt": _now()}}}]}
        try:
            await client.update_status(cur)
            return
        except NotFoundError:  # deleted between the read and the write
            return
        except Conflict:
            continue


async def pods_of(client: KubeClient, name: str) -> list[dict[str, Any]]:
    return (await client.list("v1", "Pod", "default", label_selector=f"job-name={name}")).items


def phase(p: dict[str, Any]) -> str:
    return str((p.get("status") or {}).get("phase") or "Pending")


async def cond(client: KubeClient, name: str, type_: str) -> dict[str, Any] | None:
    j = await client.get("batch/v1", "Job", name, "default")
    return next((c for c in j.get("status", {}).get("conditions", []) if c["type"] == type_
                 and c["status"] == "True"), None)


def test_backoff_delay_doubles_to_six_minutes() -> None:
    assert [backoff_delay(n) for n in range(6)] == [0, 10, 20, 40, 80, 160]
    assert backoff_delay(7) == 360 and backoff_delay(100) == 360


@pytest.mark.timeout(30)
async def test_completions_with_parallelism(kube: KubeAPI) -> None:
    c = kube.client
    r = await run_controller(c, JobController(c))
    try:
        await c.create(job())
        most_active = 0
        for _ in range(400):  # bounded: finish running pods one at a time
            pods = await pods_of(c, "pi")
            running = [p for p in pods if phase(p) == "Pending"]
            most_active = max(most_active, len(running))
            if await cond(c, "pi", "Complete"):
                break
            if running:
                await finish(c, running[0], "Succeeded")
            await asyncio.sleep(0.02)
        assert await cond(c, "pi", "Complete")
        assert most_active <= 2
        j = await c.get("batch/v1", "Job", "pi", "default")
        st = j["status"]
        assert st["succeeded"] == 3 and "active" not in st and st["startTime"] and st["completionTime"]
        pods = await pods_of(c, "pi")
        assert len(pods) == 3
        for p in pods:
            m = p["metadata"]
            assert m["name"].startswith("pi-") and len(m["name"]) == len("pi-") + 5
            assert m["labels"]["batch.kubernetes.io/job-name"] == "pi"
            assert m["labels"]["controller-uid"] == j["metadata"]["uid"]
            assert m["ownerReferences"][0]["kind"] == "Job" and m["ownerReferences"][0]["controller"]
            assert p["spec"]["restartPolicy"] == "Never"
        events = (await c.list("v1", "Event", "default")).items
        assert {"SuccessfulCreate", "Completed"} <= {e["reason"] for e in events}
    finally:
        await r.stop()


async def fail_every_pod(c: KubeClient, name: str, until: Callable[[], Awaitable[bool]], tries: int = 400) -> None:
    for _ in range(tries):
        if await until():
            return
        for p in await pods_of(c, name):
            if phase(p) == "Pending":
                await finish(c, p, "Failed")
        await asyncio.sleep(0.02)
    raise AssertionError("not reached")


@pytest.mark.timeout(30)
async def test_backoff_limit_exceeded_fails_the_job(kube: KubeAPI) -> None:
    c = kube.client
    r = await run_controller(c, JobController(c, backoff_base_s=0.05))
    try:
        await c.create(job("bad", completions=1, parallelism=1, backoff=2))
        async def failed_() -> bool:
            return await cond(c, "bad", "Failed") is not None

        await fail_every_pod(c, "bad", failed_)
        failed = await cond(c, "bad", "Failed")
        assert failed is not None and failed["reason"] == "BackoffLimitExceeded"
        j = await c.get("batch/v1", "Job", "bad", "default")
        assert j["status"]["failed"] == 3 and "completionTime" not in j["status"]
        assert len(await pods_of(c, "bad")) == 3
        events = (await c.list("v1", "Event", "default")).items
        assert "BackoffLimitExceeded" in {e["reason"] for e in events}
    finally:
        await r.stop()


@pytest.mark.timeout(30)
async def test_deadline_suspend_and_ttl(kube: KubeAPI) -> None:
    c = kube.client
    r = await run_controller(c, JobController(c))
    try:
        await c.create(job("slow", completions=1, parallelism=1, activeDeadlineSeconds=1))

        async def deadline() -> bool:
            f = await cond(c, "slow", "Failed")
            return f is not None and f["reason"] == "DeadlineExceeded"

        await eventually(deadline, tries=300)

        async def no_pod_running() -> bool:
            return all(p["metadata"].get("deletionTimestamp") for p in await pods_of(c, "slow"))

        await eventually(no_pod_running)

        await c.create(job("held", completions=1, parallelism=1, suspend=True))
        async def suspended() -> bool:
            return await cond(c, "held", "Suspended") is not None

        await eventually(suspended)
        assert await pods_of(c, "held") == []
        await c.patch("batch/v1", "Job", "held", {"spec": {"suspend": False}}, namespace="default")

        async def one_pod() -> bool:
            return len(await pods_of(c, "held")) == 1

        await eventually(one_pod)

        await c.create(job("brief", completions=1, parallelism=1, ttlSecondsAfterFinished=0))

        async def gone() -> bool:
            pods = await pods_of(c, "brief")
            for p in pods:
                if phase(p) == "Pending":
                    await finish(c, p, "Succeeded")
            try:
                await c.get("batch/v1", "Job", "brief", "default")
            except NotFoundError:
                return True
            return False

        await eventually(gone)
    finally:
        await r.stop()


def test_backoff_counts_failures_since_the_last_success() -> None:
    def ended(phase: str, at: datetime) -> dict[str, Any]:
        return {"metadata": {"name": "x"}, "status": {"phase": phase, "containerStatuses": [
            {"state": {"terminated": {"finishedAt": at.strftime("%Y-%m-%dT%H:%M:%SZ")}}}]}}

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ctl = JobController(None)  # type: ignore[arg-type]  # pure computation: no client needed
    failed = [ended("Failed", t0), ended("Failed", t0 + timedelta(seconds=1)), ended("Failed", t0 + timedelta(seconds=5))]
    # three failures: 40 s after the last one
    assert ctl._backoff_left(failed, [], 0, t0 + timedelta(seconds=5)) == 40
    # a success at t0+2 resets the count: one failure since, 10 s
    assert ctl._backoff_left(failed, [ended("Succeeded", t0 + timedelta(seconds=2))], 0,
                             t0 + timedelta(seconds=5)) == 10
    assert ctl._backoff_left(failed, [], 0, t0 + timedelta(seconds=60)) == 0
