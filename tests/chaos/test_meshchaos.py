"""HTTPChaos and NetworkChaos end to end: Chaos Mesh objects through the chaos controllers into the service
proxy's fault table, seen by real HTTP/TCP clients calling a Service's cluster IP whose endpoints are real
servers on pod addresses (callers identified by their pod IP, bound as the source address)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from pitwall.chaos.meshsync import MeshFaultSync
from pitwall.traffic import ServiceProxy
from tests.chaos.mesh_world import GROUP, World
from tests.traffic.conftest import eventually

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]

Obj = dict[str, Any]


def web_selector() -> Obj:
    return {"labelSelectors": {"app": "web"}}


async def statuses(c: httpx.AsyncClient, path: str, n: int) -> list[int]:
    return [(await c.get(path)).status_code for _ in range(n)]


async def tcp_echo(ip: str, source: str, payload: bytes = b"ping") -> bytes:
    """One connection to ``ip:9000`` from ``source``: what came back (``b""`` when the connection was cut)."""
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(ip, 9000, local_addr=(source, 0)), 5)
    except OSError:
        return b""
    try:
        w.write(payload)
        await w.drain()
        w.write_eof()
        return await asyncio.wait_for(r.read(), 5)
    except OSError:
        return b""
    finally:
        w.close()
        with contextlib.suppress(OSError):
            await w.wait_closed()


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    t0 = time.monotonic()
    out = await fn()
    return time.monotonic() - t0, out


# -- HTTPChaos -------------------------------------------------------------------------------------------


async def test_http_abort_matching_paths_only_then_restored(world: World) -> None:
    await world.create("HTTPChaos", "abort-api", {"mode": "all", "selector": web_selector(), "target": "Request",
                                                  "port": 8080, "path": "/api/*", "method": "GET",
                                                  "abort": True})
    await world.until_conds("HTTPChaos", "abort-api", AllInjected="True")
    obj = await world.obj("HTTPChaos", "abort-api")
    assert obj is not None
    injected = next(c for c in obj["status"]["conditions"] if c["type"] == "AllInjected")
    assert "pod-to-pod traffic by pod IP is not intercepted" in injected["reason"]
    assert len(obj["status"]["experiment"]["containerRecords"]) == 2
    async with world.http() as c:
        r = await c.get("/api/orders")
        # the endpoint's connection is cut; the mesh answers as Envoy does for an upstream reset
        assert r.status_code == 503 and b"connection termination" in r.content
        assert set(await statuses(c, "/api/orders/7", 5)) == {503}
        assert set(await statuses(c, "/health", 5)) == {200}  # another path
        assert (await c.post("/api/orders", content=b"{}")).status_code == 200  # another method
    await world.delete("HTTPChaos", "abort-api")
    assert world.proxy.faults.keys() == set()
    async with world.http() as c:
        assert set(await statuses(c, "/api/orders", 5)) == {200}
    changes = await world.changes.between(0, 2**62)
    assert any(ch.kind == "chaos" and "HTTPChaos" in ch.summary for ch in changes)


async def test_http_response_replace_and_patch(world: World) -> None:
    await world.create("HTTPChaos", "teapot", {
        "mode": "all", "selector": web_selector(), "target": "Response", "port": 8080, "path": "/brew",
        "code": 200, "replace": {"code": 418, "headers": {"X-Backend": "replaced"}},
        "patch": {"headers": [["X-Chaos", "yes"]], "body": {"type": "JSON", "value": '{"tea": true, "name": null}'}}})
    await world.until_conds("HTTPChaos", "teapot", AllInjected="True")
    async with world.http() as c:
        r = await c.get("/brew")
        assert r.status_code == 418
        assert r.headers["x-backend"] == "replaced" and r.headers["x-chaos"] == "yes"
        doc = r.json()
        assert doc["tea"] is True and "name" not in doc and doc["path"] == "/brew"  # merged into the body
        plain = await c.get("/other")
        assert plain.status_code == 200 and plain.headers["x-backend"].startswith("web-")
        assert "x-chaos" not in plain.headers and "tea" not in plain.json()
    await world.delete("HTTPChaos", "teapot")
    async with world.http() as c:
        assert (await c.get("/brew")).status_code == 200


async def test_http_request_replace_seen_by_the_backend(world: World) -> None:
    body = "eyJuZXciOiAiYm9keSJ9"  # base64 of {"new": "body"}: Chaos Mesh's replace.body is bytes
    await world.create("HTTPChaos", "rewrite", {
        "mode": "all", "selector": web_selector(), "target": "Request", "port": 8080, "path": "/old*",
        "request_headers": {"X-Flag": "on"},
        "replace": {"path": "/new", "method": "PUT", "queries": {"q": "chaos"}, "headers": {"X-Flag": "replaced"},
                    "body": body},
        "patch": {"queries": [["extra", "1"]], "headers": [["X-Added", "1"]]}})
    await world.until_conds("HTTPChaos", "rewrite", AllInjected="True")
    async with world.http() as c:
        r = await c.get("/old/thing?q=1&keep=2", headers={"X-Flag": "on"})
        seen = r.json()
        assert seen["method"] == "PUT" and seen["path"].startswith("/new?")
        assert "q=chaos" in seen["path"] and "keep=2" in seen["path"] and "extra=1" in seen["path"]
        assert seen["headers"]["x-flag"] == "replaced" and seen["headers"]["x-added"] == "1"
        app = next(a for a in world.apps if a.requests and a.requests[-1]["method"] == "PUT")
        assert app.requests[-1]["body"] == b'{"new": "body"}'
        unflagged = (await c.get("/old/thing")).json()  # the header rule does not match
        assert unflagged["method"] == "GET" and unflagged["path"] == "/old/thing"
    await world.delete("HTTPChaos", "rewrite")


async def test_http_delay_lower_bound_and_reverted_after_duration(world: World) -> None:
    await world.create("HTTPChaos", "slow", {"mode": "all", "selector": web_selector(), "target": "Request",
                                             "port": 8080, "path": "/slow", "delay": "400ms", "duration": "4s"})
    await world.until_conds("HTTPChaos", "slow", AllInjected="True")
    async with world.http() as c:
        took, r = await timed(lambda: c.get("/slow"))
        assert r.status_code == 200 and took >= 0.4
    await world.until_conds("HTTPChaos", "slow", AllRecovered="True")
    assert world.proxy.faults.keys() == set()
    obj = await world.obj("HTTPChaos", "slow")
    assert obj is not None and obj["status"]["experiment"]["desiredPhase"] == "Stop"


async def test_http_pause_recovers_and_resume_reinjects(world: World) -> None:
    await world.create("HTTPChaos", "pz", {"mode": "all", "selector": web_selector(), "target": "Request",
                                           "port": 8080, "abort": True})
    await world.until_conds("HTTPChaos", "pz", AllInjected="True")
    ann = "experiment.chaos-mesh.org/pause"
    await world.client.patch(GROUP, "HTTPChaos", "pz", {"metadata": {"annotations": {ann: "true"}}},
                             namespace="default")
    await world.until_conds("HTTPChaos", "pz", AllRecovered="True", Paused="True")
    async with world.http() as c:
        assert set(await statuses(c, "/", 4)) == {200}
    await world.client.patch(GROUP, "HTTPChaos", "pz", {"metadata": {"annotations": {ann: "false"}}},
                             namespace="default")
    await world.until_conds("HTTPChaos", "pz", AllInjected="True")
    async with world.http() as c:
        assert set(await statuses(c, "/", 4)) == {503}
    await world.delete("HTTPChaos", "pz")


async def test_invalid_http_chaos_is_refused_with_the_field(world: World) -> None:
    await world.create("HTTPChaos", "bad", {"mode": "all", "selector": web_selector(), "target": "Request",
                                            "port": 8080, "replace": {"body": "%%%not base64"}})

    async def refused() -> bool:
        o = await world.obj("HTTPChaos", "bad")
        cond = [c for c in ((o or {}).get("status") or {}).get("conditions") or [] if c["type"] == "AllInjected"]
        return bool(cond) and "spec.replace.body" in cond[0].get("reason", "")
    await eventually(refused, tries=1500)
    assert world.proxy.faults.keys() == set()
    async with world.http() as c:
        assert (await c.get("/")).status_code == 200


async def test_restart_mid_fault_reinjects_and_deleted_while_down_leaves_nothing(world: World) -> None:
    await world.create("HTTPChaos", "survivor", {"mode": "all", "selector": web_selector(), "target": "Request",
                                                 "port": 8080, "abort": True})
    await world.create("NetworkChaos", "cut", {"action": "partition", "mode": "all",
                                               "selector": {"labelSelectors": {"app": "other"}},
                                               "direction": "to", "target": {"mode": "all",
                                                                             "selector": web_selector()}})
    await world.until_conds("HTTPChaos", "survivor", AllInjected="True")
    await world.until_conds("NetworkChaos", "cut", AllInjected="True")
    await world.stop_plane()  # pitwall goes away: the proxy and its fault table with it
    await world.client.delete(GROUP, "NetworkChaos", "cut", "default")  # the finalizer keeps it meanwhile
    assert await world.obj("NetworkChaos", "cut") is not None
    await world.start_plane()
    await world.wait_endpoints()
    await world.until_gone("NetworkChaos", "cut")  # recovered and released after the restart
    await eventually(lambda: len(world.proxy.faults.keys()) == 2, tries=1500)  # still running: applied again
    async with world.http(world.other_ip) as c:
        assert set(await statuses(c, "/", 3)) == {503}  # the HTTP abort again, not a partition (UF)
        assert b"connection termination" in (await c.get("/")).content
    await world.delete("HTTPChaos", "survivor")
    assert world.proxy.faults.keys() == set()
    async with world.http(world.other_ip) as c:
        assert set(await statuses(c, "/", 3)) == {200}


# -- NetworkChaos ----------------------------------------------------------------------------------------


async def test_network_loss_about_the_percent_between_selected_pods_only(world: World) -> None:
    await world.create("NetworkChaos", "lossy", {"action": "loss", "mode": "all",
                                                 "selector": {"labelSelectors": {"app": "sleep"}},
                                                 "direction": "to", "target": {"mode": "all", "selector": web_selector()},
                                                 "loss": {"loss": "40", "correlation": "0"}})
    await world.until_conds("NetworkChaos", "lossy", AllInjected="True")
    n = 300
    async with world.http() as c:
        got = await statuses(c, "/", n)
    lost = got.count(503) / n
    assert got.count(503) + got.count(200) == n
    assert 0.30 <= lost <= 0.50, lost  # 40% +- 2.8 standard deviations of a binomial over 300
    async with world.http(world.other_ip) as c:
        assert set(await statuses(c, "/", 30)) == {200}  # a caller outside the selector is not affected
    await world.delete("NetworkChaos", "lossy")
    async with world.http() as c:
        assert set(await statuses(c, "/", 30)) == {200}


async def test_network_partition_refuses_http_and_tcp_then_restored(world: World) -> None:
    await world.create("NetworkChaos", "split", {"action": "partition", "mode": "all",
                                                 "selector": {"labelSelectors": {"app": "sleep"}},
                                                 "direction": "both",
                                                 "target": {"mode": "all",
                                                            "selector": {"expressionSelectors": [
                                                                {"key": "app", "operator": "In",
                                                                 "values": ["web", "echo"]}]}},
                                                 "duration": "6s"})
    await world.until_conds("NetworkChaos", "split", AllInjected="True")
    obj = await world.obj("NetworkChaos", "split")
    assert obj is not None
    keys = {r["selectorKey"] for r in obj["status"]["experiment"]["containerRecords"]}
    assert keys == {".", ".Target"}
    async with world.http() as c:
        r = await c.get("/")
        assert r.status_code == 503 and b"remote connection failure" in r.content  # Envoy's UF
    assert await tcp_echo(world.echo_ip, world.caller_ip) == b""  # the TCP connection is refused
    assert await tcp_echo(world.echo_ip, world.other_ip) == b"ping"
    async with world.http(world.other_ip) as c:
        assert (await c.get("/")).status_code == 200
    await world.until_conds("NetworkChaos", "split", AllRecovered="True")  # the duration is over
    assert await tcp_echo(world.echo_ip, world.caller_ip) == b"ping"
    async with world.http() as c:
        assert (await c.get("/")).status_code == 200


async def test_network_delay_and_bandwidth_lower_bounds(world: World) -> None:
    await world.create("NetworkChaos", "lag", {"action": "delay", "mode": "all",
                                               "selector": {"labelSelectors": {"app": "sleep"}},
                                               "target": {"mode": "all", "selector": web_selector()},
                                               "delay": {"latency": "300ms", "jitter": "50ms", "correlation": "25"}})
    await world.create("NetworkChaos", "thin", {"action": "bandwidth", "mode": "all",
                                                "selector": {"labelSelectors": {"app": "sleep"}},
                                                "target": {"mode": "all", "selector": {"labelSelectors":
                                                                                       {"app": "echo"}}},
                                                "bandwidth": {"rate": "400kbit", "limit": 20000, "buffer": 10000}})
    await world.until_conds("NetworkChaos", "lag", AllInjected="True")
    await world.until_conds("NetworkChaos", "thin", AllInjected="True")
    async with world.http() as c:
        took, r = await timed(lambda: c.get("/"))
        assert r.status_code == 200 and took >= 0.25  # latency - jitter at least
    payload = b"x" * 150_000  # 400 kbit/s = 50 kB/s: the first 10 kB burst, then at least 2.8 s
    took, echoed = await timed(lambda: tcp_echo(world.echo_ip, world.caller_ip, payload))
    assert echoed == payload and took >= 2.5
    await world.delete("NetworkChaos", "lag")
    await world.delete("NetworkChaos", "thin")
    assert world.proxy.faults.keys() == set()


async def test_network_corrupt_changes_bytes_and_duplicate_repeats_requests(world: World) -> None:
    await world.create("NetworkChaos", "flip", {"action": "corrupt", "mode": "all",
                                                "selector": {"labelSelectors": {"app": "sleep"}},
                                                "target": {"mode": "all", "selector": {"labelSelectors":
                                                                                       {"app": "echo"}}},
                                                "corrupt": {"corrupt": "100"}})
    await world.create("NetworkChaos", "twice", {"action": "duplicate", "mode": "all",
                                                 "selector": {"labelSelectors": {"app": "sleep"}},
                                                 "target": {"mode": "all", "selector": web_selector()},
                                                 "duplicate": {"duplicate": "100"}})
    await world.until_conds("NetworkChaos", "flip", AllInjected="True")
    await world.until_conds("NetworkChaos", "twice", AllInjected="True")
    payload = b"abcdefgh" * 16
    echoed = await tcp_echo(world.echo_ip, world.caller_ip, payload)
    assert len(echoed) == len(payload) and echoed != payload
    before = sum(len(a.requests) for a in world.apps)
    async with world.http() as c:
        for _ in range(5):
            assert (await c.get("/dup")).status_code == 200
    await eventually(lambda: sum(len(a.requests) for a in world.apps) - before == 10)
    await world.delete("NetworkChaos", "flip")
    await world.delete("NetworkChaos", "twice")
    assert await tcp_echo(world.echo_ip, world.caller_ip, payload) == payload


async def test_invalid_network_chaos_is_refused(world: World) -> None:
    await world.create("NetworkChaos", "badrate", {"action": "bandwidth", "mode": "all",
                                                   "selector": {"labelSelectors": {"app": "sleep"}},
                                                   "bandwidth": {"rate": "fast", "limit": 1, "buffer": 1}})

    async def refused() -> bool:
        o = await world.obj("NetworkChaos", "badrate")
        cond = [c for c in ((o or {}).get("status") or {}).get("conditions") or [] if c["type"] == "AllInjected"]
        return bool(cond) and "spec.bandwidth.rate" in cond[0].get("reason", "")
    await eventually(refused, tries=1500)
    assert world.proxy.faults.keys() == set()
    assert json.dumps(await world.conds("NetworkChaos", "badrate"))


async def test_a_second_server_mirrors_the_leaders_faults(world: World) -> None:
    """Servers sharing the state store all serve the cluster IP (the kernel spreads connections over them);
    the one not leading the controllers mirrors the injected faults into its own proxy."""
    follower = ServiceProxy(world.client, drain_timeout_s=0.5, connect_budget_s=1.0, attempt_timeout_s=0.5)
    await follower.start()
    leads = False
    sync = MeshFaultSync(world.client, follower.faults, lambda: leads, interval_s=0.1)
    await sync.start()
    try:
        await eventually(lambda: len(follower.endpoints(world.ip, 80)) == 2)
        await world.create("HTTPChaos", "everywhere", {"mode": "all", "selector": {"labelSelectors": {"app": "web"}},
                                                       "target": "Request", "port": 8080, "abort": True})
        await world.until_conds("HTTPChaos", "everywhere", AllInjected="True")
        await eventually(lambda: len(follower.faults.keys()) == 2)
        got = set()
        for _ in range(30):  # a connection each: whichever server the kernel gives it to
            async with world.http() as c:
                got.add((await c.get("/")).status_code)
        assert got == {503}
        served = [sum(s.connections_total for s in p.stats.values()) for p in (world.proxy, follower)]
        assert all(n > 0 for n in served), served  # both servers took connections
        await world.delete("HTTPChaos", "everywhere")
        await eventually(lambda: follower.faults.keys() == set())
        await world.create("HTTPChaos", "again", {"mode": "all", "selector": {"labelSelectors": {"app": "web"}},
                                                  "target": "Request", "port": 8080, "abort": True})
        await eventually(lambda: len(follower.faults.keys()) == 2)
        leads = True  # the follower becomes the leader: its mirrored faults go, its controllers apply theirs
        await eventually(lambda: follower.faults.keys() == set())
        await world.delete("HTTPChaos", "again")
    finally:
        await sync.stop()
        await follower.stop()
