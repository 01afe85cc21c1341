"""The shared controller loop: queue de-duplication, one worker per key, back-off, requeue, relist, leadership."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from pitwall.controllers.loop import (
    ControllerManager,
    ControllerRunner,
    RateLimiter,
    WorkQueue,
    object_key,
    record_event,
)
from pitwall.kube import KubeAPI, KubeClient, WatchEvent
from pitwall.storage.revstore.election import Election
from tests.controllers.conftest import eventually


def cm(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": data}


class Fake:
    """Reconciles ConfigMaps; a Secret annotated ``owner: <cm>`` concerns that ConfigMap."""

    name = "fake-controller"
    primary = ("v1", "ConfigMap")
    secondary: Sequence[tuple[str, str]] = [("v1", "Secret")]

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.in_flight: set[str] = set()
        self.overlap = False
        self.fail: dict[str, int] = {}  # key -> failures left
        self.requeue: dict[str, float] = {}
        self.gate: asyncio.Event | None = None

    def keys_for(self, api_version: str, kind: str, obj: dict[str, Any]) -> list[str]:
        if kind == "ConfigMap":
            return [object_key(obj)]
        owner = ((obj.get("metadata") or {}).get("annotations") or {}).get("owner")
        return [f"{obj['metadata']['namespace']}/{owner}"] if owner else []

    async def reconcile(self, key: str) -> float | None:
        if key in self.in_flight:
            self.overlap = True
        self.in_flight.add(key)
        try:
            self.calls.append(key)
            if self.gate is not None:
                await self.gate.wait()
            if self.fail.get(key, 0) > 0:
                self.fail[key] -= 1
                raise RuntimeError("boom")
            return self.requeue.get(key)
        finally:
            self.in_flight.discard(key)


@pytest.fixture
async def runner(kube: KubeAPI) -> AsyncIterator[tuple[ControllerRunner, Fake]]:
    fake = Fake()
    r = ControllerRunner(kube.client, fake, workers=4, resync_s=0)
    await r.start()
    await asyncio.wait_for(r.synced.wait(), 5)
    try:
        yield r, fake
    finally:
        await r.stop()


@pytest.mark.timeout(10)
async def test_queue_deduplicates_waiting_keys() -> None:
    q = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    assert await q.get() == "a"
    q.add("a")  # added while processing: not handed to another worker
    assert await q.get() == "b"
    assert len(q) == 0
    q.done("a")  # ... but queued again once done
    assert await q.get() == "a"
    q.done("a")
    q.done("b")
    assert len(q) == 0


@pytest.mark.timeout(10)
async def test_add_after_keeps_the_earliest() -> None:
    q = WorkQueue()
    q.add_after("a", 30)
    q.add_after("a", 0.01)
    q.add_after("a", 60)  # later than pending: ignored
    assert q.waiting("a")
    assert await asyncio.wait_for(q.get(), 5) == "a"
    assert not q.waiting("a")
    q.clear()


def test_backoff_doubles_from_5ms_to_1000s() -> None:
    rl = RateLimiter()
    delays = [rl.when("k") for _ in range(25)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[-1] == 1000.0
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert rl.when("other") == 0.005
    rl.forget("k")
    assert rl.when("k") == 0.005


@pytest.mark.timeout(20)
async def test_primary_and_secondary_events_reach_the_owner_key(
        kube: KubeAPI, runner: tuple[ControllerRunner, Fake]) -> None:
    _r, fake = runner
    await kube.client.create(cm("one"))

    async def seen_one() -> bool:
        return "default/one" in fake.calls

    await eventually(seen_one)
    before = fake.calls.count("default/one")
    await kube.client.create({"apiVersion": "v1", "kind": "Secret",
                              "metadata": {"name": "s", "namespace": "default", "annotations": {"owner": "one"}}})

    async def seen_again() -> bool:
        return fake.calls.count("default/one") > before

    await eventually(seen_again)


@pytest.mark.timeout(20)
async def test_existing_objects_are_listed_at_start(kube: KubeAPI) -> None:
    await kube.client.create(cm("early"))
    fake = Fake()
    r = ControllerRunner(kube.client, fake, resync_s=0)
    await r.start()
    try:
        async def seen() -> bool:
            return "default/early" in fake.calls

        await eventually(seen)
    finally:
        await r.stop()


@pytest.mark.timeout(20)
async def test_a_key_never_runs_twice_at_once(kube: KubeAPI, runner: tuple[ControllerRunner, Fake]) -> None:
    r, fake = runner
    fake.gate = asyncio.Event()
    await kube.client.create(cm("busy"))

    async def started() -> bool:
        return "default/busy" in fake.in_flight

    await eventually(started)
    for i in range(5):  # changes while it runs: queued once, run after, never alongside
        await kube.client.patch("v1", "ConfigMap", "busy", {"data": {"i": str(i)}}, namespace="default")
        r.enqueue("default/busy")
    await asyncio.sleep(0.1)
    assert fake.calls.count("default/busy") == 1
    fake.gate.set()

    async def twice() -> bool:
        return fake.calls.count("default/busy") >= 2 and not fake.in_flight

    await eventually(twice)
    await asyncio.sleep(0.1)
    assert not fake.overlap
    assert fake.calls.count("default/busy") == 2  # five changes while busy: one more run


@pytest.mark.timeout(20)
async def test_failures_retry_with_backoff_then_forget(kube: KubeAPI, runner: tuple[ControllerRunner, Fake]) -> None:
    r, fake = runner
    fake.fail["default/flaky"] = 4
    await kube.client.create(cm("flaky"))

    async def recovered() -> bool:
        return fake.calls.count("default/flaky") >= 5 and fake.fail["default/flaky"] == 0

    await eventually(recovered)
    await eventually(lambda: _true(r.limiter.failures("default/flaky") == 0))
    assert r.errors >= 4


async def _true(v: bool) -> bool:
    return v


@pytest.mark.timeout(20)
async def test_requeue_after(kube: KubeAPI, runner: tuple[ControllerRunner, Fake]) -> None:
    _r, fake = runner
    fake.requeue["default/tick"] = 0.05
    await kube.client.create(cm("tick"))

    async def ticked() -> bool:
        return fake.calls.count("default/tick") >= 3

    await eventually(ticked)
    fake.requeue.clear()


class BreakableClient(KubeClient):
    """The real client whose watches can be broken on demand (as a dropped connection would)."""

    def __init__(self, inner: KubeClient) -> None:
        super().__init__(inner._res)
        self.broken = asyncio.Event()
        self.watch_rvs: list[str] = []

    def watch(self, api_version: str, kind: str, namespace: str = "", *, resource_version: str = "",
              label_selector: str | None = None, field_selector: str | None = None) -> AsyncIterator[WatchEvent]:
        inner = super().watch(api_version, kind, namespace, resource_version=resource_version,
                              label_selector=label_selector, field_selector=field_selector)
        if kind == "ConfigMap":
            self.watch_rvs.append(resource_version)
        return self._breakable(inner) if kind == "ConfigMap" else inner

    async def _breakable(self, inner: AsyncIterator[WatchEvent]) -> AsyncIterator[WatchEvent]:
        nxt = asyncio.ensure_future(anext(inner))
        brk = asyncio.ensure_future(self.broken.wait())
        try:
            while True:
                done, _ = await asyncio.wait({nxt, brk}, return_when=asyncio.FIRST_COMPLETED)
                if brk in done:
                    self.broken.clear()
                    raise ConnectionError("watch dropped")
                try:
                    yield nxt.result()
                except StopAsyncIteration:
                    return
                nxt = asyncio.ensure_future(anext(inner))
        finally:
            nxt.cancel()
            brk.cancel()
            await asyncio.gather(nxt, brk, return_exceptions=True)
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()


@pytest.mark.timeout(30)
async def test_watch_older_than_compaction_relists(kube: KubeAPI) -> None:
    client = BreakableClient(kube.client)
    fake = Fake()
    r = ControllerRunner(client, fake, resync_s=0)
    await r.start()
    try:
        await asyncio.wait_for(r.synced.wait(), 5)
        await kube.client.create(cm("a"))

        async def seen_a() -> bool:
            return "default/a" in fake.calls

        await eventually(seen_a)
        # other kinds move the store on; compact past the informer's last ConfigMap version, drop the watch
        for i in range(3):
            await kube.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"n{i}"}})
        await kube.store.compact(await kube.store.revision())
        client.broken.set()
        await eventually(lambda: _true(r.relists >= 1))  # resuming from the old version got 410 Gone: relisted
        await kube.client.create(cm("b"))

        async def seen_b() -> bool:
            return "default/b" in fake.calls

        await eventually(seen_b)
        assert r.healthy
    finally:
        await r.stop()


@pytest.mark.timeout(30)
async def test_manager_runs_controllers_only_while_leading(kube: KubeAPI) -> None:
    fakes = [Fake(), Fake()]
    elections = [Election(kube.store, "controllers", f"server-{i}", ttl_s=1.0) for i in range(2)]
    managers = [ControllerManager([ControllerRunner(kube.client, f, resync_s=0)], election=e)
                for f, e in zip(fakes, elections, strict=True)]
    for e, m in zip(elections, managers, strict=True):
        await m.start()
        await e.start()
    try:
        async def one_leads() -> bool:
            return sum(m.leading for m in managers) == 1

        await eventually(one_leads)
        leader = 0 if managers[0].leading else 1
        other = 1 - leader
        await kube.client.create(cm("x"))

        async def leader_saw() -> bool:
            return "default/x" in fakes[leader].calls

        await eventually(leader_saw)
        assert "default/x" not in fakes[other].calls
        await elections[leader].stop()  # resign: the other server takes over and reconciles from a fresh list

        async def failed_over() -> bool:
            return managers[other].leading and not managers[leader].leading and "default/x" in fakes[other].calls

        await eventually(failed_over, tries=500)
        assert not managers[leader].runners[0].running
    finally:
        for e, m in zip(elections, managers, strict=True):
            await m.stop()
            await e.stop()


@pytest.mark.timeout(20)
async def test_manager_without_election_always_runs(kube: KubeAPI) -> None:
    fake = Fake()
    m = ControllerManager([ControllerRunner(kube.client, fake, resync_s=0)])
    await m.start()
    try:
        await kube.client.create(cm("y"))

        async def seen() -> bool:
            return "default/y" in fake.calls

        await eventually(seen)
    finally:
        await m.stop()
    assert not m.runners[0].running


@pytest.mark.timeout(20)
async def test_record_event_counts_repeats(kube: KubeAPI) -> None:
    obj = await kube.client.create(cm("ev"))
    await record_event(kube.client, obj, "Normal", "Tested", "it happened", "fake-controller")
    await record_event(kube.client, obj, "Normal", "Tested", "it happened", "fake-controller")
    await record_event(kube.client, obj, "Warning", "Other", "something else", "fake-controller")
    events = (await kube.client.list("v1", "Event", "default")).items
    tested = [e for e in events if e["reason"] == "Tested"]
    assert len(tested) == 1 and tested[0]["count"] == 2
    ev = tested[0]
    assert ev["involvedObject"]["kind"] == "ConfigMap" and ev["involvedObject"]["name"] == "ev"
    assert ev["involvedObject"]["uid"] == obj["metadata"]["uid"]
    assert ev["source"]["component"] == "fake-controller" and ev["type"] == "Normal"
    assert ev["firstTimestamp"] and ev["lastTimestamp"]
    assert len(events) == 2


@pytest.mark.timeout(20)
async def test_a_dead_runner_loop_makes_the_manager_unhealthy(kube: KubeAPI) -> None:
    m = ControllerManager([ControllerRunner(kube.client, Fake(), resync_s=0)])
    await m.start()
    try:
        async def crash() -> None:
            raise RuntimeError("bug")

        m.runners[0].tasks.spawn(crash(), name="buggy")
        await eventually(lambda: _true(bool(m.tasks.failures)))
        assert not m.healthy and "bug" in m.tasks.failures[0]
    finally:
        await m.stop()
