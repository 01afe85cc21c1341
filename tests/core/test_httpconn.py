"""``pitwall server``'s uvicorn protocol (``core.httpproto``) and the departure watch (``core.httpconn``), on the
uvicorn installed: these fail if the uvicorn internals they reach into change shape."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest
import uvicorn

from pitwall.core.httpconn import Signal, unwatch_departure, watch_departure
from pitwall.core.httpproto import CHECKED_UVICORN, LeanHttpToolsProtocol, http_protocol
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)
App = Callable[[dict[str, Any], Any, Any], Any]


@asynccontextmanager
async def _serving(app: App, http: Any = LeanHttpToolsProtocol) -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off",
                                           http=http))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), task
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def _answer(send: Any, body: bytes, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _request(port: int, raw: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    return reader, writer


async def _response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    return head, await reader.readexactly(length)


GET = b"GET /held HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.mark.parametrize("http", [LeanHttpToolsProtocol, "httptools"])
async def test_a_client_leaving_calls_the_hook_once_and_no_task_watches(http: Any) -> None:
    """On the lean protocol the departure is the cycle's own signal (no task); on uvicorn's own, None: the
    caller keeps reading ``receive`` itself."""
    watched: list[Signal | None] = []
    left = asyncio.Event()
    calls: list[int] = []
    done = asyncio.Event()

    def hook() -> None:
        calls.append(1)
        left.set()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        tasks = len(asyncio.all_tasks())
        watched.append(watch_departure(receive, hook))
        if watched[0] is None:
            done.set()
            return
        assert len(asyncio.all_tasks()) == tasks
        await left.wait()
        unwatch_departure(watched[0])
        assert await receive() == {"type": "http.disconnect"}  # still gone after the watch ends
        done.set()

    async with _serving(app, http) as port:
        _, writer = await _request(port, GET)
        await asyncio.sleep(0.2)
        writer.close()
        await asyncio.wait_for(done.wait(), 10)
    if http == "httptools":
        assert watched == [None]
    else:
        assert isinstance(watched[0], Signal) and calls == [1]


async def test_an_unwatched_request_reads_as_it_came() -> None:
    """Watching clears the cycle's signal; ending the watch sets it again, so the body is read as sent."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        signal = watch_departure(receive, lambda: None)
        assert signal is not None and watch_departure(receive, lambda: None) is None  # one watch at a time
        unwatch_departure(signal)
        msg = await receive()
        assert msg["type"] == "http.request" and not msg["more_body"]
        await _answer(send, b"got:" + msg["body"])

    async with _serving(app) as port:
        reader, writer = await _request(port, GET)
        assert (await _response(reader))[1] == b"got:"
        writer.write(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")  # the same connection
        assert (await _response(reader))[1] == b"got:hello"
        writer.close()


async def test_pipelined_requests_are_answered_in_order() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asyncio.sleep(0.05 if scope["path"] == "/a" else 0)
        await _answer(send, scope["path"].encode())

    async with _serving(app) as port:
        reader, writer = await _request(port, b"".join(f"GET /{p} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for p in "abc"))
        assert [(await _response(reader))[1] for _ in range(3)] == [b"/a", b"/b", b"/c"]
        writer.close()


class _CountingPauses(LeanHttpToolsProtocol):
    pauses = 0

    def pause_writing(self) -> None:
        type(self).pauses += 1
        super().pause_writing()


async def test_a_slow_reader_gets_a_large_answer_whole() -> None:
    """The write side's flow control (paused past the transport's high-water mark) waits on a ``Signal``."""
    chunk, n = b"x" * 65536, 512

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(chunk) * n).encode())]})
        for i in range(n):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < n - 1})

    async with _serving(app, _CountingPauses) as port:
        reader, writer = await _request(port, GET)
        await asyncio.sleep(0.5)  # the server fills the socket's buffers and pauses
        assert len((await _response(reader))[1]) == len(chunk) * n
        writer.close()
    assert _CountingPauses.pauses > 0


