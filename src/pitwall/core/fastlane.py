"""A direct lane to the routes whose endpoint takes only the request (and a trailing path parameter).

For every request FastAPI walks its middleware, its routers (twice: once to
match, once to handle) and its dependency solver: ~60-80 µs of a ~300 µs
request through a socket, a quarter of a small PromQL query's server time.
For most of pitwall's busiest routes (``/api/v1/query``, ``query_range``,
the pushes, Consul's ``/v1/kv/<key>``) none of that decides anything: the
path has no parameters or one trailing ``{name:path}``, the endpoint is a
coroutine that takes only the ``Request`` (and that parameter, as a ``str``)
and returns a ``Response``, no dependency applies and no body limit of
FastAPI's is set. For such a route, when it is the one FastAPI's own
matching chooses for its method and path, the lane calls the endpoint
straight from the edge, with what the framework would have put in the scope
(``app``, ``router``, ``endpoint``, ``path_params``, ``route``), renders a
``PitwallError`` with the route's own format (``core.http_errors``) and any
other exception with the app's exception handlers, as FastAPI's exception
layer would; what no handler takes propagates to the edge, which answers a
plain-text 500 as FastAPI's error layer does.

The table is built from the app's routes on first use and again whenever a
FastAPI route-change counter of any router in the tree moves. An exact path
is laned when the routes' own matchers answer its method and path with it
(an earlier route with a parameter that also matches keeps the request on
the framework); a ``prefix{name:path}`` route when no route before it in
FastAPI's order (depth first through the included routers) could match any
path under its prefix with its method, by the literal text the routes'
paths begin with (``core.routefilter``), an unknown shape counting as a
match. A scope with a ``root_path``, a ``Host`` route anywhere, FastAPI's
own telemetry switched on or a route's form or body limits: no lane.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable
from operator import attrgetter
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette._exception_handler import _lookup_exception_handler
from starlette.concurrency import run_in_threadpool
from starlette.convertors import PathConvertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Host, Match
from starlette.types import Receive, Scope, Send

from pitwall.core.errors import PitwallError
from pitwall.core.routefilter import starlette_format

__all__ = ["FastLane"]

_ROUTES_VERSION = attrgetter("_routes_version")  # FastAPI's per-router change counter


class _Lane:
    """One route's direct call: an ASGI app for the requests the table sends it."""

    __slots__ = ("app", "endpoint", "param", "prefix", "render", "rest", "route")

    def __init__(self, app: FastAPI, route: APIRoute, endpoint: Callable[..., Awaitable[Response]],
                 param: str, rest: str | None = None, prefix: str = "") -> None:
        self.app = app
        self.route = route
        self.endpoint = endpoint
        self.param = param  # the endpoint's ``Request`` parameter
        self.rest = rest  # a prefix route's path parameter: the path after ``prefix``
        self.prefix = prefix
        self.render: Callable[[PitwallError], Response] = route.render_error  # type: ignore[attr-defined]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.app
        scope["app"] = app
        if "router" not in scope:
            scope["router"] = app.router
        scope["endpoint"] = self.endpoint
        scope["route"] = self.route
        request = Request(scope, receive, send)
        if self.rest is None:
            scope["path_params"] = {}
            args = {self.param: request}
        else:
            rest = scope["path"][len(self.prefix):]
            scope["path_params"] = {self.rest: rest}
            args = {self.param: request, self.rest: rest}
        try:
            response = await self.endpoint(**args)
        except PitwallError as err:
            response = self.render(err)
        except Exception as exc:
            # FastAPI's exception layer has these (its error layer, outside, the 500 / Exception handler)
            handlers: Any = {k: v for k, v in app.exception_handlers.items() if k not in (500, Exception)}
            handler: Any = _lookup_exception_handler(handlers, exc)
            if handler is None:
                raise
            if inspect.iscoroutinefunction(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
        await response(scope, receive, send)


class FastLane:
    """The lanes of ``app``'s eligible routes by (method, path); ``find`` answers None for every other request."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.lanes: dict[tuple[str, str], _Lane] = {}
        self.prefixed: dict[str, tuple[_Lane, ...]] = {}  # by method: prefix routes' lanes
        self.routers: tuple[Any, ...] = ()
        self.version = -1

    def find(self, scope: Scope) -> _Lane | None:
        """The lane for an HTTP request's scope, or None (the framework answers it)."""
        if sum(map(_ROUTES_VERSION, self.routers)) != self.version:
            self._build()
        if scope.get("root_path"):
            return None
        method, path = scope["method"], scope["path"]
        lane = self.lanes.get((method, path))
        if lane is None:
            for pre in self.prefixed.get(method, ()):
                if path.startswith(pre.prefix):
                    # ``{name:path}`` is ``.*``: a newline in the rest is FastAPI's 404, not the route
                    return pre if "\n" not in path else None
        return lane

    def _build(self) -> None:
        router: Any = self.app.router
        routers = [router]
        _collect_routers(router.routes, routers)
        self.routers = tuple(routers)
        self.version = sum(map(_ROUTES_VERSION, self.routers))
        self.lanes, self.prefixed = {}, {}
        if not _lanes_allowed(self.app, routers):
            return
        prefixed: dict[str, list[_Lane]] = {}
        earlier: list[tuple[str | None, Any]] = []  # (path format, methods) of the leaves before, in order
        for leaf in _ordered_leaves(router.routes):
            ctx, route = leaf if isinstance(leaf, tuple) else (None, leaf)
            lane = self._lane(ctx, route) if isinstance(route, APIRoute) else None
            src: Any = ctx if ctx is not None else route
            if lane is not None:
                for method in src.methods or ():
                    if lane.rest is not None:
                        if not any(_may_match(fmt, methods, method, lane.prefix) for fmt, methods in earlier):
                            prefixed.setdefault(method, []).append(lane)
                    elif _chosen(router.routes, method, src.path_format) is src:
                        self.lanes[(method, src.path_format)] = lane
            earlier.append((_format_of(ctx, route), getattr(src, "methods", None)))
        self.prefixed = {m: tuple(lanes) for m, lanes in prefixed.items()}

    def _lane(self, ctx: Any, route: APIRoute) -> _Lane | None:
        """A lane for ``route`` (as included through ``ctx``, None for a route of the app's own), or None when
        the framework does anything more for it than call its endpoint with the request (and its path's
        trailing ``{name:path}``)."""
        src: Any = ctx if ctx is not None else route
        dep = src.dependant
        endpoint = src.endpoint
        if dep is None or endpoint is None or not hasattr(route, "render_error"):
            return None
        prefix, rest = _trailing_path_param(src)
        if "{" in prefix or (rest is not None and not _plain_str(dep.path_params, rest)):
            return None
        if rest is None and dep.path_params:
            return None
        if getattr(src, "max_body_size", None) is not None or getattr(route, "max_body_size", None) is not None:
            return None
        if dep.dependencies or dep.query_params or dep.header_params or dep.cookie_params \
                or dep.body_params or dep.request_param_name is None:
            return None
        if any(getattr(dep, name, None) for name in ("websocket_param_name", "http_connection_param_name",
                                                     "response_param_name", "background_tasks_param_name",
                                                     "security_scopes_param_name")):
            return None
        if not inspect.iscoroutinefunction(endpoint) or not _returns_response(endpoint):
            return None
        return _Lane(self.app, route, endpoint, dep.request_param_name, rest, prefix)


def _trailing_path_param(src: Any) -> tuple[str, str | None]:
    """(``prefix``, ``name``) of a route whose path is ``prefix{name:path}`` with no other parameter (Starlette
    keeps it as ``prefix{name}`` with a path convertor); else (its path format, None)."""
    fmt: str = src.path_format
    if fmt.endswith("}"):
        prefix, _, name = fmt[:-1].rpartition("{")
        convertors = getattr(src, "param_convertors", None) or {}
        if prefix and "{" not in prefix and isinstance(convertors.get(name), PathConvertor):
            return prefix, name
    return fmt, None


def _plain_str(fields: list[Any], name: str) -> bool:
    """The route's only path parameter is ``name``, a ``str`` without constraints (FastAPI passes it as matched)."""
    if len(fields) != 1:
        return False
    f = fields[0]
    info = getattr(f, "field_info", None)
    return f.name == name and getattr(f, "alias", name) == name and info is not None \
        and info.annotation is str and not info.metadata


def _format_of(ctx: Any, route: Any) -> str | None:
    """The path format a leaf matches from the root, or None when its match is not a path regex from the root
    (a frontend group, a host route)."""
    if ctx is not None and isinstance(ctx.original_route, APIRoute):
        return str(ctx.path_format)
    if isinstance(route, APIRoute):
        return route.path_format
    return starlette_format(getattr(ctx, "starlette_route", None) or route if ctx is not None else route)


def _may_match(fmt: str | None, methods: Any, method: str, prefix: str) -> bool:
    """Whether a route of path format ``fmt`` could answer ``method`` for some path beginning with ``prefix``
    (only a full match takes a request from a later route: another method's partial match does not)."""
    if methods and method not in methods:
        return False
    if fmt is None:
        return True
    if "{" not in fmt:
        return fmt.startswith(prefix)
    start = fmt.split("{", 1)[0]
    return start.startswith(prefix) or prefix.startswith(start)


def _returns_response(endpoint: Callable[..., Any]) -> bool:
    """Whether the endpoint is declared to return a ``Response`` (FastAPI serialises anything else)."""
    try:
        ret = typing.get_type_hints(endpoint).get("return")
    except Exception:  # an annotation that does not resolve: leave it to the framework
        return False
    return isinstance(ret, type) and issubclass(ret, Response)


def _lanes_allowed(app: FastAPI, routers: list[Any]) -> bool:
    """No lane when routing depends on more than method and path, or FastAPI adds per-request work."""
    if app.root_path or (getattr(app, "_native_telemetry", None) is not None and app._native_telemetry.enabled()):
        return False
    if any(getattr(r, "form_limits", None) for r in routers):
        return False
    return not any(isinstance(route, Host) for r in routers for route in r.routes)


def _collect_routers(routes: Iterable[Any], out: list[Any]) -> None:
    """Every router included at any depth (their change counters say when the table is stale)."""
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None and inner not in out:
            out.append(inner)
            _collect_routers(inner.routes, out)
        sub = getattr(r, "routes", None)  # a Mount's app
        if inner is None and isinstance(sub, list):
            _collect_routers(sub, out)


def _ordered_leaves(routes: Iterable[Any]) -> Iterable[tuple[Any, Any] | Any]:
    """Every route in the order FastAPI tries them (depth first through included routers): an included one as
    (its effective route context, its route), the app's own as the route."""
    for r in routes:
        if hasattr(r, "effective_route_contexts"):
            for ctx in r.effective_route_contexts():
                yield ctx, ctx.original_route
        else:
            yield r


def _chosen(routes: Iterable[Any], method: str, path: str) -> Any:
    """What FastAPI's matching answers a request for ``method path`` with: the effective context of an included
    route, the app's own route, or None (no full match, or one a lane cannot stand in for)."""
    scope: dict[str, Any] = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [],
                             "query_string": b""}
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            while hasattr(route, "_match"):  # an included router: its own first full match
                match, _, leaf, ctx = route._match(scope)
                if match is not Match.FULL:
                    return None
                if hasattr(leaf, "_match"):
                    route = leaf
                    continue
                return ctx
            return route if isinstance(route, APIRoute) else None
    return None
