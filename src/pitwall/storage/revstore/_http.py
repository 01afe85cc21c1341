"""A minimal HTTP/1.1 JSON client on asyncio streams, for etcd's gateway only.

Why not httpx here: measured against etcd 3.4 on this machine (bench/revstore.py
and docs/state-store.md), httpx's async pool spends about 1.5 ms of CPU per
request and gets slower with concurrency (32 concurrent puts: 260/s), while
plain asyncio streams reach 2,800-3,900/s. The etcd backend is the control
plane's hot path, and its needs are narrow: POST a JSON body to a few paths,
read a JSON answer (Content-Length or chunked) or a stream of JSON lines, keep
connections alive. Anything beyond that (redirects, proxies, HTTP/2,
cookies) is deliberately absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ConnectFailed", "HttpPool", "TransportFailed"]

_MAX_HEADER = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024  # a range of many large objects; etcd's own request limit is 1.5 MiB


class TransportFailed(Exception):
    """The exchange broke after the request may have been sent."""


class ConnectFailed(TransportFailed):
    """No connection could be made: the request was certainly not sent."""


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _origin(base_url: str) -> tuple[str, int, bool]:
    u = urlsplit(base_url)
    tls = u.scheme == "https"
    return u.hostname or "127.0.0.1", u.port or (443 if tls else 80), tls


class HttpPool:
    """Keep-alive connections per origin; ``post`` for unary calls, ``stream`` for watches."""

    def __init__(self, *, max_idle: int = 64, timeout_s: float = 5.0, ssl_context: ssl.SSLContext | None = None):
        self.max_idle = max_idle
        self.timeout_s = timeout_s
        self.ssl_context = ssl_context
        self._idle: dict[tuple[str, int, bool], list[_Conn]] = {}
        self._streams: set[asyncio.StreamWriter] = set()

    async def close(self) -> None:
        """Close idle connections and every open stream."""
        writers = [w for conns in self._idle.values() for _, w in conns] + list(self._streams)
        self._idle.clear()
        for w in writers:
            w.close()
        for w in writers:
            with contextlib.suppress(OSError):
                await w.wait_closed()

    async def _connect(self, origin: tuple[str, int, bool]) -> _Conn:
        host, port, tls = origin
        ctx = (self.ssl_context or ssl.create_default_context()) if tls else None
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, limit=_MAX_HEADER), self.timeout_s)
        except (OSError, TimeoutError) as e:
            raise ConnectFailed(f"cannot connect to {host}:{port}: {e!r}") from e

    @staticmethod
    def _request(origin: tuple[str, int, bool], path: str, body: bytes) -> bytes:
        host, port, _ = origin
        return (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    @staticmethod
    async def _head(r: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
        raw = await r.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return status, headers

    def _idle_conn(self, origin: tuple[str, int, bool]) -> _Conn | None:
        """A kept-alive connection the server has not closed meanwhile (its FIN would show as EOF)."""
        idle = self._idle.setdefault(origin, [])
        while idle:
            r, w = idle.pop()
            if not r.at_eof() and not w.is_closing():
                return r, w
            w.close()
        return None

    async def post(self, base_url: str, path: str, doc: Any, *, idempotent: bool = False) -> tuple[int, Any]:
        """POST ``doc`` as JSON; returns the status and the decoded JSON answer (None when empty).

        A reused connection that turns out closed (EOF before any answer) is retried on a new
        one only when ``idempotent``: otherwise the server may have applied the request.
        """
        origin = _origin(base_url)
        body = json.dumps(doc, separators=(",", ":")).encode()
        conn = self._idle_conn(origin)
        reused = conn is not None
        if conn is None:
            conn = await self._connect(origin)
        try:
            status, raw, keep = await self._exchange_or_close(conn, origin, path, body)
        except asyncio.IncompleteReadError as e:
            if not (reused and idempotent and not e.partial):
                raise TransportFailed(repr(e)) from e
            conn = await self._connect(origin)
            try:
                status, raw, keep = await self._exchange_or_close(conn, origin, path, body)
            except asyncio.IncompleteReadError as e2:
                raise TransportFailed(repr(e2)) from e2
        idle = self._idle.setdefault(origin, [])
        if keep and len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn[1].close()
        try:
            return status, (json.loads(raw) if raw.strip() else None)
        except ValueError as e:
            raise TransportFailed(f"answer is not JSON: {raw[:200]!r}") from e

    async def _exchange_or_close(self, conn: _Conn, origin: tuple[str, int, bool], path: str,
                                 body: bytes) -> tuple[int, bytes, bool]:
        """One exchange; on any failure, cancellation included, the connection is closed (a
        half-read answer would poison the next request). An empty EOF stays IncompleteReadError."""
        try:
            return await asyncio.wait_for(self._exchange(conn, origin, path, body), self.timeout_s)
        except asyncio.IncompleteReadError:
            conn[1].close()
            raise
        except (OSError, TimeoutError, asyncio.LimitOverrunError, ValueError) as e:
            conn[1].close()
            raise TransportFailed(repr(e)) from e
        except BaseException:
            conn[1].close()
            raise

    async def _exchange(self, conn: _Conn, origin: tuple[str, int, bool], path: str,
                        body: bytes) -> tuple[int, bytes, bool]:
        r, w = conn
        w.write(self._request(origin, path, body))
        await w.drain()
        status, headers = await self._head(r)
        if "content-length" in headers:
            n = int(headers["content-length"])
            if n > _MAX_BODY:
                raise ValueError(f"answer of {n} bytes is too large")
            raw = await r.readexactly(n)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            size = 0
            async for chunk in self._chunks(r):
                size += len(chunk)
                if size > _MAX_BODY:
                    raise ValueError("answer is too large")
                parts.append(chunk)
            raw = b"".join(parts)
        else:
            raw = await r.read(_MAX_BODY)
            return status, raw, False
        return status, raw, headers.get("connection", "").lower() != "close"

    @staticmethod
    async def _chunks(r: asyncio.StreamReader) -> AsyncIterator[bytes]:
        while True:
            line = await r.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # Trailers (etcd's gateway sends Grpc-Trailer-*), then the empty line that ends the body.
                while (await r.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return
            data = await r.readexactly(size + 2)
            yield data[:-2]

    async def stream(self, base_url: str, path: str, doc: Any) -> AsyncGenerator[Any, None]:
        """POST ``doc`` and yield each JSON line of a streaming (chunked) answer, on a connection of its own.

        Raises ``TransportFailed`` when the stream breaks; ends when the server ends it.
        """
        origin = _origin(base_url)
        r, w = await self._connect(origin)
        self._streams.add(w)
        try:
            w.write(self._request(origin, path, json.dumps(doc, separators=(",", ":")).encode()))
            await w.drain()
            status, headers = await asyncio.wait_for(self._head(r), self.timeout_s)
            if status != 200:
                raise TransportFailed(f"watch answered HTTP {status}")
            chunked = headers.get("transfer-encoding", "").lower() == "chunked"
            buf = b""
            source = self._chunks(r) if chunked else _raw(r)
            async for chunk in source:
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
                if len(buf) > _MAX_BODY:
                    raise TransportFailed("watch message too large")
            if buf.strip():
                yield json.loads(buf)
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            raise TransportFailed(repr(e)) from e
        finally:
            self._streams.discard(w)
            w.close()


async def _raw(r: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        data = await r.read(65536)
        if not data:
            return
        yield data
