"""The gateway's proxy through httpx against real upstream servers: routing, paths, headers, errors, limits."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from pitwall.traffic.gateway.declarative import load_declarative
from pitwall.traffic.gateway.proxy import upstream_path
from pitwall.traffic.gateway.runtime import compile_state
from tests.gateway.conftest import StartGateway, Upstreams, svc

pytestmark = pytest.mark.timeout(30)

V3 = "3.0"


def doc(*services: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"_format_version": V3, "services": list(services), **extra}


async def test_prefix_route_strip_path_and_forwarded_headers(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("a")
    _gw, client = await gateway(doc(svc(port, path="/base", routes=[{"name": "r", "paths": ["/api"]}])))
    r = await client.get("/api/items?x=1", headers={"X-Forwarded-For": "10.1.1.1"})
    assert r.status_code == 200
    got = r.json()
    assert got["path"] == "/base/items" and got["query"] == "x=1"
    assert got["headers"]["host"] == f"127.0.0.1:{port}"
    assert got["headers"]["x-forwarded-for"] == "10.1.1.1, 127.0.0.1"
    assert got["headers"]["x-forwarded-prefix"] == "/api"
    assert got["headers"]["x-forwarded-path"] == "/api/items"
    assert got["headers"]["x-real-ip"] == "127.0.0.1"
    assert r.headers["x-echo-name"] == "a"
    assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert "x-kong-upstream-latency" not in r.headers or r.headers["x-kong-upstream-latency"].isdigit()


async def test_no_route_is_kongs_404(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("a")
    _gw, client = await gateway(doc(svc(port, routes=[{"paths": ["/api"]}])))
    r = await client.get("/other")
    assert r.status_code == 404
    assert r.json() == {"message": "no Route matched with those values"}
    assert r.headers["content-type"] == "application/json; charset=utf-8"


async def test_preserve_host_and_no_strip(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("a")
    _gw, client = await gateway(doc(svc(port, routes=[{"paths": ["/keep"], "strip_path": False,
                                                        "preserve_host": True}])))
    r = await client.get("/keep/x", headers={"Host": "api.example.com"})
    assert r.json()["path"] == "/keep/x" and r.json()["headers"]["host"] == "api.example.com"


async def test_routing_by_host_method_header_and_priority(upstreams: Upstreams, gateway: StartGateway) -> None:
    pa, pb, pc, pd = [await upstreams.start(n) for n in "abcd"]
    _gw, client = await gateway(doc(
        svc(pa, name="a", routes=[{"name": "by-path", "paths": ["/"]}]),
        svc(pb, name="b", routes=[{"name": "by-host", "hosts": ["*.example.com"], "paths": ["/"]}]),
        svc(pc, name="c", routes=[{"name": "by-header", "paths": ["/"], "methods": ["POST"],
                                   "headers": {"x-version": ["v2", "~*^beta-\\d+$"]}}]),
        svc(pd, name="d", routes=[{"name": "regex", "paths": ["~/users/\\d+$"], "regex_priority": 5},
                                  {"name": "long-prefix", "paths": ["/users/me"]}]),
    ))
    assert (await client.get("/x")).headers["x-echo-name"] == "a"
    assert (await client.get("/x", headers={"Host": "shop.example.com"})).headers["x-echo-name"] == "b"
    assert (await client.post("/x", headers={"x-version": "V2"})).headers["x-echo-name"] == "c"
    assert (await client.post("/x", headers={"x-version": "beta-12"})).headers["x-echo-name"] == "c"
    assert (await client.get("/x", headers={"x-version": "v2"})).headers["x-echo-name"] == "a"  # method differs
    r = await client.get("/users/42")
    assert r.headers["x-echo-name"] == "d" and r.json()["path"] == "/"  # regex match stripped whole
    assert (await client.get("/users/me/x")).json()["path"] == "/x"


def test_route_priority_order_follows_kong() -> None:
    cfg = compile_state(load_declarative(doc(
        {"name": "s", "host": "h", "routes": [
            {"name": "short", "paths": ["/a"]}, {"name": "long", "paths": ["/a/b/c"]},
            {"name": "regex-lo", "paths": ["~/a/.*"], "regex_priority": 1},
            {"name": "regex-hi", "paths": ["~/a/b.*"], "regex_priority": 9},
            {"name": "host+path", "hosts": ["x.com"], "paths": ["/"]},
        ]})))
    order = [c.route.name for c in cfg.router.candidates]
    assert order == ["host+path", "regex-hi", "regex-lo", "long", "short"]


@pytest.mark.parametrize(("service_path", "req", "matched", "strip", "handling", "expected"), [
    (None, "/api/x", "/api", True, "v0", "/x"),
    (None, "/api", "/api", True, "v0", "/"),
    ("/s", "/api", "/api", True, "v0", "/s"),
    ("/s/", "/api/x", "/api", True, "v0", "/s/x"),
    ("/s", "/apix", "/api", True, "v0", "/s/x"),
    ("/s", "/apix", "/api", True, "v1", "/sx"),
    ("/s/", "/api/x", "/api", True, "v1", "/s/x"),
    ("/s", "/api/x", "/api", False, "v0", "/s/api/x"),
])
def test_upstream_path_handling(service_path: str | None, req: str, matched: str, strip: bool, handling: str,
                                expected: str) -> None:
    assert upstream_path(service_path, req, matched, strip, handling) == expected


async def test_kong_upstream_targets_round_robin_by_weight(upstreams: Upstreams, gateway: StartGateway) -> None:
    pa, pb, pc = [await upstreams.start(n) for n in "abc"]
    _gw, client = await gateway({
        "_format_version": V3,
        "upstreams": [{"name": "pool", "targets": [{"target": f"127.0.0.1:{pa}", "weight": 200},
                                                   {"target": f"127.0.0.1:{pb}", "weight": 100},
                                                   {"target": f"127.0.0.1:{pc}", "weight": 0}]}],
        "services": [{"name": "s", "host": "pool", "routes": [{"paths": ["/"]}]}],
    })
    names = [(await client.get("/")).headers["x-echo-name"] for _ in range(30)]
    assert names.count("a") == 20 and names.count("b") == 10 and "c" not in names
    assert upstreams.seen[0]["headers"]["host"] == "pool"


async def test_pitwall_service_name_resolves_through_kube(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("kube")
    asked: list[tuple[str, str]] = []

    async def resolve(ns: str, name: str) -> str | None:
        asked.append((ns, name))
        return "127.0.0.1" if (ns, name) == ("shop", "cart") else None

    _gw, client = await gateway(doc({"name": "cart", "url": f"http://cart.shop.svc:{port}",
                                     "routes": [{"paths": ["/cart"]}]},
                                    {"name": "gone", "url": "http://gone.shop.svc.cluster.local:80",
                                     "routes": [{"paths": ["/gone"]}]}), resolve=resolve)
    r = await client.get("/cart/1")
    assert r.status_code == 200 and r.json()["path"] == "/1" and r.json()["headers"]["host"] == f"cart.shop.svc:{port}"
    r = await client.get("/gone")
    assert r.status_code == 503 and r.json() == {"message": "name resolution failed"}
    assert ("shop", "gone") in asked


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_upstream_down_is_502_after_retries(gateway: StartGateway) -> None:
    _gw, client = await gateway(doc(svc(_dead_port(), retries=2, connect_timeout=500, routes=[{"paths": ["/"]}])))
    r = await client.get("/")
    assert r.status_code == 502
    assert r.json() == {"message": "An invalid response was received from the upstream server"}


async def test_retry_moves_to_the_next_target(upstreams: Upstreams, gateway: StartGateway) -> None:
    live = await upstreams.start("live")
    _gw, client = await gateway({
        "_format_version": V3,
        "upstreams": [{"name": "pool", "targets": [{"target": f"127.0.0.1:{_dead_port()}"},
                                                   {"target": f"127.0.0.1:{live}"}]}],
        "services": [{"name": "s", "host": "pool", "retries": 1, "routes": [{"paths": ["/"]}]}],
    })
    for _ in range(4):
        r = await client.get("/")
        assert r.status_code == 200 and r.headers["x-echo-name"] == "live"


async def test_read_timeout_is_504(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("slow")
    _gw, client = await gateway(doc(svc(port, read_timeout=200, retries=0, routes=[{"paths": ["/"]}])))
    r = await client.get("/sleep/2")
    assert r.status_code == 504 and r.json() == {"message": "The upstream server is timing out"}


async def test_read_timeouts_of_different_services_each_fire_at_their_own_deadline(
        upstreams: Upstreams, gateway: StartGateway) -> None:
    """Read timeouts share one loop timer: a shorter deadline after a longer one re-arms it, and the
    longer one is neither cut short nor lost when the timer fires for the shorter."""
    port = await upstreams.start("slow")
    _gw, client = await gateway(doc(
        svc(port, name="patient", read_timeout=20000, retries=0, routes=[{"paths": ["/patient"]}]),
        svc(port, name="hasty", read_timeout=200, retries=0, routes=[{"paths": ["/hasty"]}])))
    patient = asyncio.create_task(client.get("/patient/sleep/1.5"))
    await asyncio.sleep(0.2)  # the patient request is in flight: the timer is armed for its deadline
    hasty = await client.get("/hasty/sleep/10")
    assert hasty.status_code == 504 and hasty.json() == {"message": "The upstream server is timing out"}
    assert not patient.done()  # answered before the patient request, whose deadline came first in the timer
    r = await patient
    assert r.status_code == 200 and r.headers["x-echo-name"] == "slow"


async def test_no_targets_is_503(gateway: StartGateway) -> None:
    _gw, client = await gateway({"_format_version": V3, "upstreams": [{"name": "empty"}],
                                 "services": [{"name": "s", "host": "empty", "routes": [{"paths": ["/"]}]}]})
    r = await client.get("/")
    assert r.status_code == 503 and r.json() == {"message": "failure to get a peer from the ring-balancer"}


async def test_body_and_header_limits(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("a")
    _gw, client = await gateway(doc(svc(port, routes=[{"paths": ["/"]}])), max_body_bytes=1000)
    ok = await client.post("/", content=b"x" * 1000)
    assert ok.status_code == 200 and len(ok.json()["body"]) == 1000
    r = await client.post("/", content=b"x" * 1001)
    assert r.status_code == 413 and r.json() == {"message": "Payload too large"}
    r = await client.get("/", headers={f"x-h{i}": "v" * 1000 for i in range(40)})
    assert r.status_code == 431 and r.json() == {"message": "Request header fields too large"}


async def test_chunked_request_body_over_limit_is_413(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("a")
    _gw, client = await gateway(doc(svc(port, routes=[{"paths": ["/"]}])), max_body_bytes=1000)

    async def chunks() -> Any:
        for _ in range(5):
            yield b"y" * 400

    r = await client.post("/", content=chunks())
    assert r.status_code == 413


async def test_reload_swaps_config_without_failing_requests(upstreams: Upstreams, gateway: StartGateway) -> None:
    pa, pb = await upstreams.start("a"), await upstreams.start("b")
    gw, client = await gateway(doc(svc(pa, routes=[{"paths": ["/"]}])))
    new = compile_state(load_declarative(doc(svc(pb, routes=[{"paths": ["/"]}]))))
    seen: list[str] = []

    async def hammer() -> None:
        for _ in range(40):
            r = await client.get("/")
            assert r.status_code == 200
            seen.append(r.headers["x-echo-name"])

    task = asyncio.gather(hammer(), hammer())
    await asyncio.sleep(0.02)
    gw.config = new
    await task
    assert set(seen) <= {"a", "b"} and seen[-1] == "b"


async def test_head_and_pipelined_keepalive(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("a")
    gw, client = await gateway(doc(svc(port, routes=[{"paths": ["/"]}])))
    r = await client.head("/")
    assert r.status_code == 200 and r.content == b""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.count(b"HTTP/1.1 200 OK") == 2 and data.index(b"/one") < data.index(b"/two")


async def test_pipelined_request_after_head_gets_a_live_upstream_connection(upstreams: Upstreams,
                                                                             gateway: StartGateway) -> None:
    """A HEAD's upstream connection is closed once its headers are in (its Content-Length announces no
    body), so the POST pipelined behind it must not be written to that connection."""
    port = await upstreams.start("a")
    gw, client = await gateway(doc(svc(port, routes=[{"paths": ["/"]}])))
    assert (await client.get("/warm")).status_code == 200  # leaves an idle pooled upstream connection
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"HEAD /one HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert data.count(b"HTTP/1.1 200 OK") == 2, data
    assert b'"path":"/two"' in data and b'"body":"hi"' in data


async def test_kube_resolver_reads_the_service_cluster_ip(tmp_path: Any) -> None:
    from pitwall.kube.wiring import build_kube
    from pitwall.storage.revstore.sqlite import SqliteRevStore
    from pitwall.traffic.gateway.wiring import kube_resolver

    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    api = build_kube(store)
    await api.start()
    try:
        await api.client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
        created = await api.client.create({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "cart", "namespace": "shop"},
            "spec": {"selector": {"app": "cart"}, "ports": [{"port": 80}]}})
        resolve = kube_resolver(api.client)
        assert await resolve("shop", "cart") == created["spec"]["clusterIP"]
        assert await resolve("shop", "missing") is None
    finally:
        await api.stop()
        await store.stop()


async def test_https_only_route_answers_426_or_redirects(upstreams: Upstreams, gateway: StartGateway) -> None:
    port = await upstreams.start("a")
    _gw, client = await gateway(doc(svc(port, routes=[
        {"paths": ["/secure"], "protocols": ["https"]},
        {"paths": ["/moved"], "protocols": ["https"], "https_redirect_status_code": 301}])))
    r = await client.get("/secure/x")
    assert (r.status_code, r.json()) == (426, {"message": "Please use HTTPS protocol"})
    assert r.headers["upgrade"] == "TLS/1.2, HTTP/1.1"
    r = await client.get("/moved/x?a=1", headers={"Host": "api.example.com:8000"})
    assert r.status_code == 301 and r.headers["location"] == "https://api.example.com/moved/x?a=1"
    assert not upstreams.seen


async def _raw_upstream(answer: bytes, *, close: bool) -> tuple[Any, int, list[asyncio.StreamWriter]]:
    """An upstream that answers every request with ``answer`` (closing after it when ``close``)."""
    writers: list[asyncio.StreamWriter] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    srv = await asyncio.start_server(on_client, "127.0.0.1", 0)
    return srv, int(srv.sockets[0].getsockname()[1]), writers


@pytest.mark.parametrize(("answer", "close", "status", "body"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", False, 200,
     b"hello world"),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", True, 200, b"until the end"),
    (b"HTTP/1.1 204 No Content\r\n\r\n", False, 204, b""),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", True, 502,
     b'{"message":"An invalid response was received from the upstream server"}'),
    (b"garbage\r\n\r\n", True, 502, b'{"message":"An invalid response was received from the upstream server"}'),
])
async def test_upstream_framing(gateway: StartGateway, answer: bytes, close: bool, status: int, body: bytes) -> None:
    srv, port, writers = await _raw_upstream(answer, close=close)
    gw, client = await gateway(doc(svc(port, retries=0, routes=[{"paths": ["/"]}])))
    try:
        for _ in range(2):  # the second request reuses the pooled connection when there is one
            r = await client.get("/")
            assert (r.status_code, r.content) == (status, body)
            assert "transfer-encoding" not in r.headers or status != 200
    finally:
        await gw.stop()  # its pooled connections close first, so the upstream's handlers finish
        srv.close()
        for w in writers:
            w.close()
        await srv.wait_closed()


async def test_write_timeout_when_the_upstream_takes_no_bytes(gateway: StartGateway) -> None:
    done = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await done.wait()  # accepts, reads nothing: the request stays in the gateway's send buffer
        writer.close()

    srv = await asyncio.start_server(never_reads, "127.0.0.1", 0, limit=1024)
    port = int(srv.sockets[0].getsockname()[1])
    gw, client = await gateway(doc(svc(port, retries=0, read_timeout=30000, write_timeout=300,
                                       routes=[{"paths": ["/"]}])))
    try:
        r = await client.post("/", content=b"z" * (15 << 20))
        assert (r.status_code, r.json()) == (504, {"message": "The upstream server is timing out"})
    finally:
        await gw.stop()
        done.set()
        srv.close()
        await srv.wait_closed()


async def test_an_answer_that_cannot_be_encoded_is_a_500_not_a_hang(upstreams: Upstreams,
                                                                     gateway: StartGateway) -> None:
    port = await upstreams.start("a")
    _gw, client = await gateway(doc(svc(port, routes=[{"paths": ["/"]}], plugins=[
        {"name": "response-transformer", "config": {"add": {"headers": ["x-snow:\u2603"]}}}])))
    r = await client.get("/x")
    assert (r.status_code, r.json()) == (500, {"message": "An unexpected error occurred"})
    assert (await client.get("/y")).status_code == 500  # the connection still serves
