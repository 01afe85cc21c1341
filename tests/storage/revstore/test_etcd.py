"""What only the etcd backend has: several endpoints, etcd's own limits."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pitwall.storage.revstore import RevStoreError
from pitwall.storage.revstore.etcd import EtcdRevStore

from .conftest import EtcdServer, free_port, start_etcd


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


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_watch_and_leases_survive_an_etcd_restart(tmp_path: Path) -> None:
    """The watch stream breaks when etcd goes away; it resumes after the last delivered revision."""
    server = start_etcd(tmp_path / "data")
    store = EtcdRevStore([server.url], compact_interval_s=None, timeout_s=2)
    await store.start()
    try:
        first = await store.put("/r/k", b"0")
        watch = store.watch("/r/", start_revision=first.mod_revision)
        seen = [e.kv.mod_revision for e in await asyncio.wait_for(anext(watch), 20)]
        await store.put("/r/k", b"1")
        lease = await store.grant(30)
        # Off the event loop, so the client sees the old connections close, as it would in life.
        await asyncio.to_thread(server.stop)
        server = await asyncio.to_thread(start_etcd, tmp_path / "data", server.ports)
        for i in range(2, 5):
            await store.put("/r/k", str(i).encode())  # the pool's connections to the old process are dead
        assert await store.keepalive(lease) > 0
        while len(seen) < 5:
            seen += [e.kv.mod_revision for e in await asyncio.wait_for(anext(watch), 30)]
        await watch.aclose()  # type: ignore[attr-defined]
        assert seen == list(range(first.mod_revision, first.mod_revision + 5))
    finally:
        await store.stop()
        server.stop()
