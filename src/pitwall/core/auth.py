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
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Match, compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from pitwall.core.errors import Forbidden, PitwallError, Unauthorized
from pitwall.core.http_errors import render
from pitwall.core.tenancy import AUDIT_TENANT, PRINCIPAL_KEY, TENANT_HEADER, Principal, resolve_tenant

__all__ = ["ACTION_LINK_PATHS", "ADMIN_PATHS", "OPEN_PATHS", "READ_ONLY_POSTS", "SAFE_METHODS", "SIGNED_PATHS", "Authenticator", "BearerAuth",
           "TokenTable", "action", "is_read_only_post", "required_scope"]

# Health probes; kube-apiserver's public-info-viewer paths are open the same way.
OPEN_PATHS = frozenset({"/-/healthy", "/-/ready", "/livez", "/readyz", "/healthz", "/version"})
# PagerDuty's REST API clients send ``Authorization: Token token=<key>``: the key is a pitwall token.
PAGERDUTY_PREFIX = "/pagerduty/"
# GitLab's API clients (python-gitlab, glab) send ``PRIVATE-TOKEN: <token>``, its webhooks
# ``X-Gitlab-Token: <secret>``: on /gitlab/ paths either is a pitwall token.
GITLAB_PREFIX = "/gitlab/"
# The OIDC sign-in's start and callback need no credential: they are how a user gets one (core.oidc).
SIGN_IN_PATHS = frozenset({"/auth/login", "/auth/callback"})
# Webhooks that cannot send a token but sign their body: the route checks the signature (GitHub's
# X-Hub-Signature-256 against pipelines.github_secret) and refuses a bad one itself.
SIGNED_PATHS = frozenset({"/api/pipelines/v1/hooks/github"})
# The acknowledge/resolve links in pages to people (incidents.links): the signed, expiring token in the
# link is the credential (a person reading an e-mail has no pitwall token), so the route checks it itself.
ACTION_LINK_PATHS = frozenset({"/incident-actions/acknowledge", "/incident-actions/resolve"})
ACTION_LINK_METHODS = frozenset({"GET", "HEAD", "POST"})
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
    # pitwall's A/B report: queries in a body, as Prometheus' form POSTs
    "/api/releases/v1/abtest",
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


def _query_token(scope: Scope) -> bytes:
    """Consul's ``?token=`` query parameter (its clients' fallback to ``X-Consul-Token``)."""
    for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
        if k == "token":
            return str(v).encode("latin-1")
    return b""


def action(method: str, path: str) -> str:
    """The one decision every API and UI route goes through: the verb (``read``, ``write``, ``admin``)
    a request needs, which ``core.rbac`` roles grant per path and tenant."""
    return required_scope(method, path)


# Resolves a credential other than a configured token: (ASGI scope, bearer token or b"") -> principal,
# None when the credential is not of its kind (OIDC JWTs, ServiceAccount JWTs, UI session cookies).
Authenticator = Callable[[Scope, bytes], Awaitable[Principal | None]]


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

    def authorize(self, header: bytes, scope: str, named_tenant: str, path: str | None = None
                  ) -> tuple[Principal, str]:
        """An ``Authorization`` header checked for ``scope`` on ``path`` (the HTTP path of the same
        operation, for roles limited to paths), and the tenant the request acts as.

        The rules ``BearerAuth`` applies to HTTP, for transports without an ASGI
        scope (OTLP/gRPC metadata): missing or unknown token ``Unauthorized``,
        missing role or a tenant outside the token ``Forbidden``.
        """
        if not header.lower().startswith(b"bearer "):
            raise Unauthorized("missing bearer token")
        principal = self.principal(header[7:].strip())
        if not principal.allows(scope, path):
            raise Forbidden(f"{principal.describe()} lacks the {scope!r} scope")
        tenant = resolve_tenant(principal, named_tenant)
        if tenant == AUDIT_TENANT and scope == "write":
            raise Forbidden(f"tenant {AUDIT_TENANT!r} holds the audit log, which only the server writes")
        if not principal.allows(scope, path, tenant):
            raise Forbidden(f"{principal.describe()} lacks the {scope!r} scope for tenant {tenant!r}")
        return principal, tenant