class _RecordingWrites(LeanHttpToolsProtocol):
    """Records each ``write`` its connection's socket transport is given."""

    writes: ClassVar[list[bytes]] = []

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        real = transport.write

        def write(data: bytes) -> None:
            type(self).writes.append(bytes(data))
            real(data)
        transport.write = write  # type: ignore[method-assign,assignment]
        super().connection_made(transport)


async def test_headers_and_body_leave_in_one_write_and_a_stream_gets_its_headers_at_once() -> None:
    release = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/view":  # a body that is not bytes joins the held headers too
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
            await send({"type": "http.response.body", "body": memoryview(b"view")})
            return
        if scope["path"] != "/stream":
            await _answer(send, b"hello")
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})  # the first chunk waits
        await release.wait()
        await send({"type": "http.response.body", "body": b"late"})

    async with _serving(app, _RecordingWrites) as port:
        reader, writer = await _request(port, GET)
        assert (await _response(reader))[1] == b"hello"
        assert len(_RecordingWrites.writes) == 1 and _RecordingWrites.writes[0].endswith(b"\r\n\r\nhello")
        writer.write(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n")  # no body write joins a HEAD answer's headers
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200") and b"content-length: 5" in head
        writer.write(b"GET /view HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await _response(reader))[1] == b"view"
        writer.write(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head
        release.set()
        assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5) == b"4\r\nlate\r\n0\r\n\r\n"
        writer.close()


def test_the_lean_protocol_replaces_what_it_means_to() -> None:
    """The attributes it swaps are uvicorn's: a rename upstream would leave the heavy ones in place."""
    loop = asyncio.new_event_loop()
    try:
        config = uvicorn.Config(lambda s, r, w: None, log_config=None)
        config.load()
        from uvicorn.server import ServerState

        proto = LeanHttpToolsProtocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
        transport: Any = _FakeTransport()
        proto.connection_made(transport)
        proto.data_received(GET)
        for obj in (proto, proto.flow, proto.cycle):  # none of uvicorn's deques or events is left
            assert not [k for k, v in vars(obj).items() if isinstance(v, deque | asyncio.Event)], obj
        assert isinstance(proto.flow._is_writable_event, Signal) and proto.flow._is_writable_event.is_set()
        assert isinstance(proto.cycle.message_event, Signal) and proto.cycle.message_event.is_set()
        assert not proto.cycle.more_body and not proto.cycle.disconnected and not proto.cycle.response_complete
        assert proto.cycle.receive.__self__ is proto.cycle
        for task in asyncio.all_tasks(loop):
            task.cancel()
        proto.connection_lost(None)
        assert proto.cycle.disconnected
    finally:
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


def test_the_lean_protocol_only_on_the_uvicorn_it_was_checked_against() -> None:
    """A newer uvicorn (pyproject allows one) gets its own protocol: its internals may have moved."""
    assert http_protocol(CHECKED_UVICORN + "3") is LeanHttpToolsProtocol
    assert http_protocol("0.56.0") == "httptools" and http_protocol("1.0.0") == "httptools"
    assert http_protocol() is LeanHttpToolsProtocol, f"re-check core.httpproto against uvicorn {uvicorn.__version__}"


class _FakeTransport:
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name in ("sockname", "peername") else default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_signal_is_an_event() -> None:
    sig = Signal()
    waiting = [asyncio.create_task(sig.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    waiting[0].cancel()  # a cancelled waiter leaves nothing behind
    await asyncio.sleep(0)
    assert not sig.is_set() and not any(t.done() for t in waiting[1:])
    hooked: list[int] = []
    sig.on_set = lambda: hooked.append(1)
    sig.set()
    sig.set()
    assert await asyncio.gather(*waiting[1:]) == [True, True] and hooked == [1] and sig.is_set()
    assert await sig.wait()
    sig.clear()
    late = asyncio.create_task(sig.wait())
    await asyncio.sleep(0)
    assert not late.done()
    sig.set()
    assert await late
