"""The watch hub behind blocking queries: who wakes, the cap, a disconnect freeing its waiter."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from pitwall.registry.blocking import WatchHub, parse_go_duration
from pitwall.registry.model import KV_PREFIX, ConsulError
from pitwall.storage.revstore.sqlite import SqliteRevStore
from tests.conftest import LiveServer
from tests.registry.conftest import ADMIN

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[WatchHub]:
    store = SqliteRevStore(tmp_path / "s.db", compact_interval_s=None)
    await store.start()
    h = WatchHub(store, [KV_PREFIX], max_waiters=2)
    await h.start()
    yield h
    await h.stop()
    await store.stop()


async def test_only_changes_under_the_prefix_wake(hub: WatchHub) -> None:
    rev = await hub.store.revision()
    waiter = asyncio.ensure_future(hub.wait((KV_PREFIX + "app/",), rev, 30, None))
    await asyncio.sleep(0.05)
    await hub.store.put(KV_PREFIX + "other/x", b"1")
    await hub.store.put("/elsewhere/y", b"1")
    await asyncio.sleep(0.2)
    assert not waiter.done()
    kv = await hub.store.put(KV_PREFIX + "app/x", b"1")
    assert await asyncio.wait_for(waiter, 5) == kv.mod_revision
    assert hub.waiting == 0


async def test_a_delete_before_the_wait_answers_at_once(hub: WatchHub) -> None:
    await hub.store.put(KV_PREFIX + "gone", b"1")
    rev = await hub.store.revision()
    await hub.store.delete(KV_PREFIX + "gone")
    for _ in range(50):  # the hub has seen the delete
        if hub.seen > rev:
            break
        await asyncio.sleep(0.02)
    assert await hub.wait((KV_PREFIX + "gone",), rev, 30, None) == rev + 1


async def test_cap_on_held_waiters(hub: WatchHub) -> None:
    rev = await hub.store.revision()
    held = [asyncio.ensure_future(hub.wait((KV_PREFIX,), rev, 30, None)) for _ in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(ConsulError) as err:
        await hub.wait((KV_PREFIX,), rev, 30, None)
    assert err.value.status == 429
    for t in held:
        t.cancel()
    await asyncio.gather(*held, return_exceptions=True)
    assert hub.waiting == 0
    assert await hub.wait((KV_PREFIX,), rev, 0.05, None) == 0  # room again; times out


def test_go_durations() -> None:
    assert parse_go_duration("1m30s") == 90 and parse_go_duration("250ms") == 0.25 and parse_go_duration("0") == 0
    for bad in ("", "10", "5x", "s"):
        with pytest.raises(ValueError):
            parse_go_duration(bad)


def _held(server: LiveServer) -> float:
    m = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
    return next(float(x.split()[-1]) for x in m.splitlines() if x.startswith("pitwall_consul_blocking_queries "))


def test_client_disconnect_frees_its_waiter(server: LiveServer) -> None:
    h = {"X-Consul-Token": ADMIN}
    httpx.put(f"{server.url}/v1/kv/disc", content=b"v", headers=h)
    index = httpx.get(f"{server.url}/v1/kv/disc", headers=h).headers["X-Consul-Index"]
    base = _held(server)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(f"GET /v1/kv/disc?index={index}&wait=60s HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                 f"X-Consul-Token: {ADMIN}\r\n\r\n".encode())
    deadline = time.monotonic() + 10
    while _held(server) < base + 1:
        assert time.monotonic() < deadline, "the blocking query was never held"
        time.sleep(0.05)
    sock.close()
    while _held(server) > base:  # long before the 60s wait ends
        assert time.monotonic() < deadline, "the waiter outlived its client"
        time.sleep(0.05)
