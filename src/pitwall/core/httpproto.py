"""uvicorn's HTTP/1.1 connection (httptools), lighter per connection; what ``pitwall server`` serves with.

A held Consul blocking query is an open connection for minutes, 10,000 of
them at once: whatever uvicorn keeps per connection is multiplied. Three
of its per-connection objects are empty most of their life yet cost ~2.3 KB
together: the queue of pipelined requests and two ``asyncio.Event``s (the
request cycle's ``message_event`` and the flow control's writable event),
each with a 760-byte ``collections.deque`` for waiters that rarely come.
``LeanHttpToolsProtocol`` is uvicorn's own protocol with those three
replaced by ``core.httpconn.Signal`` and a list (the ``deque`` methods
uvicorn calls), nothing else changed; its ``Signal`` also lets a held query
see its client leave without a task (``core.httpconn.watch_departure``).
It sets uvicorn's internal attributes (``HttpToolsProtocol.pipeline``,
``FlowControl._is_writable_event``, ``RequestResponseCycle.message_event``),
checked against uvicorn 0.55 by ``tests/core/test_httpconn.py``.

uvicorn writes a response's status line and headers, then its body, with
two ``transport.write`` calls: two ``send`` syscalls and, on loopback, two
wake-ups of the client. Each request cycle writes through ``_Corked``
instead, which holds the header block until the next write joins it (the
body, sent in the same loop iteration by every non-streaming response), the
response completes, the connection closes, or the loop iteration ends (a
streaming response's first chunk may come later): one syscall per response,
bytes in the same order.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pitwall.core.httpconn import Signal

__all__ = ["CHECKED_UVICORN", "LeanHttpToolsProtocol", "http_protocol"]

CHECKED_UVICORN = "0.55."  # the uvicorn releases whose internals this protocol was checked against
_LOCAL: dict[tuple[str, int | None], tuple[str, int | None]] = {}  # as many as the addresses listened on


class _Pipeline(list[Any]):
    """The ``deque`` methods uvicorn calls on its queue of pipelined requests (rare: an empty list is 56 bytes,
    an empty deque 760)."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class _Corked:
    """A connection's transport as its request cycles write to it: a header block is held until the next write,
    the response's end, ``close`` or the end of the loop iteration, whichever comes first."""

    __slots__ = ("_held", "_loop", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif type(data) is bytes and data.startswith(b"HTTP/1.1 "):  # uvicorn's status line and headers
            self._held = data
            self._loop.call_soon(self.flush)
            return
        self.transport.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self.transport.is_closing():
            self.transport.write(held)

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:  # what else a cycle might ask of its transport
        return getattr(self.transport, name)


class LeanHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with its per-connection queue and events made light (``uvicorn.Config(http=...)``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = _Pipeline()  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.corked = _Corked(transport, self.loop)
        self.flow._is_writable_event = Signal(is_set=True)  # type: ignore[assignment]
        if self.server is not None:  # the listening address: one tuple for every connection to it, not one each
            self.server = _LOCAL.setdefault(self.server, self.server)

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before:  # a new request's cycle (its task has not run yet): nothing waits on it
            self.cycle.message_event = Signal()  # type: ignore[assignment]
            self.cycle.transport = self.corked  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        self.corked.flush()  # a HEAD response's headers: no body write joins them
        super().on_response_complete()


def http_protocol(version: str = uvicorn.__version__) -> type[HttpToolsProtocol] | str:
    """What ``pitwall server`` serves HTTP/1.1 with: ``LeanHttpToolsProtocol`` on the uvicorn release it was
    checked against, uvicorn's own ``"httptools"`` on any other (pyproject allows newer uvicorn, whose
    internals may differ: a held query then costs ~6 KiB more, and works)."""
    return LeanHttpToolsProtocol if version.startswith(CHECKED_UVICORN) else "httptools"
