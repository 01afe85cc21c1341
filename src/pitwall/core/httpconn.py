"""A request's client leaving, seen without a task: the request cycle's signal of uvicorn's lean protocol.

uvicorn tells a request's app that its client left by setting the request
cycle's ``message_event`` (in ``connection_lost``) and answering the next
``receive()`` with ``http.disconnect``; watching for that costs a task
blocked in ``receive()`` per request: ~1.5 KB for each of up to 10,000 held
Consul blocking queries. ``pitwall server`` runs uvicorn with
``core.httpproto.LeanHttpToolsProtocol``, whose cycles' ``message_event``
is a ``Signal`` (``asyncio.Event``'s interface as uvicorn uses it, 64
bytes); ``watch_departure`` hooks that signal directly: no task, no
coroutine. This reads uvicorn's internals (the cycle behind a bound
``receive``: ``message_event``, ``disconnected``, ``more_body``,
``response_complete``), checked against uvicorn 0.55 by
``tests/core/test_httpconn.py``, which fails if their shape changes. A
``receive`` that is not such a cycle's (another server, a test client, a
wrapped ``receive``) gets None: the caller watches it with its own task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["Signal", "unwatch_departure", "watch_departure"]


class Signal:
    """``asyncio.Event`` as uvicorn uses it (``set``, ``clear``, ``is_set``, ``wait``), 64 bytes, plus a
    departure hook (``on_set``) called once by the next ``set()``."""

    __slots__ = ("_set", "_waiters", "on_set")

    def __init__(self, is_set: bool = False) -> None:
        self._set = is_set
        self._waiters: list[asyncio.Future[bool]] | None = None  # made by the first ``wait``: few ever wait
        self.on_set: Callable[[], None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(True)
        hook, self.on_set = self.on_set, None
        if hook is not None:
            hook()

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(fut)
        try:
            return await fut
        finally:
            if self._waiters is not None and fut in self._waiters:  # cancelled before ``set``
                self._waiters.remove(fut)


def watch_departure(receive: Any, hook: Callable[[], None]) -> Signal | None:
    """Call ``hook`` (once) when the client of the request whose ASGI ``receive`` this is goes away; the
    watch to pass to ``unwatch_departure``, or None when ``receive`` is not a ``LeanHttpToolsProtocol``
    request's whole, unread request (the caller then watches ``receive`` itself).

    The cycle's ``Signal`` is set while the request's body waits to be read (a GET's empty one); it is
    cleared while watched, so that uvicorn's ``connection_lost`` sets it and calls the hook, and set again by
    ``unwatch_departure``, so the app still reads the request as it came.
    """
    cycle = getattr(receive, "__self__", None)
    signal = getattr(cycle, "message_event", None)
    if not isinstance(signal, Signal) or not signal.is_set() or signal.on_set is not None:
        return None
    if cycle.more_body or cycle.disconnected or cycle.response_complete:  # type: ignore[union-attr]
        return None
    signal.clear()
    signal.on_set = hook
    return signal


def unwatch_departure(signal: Signal) -> None:
    """The request as it was before ``watch_departure`` (its body readable; after a departure, still gone)."""
    signal.on_set = None
    signal.set()
