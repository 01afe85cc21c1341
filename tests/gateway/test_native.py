"""The gateway's C connections (``_native/gwfast.c``) against the pure-Python path: the same bytes.

Each differential test runs the same raw requests through a gateway with ``native=True`` and one
with ``native=False`` against a recording upstream, and compares what the upstream received and what
the client received, byte for byte (the latency headers, ``RateLimit-Reset``/``Retry-After`` and the
gateway's own port masked).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest

from pitwall.traffic.gateway import proxy
from pitwall.traffic.gateway.declarative import load_declarative
from pitwall.traffic.gateway.plugins import ratelimit
from pitwall.traffic.gateway.proxy import GatewayServer
from pitwall.traffic.gateway.runtime import compile_state

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(proxy._gwfast is None, reason="the C extension _gwfast is not built")]

V3 = "3.0"
_MASK = re.compile(rb"((?:X-Kong-(?:Upstream|Proxy|Response)-Latency|RateLimit-Reset|Retry-After|"
                   rb"x-forwarded-port): )\d+", re.I)


def mask(data: bytes) -> bytes:
    return _MASK.sub(rb"\1N", data)


class Recorder(asyncio.Protocol):
    """An upstream that records each raw request and answers by its path:
    ``/chunked``, ``/close`` (close-delimited), ``/status/N``, ``/sleep/S``, ``/garbage``, ``/interim`` (100 and
    103 before its answer), ``/drop`` (closes
    without answering), ``/drop-second`` (closes a reused connection without answering), else a fixed 200."""

    def __init__(self, up: Upstream) -> None:
        self.up = up
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.served = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.up.connections += 1
        self.up.open += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.up.open -= 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, rest = self.buf.partition(b"\r\n\r\n")
            m = re.search(rb"\r\ncontent-length: (\d+)", head, re.I)
            n = int(m.group(1)) if m else 0
            if len(rest) < n:
                return
            raw = head + b"\r\n\r\n" + rest[:n]
            self.buf = rest[n:]
            self.up.seen.append(raw)
            path = raw.split(b" ", 2)[1].decode()
            self.served += 1
            asyncio.get_running_loop().create_task(self.answer(path, self.served))

    async def answer(self, path: str, nth: int) -> None:
        t = self.transport
        if t is None:
            return
        body = b'{"ok":true}'
        if path.startswith("/sleep/"):
            await asyncio.sleep(float(path.rsplit("/", 1)[1]))
        if t.is_closing():
            return
        if path.startswith("/chunked"):
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
                    b"X-Up: 1\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
        elif path.startswith("/close"):
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
            t.close()
        elif path.startswith("/garbage"):
            t.write(b"this is not http\r\n\r\n")
        elif path.startswith("/slowhead"):  # the head in pieces of 9 bytes, each its own read upstream
            data = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 500 + b"\r\nContent-Length: 4\r\n\r\nslow"
            for i in range(0, len(data), 9):
                if t.is_closing():
                    return
                t.write(data[i:i + 9])
                await asyncio.sleep(0.0005)
        elif path.startswith("/interim"):  # interim answers first, then this request's own (numbered)
            t.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nContent-Length: " + str(len(str(nth))).encode() + b"\r\n\r\n" +
                    str(nth).encode())
        elif path.startswith("/drop") and (nth > 1 or path == "/drop"):
            t.close()
        elif path.startswith("/status/"):
            code = int(path.rsplit("/", 1)[1])
            t.write(f"HTTP/1.1 {code} Whatever\r\ncontent-length: 0\r\n\r\n".encode())
        else:
            t.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                    str(len(body)).encode() + b"\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                    b"X-Trailing:  spaced  \r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n" + body)


class Upstream:
    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.connections = 0
        self.open = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: Recorder(self), "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    u = Upstream()
    await u.start()
    try:
        yield u
    finally:
        await u.close()


Gateways = Callable[..., Awaitable[GatewayServer]]


@pytest.fixture
async def gateways() -> AsyncIterator[Gateways]:
    started: list[GatewayServer] = []

    async def start(doc: dict[str, Any], *, native: bool) -> GatewayServer:
        gw = GatewayServer(compile_state(load_declarative(doc)), native=native)
        await gw.start("127.0.0.1", 0)
        started.append(gw)
        return gw

    try:
        yield start
    finally:
        for gw in started:
            await gw.stop()


async def exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes, read until the gateway closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def doc_for(port: int, **extra: Any) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    return {"_format_version": V3, "services": [
        {"name": "plain", "url": url, "routes": [
            {"name": "prefix", "paths": ["/a"]},
            {"name": "special", "paths": ["/chunked", "/close", "/status", "/garbage", "/sleep", "/interim",
                                          "/slowhead"],
             "strip_path": False},
            {"name": "keep", "paths": ["/keep"], "strip_path": False},
            {"name": "host", "hosts": ["api.example.com", "*.wild.test"], "paths": ["/"],
             "preserve_host": True},
            {"name": "method", "methods": ["DELETE"], "paths": ["/m"]}]},
        {"name": "pathy", "url": url + "/base/", "routes": [
            {"name": "v1", "paths": ["/v1"], "path_handling": "v1"},
            {"name": "v0", "paths": ["/v0"]}]},
        *extra.get("services", [])],
        "consumers": extra.get("consumers", [])}


async def both(gateways: Gateways, upstream: Upstream, doc: dict[str, Any],
               conversations: list[bytes]) -> tuple[list[bytes], list[bytes], GatewayServer]:
    """Each conversation through the native gateway, then the Python one: (client bytes, upstream bytes)
    of each run; asserts they are the same once masked. Returns the native gateway too."""
    runs: list[tuple[list[bytes], list[bytes]]] = []
    native_gw: GatewayServer | None = None
    for native in (True, False):
        ratelimit.COUNTERS.counts.clear()
        gw = await gateways(doc, native=native)
        if native:
            native_gw = gw
            assert gw.engine is not None
        upstream.seen.clear()
        got = [mask(await exchange(gw.port, c)) for c in conversations]
        runs.append((got, [mask(s) for s in upstream.seen]))
    (n_client, n_up), (p_client, p_up) = runs
    for i, (a, b) in enumerate(zip(n_client, p_client, strict=True)):
        assert a == b, f"conversation {i}:\nnative {a!r}\npython {b!r}"
    assert n_up == p_up
    assert native_gw is not None
    return n_client, n_up, native_gw


REQUESTS = [
    # repeated headers (joined), cookies ("; "), an X-Forwarded-For to extend, mixed-case names, a query
    b"GET /a/b/c?x=1&y=2 HTTP/1.1\r\nHost: Gw.Example:8000\r\nX-Multi: one\r\nUser-Agent: t\r\nx-multi: two\r\n"
    b"Cookie: a=1\r\nCOOKIE: b=2\r\nX-Forwarded-For: 10.1.1.1\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 1.2.3.4\r\n"
    b"Empty:\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    b"PUT /a/put HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    b"HEAD /a/h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /a/ten HTTP/1.0\r\nHost: x\r\n\r\n",
    b"GET /a/ten-ka HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\nGET /a/x HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET /keep/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /anything?q HTTP/1.1\r\nHost: api.example.com:9999\r\nConnection: close\r\n\r\n",
    b"GET /w HTTP/1.1\r\nHost: a.wild.test\r\nConnection: close\r\n\r\n",
    b"DELETE /m/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /m/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",  # no route: 404 (delegated)
    b"GET /v1/p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /v0x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /v0 HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /close HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /status/204 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /status/299 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /status/503 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /garbage HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"HEAD /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    # pipelined, then a chunked request body (handed to the Python parser) and more behind it
    b"GET /a/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /chunked HTTP/1.1\r\nHost: x\r\n\r\nHEAD /a/2 HTTP/1.1\r\nHost: x\r\n\r\n"
    b"POST /a/3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    b"GET /a/4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    # refusals: over the URL limit, a bad request line, a body over the limit
    b"GET /a/" + b"u" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /a/1 HTTP/1.1\r\nHost: x\r\n\r\nBROKEN\r\n\r\n",
    b"GET /a/1 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 40000 + b"\r\n\r\n",
    b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
    # a header name longer than 255 bytes is passed on as any other (it was a 500 in C)
    b"GET /a/long HTTP/1.1\r\nHost: x\r\nX-" + b"N" * 300 + b": v\r\nConnection: close\r\n\r\n",
]


async def test_same_bytes_as_the_python_path(gateways: Gateways, upstream: Upstream) -> None:
    client, seen, gw = await both(gateways, upstream, doc_for(upstream.port), REQUESTS)
    assert gw.engine is not None and gw.engine.requests > 20  # served in C, not only delegated
    assert client[0].startswith(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Trailing: spaced  \r\n"
                                b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nVia: 1.1 pitwall\r\n")
    assert seen[0].startswith(b"GET /b/c?x=1&y=2 HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"x-multi: one, two\r\n" in seen[0] and b"cookie: a=1; b=2\r\n" in seen[0]
    assert b"x-forwarded-for: 10.1.1.1, 127.0.0.1\r\n" in seen[0]
    assert client[15].count(b"hello world") == 1
    assert client[20].startswith(b"HTTP/1.1 502 Bad Gateway")
    assert client[22].count(b"HTTP/1.1 200 OK") == 5
    assert client[23].startswith(b"HTTP/1.1 414") and client[25].startswith(b"HTTP/1.1 431")
    # as the Python path: the refusal is written at once, before the answer to the request in flight
    assert client[24].startswith(b"HTTP/1.1 400 Bad Request") and b"HTTP/1.1 200 OK" in client[24]
    assert client[26].startswith(b"HTTP/1.1 413")


async def test_routes_that_must_be_delegated_still_work(gateways: Gateways, upstream: Upstream) -> None:
    url = f"http://127.0.0.1:{upstream.port}"
    doc = {"_format_version": V3, "services": [{"name": "s", "url": url, "routes": [
        {"name": "regex", "paths": ["~/r/\\d+$"]},
        {"name": "hdr", "paths": ["/h"], "headers": {"x-v": ["1"]}},
        {"name": "basic", "paths": ["/basic"], "plugins": [{"name": "basic-auth"}]},
        {"name": "prom", "paths": ["/prom"], "plugins": [{"name": "prometheus"}]},
        {"name": "bare", "hosts": ["bare.test"], "paths": ["/bare"]}]}],
        "consumers": [{"username": "u", "basicauth_credentials": [{"username": "u", "password": "p"}]}]}
    reqs = [b"GET /r/12 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET /h HTTP/1.1\r\nHost: x\r\nX-V: 1\r\nConnection: close\r\n\r\n",
            b"GET /basic HTTP/1.1\r\nHost: x\r\nAuthorization: Basic dTpw\r\nConnection: close\r\n\r\n",
            b"GET /basic HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET /prom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
    client, _seen, gw = await both(gateways, upstream, doc, reqs)
    assert [c[:12] for c in client] == [b"HTTP/1.1 200"] * 3 + [b"HTTP/1.1 401", b"HTTP/1.1 200"]
    assert gw.engine is not None and gw.engine.requests == 0 and gw.requests_total == 5
    # a route tried before the first candidate C cannot evaluate (the regex one) is served in C
    r = await exchange(gw.port, b"GET /bare HTTP/1.1\r\nHost: bare.test\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 200 OK") and gw.engine.requests == 1 and gw.requests_total == 6
    r = await exchange(gw.port, b"GET /bare HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 404") and gw.engine.requests == 1 and gw.requests_total == 7


async def test_retry_when_the_upstream_closes_a_pooled_connection(gateways: Gateways, upstream: Upstream) -> None:
    reqs = [b"GET /a/drop-second HTTP/1.1\r\nHost: x\r\n\r\nGET /a/drop-second HTTP/1.1\r\nHost: x\r\n"
            b"Connection: close\r\n\r\n",
            b"POST /a/drop-second HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"]
    doc = doc_for(upstream.port)
    client, seen, _gw = await both(gateways, upstream, doc, reqs)
    # the GET is retried on a new connection; the POST on the reused one is not retried (not idempotent)
    assert client[0].count(b"HTTP/1.1 200 OK") == 2 and len(seen) == 4
    assert client[1].startswith(b"HTTP/1.1 502 Bad Gateway")


async def test_upstream_timeout_is_504_and_garbage_502(gateways: Gateways, upstream: Upstream) -> None:
    doc = doc_for(upstream.port)
    doc["services"][0].update(read_timeout=200, retries=1)
    reqs = [b"GET /sleep/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET /garbage HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"HEAD /sleep/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
    client, seen, gw = await both(gateways, upstream, doc, reqs)
    assert client[0].startswith(b"HTTP/1.1 504 Gateway Timeout") and b"Server: pitwall" in client[0]
    assert client[1].startswith(b"HTTP/1.1 502") and client[2].startswith(b"HTTP/1.1 504")
    assert len(seen) == 6  # each tried twice (retries=1, idempotent)
    assert gw.engine is not None and gw.engine.waiting() == 0


async def test_interim_answers_are_skipped_and_the_connection_stays_in_step(gateways: Gateways,
                                                                             upstream: Upstream) -> None:
    """A 100 or 103 before the answer is not the answer (nginx and Kong skip it): the client gets the final
    response, and the pooled connection serves the next request its own answer, on both paths."""
    reqs = [b"GET /interim HTTP/1.1\r\nHost: x\r\n\r\nGET /interim HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"HEAD /interim HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
    client, _seen, _gw = await both(gateways, upstream, doc_for(upstream.port), reqs)
    first, second = client[0].split(b"HTTP/1.1 200 OK")[1:]
    assert b"100 Continue" not in client[0] and b"Link:" not in client[0]
    assert first.endswith(b"\r\n\r\n1") and second.endswith(b"\r\n\r\n2")
    assert client[1].startswith(b"HTTP/1.1 200 OK")


async def test_unreachable_and_unresolvable_upstreams(gateways: Gateways, upstream: Upstream) -> None:
    doc = {"_format_version": V3, "services": [
        {"name": "down", "url": "http://127.0.0.1:1", "retries": 2, "routes": [{"paths": ["/down"]}]},
        {"name": "nxdomain", "url": "http://no-such-host.invalid", "routes": [{"paths": ["/nx"]}]}]}
    reqs = [b"GET /down HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"POST /nx HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"]
    client, _seen, _gw = await both(gateways, upstream, doc, reqs)
    assert client[0].startswith(b"HTTP/1.1 502") and client[1].startswith(b"HTTP/1.1 503")
    assert b'{"message":"name resolution failed"}' in client[1]


async def test_reload_while_requests_are_in_flight(gateways: Gateways, upstream: Upstream) -> None:
    other = Upstream()
    await other.start()
    try:
        gw = await gateways(doc_for(upstream.port), native=True)
        slow = [asyncio.create_task(exchange(gw.port, b"GET /sleep/0.3 HTTP/1.1\r\nHost: x\r\nConnection: close"
                                                      b"\r\n\r\n")) for _ in range(5)]
        await asyncio.sleep(0.1)
        gw.config = compile_state(load_declarative(doc_for(other.port)))
        after = await exchange(gw.port, b"GET /a/new HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        results = await asyncio.gather(*slow)
        assert all(r.startswith(b"HTTP/1.1 200 OK") for r in results)
        assert after.startswith(b"HTTP/1.1 200 OK")
        assert len(upstream.seen) == 5 and [s.split(b" ")[1] for s in other.seen] == [b"/new"]
    finally:
        await other.close()


async def test_client_gone_mid_request_frees_the_upstream_connection(gateways: Gateways,
                                                                     upstream: Upstream) -> None:
    gw = await gateways(doc_for(upstream.port), native=True)
    assert gw.engine is not None
    _reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /sleep/0.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    for _ in range(100):
        if upstream.seen:
            break
        await asyncio.sleep(0.01)
    assert gw.engine.waiting() == 1 and upstream.open == 1
    writer.close()
    for _ in range(100):
        if upstream.open == 0:
            break
        await asyncio.sleep(0.01)
    assert upstream.open == 0 and gw.engine.waiting() == 0  # closed, not left in the pool
    pool = gw.engine.pool("127.0.0.1", upstream.port)
    assert pool.idle() == 0
    r = await exchange(gw.port, b"GET /a/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 200 OK") and upstream.connections == 2
    await asyncio.sleep(0.6)  # the abandoned answer would have come now: nothing breaks
    assert pool.idle() == 1


async def test_pipelining_pauses_and_resumes_reading(gateways: Gateways, upstream: Upstream) -> None:
    gw = await gateways(doc_for(upstream.port), native=True)
    many = b"".join(f"GET /a/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(40))
    data = await exchange(gw.port, many + b"GET /a/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.count(b"HTTP/1.1 200 OK") == 41
    assert [s.split(b" ")[1] for s in upstream.seen] == [f"/{i}".encode() for i in range(40)] + [b"/last"]


CONSUMERS = [{"username": "alice", "custom_id": "a-1", "keyauth_credentials": [{"key": "alice-key"}]},
             {"id": "5f1c3a2e-0000-4000-8000-00000000b0b0", "custom_id": "b-2",
              "keyauth_credentials": [{"key": "bob-key"}]}]


def auth_doc(port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}"
    return {"_format_version": V3, "consumers": CONSUMERS, "services": [
        {"name": "ka", "url": url, "routes": [
            {"name": "default", "paths": ["/ka"]},
            {"name": "hidden", "paths": ["/hide"], "plugins": [{"name": "key-auth", "config": {
                "hide_credentials": True, "key_names": ["X-Key", "apikey"], "realm": "shop",
                "run_on_preflight": False, "key_in_query": False}}]}],
         "plugins": [{"name": "key-auth"}]},
        {"name": "rl", "url": url, "routes": [
            {"name": "by-consumer", "paths": ["/rc"], "plugins": [
                {"name": "key-auth"}, {"name": "rate-limiting", "config": {"hour": 3, "day": 5, "year": 100}}]},
            {"name": "by-ip", "paths": ["/ri"], "plugins": [
                {"name": "rate-limiting", "config": {"hour": 2, "month": 50, "limit_by": "ip"}}]},
            {"name": "by-service", "paths": ["/rs"], "plugins": [
                {"name": "rate-limiting", "config": {"hour": 1, "limit_by": "service", "error_code": 403,
                                                     "error_message": "slow down", "hide_client_headers": True}}]},
            {"name": "by-credential", "paths": ["/rk"], "plugins": [
                {"name": "key-auth"}, {"name": "rate-limiting", "config": {"day": 1, "limit_by": "credential"}}]},
            {"name": "by-header", "paths": ["/rh"], "plugins": [
                {"name": "rate-limiting", "config": {"day": 1, "limit_by": "header", "header_name": "x-t"}}]}]}]}


def get(path: str, *headers: str, method: str = "GET") -> bytes:
    lines = "".join(f"{h}\r\n" for h in headers)
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{lines}Connection: close\r\n\r\n".encode()


AUTH_REQUESTS = [
    get("/ka/x"),
    get("/ka/x", "apikey: nope"),
    get("/ka/x", "apikey: alice-key", "X-Consumer-Id: forged", "x-anonymous-consumer: true"),
    get("/ka/x", "ApiKey: bob-key", "X-Credential-Identifier: forged"),
    get("/ka/x", "apikey: alice-key", "apikey: bob-key"),
    get("/ka/x", "apikey: a, b"),
    get("/ka/x", "apikey:"),
    get("/ka/x?apikey=alice-key"),  # a key in the query: served by the Python path
    get("/ka/x", "apikey: alice-key", method="HEAD"),
    get("/hide/y", "x-key: bob-key", "apikey: alice-key", "Accept: */*"),
    get("/hide/y", "apikey: alice-key"),
    get("/hide/y"),
    get("/hide/y", method="OPTIONS"),
    get("/hide/y?apikey=alice-key"),
]


async def test_key_auth_same_bytes(gateways: Gateways, upstream: Upstream) -> None:
    client, seen, gw = await both(gateways, upstream, auth_doc(upstream.port), AUTH_REQUESTS)
    assert gw.engine is not None and gw.engine.requests == len(AUTH_REQUESTS) - 1  # all but the query key
    assert client[0].startswith(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json; charset=utf-8\r\n"
                                b"WWW-Authenticate: Key\r\nServer: pitwall\r\n")
    assert b'{"message":"No API key found in request"}' in client[0]
    assert b'"Unauthorized"' in client[1] and b"Duplicate API key found" in client[4]
    assert b"Duplicate API key found" in client[5] and b"No API key found" in client[6]
    assert client[2].startswith(b"HTTP/1.1 200") and client[7].startswith(b"HTTP/1.1 200")
    alice = seen[0]
    assert b"forged" not in alice and alice.index(b"apikey: alice-key\r\n") < alice.index(b"x-consumer-id: ")
    assert b"x-consumer-custom-id: a-1\r\nx-consumer-username: alice\r\nx-credential-identifier: " in alice
    assert b'WWW-Authenticate: Key realm="shop"' in client[11] and client[12].startswith(b"HTTP/1.1 200")
    hidden = seen[4]
    assert b"x-key" not in hidden and b"apikey: alice-key" in hidden and b"accept: */*" in hidden


RL_REQUESTS = [
    *[get("/rc", "apikey: alice-key") for _ in range(4)], get("/rc", "apikey: bob-key"),
    *[get("/ri/a") for _ in range(3)], get("/ri/b", method="HEAD"),
    *[get("/rs") for _ in range(2)],
    get("/rk", "apikey: alice-key"), get("/rk", "apikey: alice-key"),
    get("/rh", "x-t: a"), get("/rh", "x-t: a"),  # limit_by header: the Python path, same counters
]


async def test_rate_limiting_same_bytes_and_same_counters(gateways: Gateways, upstream: Upstream) -> None:
    client, _seen, gw = await both(gateways, upstream, auth_doc(upstream.port), RL_REQUESTS)
    assert gw.engine is not None and gw.engine.requests == len(RL_REQUESTS) - 2
    first = client[0]
    assert (b"X-RateLimit-Limit-Hour: 3\r\nX-RateLimit-Remaining-Hour: 2\r\nX-RateLimit-Limit-Day: 5\r\n"
            b"X-RateLimit-Remaining-Day: 4\r\nX-RateLimit-Limit-Year: 100\r\nX-RateLimit-Remaining-Year: 99\r\n"
            b"RateLimit-Limit: 3\r\nRateLimit-Remaining: 2\r\nRateLimit-Reset: N\r\nVia: 1.1 pitwall\r\n") in first
    assert client[3].startswith(b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json; charset=utf-8"
                                b"\r\nX-RateLimit-Limit-Hour: 3\r\nX-RateLimit-Remaining-Hour: 0\r\n")
    assert b"Retry-After: N\r\nServer: pitwall\r\n" in client[3] and client[4].startswith(b"HTTP/1.1 200")
    assert client[7].startswith(b"HTTP/1.1 429") and client[8].startswith(b"HTTP/1.1 429")
    assert client[10].startswith(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json; charset=utf-8\r\n"
                                 b"Server: pitwall\r\n") and b'{"message":"slow down"}' in client[10]
    assert client[12].startswith(b"HTTP/1.1 429") and client[14].startswith(b"HTTP/1.1 429")
    # the C path counts in the Python path's store, under the same keys
    keys = {k[1:] for k in ratelimit.COUNTERS.counts}
    assert ("127.0.0.1", "hour") in keys and ("a", "day") in keys


async def test_rate_limit_exact_under_concurrency_in_c(gateways: Gateways, upstream: Upstream) -> None:
    ratelimit.COUNTERS.counts.clear()
    doc = {"_format_version": V3, "services": [{"name": "s", "url": f"http://127.0.0.1:{upstream.port}",
                                                "routes": [{"paths": ["/"]}], "plugins": [
        {"name": "rate-limiting", "config": {"hour": 25, "limit_by": "ip"}}]}]}
    gw = await gateways(doc, native=True)

    async def client() -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" * 4 + get("/a"))
        try:
            data = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        return re.findall(rb"HTTP/1.1 (\d+)", data)

    codes = [c for batch in await asyncio.gather(*(client() for _ in range(20))) for c in batch]
    assert codes.count(b"200") == 25 and codes.count(b"429") == 75
    assert len(upstream.seen) == 25 and gw.engine is not None and gw.engine.requests == 100


async def test_reload_swaps_the_key_dicts(gateways: Gateways, upstream: Upstream) -> None:
    gw = await gateways(auth_doc(upstream.port), native=True)
    assert (await exchange(gw.port, get("/ka", "apikey: alice-key"))).startswith(b"HTTP/1.1 200")
    doc = auth_doc(upstream.port)
    doc["consumers"] = [{"username": "carol", "keyauth_credentials": [{"key": "carol-key"}]}]
    gw.config = compile_state(load_declarative(doc))
    assert (await exchange(gw.port, get("/ka", "apikey: alice-key"))).startswith(b"HTTP/1.1 401")
    assert (await exchange(gw.port, get("/ka", "apikey: carol-key"))).startswith(b"HTTP/1.1 200")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_a_request_that_cannot_be_built_is_answered(gateways: Gateways, upstream: Upstream,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The Request handed to ``begin`` fails to build: a 500, then the connection goes on (it hung, busy)."""
    from pitwall.traffic.gateway import native
    from pitwall.traffic.gateway.context import Request

    class Fragile(Request):
        __slots__ = ()

        def __init__(self, method: str, target: str, *rest: Any) -> None:
            if target == "/m/boom":
                raise ValueError("boom")
            super().__init__(method, target, *rest)

    monkeypatch.setattr(native, "Request", Fragile)
    gw = await gateways(doc_for(upstream.port), native=True)
    data = await exchange(gw.port, b"GET /m/boom HTTP/1.1\r\nHost: x\r\n\r\nGET /a/1 HTTP/1.1\r\nHost: x\r\n"
                                   b"Connection: close\r\n\r\n", timeout=5)
    assert data.startswith(b"HTTP/1.1 500 Internal Server Error") and data.count(b"HTTP/1.1 200 OK") == 1


