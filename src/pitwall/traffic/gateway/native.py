"""The Python side of the gateway's C connections (``_native/gwfast.c``).

``make_engine`` builds the C state one ``GatewayServer`` shares across its
plain-HTTP connections; ``connection_factory`` makes each connection's
protocol. A request the C code does not serve itself is handed to
``GatewayServer.begin`` as the same ``Request`` ``_ClientConn`` builds, and
its answer comes back through ``NativeConn.respond`` (``encode_response``,
as ``_ClientConn.respond``). A connection whose bytes the C parser will not
frame (chunked bodies, ``Upgrade``, anything over a limit or malformed) is
handed whole to a ``_ClientConn`` (``handoff``), which answers exactly as
without the C code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

from pitwall.traffic.gateway import _gwfast
from pitwall.traffic.gateway.context import Request, ResponseHead
from pitwall.traffic.gateway.proxy import GatewayServer, _ClientConn, _internal_error, encode_response

__all__ = ["NativeConn", "connection_factory", "make_engine"]

log = logging.getLogger(__name__)


class NativeConn(_gwfast.Client):
    """One plain-HTTP client connection, parsed and served in C; ``respond`` answers a delegated request."""

    __slots__ = ()

    def respond(self, req: Request, head: ResponseHead) -> None:
        try:
            data = encode_response(head, req.keep_alive, req.method == "HEAD")
        except Exception:  # e.g. a plugin's header value that is not latin-1: still an answer, not a hang
            log.exception("gateway response could not be encoded")
            data = encode_response(_internal_error(), req.keep_alive, False)
        self._answered(data, req.keep_alive)


def handoff(gw: GatewayServer, conn: NativeConn, transport: asyncio.Transport, data: bytes,
            paused: bool) -> _ClientConn:
    """A ``_ClientConn`` takes the connection over, fed every byte the C parser did not serve."""
    py = _ClientConn(gw)
    py.connection_made(transport)
    gw.conns.discard(conn)
    if paused:
        transport.resume_reading()
    if data:
        py.data_received(data)
    return py


def make_engine(gw: GatewayServer, loop: asyncio.AbstractEventLoop) -> _gwfast.Engine:
    engine = _gwfast.Engine(gw, Request, lambda conn, t, data, paused: handoff(gw, conn, t, data, paused),
                            gw.max_body_bytes)
    engine.start(loop)
    return engine


def connection_factory(engine: _gwfast.Engine) -> Callable[[], asyncio.Protocol]:
    return lambda: cast(asyncio.Protocol, NativeConn(engine))  # it has a Protocol's methods, in C
