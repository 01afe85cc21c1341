"""Byte relaying for one proxied TCP connection: connect upstream, then copy both ways.

``connect_any`` tries endpoints in the order the balancer gives until one
accepts; a refusal, reset or connect timeout moves on to the next, and when
every endpoint failed it asks again (the endpoints may have changed, as in a
rolling update) until the connect budget is spent. Nothing has been sent
upstream before a connect succeeds, so a retried connect never repeats a
request.

``splice`` copies both directions with bounded buffers: a read takes at most
``CHUNK`` bytes and the next read waits for the writer to drain, so a slow
reader holds the fast writer back (TCP backpressure end to end). An EOF on
one side is passed on as a half-close (``write_eof``) and the other
direction keeps flowing until it ends too; a reset on either side ends both.
asyncio's TLS transport cannot half-close, so on the mutual-TLS hop between
nodes an EOF closes the connection whole (what was still to come back is
lost: half-closing protocols should run on one node or in plaintext).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pitwall.traffic.balancer import Backend

__all__ = ["CHUNK", "NoEndpoint", "Upstream", "close_writer", "connect_any", "splice"]

CHUNK = 64 * 1024  # bytes per read, and the stream buffer limit
_ROUND_PAUSE_S = 0.05  # between two rounds over all endpoints


class NoEndpoint(Exception):
    """No endpoint accepted the connection within the connect budget."""


@dataclass
class Upstream:
    backend: Backend
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    failures: int  # endpoints that refused or timed out before this one accepted


Opener = Callable[[Backend], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def connect_any(candidates: Callable[[], list[Backend]], *, budget_s: float, attempt_timeout_s: float,
                      on_failure: Callable[[Backend, BaseException], None] | None = None,
                      opener: Opener | None = None) -> Upstream:
    """Open a connection to the first endpoint that accepts, asking ``candidates()`` again after each
    round in which all failed, until ``budget_s`` is spent; ``NoEndpoint`` then. ``opener`` connects
    (the mesh's hop to another node); a plain TCP connect without it."""
    deadline = time.monotonic() + budget_s
    failures = 0
    while True:
        for backend in candidates():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                async with asyncio.timeout(min(attempt_timeout_s, left)):  # no extra task, unlike wait_for
                    if opener is None:
                        reader, writer = await asyncio.open_connection(backend.ip, backend.port, limit=CHUNK)
                    else:
                        reader, writer = await opener(backend)
            except (OSError, TimeoutError) as e:
                failures += 1
                if on_failure is not None:
                    on_failure(backend, e)
                continue
            return Upstream(backend, reader, writer, failures)
        if deadline - time.monotonic() <= _ROUND_PAUSE_S:
            raise NoEndpoint(f"no endpoint accepted within {budget_s:g}s ({failures} refused or timed out)")
        await asyncio.sleep(_ROUND_PAUSE_S)


Shape = Callable[[bytes], Awaitable[bytes]]  # a chaos fault's delay/bandwidth/corruption of one chunk


async def _copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: Callable[[int], None],
                shape: Shape | None = None) -> None:
    while True:
        data = await src.read(CHUNK)
        if not data:
            break
        if shape is not None:
            data = await shape(data)
        dst.write(data)
        count(len(data))
        await dst.drain()
    if dst.is_closing():
        return
    if dst.can_write_eof():
        with contextlib.suppress(OSError):
            dst.write_eof()
    else:  # a TLS stream (the mesh hop between nodes) has no half-close: the EOF closes it whole
        dst.close()


async def splice(client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 *, sent: Callable[[int], None], received: Callable[[int], None],
                 shape_up: Shape | None = None, shape_down: Shape | None = None) -> None:
    """Copy client→upstream (counted by ``sent``) and upstream→client (``received``) until both
    directions ended; a reset in either ends both. Both writers are closed on return. ``shape_up`` and
    ``shape_down`` (network faults, ``traffic.faults``) pass each chunk of their direction first."""
    (cr, cw), (ur, uw) = client, upstream
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_copy(cr, uw, sent, shape_up))
            tg.create_task(_copy(ur, cw, received, shape_down))
    except* (OSError, asyncio.IncompleteReadError):
        pass  # a reset or broken pipe on one side: the connection is over
    finally:
        await close_writer(uw)
        await close_writer(cw)


async def close_writer(w: asyncio.StreamWriter) -> None:
    """Close a stream, ignoring the errors of a peer already gone."""
    w.close()
    with contextlib.suppress(OSError, RuntimeError):
        await w.wait_closed()
