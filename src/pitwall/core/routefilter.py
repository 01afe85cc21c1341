"""Skip included routers that cannot match a path, before FastAPI walks their routes.

FastAPI's router tries its routes in order, and an included router answers
``matches`` by running every one of its own routes' regexes (and rebuilding
its scope keys): a request for a route of the 26th router paid ~0.5 ms on
this machine walking the 25 before it (a Consul KV read or write, whose whole
server time is ~1-2 ms). A route's regex begins with the literal text of its
path up to the first ``{`` (Starlette's ``compile_path`` escapes it; a path
without parameters is matched whole), so a router none of whose routes'
literal starts is a prefix of the path cannot answer ``FULL`` or
``PARTIAL``: it is answered ``NONE`` at once (the trailing-slash redirect
asks again with the other path). Order, 405s, redirects and the chosen
route are unchanged; a route whose start is not known (a host route, a
frontend group) makes its router always tried.
"""

from __future__ import annotations

from collections.abc import Iterable
from operator import attrgetter
from typing import Any

from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
from starlette.types import Scope

__all__ = ["filter_included_routers", "literal_starts", "starlette_format"]

_ROUTES_VERSION = attrgetter("_routes_version")  # FastAPI's per-router change counter


def literal_starts(candidates: Iterable[Any]) -> tuple[frozenset[str], tuple[str, ...]]:
    """The paths an included router's candidates (FastAPI's ``effective_candidates``, nested included
    routers searched) can match: (whole paths of routes without parameters, literal starts of the others);
    a route whose start is unknown gives the start ``""`` (any path)."""
    exact: set[str] = set()
    starts: set[str] = set()
    _collect(candidates, exact, starts)
    return frozenset(exact), tuple(sorted(starts))


def _collect(candidates: Iterable[Any], exact: set[str], starts: set[str]) -> None:
    for c in candidates:
        nested = getattr(c, "effective_candidates", None)
        if nested is not None:
            _collect(nested(), exact, starts)
            continue
        route = getattr(c, "starlette_route", None) or getattr(c, "original_route", None)
        fmt = getattr(c, "path_format", "") if _is_api_route(c) else starlette_format(route)
        if fmt is None:
            starts.add("")
        elif "{" in fmt:
            starts.add(fmt.split("{", 1)[0])
        else:
            exact.add(fmt)  # the regex is the whole path: ``^/-/healthy$``


def _routers(included: Any) -> list[Any]:
    """The router an included router wraps and those included in it, at any depth."""
    out = [included.original_router]
    for c in included.effective_candidates():
        if hasattr(c, "original_router"):
            out.extend(_routers(c))
    return out


def _is_api_route(c: Any) -> bool:
    return isinstance(getattr(c, "original_route", None), APIRoute) and bool(getattr(c, "path_format", ""))


def starlette_format(route: Any) -> str | None:
    """A plain Starlette route's path format, or None when its match is not a path regex from the root."""
    if isinstance(route, Route | WebSocketRoute | Mount):
        fmt = route.path_format
        return fmt if fmt.startswith("/") else None
    return None


class _Request:
    """What the filtered routers of one app share per request, computed once for the request's scope rather
    than once per router (FastAPI offers every router the same scope dict in turn: ~20 routers before a
    Consul route): the path the routes' regexes see, and whether any watched router's routes changed
    (``generation`` moves on then, and each filter reads its starts again)."""

    __slots__ = ("filters", "generation", "path", "raw", "root", "routers", "scope", "version")

    def __init__(self) -> None:
        self.scope: Scope | None = None
        self.raw: Any = None
        self.root: Any = None
        self.path = ""
        self.filters: list[_Filtered] = []
        self.routers: tuple[Any, ...] = ()  # every filter's watched routers, flat (read on every request)
        self.version = -1
        self.generation = 0

    def path_of(self, scope: Scope) -> str:
        raw, root = scope.get("path"), scope.get("root_path")
        # the same dict with the same path objects: a dict changed in place, or another one, is read again
        if scope is not self.scope or raw is not self.raw or root is not self.root:
            self.path = get_route_path(scope)  # what the routes' regexes are matched against
            self.scope, self.raw, self.root = scope, raw, root
            if self._version() != self.version:
                self.generation += 1
        return self.path

    def _version(self) -> int:
        """FastAPI's change counters of every watched router, summed (cheaper than its recursive walk)."""
        return sum(map(_ROUTES_VERSION, self.routers))

    def rebase(self) -> None:
        """A filter read its routers again (its watched list may have grown): the counters as they are now."""
        self.routers = tuple(r for f in self.filters for r in f.watched)
        self.version = self._version()


class _Filtered:
    """``matches`` of one included router, behind the literal-start check (rebuilt when its routes change)."""

    def __init__(self, router: BaseRoute, request: _Request) -> None:
        self.router = router
        self.inner = router.matches
        self.request = request
        self.generation = -1  # the request generation its starts were read in
        self.watched: list[Any] = []  # the routers whose routes it answers from, its own and nested ones
        self.exact: frozenset[str] = frozenset()
        self.starts: tuple[str, ...] = ("",)
        request.filters.append(self)

    def __call__(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] in ("http", "websocket"):
            request = self.request
            path = request.path_of(scope)
            if self.generation != request.generation:
                self._refresh()
            if path not in self.exact and not path.startswith(self.starts):
                return Match.NONE, {}
        return self.inner(scope)

    def _refresh(self) -> None:
        router: Any = self.router
        self.exact, self.starts = literal_starts(router.effective_candidates())
        self.watched = _routers(router)
        self.generation = self.request.generation
        self.request.rebase()


def filter_included_routers(routes: Iterable[BaseRoute]) -> int:
    """Put the literal-start check in front of every included router in ``routes`` (an app's top-level
    routes); how many were filtered."""
    n = 0
    request = _Request()
    for r in routes:
        if hasattr(r, "original_router") and hasattr(r, "effective_candidates") and \
                not isinstance(r.__dict__.get("matches"), _Filtered):
            r.__dict__["matches"] = _Filtered(r, request)  # the instance's own: type, identity and handle() unchanged
            n += 1
    return n