class BearerAuth:
    """Rejects requests without a credential whose roles allow what the request does, or naming a tenant
    outside them.

    Credentials: a configured token (``TokenTable``), else the first ``authenticators`` entry that
    recognises the request (OIDC or ServiceAccount JWTs, a UI session). ``routes`` (the app's) let a
    refusal be rendered in the matched route's own error format, and let routes that authorize
    themselves (the Kubernetes API, by its RBAC: ``authorizes_itself``) decide past the tenant check."""

    def __init__(self, app: ASGIApp, tokens: TokenTable | Sequence[tuple[str, Principal]],
                 authenticators: Sequence[Authenticator] = (), routes: Iterable[BaseRoute] | None = None,
                 login_path: str | None = None) -> None:
        self.app = app
        self.tokens = tokens if isinstance(tokens, TokenTable) else TokenTable(tokens)
        self.authenticators = list(authenticators)
        self.routes = routes
        self.login_path = login_path  # where a browser without credentials is sent from the UI's pages
        self._own: list[tuple[str, str, BaseRoute]] | None = None
        self._own_starts: tuple[str, ...] = ()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or await self.admit(scope, receive, send):
            await self.app(scope, receive, send)

    def _exempt(self, scope: Scope) -> bool:
        """Requests that need no credential: probes, the sign-in, signed webhooks and action links."""
        path = scope["path"]
        return path in OPEN_PATHS or path in SIGN_IN_PATHS or \
            (path in SIGNED_PATHS and scope.get("method") == "POST") or \
            (path in ACTION_LINK_PATHS and scope.get("method") in ACTION_LINK_METHODS) or \
            (not self.tokens and not self.authenticators)

    async def admit(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Whether an HTTP request or websocket handshake may go on (its principal left in the scope); a
        refused one is answered here."""
        if self._exempt(scope):
            return True
        try:
            scope[PRINCIPAL_KEY] = await self._check(scope, self._self_authorizing(scope))
        except PitwallError as err:
            route = self._route(scope)  # only now: finding it takes a walk over every route
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": err.message})
            elif self._sign_in_first(err, scope, route):
                back = scope["path"] + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string")
                                        else "")
                await RedirectResponse(f"{self.login_path}?{urlencode({'next': back})}", 302)(scope, receive, send)
            else:
                await _render(err, route)(scope, receive, send)
            return False
        return True

    def _sign_in_first(self, err: PitwallError, scope: Scope, route: BaseRoute | None) -> bool:
        """A browser opening one of the UI's pages without credentials signs in first (OIDC)."""
        return (self.login_path is not None and isinstance(err, Unauthorized) and scope.get("method") == "GET"
                and getattr(route, "error_format", None) == "html" and not _has_authorization(scope))

    def _route(self, scope: Scope) -> BaseRoute | None:
        """The route that will answer (for its error format and whether it authorizes itself)."""
        return _find_route(self.routes or (), scope)

    def _self_authorizing(self, scope: Scope) -> bool:
        """Whether a route that authorizes itself (``authorizes_itself``: the Kubernetes API's, which
        decline the paths they do not own) answers this request."""
        if self._own is None:
            self._own = list(_self_authorizing_routes(self.routes or (), ""))
            self._own_starts = tuple(literal for _, literal, _ in self._own)
        path = scope["path"]
        if not path.startswith(self._own_starts):  # most requests: one C call rather than a walk of the routes
            return False
        below: dict[str, Scope] = {}  # the scope as the routes under one prefix see it, copied once
        for prefix, literal, r in self._own:
            if path.startswith(literal):
                sub = below.get(prefix)
                if sub is None:
                    sub = below[prefix] = {**scope, "path": path[len(prefix):]}
                if r.matches(sub)[0] != Match.NONE:  # a route's match leaves the scope it is given as it was
                    return True
        return False

    async def _check(self, scope: Scope, self_authorizing: bool) -> Principal:
        header = b""
        named = b""
        consul = b""
        private = b""
        for k, v in scope["headers"]:  # the first of each, as Starlette's ``headers.get``
            if k == b"authorization" and not header:
                header = v
            elif k == _TENANT_HEADER and not named:
                named = v
            elif k == b"x-consul-token" and not consul:
                consul = v
            elif k in (b"private-token", b"x-gitlab-token") and not private:
                private = v  # GitLab's API clients, and its webhooks' secret token
        if header.lower().startswith(b"token token=") and scope["path"].startswith(PAGERDUTY_PREFIX):
            given = header[12:].strip()  # PagerDuty's REST clients: Authorization: Token token=...
        elif header.lower().startswith(b"bearer "):
            given = header[7:].strip()
        elif private and scope["path"].startswith(GITLAB_PREFIX):
            given = private.strip()
        elif scope["path"].startswith("/v1/") and (consul or _query_token(scope)):
            given = consul.strip() or _query_token(scope)  # Consul's clients: X-Consul-Token or ?token=
        else:
            given = b""
        principal = await self._principal(scope, given)
        if principal is None:
            raise Unauthorized("invalid bearer token" if given else "missing bearer token")
        scope[PRINCIPAL_KEY] = principal  # known even if refused below: the audit log names who was refused
        path = scope["path"]
        need = action(scope.get("method", "GET"), path)
        if not self_authorizing and not principal.allows(need, path):
            raise Forbidden(f"{principal.describe()} lacks the {need!r} scope")
        tenant = resolve_tenant(principal, named.decode("latin-1"))
        if tenant == AUDIT_TENANT and need == "write":
            raise Forbidden(f"tenant {AUDIT_TENANT!r} holds the audit log, which only the server writes")
        if not self_authorizing and not principal.allows(need, path, tenant):
            raise Forbidden(f"{principal.describe()} lacks the {need!r} scope for tenant {tenant!r}")
        return principal

    async def _principal(self, scope: Scope, given: bytes) -> Principal | None:
        if given:
            found = None
            for token, principal in self.tokens.entries:
                if hmac.compare_digest(given, token) and found is None:
                    found = principal
            if found is not None:
                return found
        for authenticate in self.authenticators:
            p = await authenticate(scope, given)
            if p is not None:
                return p
        return None


def _self_authorizing_routes(routes: Iterable[BaseRoute], prefix: str) -> Iterator[tuple[str, str, BaseRoute]]:
    """(prefix, literal start of its paths, route) of every route marked ``authorizes_itself``, included
    routers searched; the literal start rejects most paths before the route's own (slower) match."""
    for r in routes:
        sub = getattr(r, "original_router", None)
        if sub is not None:
            inner = getattr(getattr(r, "include_context", None), "prefix", "") or ""
            yield from _self_authorizing_routes(sub.routes, prefix + inner)
        elif getattr(r, "authorizes_itself", False):
            yield prefix, prefix + str(getattr(r, "path_format", "") or getattr(r, "path", "")).split("{")[0], r


def _has_authorization(scope: Scope) -> bool:
    return any(k == b"authorization" for k, _ in scope["headers"])


def _find_route(routes: Iterable[BaseRoute], scope: Scope) -> BaseRoute | None:
    """The first route matching path and method, else the first matching the path alone; included
    routers (FastAPI's ``original_router``) are searched below their prefix."""
    partial = None
    for r in routes:
        try:
            match, _ = r.matches(scope)
        except Exception:  # a route that cannot judge this scope does not answer it
            continue
        if match == Match.NONE:
            continue
        sub = getattr(r, "original_router", None)
        if sub is not None:
            prefix = getattr(getattr(r, "include_context", None), "prefix", "") or ""
            inner = _find_route(sub.routes, {**scope, "path": scope["path"][len(prefix):]})
            if inner is None:
                continue
            match, _ = inner.matches({**scope, "path": scope["path"][len(prefix):]})
            r = inner
        if match == Match.FULL:
            return r
        if partial is None:
            partial = r  # the path is served, not with this method (405)
    return partial


def _render(err: PitwallError, route: BaseRoute | None) -> Response:
    """``err`` in the wire format of the route that would have answered (plain text when none)."""
    own: Any = getattr(route, "render_error", None)
    if callable(own):
        out = own(err)
        if isinstance(out, Response):
            return out
    fmt = getattr(route, "error_format", "text")
    return render(err, fmt if isinstance(fmt, str) else "text")  # type: ignore[arg-type]
