"""A real upstream HTTP server on loopback that echoes what it got, and a gateway started from a config dict."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import httptools
import httpx
import orjson
import pytest

from pitwall.traffic.gateway.declarative import load_declarative
from pitwall.traffic.gateway.proxy import GatewayServer, Resolver
from pitwall.traffic.gateway.runtime import compile_state
from pitwall.traffic.gateway.stats import GatewayStats


class Echo(asyncio.Protocol):
    """Answers every request with JSON: method, path, query, headers, body; ``/status/N`` answers N,
    ``/sleep/S`` waits S seconds first; the ``x-echo-name`` header of the response names the server."""

    def __init__(self, name: str, seen: list[dict[str, Any]]) -> None:
        self.name = name
        self.seen = seen
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        path, _, query = self.url.decode().partition("?")
        got = {"method": self.parser.get_method().decode(), "path": path, "query": query, "headers": self.headers,
               "body": self.body.decode(), "server": self.name}
        self.seen.append(got)
        asyncio.get_running_loop().create_task(self._answer(path, got))

    async def _answer(self, path: str, got: dict[str, Any]) -> None:
        status = 200
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
        if path.startswith("/sleep/"):
            await asyncio.sleep(float(path.rsplit("/", 1)[1]))
        body = orjson.dumps(got)
        head = (f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
                f"x-echo-name: {self.name}\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n\r\n").encode()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(head + body)


class Upstreams:
    """Echo servers on 127.0.0.1, each on its own port."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.servers: list[asyncio.Server] = []

    async def start(self, name: str) -> int:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: Echo(name, self.seen), "127.0.0.1", 0)
        self.servers.append(srv)
        return int(srv.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for s in self.servers:
            s.close()
            await s.wait_closed()


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    u = Upstreams()
    try:
        yield u
    finally:
        await u.close()


Started = tuple[GatewayServer, httpx.AsyncClient]
StartGateway = Callable[..., Awaitable[Started]]


@pytest.fixture
async def gateway() -> AsyncIterator[StartGateway]:
    """``await gateway(config_dict)`` -> (server, httpx client whose base URL is the gateway)."""
    started: list[Started] = []

    async def start(doc: dict[str, Any], *, resolve: Resolver | None = None, stats: GatewayStats | None = None,
                    max_body_bytes: int = 16 << 20) -> Started:
        gw = GatewayServer(compile_state(load_declarative(doc), stats), resolve=resolve,
                           max_body_bytes=max_body_bytes)
        await gw.start("127.0.0.1", 0)
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.port}", timeout=10)
        started.append((gw, client))
        return gw, client

    try:
        yield start
    finally:
        for gw, client in started:
            await client.aclose()
            await gw.stop()


def svc(port: int, **extra: Any) -> dict[str, Any]:
    """A service on the echo server at ``port``."""
    return {"name": extra.pop("name", "echo"), "url": f"http://127.0.0.1:{port}", **extra}
