"""The watch hub behind blocking queries: who wakes, the cap, a disconnect freeing its waiter."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from pitwall.config import load_settings
from pitwall.core.httpconn import Signal
from pitwall.registry.blocking import FLOOR_KEY, ParkHeldQueries, WatchHub, parse_go_duration
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


async def test_deadlines_are_kept_to_the_waiter_without_a_timer_each(hub: WatchHub) -> None:
    """Waiters wait by the second their deadline falls in (one timer per second), each exact at the end; a
    waiter woken before its deadline leaves nothing behind."""
    rev = await hub.store.revision()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    timed = asyncio.ensure_future(hub.wait((KV_PREFIX + "t/",), rev, 1.5, None))
    woken = asyncio.ensure_future(hub.wait((KV_PREFIX + "w/",), rev, 30, None))
    await asyncio.sleep(0.05)
    assert sum(len(due) for due in hub._deadlines.values()) == 2
    kv = await hub.store.put(KV_PREFIX + "w/x", b"1")
    assert await asyncio.wait_for(woken, 5) == kv.mod_revision
    assert sum(len(due) for due in hub._deadlines.values()) == 1
    assert await asyncio.wait_for(timed, 10) == 0
    assert loop.time() - t0 >= 1.5  # not before its deadline
    assert hub.waiting == 0 and not any(hub._deadlines.values())


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
    hub = server.app.state.components.control_plane.registry.hub
    # pitwall server's protocol: the connection's own signal tells, no task reads ``receive`` for it
    assert [type(w.gone) for w in list(hub._waiters)] == [Signal] * int(base + 1)
    sock.close()
    while _held(server) > base:  # long before the 60s wait ends
        assert time.monotonic() < deadline, "the waiter outlived its client"
        time.sleep(0.05)


async def test_a_held_kv_read_waits_in_the_park_not_in_the_route(hub: WatchHub) -> None:
    """``ParkHeldQueries`` holds the read on the hub, then hands the route ``wait=0s`` and the waking revision;
    reads it cannot vouch for pass straight through."""
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    view = {"v": "unchanged"}

    async def read() -> tuple[Any, int]:
        return view["v"], 5  # the route's view: its index stays 5 (a delete leaves no higher revision)

    hub.parks.add("/v1/kv/", lambda key, q: ((KV_PREFIX + key,), read), rest=True)
    park = ParkHeldQueries(app, hub)
    never: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        return await never  # the client stays

    def scope(path: str, qs: str) -> dict[str, Any]:
        return {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": qs.encode()}

    held = asyncio.create_task(park(scope("/v1/kv/app/x", "index=5&wait=30s&recurse"), receive, None))
    for _ in range(200):
        if hub.waiting:
            break
        await asyncio.sleep(0.01)
    assert hub.waiting == 1 and not seen  # held in the park; the route has not run
    await hub.store.put(KV_PREFIX + "app/x/y", b"{}")
    await asyncio.sleep(0.3)
    assert hub.waiting == 1 and not seen  # a change under the prefix that left the view as it was: still held
    view["v"] = "changed"
    rev = (await hub.store.put(KV_PREFIX + "app/x/z", b"{}")).mod_revision
    await asyncio.wait_for(held, 10)
    assert len(seen) == 1 and seen[0][FLOOR_KEY] >= rev
    q = parse_qs(seen[0]["query_string"].decode(), keep_blank_values=True)
    assert q["wait"] == ["0s"] and q["index"] == ["5"] and "recurse" in q
    for path, qs in [("/v1/kv/app/x", "index=4"), ("/v1/kv/app/x", "index=abc"), ("/v1/kv/app/x", "wait=5s"),
                     ("/v1/kv/../etc", "index=9"), ("/v1/catalog/services", "index=9")]:
        seen.clear()
        await asyncio.wait_for(park(scope(path, qs), receive, None), 5)  # changed already, or not its to judge
        assert len(seen) == 1 and FLOOR_KEY not in seen[0] and seen[0]["query_string"] == qs.encode(), (path, qs)


def test_the_cap_is_a_setting_and_a_held_read_past_it_is_a_consul_429(tmp_path: Path) -> None:
    """``consul.max_blocking_queries`` caps held reads; the one past it (parked or not) gets Consul's 429 text."""
    srv = LiveServer(load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                                   consul={"max_blocking_queries": 2}))
    srv.start()
    socks: list[socket.socket] = []
    try:
        httpx.put(f"{srv.url}/v1/kv/capped", content=b"v")
        index = httpx.get(f"{srv.url}/v1/kv/capped").headers["X-Consul-Index"]
        for _ in range(2):
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(f"GET /v1/kv/capped?index={index}&wait=60s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            socks.append(s)
        deadline = time.monotonic() + 20
        while _held(srv) < 2:
            assert time.monotonic() < deadline, "the blocking queries were never held"
            time.sleep(0.05)
        r = httpx.get(f"{srv.url}/v1/kv/capped?index={index}&wait=60s", timeout=10)
        assert r.status_code == 429 and "too many blocking queries held (2)" in r.text
    finally:
        for s in socks:
            s.close()
        srv.stop()


async def test_a_hash_read_waits_in_the_park_until_the_content_hash_differs(hub: WatchHub) -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    content = {"v": "a"}

    async def read() -> tuple[Any, int]:
        return dict(content), 0

    hub.parks.add("/v1/agent/services", lambda _, q: ((KV_PREFIX + "agent/",), read),
                  content_hash=lambda r: str(r["v"]))
    never: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, Any]:
        return await never

    scope = {"type": "http", "method": "GET", "path": "/v1/agent/services", "raw_path": b"/v1/agent/services",
             "query_string": b"hash=a&wait=30s"}
    held = asyncio.create_task(ParkHeldQueries(app, hub)(scope, receive, None))
    for _ in range(200):
        if hub.waiting:
            break
        await asyncio.sleep(0.01)
    await hub.store.put(KV_PREFIX + "agent/x", b"1")  # the content hash is still "a": held
    await asyncio.sleep(0.3)
    assert hub.waiting == 1 and not seen
    content["v"] = "b"
    await hub.store.put(KV_PREFIX + "agent/x", b"2")
    await asyncio.wait_for(held, 10)
    assert len(seen) == 1 and seen[0]["query_string"] == b"hash=a&wait=30s"  # the route answers the new content
