"""What only the etcd backend has: several endpoints, etcd's own limits."""

from __future__ import annotations

import asyncio

import pytest

from pitwall.storage.revstore import RevStoreError
from pitwall.storage.revstore.etcd import EtcdRevStore

from .conftest import EtcdServer, free_port


@pytest.mark.timeout(60)
async def test_a_dead_endpoint_is_skipped(etcd_server: EtcdServer, ns: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    store = EtcdRevStore([dead, etcd_server.url], compact_interval_s=None)
    await store.start()
    try:
        kv = await store.put(ns + "k", b"v")
        assert (await store.get(ns + "k")) == kv
        watch = store.watch(ns, start_revision=kv.mod_revision)
        batch = await asyncio.wait_for(anext(watch), 20)
        await watch.aclose()  # type: ignore[attr-defined]
        assert batch[0].kv == kv
    finally:
        await store.stop()


@pytest.mark.timeout(60)
async def test_no_endpoint_answers() -> None:
    store = EtcdRevStore([f"http://127.0.0.1:{free_port()}"], timeout_s=1, compact_interval_s=None)
    with pytest.raises(RevStoreError, match="no etcd endpoint answered"):
        await store.start()


@pytest.mark.timeout(60)
async def test_lease_ttl_is_whole_seconds(etcd_server: EtcdServer) -> None:
    store = EtcdRevStore([etcd_server.url], compact_interval_s=None)
    await store.start()
    try:
        lease = await store.grant(1.2)
        assert await store.keepalive(lease) == 2.0
        await store.revoke(lease)
    finally:
        await store.stop()
