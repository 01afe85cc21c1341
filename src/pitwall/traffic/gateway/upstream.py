"""HTTP/1.1 to upstreams: keep-alive connection pools, Kong's timeouts, a bounded response.

One ``_Conn`` (an asyncio Protocol with httptools' response parser) per
upstream connection; idle connections wait in a pool per ``(host, port)``
(at most ``MAX_IDLE`` each) and are reused by the next request, as Kong's
``upstream_keepalive_pool_size``. ``Pools.send`` writes one request and
reads one whole response (``response_buffering``), with the service's
``connect_timeout``, ``write_timeout`` and ``read_timeout``. The proxy's
usual case skips the coroutine: ``Pools.take`` an idle connection,
``_Conn.start`` with a ``Waiter`` that the parser calls with the response
(or the failure), ``Pools.release`` it. Failures are
typed: ``ConnectFailed`` (refused, unreachable, connect timeout: safe to
retry on another target), ``ReadTimeout`` (504) and ``BadResponse`` (502).
A connection that fails is closed, never pooled.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections import deque
from typing import Protocol, cast

import httptools

__all__ = ["BadResponse", "ConnectFailed", "NameResolutionFailed", "Pools", "ReadTimeout", "UpstreamResponse",
           "Waiter"]

MAX_IDLE = 64  # idle keep-alive connections kept per upstream host:port
MAX_RESPONSE_BYTES = 64 << 20  # a bigger upstream body is a 502, not unbounded memory
# Response headers that describe this connection, not the response: not passed on (the gateway frames its own).
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length",
                        b"proxy-connection", b"trailer", b"upgrade"})
_FRAMING = (b"content-length", b"transfer-encoding")
_HOP_LENGTHS = frozenset(len(h) for h in HOP_BY_HOP)  # a name of another length is passed on without lower()


class ConnectFailed(Exception):
    """No connection could be made (refused, unreachable, timed out)."""


class NameResolutionFailed(ConnectFailed):
    """The upstream host name does not resolve."""


class ReadTimeout(Exception):
    """The upstream did not answer (or was not written to) within its timeout."""


class BadResponse(Exception):
    """The upstream closed the connection early or sent something that is not HTTP."""


class UpstreamResponse:
    """One upstream response: its status, its end-to-end headers (``HOP_BY_HOP`` left out) as the
    ``name: value\r\n`` lines to send on, its body."""

    __slots__ = ("body", "headers", "keep_alive", "status")

    def __init__(self, status: int, headers: list[bytes], body: bytes, keep_alive: bool) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive


class Waiter(Protocol):
    """Who gets an upstream request's outcome: called once, with the response or the failure."""

    def upstream_done(self, conn: _Conn, result: UpstreamResponse | Exception) -> None: ...


class _FutureWaiter:
    """A ``Waiter`` for a coroutine: the outcome goes into a future (unless the waiting task was cancelled)."""

    __slots__ = ("fut",)

    def __init__(self, fut: asyncio.Future[UpstreamResponse | Exception]) -> None:
        self.fut = fut

    def upstream_done(self, conn: _Conn, result: UpstreamResponse | Exception) -> None:
        if not self.fut.done():
            self.fut.set_result(result)


