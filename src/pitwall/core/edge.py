"""pitwall's own handling of every request, as one ASGI layer in front of the web framework.

In order, as plain calls from one coroutine with one ``send`` wrapper,
rather than one middleware (a coroutine frame, most with a wrapped
``send``) per concern:

1. the audit log (``core.audit``) times the whole request and records it,
   the refusals below included;
2. the browser guard (``core.browser_guard``): foreign hosts, cross-site
   writes and websocket handshakes;
3. authentication (``core.auth.BearerAuth``, when tokens or OIDC are
   configured), then a UI session's form-post CSRF check (``core.oidc``);
4. request metrics (``core.selfmetrics``) time and count what passed them;
5. a held blocking read (the control plane's ``ParkHeldQueries``) waits here,
   past authentication, with no framework frame below it (a held query
   pins this frame and its own, not the framework's dozen);
6. the route: straight through ``core.fastlane`` when its endpoint takes only
   the request (and a trailing path parameter) and FastAPI would choose it, else
   the framework (FastAPI's whole stack: its error layer, routing,
   dependencies, the route).

Each concern's code stays in its own module; this layer only calls them
(the browser guard, auth, CSRF check and parking can also wrap an app on their own). It runs
outside the framework's error layer, so an exception of its own is answered
as that layer would (a plain-text 500) before it propagates to the server,
which logs it. The composition is ``server.create_app``'s.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from pitwall.core.audit import AuditLog
    from pitwall.core.auth import BearerAuth
    from pitwall.core.browser_guard import BrowserGuard
    from pitwall.core.fastlane import FastLane
    from pitwall.core.oidc import SessionCSRF
    from pitwall.core.selfmetrics import SelfMetrics

__all__ = ["Edge", "Holder"]


class Holder(Protocol):
    """Holds a request before it reaches the framework (``registry.blocking.ParkHeldQueries``)."""

    def hold(self, scope: Scope, receive: Receive) -> Awaitable[Scope | None] | None:
        """None when the request is not one to hold; else what to await: the scope it goes on with, or None
        when it needs no answer (its client left)."""
        ...


class _Answer:
    """The ``send`` everything below the edge gets: notes the status for the audit log and the metrics."""

    __slots__ = ("send", "started", "status")

    def __init__(self, send: Send) -> None:
        self.send = send
        self.status = 500  # unless something answered: what the error layer sends for an exception
        self.started = False

    async def __call__(self, msg: Message) -> None:
        if msg["type"] == "http.response.start":
            self.status = msg["status"]
            self.started = True
        await self.send(msg)


class Edge:
    """The checks, the bookkeeping and the parking of every request, in front of ``app``."""

    def __init__(self, app: ASGIApp, *, audit: AuditLog, guard: BrowserGuard, metrics: SelfMetrics,
                 auth: BearerAuth | None = None, csrf: SessionCSRF | None = None,
                 park: Holder | None = None, lanes: FastLane | None = None) -> None:
        self.app = app
        self.audit = audit
        self.guard = guard
        self.metrics = metrics
        self.auth = auth
        self.csrf = csrf
        self.park = park
        self.lanes = lanes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One frame for the whole walk (a held query keeps it for minutes: each nested coroutine is ~300 B).
        if scope["type"] != "http":  # websockets are neither audited nor counted, as before: checked only
            if scope["type"] != "websocket" or await self._admitted(scope, receive, send):
                await self.app(scope, receive, send)
            return
        audited = self.audit.enabled
        answer = _Answer(send)
        start = time.perf_counter()
        try:
            if not await self._admitted(scope, receive, answer):
                return
            if self.csrf is not None:
                checked = await self.csrf.admit(scope, receive, answer)
                if checked is None:
                    return
                receive = checked
            measured = time.perf_counter()  # the metrics time what passed the checks, parking included
            try:
                held = None if self.park is None else self.park.hold(scope, receive)
                go_on = scope if held is None else await held
                if go_on is not None:
                    lane = None if self.lanes is None else self.lanes.find(go_on)
                    await (self.app if lane is None else lane)(go_on, receive, answer)
            finally:
                self.metrics.observe(scope, answer.status, time.perf_counter() - measured)
        except Exception:
            if not answer.started:  # as the framework's error layer would have answered it
                await PlainTextResponse("Internal Server Error", 500)(scope, receive, answer)
            raise
        finally:
            if audited:
                self.audit.record(scope, answer.status, time.perf_counter() - start)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> bool:
        return await self.guard.admit(scope, receive, send) and \
            (self.auth is None or await self.auth.admit(scope, receive, send))