async def trickle(port: int, data: bytes, piece: int) -> bytes:
    """Send raw bytes ``piece`` at a time (each its own read on the gateway's side), read to the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(0, len(data), piece):
            writer.write(data[i:i + piece])
            await writer.drain()
            await asyncio.sleep(0.0005)
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_a_request_and_a_response_sent_a_few_bytes_at_a_time(gateways: Gateways, upstream: Upstream) -> None:
    """A head is parsed again only once a line ends (not at every read), a body whatever its bytes: both still
    answered, and a head over the limit still refused, as on the Python path."""
    post = (b"POST /a/t HTTP/1.1\r\nHost: x\r\nX-Long: " + b"v" * 800 + b"\r\nContent-Length: 600\r\n"
            b"Connection: close\r\n\r\n" + b"b" * 600)
    big = b"GET /a/big HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 50000 + b"\r\n\r\n"
    for native in (True, False):
        gw = await gateways(doc_for(upstream.port), native=native)
        upstream.seen.clear()
        got = await trickle(gw.port, post, 13)
        assert got.startswith(b"HTTP/1.1 200 OK") and upstream.seen[0].endswith(b"b" * 600)
        slow = await exchange(gw.port, b"GET /slowhead HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert slow.startswith(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 500) and slow.endswith(b"\r\n\r\nslow")
        assert (await trickle(gw.port, big, 4096)).startswith(b"HTTP/1.1 431")
        if native:
            assert gw.engine is not None and gw.engine.requests == 2


async def test_an_empty_set_of_kubernetes_routes_keeps_the_c_path(gateways: Gateways, upstream: Upstream) -> None:
    """``pitwall server`` with the Kubernetes API publishes its (maybe empty) Ingress/HTTPRoute set: empty,
    requests are still served in C; with a route in it, they go to Python, where Kubernetes routes are tried."""
    from pitwall.traffic.gateway.ingress import IngressRoutes
    from pitwall.traffic.gateway.kuberoutes import KubeRoutes

    gw = await gateways(doc_for(upstream.port), native=True)
    assert gw.engine is not None
    req = b"GET /a/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    gw.kube_routes = KubeRoutes()
    assert (await exchange(gw.port, req)).startswith(b"HTTP/1.1 200 OK") and gw.engine.requests == 1
    gw.kube_routes = KubeRoutes(ingress=IngressRoutes(default=gw.config.routes[0]))
    assert (await exchange(gw.port, req)).startswith(b"HTTP/1.1 200 OK") and gw.engine.requests == 1
    assert gw.requests_total == 2


def test_the_c_limits_are_the_python_paths() -> None:
    """gwfast.c compiles its limits in; they must stay the ones the Python path answers by."""
    from pitwall.traffic.gateway import upstream

    c = proxy._gwfast
    assert c is not None
    assert (c.MAX_URL, c.MAX_HEADER_BYTES, c.MAX_PIPELINE) == (proxy.MAX_URL, proxy.MAX_HEADER_BYTES,
                                                               proxy.MAX_PIPELINE)
    assert (c.MAX_IDLE, c.MAX_RESPONSE_BYTES) == (upstream.MAX_IDLE, upstream.MAX_RESPONSE_BYTES)