class Deadlines:
    """Read timeouts of the requests waiting on upstreams, on one loop timer armed for the earliest.

    A timer handle made and cancelled per request costs ~1.8 us on uvloop; here a request costs a
    dict insert and delete, and the timer is re-armed only when a deadline falls before the armed
    one or when it fires. A connection past its deadline gets ``ReadTimeout`` as before.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: dict[_Conn, float] = {}  # connection -> loop time its response is due by
        self.timer: asyncio.TimerHandle | None = None
        self.armed_at = math.inf

    def add(self, conn: _Conn, timeout_s: float) -> None:
        deadline = self.loop.time() + timeout_s
        self.waiting[conn] = deadline
        if deadline < self.armed_at:
            self._arm(deadline)

    def discard(self, conn: _Conn) -> None:
        self.waiting.pop(conn, None)

    def _arm(self, at: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.armed_at = at
        self.timer = self.loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.armed_at = math.inf
        now = self.loop.time()
        for conn in [c for c, d in self.waiting.items() if d <= now]:
            del self.waiting[conn]
            conn.timed_out()
        if self.waiting:
            # The loop's clock may round just short of the deadline: never re-arm in the past (a busy loop).
            self._arm(max(min(self.waiting.values()), now + 0.001))


class _Conn(asyncio.Protocol):
    """One upstream connection; one request at a time."""

    def __init__(self, deadlines: Deadlines, key: tuple[str, int]) -> None:
        # Kept: on Python 3.11 each ``asyncio.get_running_loop()`` is a getpid() system call.
        self.loop = asyncio.get_running_loop()
        self.deadlines = deadlines
        self.key = key  # its pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: Waiter | None = None
        self.stalled: asyncio.TimerHandle | None = None  # write_timeout, armed only when the socket lags
        self.closed = False
        self.head_only = False
        self._reset()

    def _reset(self) -> None:
        self.headers: list[bytes] = []  # end-to-end ones as lines to send on: decoded only if a plugin reads them
        self.framed = False  # a Content-Length or Transfer-Encoding was received
        self.body: list[bytes] = []
        self.size = 0
        self.done = False
        self.headers_done = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BadResponse("upgrade not supported"))
        except httptools.HttpParserError as e:
            self._fail(BadResponse(str(e)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is None:
            return
        if self.headers_done and not self.framed:  # a body delimited by the close of the connection ends here
            self._settle(UpstreamResponse(self.parser.get_status_code(), self.headers, b"".join(self.body), False))
        else:
            self._settle(BadResponse("upstream closed the connection"))

    def _settle(self, result: UpstreamResponse | Exception) -> None:
        """Hand the outcome to the waiter, once."""
        w = self.waiter
        if w is not None:
            self.waiter = None
            w.upstream_done(self, result)

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) in _HOP_LENGTHS:
            low = name.lower()
            if low in HOP_BY_HOP:
                if low in _FRAMING:
                    self.framed = True
                return
        self.headers.append(b"".join((name, b": ", value, b"\r\n")))

    def on_headers_complete(self) -> None:
        if self.parser.get_status_code() < 200:
            return  # an interim response (100 Continue, 103 Early Hints): the answer follows
        self.headers_done = True
        if self.head_only:  # a response to HEAD has no body whatever its Content-Length says
            # Closed before the waiter runs: it may start the next request at once, and must not find
            # this connection (whose announced body may follow) back in the pool.
            self.closed = True
            self.on_message_complete()
            self.close()

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_RESPONSE_BYTES:
            self._fail(BadResponse("upstream response too large"))
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() < 200:  # an interim response ends: the answer follows it, as
            self._reset()  # nginx and Kong read it (its headers are not the answer's)
            return
        self.done = True
        if self.waiter is not None:
            p = self.parser
            self._settle(UpstreamResponse(p.get_status_code(), self.headers, b"".join(self.body),
                                          p.should_keep_alive()))

    def _fail(self, exc: Exception) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()  # drop what is unsent: half a request must not reach the upstream later
        self._settle(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def timed_out(self) -> None:
        self._fail(ReadTimeout())

    def _write_stalled(self) -> None:
        if self.transport is not None and self.transport.get_write_buffer_size() > 0:
            self._fail(ReadTimeout("upstream did not take the request within write_timeout"))

    def start(self, data: bytes, timeout_s: float, head_only: bool, write_timeout_s: float | None,
              waiter: Waiter) -> None:
        """Write one request; ``waiter`` gets its response or failure (the parser carries on across
        keep-alive responses), then ``Pools.release`` must follow. A plain call and a callback rather
        than a coroutine and a future: the proxy's usual request makes neither.

        ``timeout_s`` bounds the wait for the response; when the request does not fit the socket at
        once, ``write_timeout_s`` bounds how long the rest may wait to be taken."""
        assert self.transport is not None
        self._reset()
        self.head_only = head_only
        self.waiter = waiter
        self.transport.write(data)
        self.deadlines.add(self, timeout_s)
        if write_timeout_s is not None and self.transport.get_write_buffer_size() > 0:
            self.stalled = self.loop.call_later(write_timeout_s, self._write_stalled)

    def finish(self) -> None:
        """The request is over (answered, failed or cancelled): its timers go."""
        self.deadlines.discard(self)
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None
        self.waiter = None


class Pools:
    """Idle keep-alive connections per upstream ``(host, port)``."""

    def __init__(self) -> None:
        self.idle: dict[tuple[str, int], deque[_Conn]] = {}
        self.closed = False
        self.deadlines: Deadlines | None = None  # made on the loop, at the first connection

    def take(self, key: tuple[str, int]) -> _Conn | None:
        """An idle connection to ``key``, if one is open."""
        pool = self.idle.get(key)
        while pool:
            c = pool.pop()
            if not c.closed:
                return c
        return None

    async def _connect(self, host: str, port: int, timeout_s: float) -> _Conn:
        loop = asyncio.get_running_loop()
        deadlines = self.deadlines
        if deadlines is None:
            deadlines = self.deadlines = Deadlines(loop)
        try:
            async with asyncio.timeout(timeout_s):
                _t, conn = await loop.create_connection(lambda: _Conn(deadlines, (host, port)), host, port)
        except socket.gaierror as e:
            raise NameResolutionFailed(str(e)) from None
        except (OSError, TimeoutError) as e:
            raise ConnectFailed(str(e) or type(e).__name__) from None
        return conn

    async def connect(self, host: str, port: int, connect_timeout_s: float) -> _Conn:
        """An idle connection to ``(host, port)``, or a new one."""
        conn = self.take((host, port))
        if conn is None:
            conn = await self._connect(host, port, connect_timeout_s)
        return conn

    async def send(self, host: str, port: int, data: bytes, *, connect_timeout_s: float, read_timeout_s: float,
                   write_timeout_s: float | None = None, head_only: bool = False) -> UpstreamResponse:
        """Send one serialized request and read its whole response."""
        conn = await self.connect(host, port, connect_timeout_s)
        fut: asyncio.Future[UpstreamResponse | Exception] = conn.loop.create_future()
        result: UpstreamResponse | Exception | None = None
        try:
            conn.start(data, read_timeout_s, head_only, write_timeout_s, _FutureWaiter(fut))
            result = await fut
        finally:
            self.release(conn, result)
        if isinstance(result, Exception):
            raise result
        return result

    def release(self, conn: _Conn, result: UpstreamResponse | Exception | None) -> None:
        """A request on ``conn`` is over: back to its pool if the response allows, else closed."""
        conn.finish()
        if isinstance(result, UpstreamResponse) and result.keep_alive and not conn.closed and not self.closed:
            pool = self.idle.get(conn.key)
            if pool is None:
                pool = self.idle[conn.key] = deque()
            if len(pool) < MAX_IDLE:
                pool.append(conn)
                return
        conn.close()

    def close(self) -> None:
        self.closed = True
        for pool in self.idle.values():
            for c in pool:
                c.close()
        self.idle.clear()
