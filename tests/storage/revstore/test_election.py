"""Leader election over both backends: one leader, failover when it dies, hand-over when it resigns."""

from __future__ import annotations

import asyncio

import pytest

from pitwall.storage.revstore.election import Election
from pitwall.storage.revstore.etcd import EtcdRevStore

from .conftest import EtcdServer, MakeStore, assert_takeover_after_kill_9

TTL = 3.0  # long enough that a loaded machine does not make a live leader step down


async def _until(cond: object, timeout: float = 30.0) -> None:
    """Wait (bounded) until ``cond()`` is true."""
    async def poll() -> None:
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.05)
    await asyncio.wait_for(poll(), timeout)


@pytest.mark.timeout(90)
async def test_failover_when_the_leader_dies(make_store: MakeStore, ns: str) -> None:
    changes: list[tuple[str, bool]] = []

    def recorder(who: str):  # type: ignore[no-untyped-def]
        async def on_change(leading: bool) -> None:
            changes.append((who, leading))
        return on_change

    one = Election(await make_store(), ns, "one", ttl_s=TTL, on_change=recorder("one"), prefix=ns)
    two = Election(await make_store(), ns, "two", ttl_s=TTL, on_change=recorder("two"), prefix=ns)
    await one.start()
    await asyncio.wait_for(one.elected.wait(), 30)
    await two.start()
    await asyncio.sleep(TTL)  # two campaigns, loses, watches
    assert not two.is_leader and await two.leader() == "one"
    assert one.leader_revision > 0
    await one.abandon()  # a crash: no resignation, the lease has to expire
    await asyncio.wait_for(two.elected.wait(), 30)
    assert await two.leader() == "two"
    assert changes == [("one", True), ("two", True)]
    await two.stop()
    assert not two.is_leader and changes[-1] == ("two", False)


@pytest.mark.timeout(90)
async def test_resigning_hands_over(make_store: MakeStore, ns: str) -> None:
    one = Election(await make_store(), "ctl", "one", ttl_s=TTL * 10, prefix=ns)
    two = Election(await make_store(), "ctl", "two", ttl_s=TTL * 10, prefix=ns)
    await one.start()
    await asyncio.wait_for(one.elected.wait(), 30)
    await two.start()
    await one.stop()  # revokes the lease: two need not wait out the (long) TTL
    await asyncio.wait_for(two.elected.wait(), 15)
    assert await two.leader() == "two"
    await two.stop()
    assert await two.leader() is None


@pytest.mark.timeout(90)
async def test_leader_steps_down_when_its_lease_is_gone(make_store: MakeStore, ns: str) -> None:
    store = await make_store()
    changes: list[bool] = []

    async def on_change(leading: bool) -> None:
        changes.append(leading)

    one = Election(store, "ctl", "one", ttl_s=TTL, on_change=on_change, prefix=ns)
    await one.start()
    await asyncio.wait_for(one.elected.wait(), 30)
    kv = await store.get(one.key)
    assert kv is not None and kv.lease
    await store.revoke(kv.lease)  # e.g. an operator, or the store expired it during a pause
    await _until(lambda: len(changes) >= 3)  # lost it, then won again with a new lease
    assert changes[:3] == [True, False, True]
    await one.stop()


@pytest.mark.timeout(120)
async def test_etcd_failover_after_kill_9(etcd_server: EtcdServer, ns: str) -> None:
    """A real pitwall-like process leads; kill -9 it; the survivor takes over within the TTL."""
    store = EtcdRevStore([etcd_server.url], compact_interval_s=None)
    await store.start()
    try:
        await assert_takeover_after_kill_9(store, "etcd", etcd_server.url, ttl_s=TTL, prefix=ns)
    finally:
        await store.stop()
