"""What only the etcd backend has: several endpoints, etcd's own limits."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from pitwall.storage.revstore import Compare, Op, RevStoreError
from pitwall.storage.revstore.etcd import EtcdRevStore

from .conftest import EtcdServer, etcd_binary, free_port, start_etcd


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


def _start_cluster(tmp: Path, n: int = 3) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    binary = etcd_binary()
    if binary is None:
        pytest.skip("etcd is not installed (Debian package etcd-server)")
    ports = [(free_port(), free_port()) for _ in range(n)]
    cluster = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(ports))
    procs = []
    for i, (c, p) in enumerate(ports):
        with open(tmp / f"m{i}.log", "wb") as log:
            procs.append(subprocess.Popen(
                [binary, "--name", f"m{i}", "--data-dir", str(tmp / f"m{i}"),
                 "--listen-client-urls", f"http://127.0.0.1:{c}", "--advertise-client-urls", f"http://127.0.0.1:{c}",
                 "--listen-peer-urls", f"http://127.0.0.1:{p}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{p}",
                 "--initial-cluster", cluster, "--initial-cluster-state", "new",
                 "--heartbeat-interval", "100", "--election-timeout", "500"],
                stdout=log, stderr=subprocess.STDOUT))
    return procs, [f"http://127.0.0.1:{c}" for c, _ in ports]


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_member_dies_under_a_three_member_cluster(tmp_path: Path) -> None:
    """Writes and a watch go on through the other members when the one in use is killed."""
    procs, urls = _start_cluster(tmp_path)
    store = EtcdRevStore(urls, compact_interval_s=None, timeout_s=3)
    try:
        for _ in range(300):  # the cluster elects its first leader
            try:
                await store.start()
                break
            except RevStoreError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("the cluster did not start")

        async def create(i: int) -> None:
            # Create-if-absent, so a retry after an ambiguous failure cannot write twice.
            key = f"/c/{i:03d}"
            for _attempt in range(100):
                try:
                    await store.txn([Compare(key, "create", "=", 0)], [Op.put(key, b"v")])
                    return
                except RevStoreError:
                    await asyncio.sleep(0.1)
            pytest.fail(f"could not write {key}")

        await create(0)
        start = await store.revision()
        watch = store.watch("/c/", start_revision=start)
        for i in range(1, 10):
            await create(i)
        procs[0].kill()  # the member the client talks to (the first endpoint)
        procs[0].wait()
        for i in range(10, 20):
            await create(i)
        keys: list[str] = []
        while len(keys) < 20:
            keys += [e.kv.key for e in await asyncio.wait_for(anext(watch), 30)]
        await watch.aclose()  # type: ignore[attr-defined]
        assert keys == [f"/c/{i:03d}" for i in range(20)]
    finally:
        await store.stop()
        for p in procs:
            p.kill()
            p.wait()
