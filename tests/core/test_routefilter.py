"""The literal-start filter in front of included routers answers exactly as FastAPI's own walk."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Match, Mount, Route

from pitwall.config import load_settings
from pitwall.core.routefilter import filter_included_routers, literal_starts


def _app() -> FastAPI:
    app = FastAPI()
    a = APIRouter()

    @a.get("/-/healthy")
    async def healthy() -> str:
        return "a-healthy"

    @a.put("/v1/kv/{key:path}")
    async def kv(key: str) -> str:
        return f"a-kv {key}"

    b = APIRouter(prefix="/api/v1")

    @b.get("/items/{item}")
    async def item(item: str) -> str:
        return f"b-item {item}"

    @b.get("/list/")
    async def listing() -> str:
        return "b-list"

    inner = APIRouter()

    @inner.post("/deep/{x}")
    async def deep(x: str) -> str:
        return f"c-deep {x}"

    c = APIRouter()
    c.include_router(inner, prefix="/nested")
    c.routes.append(Mount("/static", routes=[Route("/f", lambda r: PlainTextResponse("mounted"))]))

    d = APIRouter()

    @d.get("/{anything:path}")
    async def fallback(anything: str) -> str:
        return f"d-any {anything}"

    for r in (a, b, c):
        app.include_router(r)
    app.state.last = d
    app.state.first = a
    return app


REQUESTS = [("GET", "/-/healthy"), ("GET", "/-/healthy/"), ("PUT", "/v1/kv/a/b"), ("GET", "/v1/kv/a"),
            ("GET", "/api/v1/items/7"), ("POST", "/api/v1/items/7"), ("GET", "/api/v1/list"),
            ("GET", "/api/v1/list/"), ("POST", "/nested/deep/1"), ("GET", "/nested/deep/1"), ("GET", "/static/f"),
            ("GET", "/nope"), ("GET", "/v1/kv"), ("GET", "/api/v1/items")]


async def _answers(app: FastAPI) -> list[tuple[int, str, str]]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        out = []
        for method, path in REQUESTS:
            r = await c.request(method, path)
            out.append((r.status_code, r.headers.get("location", ""), r.text))
        return out


@pytest.mark.parametrize("with_fallback", [False, True])
async def test_same_answers_with_and_without_the_filter(with_fallback: bool) -> None:
    plain, filtered = _app(), _app()
    for app in (plain, filtered):
        if with_fallback:  # a router whose route starts with a parameter is always tried
            app.include_router(app.state.last)
    assert filter_included_routers(filtered.router.routes) == (4 if with_fallback else 3)
    expected = await _answers(plain)
    assert await _answers(filtered) == expected
    assert (200, "", '"a-kv a/b"') in expected and any(s == 405 for s, _, _ in expected)
    assert with_fallback or any(s == 307 for s, _, _ in expected)  # the trailing-slash redirect is still found


def test_a_router_is_skipped_only_when_no_route_can_start_the_path() -> None:
    app = _app()
    filter_included_routers(app.router.routes)
    b = app.router.routes[-2]
    scope: dict[str, Any] = {"type": "http", "method": "GET", "root_path": "", "path_params": {}}
    assert b.matches({**scope, "path": "/v1/kv/x"})[0] == Match.NONE
    assert b.matches({**scope, "path": "/api/v1/items/3"})[0] == Match.FULL
    exact, starts = literal_starts(app.router.routes[-3].effective_candidates())  # type: ignore[attr-defined]
    assert exact == {"/-/healthy"} and starts == ("/v1/kv/",)


async def test_routes_added_later_are_seen() -> None:
    app = _app()
    filter_included_routers(app.router.routes)
    late = APIRouter()

    @late.get("/late/{x}")
    async def late_route(x: str) -> str:
        return f"late {x}"

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/late/5")).status_code == 404
    app.state.first.include_router(late)  # into an included router: its literal starts are read again
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/late/5")).text == '"late 5"'


def _first(routes: list[BaseRoute], scope: dict[str, Any]) -> tuple[int, Any]:
    partial = None
    for i, r in enumerate(routes):
        m, child = r.matches(dict(scope))
        if m == Match.FULL:
            return i, child.get("endpoint")
        if m == Match.PARTIAL and partial is None:
            partial = (i, child.get("endpoint"))
    return partial or (-1, None)


def test_pitwall_routes_resolve_as_before(tmp_path: Path) -> None:
    """Every route of the real server (parameters filled in), with its own method and another: the same
    route (or none) is chosen with the filter as by FastAPI's walk alone."""
    from pitwall.server import create_app
    app = create_app(load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False}))
    try:
        routes = list(app.router.routes)
        for r in routes:  # create_app filtered them: FastAPI's own walk first
            r.__dict__.pop("matches", None)
        paths = {re.sub(r"\{[^}]*\}", "x", c.path_format) for r in routes
                 for c in getattr(r, "effective_candidates", list)() if getattr(c, "path_format", "")}
        paths |= {p + "/" for p in paths} | {"/", "/nope", "/v1/kv/a/b/c", "/v1/kv"}
        assert len(paths) > 200
        scopes: list[dict[str, Any]] = [{"type": "http", "method": method, "path": path, "root_path": "", "path_params": {},
                   "headers": [], "query_string": b""} for path in sorted(paths) for method in ("GET", "PUT")]
        want = [_first(routes, s) for s in scopes]
        assert filter_included_routers(routes) > 20
        assert [_first(routes, s) for s in scopes] == want
        assert sum(i >= 0 for i, _ in want) > 200
    finally:
        app.state.components.db.close()
