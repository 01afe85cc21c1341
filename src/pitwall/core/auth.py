"""Bearer-token authentication with scopes (read, write, admin) and tenants, as ASGI middleware.

The scope a request needs follows from what it does, not from a list of API
paths, so a route added later is covered the day it is written:

- ``GET``, ``HEAD``, ``OPTIONS`` and websocket handshakes read (``read``);
- every other method changes something (``write``), except the POST forms of
  query endpoints that peers send (``READ_ONLY_POSTS``: Prometheus' and
  Loki's query APIs, which Grafana and promtool POST), which read;
- ``ADMIN_PATHS`` (reload, quit, Prometheus' admin API) need ``admin`` for any
  method. A token with ``admin`` may do everything.

The middleware resolves the token once and leaves its ``Principal`` in the
ASGI scope; it also refuses a named tenant (``X-Scope-OrgID``) outside the
token's tenants before routing (``core.tenancy``). HTTP requests and websocket
handshakes are checked alike (Loki's tail is a websocket); a refused handshake
is closed with 1008 before it is accepted, which the server answers as HTTP 403.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence

from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from pitwall.core.errors import Forbidden, PitwallError, Unauthorized
from pitwall.core.http_errors import render
from pitwall.core.tenancy import AUDIT_TENANT, PRINCIPAL_KEY, TENANT_HEADER, Principal, resolve_tenant

__all__ = ["ADMIN_PATHS", "OPEN_PATHS", "READ_ONLY_POSTS", "SAFE_METHODS", "BearerAuth", "TokenTable",
           "is_read_only_post", "required_scope"]

# Health probes; kube-apiserver's public-info-viewer paths are open the same way.
OPEN_PATHS = frozenset({"/-/healthy", "/-/ready", "/livez", "/readyz", "/healthz", "/version"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ADMIN_PATHS = frozenset({"/-/reload", "/-/quit"})
ADMIN_PREFIX = "/api/v1/admin/"
# POSTs that only read: the form-encoded twins of GET query endpoints (long queries do not fit a URL).
READ_ONLY_POSTS = frozenset({
    # Prometheus HTTP API
    "/api/v1/query", "/api/v1/query_range", "/api/v1/query_exemplars", "/api/v1/series", "/api/v1/labels",
    "/api/v1/format_query", "/api/v1/parse_query",
    # Loki HTTP API
    "/loki/api/v1/query", "/loki/api/v1/query_range", "/loki/api/v1/labels", "/loki/api/v1/label/{name}/values",
    "/loki/api/v1/series", "/loki/api/v1/index/stats", "/loki/api/v1/index/volume",
    # Kubernetes reviews: questions about the caller's own access (kubectl auth can-i / whoami)
    "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
    "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
    "/apis/authentication.k8s.io/v1/selfsubjectreviews",
})
log = logging.getLogger(__name__)
_READ_ONLY_POST_RE = [compile_path(p)[0] for p in sorted(READ_ONLY_POSTS)]
_TENANT_HEADER = TENANT_HEADER.lower().encode()
WS_POLICY_VIOLATION = 1008


def is_read_only_post(path: str) -> bool:
    return any(rx.fullmatch(path) for rx in _READ_ONLY_POST_RE)


def required_scope(method: str, path: str) -> str:
    """The scope a request needs: ``admin`` for admin paths, ``read`` for safe methods and read-only
    POSTs, ``write`` for everything else (websocket handshakes count as ``GET``)."""
    if path in ADMIN_PATHS or path.startswith(ADMIN_PREFIX) or path == ADMIN_PREFIX.rstrip("/"):
        return "admin"
    if method in SAFE_METHODS or (method == "POST" and is_read_only_post(path)):
        return "read"
    return "write"


class TokenTable:
    """The tokens ``BearerAuth`` accepts and whom they stand for; replaced whole on reload."""

    def __init__(self, tokens: Sequence[tuple[str, Principal]]) -> None:
        self.entries = [(t.encode(), p) for t, p in tokens]

    def __len__(self) -> int:
        return len(self.entries)

    def replace(self, tokens: Sequence[tuple[str, Principal]]) -> None:
        """New tokens from a reload. Auth is switched on or off only by a restart (the middleware is
        installed at start): a reload going from some tokens to none, or from none to some, keeps
        the tokens in use and logs a warning."""
        if bool(tokens) != bool(self.entries):
            log.warning("auth_tokens: turning bearer authentication on or off takes a restart; "
                        "the tokens in use stay", extra={"tokens_in_use": len(self.entries)})
            return
        self.entries = [(t.encode(), p) for t, p in tokens]

    def principal(self, given: bytes) -> Principal:
        """Whom the token ``given`` stands for (compared in constant time); ``Unauthorized`` if none."""
        found = None
        for token, principal in self.entries:
            if hmac.compare_digest(given, token) and found is None:
                found = principal
        if found is None:
            raise Unauthorized("invalid bearer token")
        return found

    def authorize(self, header: bytes, scope: str, named_tenant: str) -> tuple[Principal, str]:
        """An ``Authorization`` header checked for ``scope``, and the tenant the request acts as.

        The rules ``BearerAuth`` applies to HTTP, for transports without an ASGI
        scope (OTLP/gRPC metadata): missing or unknown token ``Unauthorized``,
        missing scope or a tenant outside the token ``Forbidden``.
        """
        if not header.lower().startswith(b"bearer "):
            raise Unauthorized("missing bearer token")
        principal = self.principal(header[7:].strip())
        if not principal.may(scope):
            raise Forbidden(f"{principal.describe()} lacks the {scope!r} scope")
        tenant = resolve_tenant(principal, named_tenant)
        if tenant == AUDIT_TENANT and scope == "write":
            raise Forbidden(f"tenant {AUDIT_TENANT!r} holds the audit log, which only the server writes")
        return principal, tenant


class BearerAuth:
    """Rejects requests without a token holding the scope the request needs, or naming a tenant outside it."""

    def __init__(self, app: ASGIApp, tokens: TokenTable | Sequence[tuple[str, Principal]]) -> None:
        self.app = app
        self.tokens = tokens if isinstance(tokens, TokenTable) else TokenTable(tokens)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or not self.tokens or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            scope[PRINCIPAL_KEY] = self._check(scope)
        except PitwallError as err:
            if kind == "websocket":
                await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": err.message})
            else:
                await render(err, "text")(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> Principal:
        header = b""
        named = b""
        for k, v in scope["headers"]:  # the first of each, as Starlette's ``headers.get``
            if k == b"authorization" and not header:
                header = v
            elif k == _TENANT_HEADER and not named:
                named = v
        if not header.lower().startswith(b"bearer "):
            raise Unauthorized("missing bearer token")
        given = header[7:].strip()
        principal = self._principal(given)
        scope[PRINCIPAL_KEY] = principal  # known even if refused below: the audit log names who was refused
        need = required_scope(scope.get("method", "GET"), scope["path"])
        if not principal.may(need):
            raise Forbidden(f"{principal.describe()} lacks the {need!r} scope")
        if resolve_tenant(principal, named.decode("latin-1")) == AUDIT_TENANT and need == "write":
            raise Forbidden(f"tenant {AUDIT_TENANT!r} holds the audit log, which only the server writes")
        return principal

    def _principal(self, given: bytes) -> Principal:
        return self.tokens.principal(given)
