"""Bearer-token authentication with scopes (read, write, admin), as ASGI middleware.

Covers HTTP requests and websocket handshakes alike (Loki's tail is a
websocket); a refused handshake is closed with 1008 before it is accepted,
which the server answers as HTTP 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from pitwall.core.errors import Forbidden, PitwallError, Unauthorized
from pitwall.core.http_errors import render

OPEN_PATHS = frozenset({"/-/healthy", "/-/ready"})
WRITE_PATHS = ("/api/v1/write", "/v1/metrics", "/v1/traces", "/v1/logs", "/loki/api/v1/push",
               "/api/v2/spans", "/api/v2/alerts", "/api/v2/silences", "/api/v2/silence/",
               "/_bulk", "/elasticsearch/")
ADMIN_PATHS = ("/-/reload", "/-/quit", "/api/v1/admin")
WS_POLICY_VIOLATION = 1008


def required_scope(method: str, path: str) -> str:
    if path.startswith(ADMIN_PATHS):
        return "admin"
    if method in ("POST", "PUT", "DELETE") and path.startswith(WRITE_PATHS):
        return "write"
    return "read"


class BearerAuth:
    """Rejects requests without a token holding the scope the path needs."""

    def __init__(self, app: ASGIApp, tokens: Sequence[tuple[str, frozenset[str]]]) -> None:
        self.app = app
        self.tokens = [(t.encode(), scopes) for t, scopes in tokens]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or not self.tokens or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            self._check(scope)
        except PitwallError as err:
            if kind == "websocket":
                await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": err.message})
            else:
                await render(err, "text")(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> None:
        header = b""
        for k, v in scope["headers"]:
            if k == b"authorization":
                header = v
                break
        if not header.lower().startswith(b"bearer "):
            raise Unauthorized("missing bearer token")
        given = header[7:].strip()
        need = required_scope(scope.get("method", "GET"), scope["path"])
        for token, scopes in self.tokens:
            if hmac.compare_digest(given, token):
                if need in scopes or "admin" in scopes:
                    return
                raise Forbidden(f"token lacks the {need!r} scope")
        raise Unauthorized("invalid bearer token")
