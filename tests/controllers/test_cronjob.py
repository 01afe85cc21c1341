"""The CronJob controller with an injected clock: Jobs at schedule times, Forbid, Replace, history, status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pitwall.controllers.cronjob import CronJobController, job_name
from pitwall.kube import KubeAPI, KubeClient, NotFoundError
from tests.controllers.conftest import eventually, run_controller


class Clock:
    """A clock the test moves; ``start`` is the next whole minute after now."""

    def __init__(self) -> None:
        self.start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        self.t = self.start

    def __call__(self) -> datetime:
        return self.t

    def at_minute(self, n: int, seconds: int = 5) -> None:
        """``n`` minutes after the start, plus ``seconds``."""
        self.t = self.start + timedelta(minutes=n, seconds=seconds)


def cronjob(name: str, policy: str = "Allow", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name, "namespace": "default"},
            "spec": {"schedule": "* * * * *", "concurrencyPolicy": policy, **spec,
                     "jobTemplate": {"metadata": {"labels": {"cron": name}}, "spec": {"template": {"spec": {
                         "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}}}}}}


async def jobs(c: KubeClient, cron: str) -> list[dict[str, Any]]:
    items = (await c.list("batch/v1", "Job", "default", label_selector=f"cron={cron}")).items
    return sorted((j for j in items if not j["metadata"].get("deletionTimestamp")),
                  key=lambda j: j["metadata"]["name"])


async def finish(c: KubeClient, name: str, type_: str = "Complete") -> None:
    j = await c.get("batch/v1", "Job", name, "default")
    t = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    j["status"] = {"startTime": t, "conditions": [{"type": type_, "status": "True", "lastTransitionTime": t}],
                   **({"completionTime": t, "succeeded": 1} if type_ == "Complete" else {"failed": 1})}
    await c.update_status(j)


async def status(c: KubeClient, name: str) -> dict[str, Any]:
    s: dict[str, Any] = (await c.get("batch/v1", "CronJob", name, "default")).get("status") or {}
    return s


@pytest.mark.timeout(30)
async def test_jobs_at_schedule_times_with_history_limits(kube: KubeAPI) -> None:
    c = kube.client
    clock = Clock()
    ctl = CronJobController(c, now=clock)
    await c.create(cronjob("tick", successfulJobsHistoryLimit=2))
    clock.at_minute(0, seconds=-30)  # before the first time: nothing, requeued for the next minute
    after = await ctl.reconcile("default/tick")
    assert after is not None and 30 <= after <= 31
    assert await jobs(c, "tick") == []
    for n in range(4):
        clock.at_minute(n)
        await ctl.reconcile("default/tick")
        got = await jobs(c, "tick")
        assert got[-1]["metadata"]["name"] == job_name("tick", clock.start + timedelta(minutes=n))
        assert got[-1]["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
        await ctl.reconcile("default/tick")  # again at the same time: no second Job
        assert len(await jobs(c, "tick")) == len(got)
        await finish(c, got[-1]["metadata"]["name"])
    await ctl.reconcile("default/tick")
    names = [j["metadata"]["name"] for j in await jobs(c, "tick")]
    assert names == [job_name("tick", clock.start + timedelta(minutes=n)) for n in (2, 3)]  # history limit 2
    st = await status(c, "tick")
    assert st["lastScheduleTime"] == (clock.start + timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "lastSuccessfulTime" in st and "active" not in st
    events = {e["reason"] for e in (await c.list("v1", "Event", "default")).items}
    assert {"SuccessfulCreate", "SawCompletedJob", "SuccessfulDelete"} <= events


@pytest.mark.timeout(30)
async def test_forbid_and_replace(kube: KubeAPI) -> None:
    c = kube.client
    clock = Clock()
    ctl = CronJobController(c, now=clock)
    await c.create(cronjob("solo", "Forbid"))
    await c.create(cronjob("fresh", "Replace"))
    for n in range(3):
        clock.at_minute(n)
        await ctl.reconcile("default/solo")
        await ctl.reconcile("default/fresh")
    solo = await jobs(c, "solo")
    assert [j["metadata"]["name"] for j in solo] == [job_name("solo", clock.start)]  # the first still runs
    assert [r["name"] for r in (await status(c, "solo"))["active"]] == [job_name("solo", clock.start)]
    fresh = await jobs(c, "fresh")
    assert [j["metadata"]["name"] for j in fresh] == [job_name("fresh", clock.start + timedelta(minutes=2))]
    await finish(c, job_name("solo", clock.start))
    clock.at_minute(3)
    await ctl.reconcile("default/solo")
    assert [j["metadata"]["name"] for j in await jobs(c, "solo")][-1] == job_name("solo", clock.start + timedelta(minutes=3))
    events = {e["reason"] for e in (await c.list("v1", "Event", "default")).items}
    assert "JobAlreadyActive" in events


@pytest.mark.timeout(30)
async def test_suspend_deadline_too_many_missed_and_bad_schedule(kube: KubeAPI) -> None:
    c = kube.client
    clock = Clock()
    ctl = CronJobController(c, now=clock)
    await c.create(cronjob("held", suspend=True))
    clock.at_minute(2)
    assert await ctl.reconcile("default/held") is None
    assert await jobs(c, "held") == []

    await c.create(cronjob("late", startingDeadlineSeconds=10))
    clock.at_minute(1, seconds=30)  # 30 s after the time: past the 10 s deadline
    await ctl.reconcile("default/late")
    assert await jobs(c, "late") == []

    await c.create(cronjob("away"))
    clock.at_minute(300)  # five hours of missed minutes: only the latest runs
    await ctl.reconcile("default/away")
    assert [j["metadata"]["name"] for j in await jobs(c, "away")] == [job_name("away", clock.start + timedelta(minutes=300))]

    await c.create({**cronjob("zoned"), "spec": {**cronjob("zoned")["spec"], "timeZone": "Nowhere/Land"}})
    assert await ctl.reconcile("default/zoned") is None
    reasons = {e["reason"] for e in (await c.list("v1", "Event", "default")).items}
    assert {"TooManyMissedTimes", "UnknownTimeZone"} <= reasons


@pytest.mark.timeout(30)
async def test_runs_under_the_loop(kube: KubeAPI) -> None:
    c = kube.client
    clock = Clock()
    clock.at_minute(0)
    r = await run_controller(c, CronJobController(c, now=clock))
    try:
        await c.create(cronjob("looped"))

        async def one() -> bool:
            return len(await jobs(c, "looped")) == 1

        await eventually(one)
        await c.delete("batch/v1", "CronJob", "looped", "default")
        with pytest.raises(NotFoundError):
            await c.get("batch/v1", "CronJob", "looped", "default")
    finally:
        await r.stop()
