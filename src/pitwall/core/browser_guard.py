"""Guards against requests a web browser sends on someone else's behalf, as ASGI middleware.

Two checks, both before authentication (a proxy that adds credentials makes
them ambient, exactly what cross-site attacks abuse):

- **Host allow-list** (DNS rebinding): a page on ``attacker.example`` whose
  name is re-pointed at 127.0.0.1 reaches a loopback server with
  ``Host: attacker.example``. Only allowed host names are answered; others get
  421 Misdirected Request (RFC 9110 section 15.5.20: this server does not answer
  for that authority). ``allowed_hosts=None`` answers every name.
- **Origin check** (cross-site request forgery, cross-site websocket
  hijacking): a state-changing request (any method but GET, HEAD and OPTIONS)
  or a websocket handshake is refused with 403 when the browser says it comes
  from another site: ``Sec-Fetch-Site`` is ``cross-site`` or ``same-site``, or,
  from browsers that do not send that header, ``Origin`` differs from the
  ``Host`` the request was sent to. Origins in ``allowed_origins`` are let
  through. Requests with neither header do not come from a browser page
  (curl, Prometheus, SDKs) and pass.

Health endpoints (``/-/healthy``, ``/-/ready``) answer whatever the Host, for
load balancers and Kubernetes probes that address the server by IP.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from pitwall.core.auth import OPEN_PATHS, SAFE_METHODS, WS_POLICY_VIOLATION
from pitwall.core.errors import Forbidden, Misdirected, PitwallError
from pitwall.core.http_errors import render

__all__ = ["BrowserGuard", "host_allowed", "host_name"]

ANY_HOST = "*"


def host_name(authority: str) -> str:
    """The host of a ``Host`` header or an origin's authority: lower case, without port, brackets or a final dot."""
    a = authority.strip().lower()
    if a.startswith("["):
        end = a.find("]")
        return a[1:end] if end > 0 else a
    if a.count(":") == 1:
        a = a.split(":", 1)[0]
    return a.rstrip(".")


def host_allowed(host: str, allowed: Collection[str]) -> bool:
    """``host`` matches an entry: the same name, ``*.suffix`` for any subdomain, or ``*`` for any host."""
    for entry in allowed:
        if entry in (ANY_HOST, host):
            return True
        if entry.startswith("*.") and host.endswith(entry[1:]) and len(host) > len(entry) - 1:
            return True
    return False


class BrowserGuard:
    """Answers only allowed host names, and refuses cross-site writes and websocket handshakes."""

    def __init__(self, app: ASGIApp, allowed_hosts: Collection[str] | None,
                 allowed_origins: Collection[str] = ()) -> None:
        self.app = app
        self.allowed_hosts = None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        self.allowed_origins = frozenset(o.lower().rstrip("/") for o in allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or await self.admit(scope, receive, send):
            await self.app(scope, receive, send)

    async def admit(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Whether an HTTP request or websocket handshake may go on; a refused one is answered here."""
        if scope["path"] in OPEN_PATHS:
            return True
        try:
            self._check(scope)
        except PitwallError as err:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": err.message})
            else:
                await render(err, "text")(scope, receive, send)
            return False
        return True

    def _check(self, scope: Scope) -> None:
        host = origin = site = ""
        for k, v in scope["headers"]:
            if k == b"host" and not host:
                host = v.decode("latin-1")
            elif k == b"origin" and not origin:
                origin = v.decode("latin-1")
            elif k == b"sec-fetch-site" and not site:
                site = v.decode("latin-1").strip().lower()
        if self.allowed_hosts is not None and host and not host_allowed(host_name(host), self.allowed_hosts):
            raise Misdirected(f"this server does not answer for host {host_name(host)[:100]!r}; "
                              "allowed_hosts lists the names it answers for")
        if scope["type"] == "http" and scope.get("method", "GET") in SAFE_METHODS:
            return
        if self._cross_site(host, origin, site):
            raise Forbidden(f"cross-site request refused (Origin {origin[:100] or 'absent'}, Sec-Fetch-Site "
                            f"{site or 'absent'}); allowed_origins lists the other sites that may send it")

    def _cross_site(self, host: str, origin: str, site: str) -> bool:
        if site in ("same-origin", "none"):
            return False
        if origin and origin.lower().rstrip("/") in self.allowed_origins:
            return False
        if site in ("same-site", "cross-site"):
            return True
        if not origin:
            return False  # not sent by a browser page
        _scheme, sep, authority = origin.partition("://")
        return not sep or authority.lower() != host.strip().lower()
