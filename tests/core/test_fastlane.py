"""The direct lane answers exactly as FastAPI's stack would, and only for the routes it may stand in for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from pitwall.config import load_settings
from pitwall.core.errors import BadData
from pitwall.core.fastlane import FastLane
from pitwall.core.http_errors import error_router


async def _dep() -> None:
    return None


def _app(*before: APIRouter) -> FastAPI:
    app = FastAPI()
    for router in before:  # tried first
        app.include_router(router)
    r = error_router("prometheus", prefix="/api")

    @r.get("/plain")
    async def plain(request: Request) -> Response:
        if request.query_params.get("fail") == "bad":
            raise BadData("bad parameter: fail")
        if request.query_params.get("fail") == "boom":
            raise RuntimeError("boom")
        if request.query_params.get("fail") == "http":  # e.g. Starlette's answer to a malformed form
            raise HTTPException(418, "teapot")
        return Response(f"plain {request.url.path} {request.scope['route'].path}", headers={"x-lane": "?"})

    @r.post("/plain")
    async def plain_post(request: Request) -> Response:
        return Response(b"posted " + await request.body())

    @r.get("/dep", dependencies=[Depends(_dep)])
    async def with_dep(request: Request) -> Response:
        return Response("dep")

    @r.get("/param")
    async def with_param(x: int, request: Request) -> Response:
        return Response(f"param {x}")

    @r.get("/dict")
    async def returns_dict(request: Request) -> dict[str, int]:
        return {"a": 1}

    @r.get("/sync")
    def sync(request: Request) -> Response:
        return Response("sync")

    @r.get("/kv/{key:path}")
    async def kv(key: str, request: Request) -> Response:
        return Response(f"kv [{key}] {request.path_params}")

    @r.get("/item/{item}")
    async def item(item: str, request: Request) -> Response:
        return Response(f"item {item}")
    app.include_router(r)
    plain_starlette = APIRouter()

    @plain_starlette.get("/unformatted")
    async def unformatted(request: Request) -> Response:  # not an error_router route: no format to render with
        return Response("unformatted")
    app.include_router(plain_starlette)
    return app


def _scope(method: str, path: str, query: bytes = b"", root_path: str = "") -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": query, "root_path": root_path,
            "headers": [(b"host", b"t")], "client": ("127.0.0.1", 1), "server": ("t", 80)}


async def _call(app: Any, scope: dict[str, Any], body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def test_only_the_routes_the_lane_may_stand_in_for() -> None:
    lanes = FastLane(_app())
    for method, path in [("GET", "/api/plain"), ("POST", "/api/plain"), ("GET", "/api/kv/a/b"), ("GET", "/api/kv/")]:
        assert lanes.find(_scope(method, path)) is not None, (method, path)
    for method, path in [("GET", "/api/dep"), ("GET", "/api/param"), ("GET", "/api/dict"), ("GET", "/api/sync"),
                         ("GET", "/api/item/x"), ("GET", "/unformatted"), ("PUT", "/api/plain"),
                         ("GET", "/api/plain/"), ("GET", "/api/kv"), ("GET", "/api/kv/a\nb")]:
        assert lanes.find(_scope(method, path)) is None, (method, path)
    assert lanes.find(_scope("GET", "/api/plain", root_path="/behind")) is None


def _router(path: str, **kw: Any) -> APIRouter:
    r = error_router("text", **kw)

    @r.get(path)
    async def route(request: Request) -> Response:
        return Response(path)
    return r


def test_a_route_answered_by_an_earlier_one_gets_no_lane() -> None:
    one_segment = error_router("text")

    @one_segment.get("/{anything}")
    async def anything(anything: str, request: Request) -> Response:
        return Response(anything)
    assert FastLane(_app(one_segment)).find(_scope("GET", "/api/plain")) is not None  # /{anything}: one segment
    catch_all = APIRouter()  # no lane of its own (no error format)

    @catch_all.get("/api/{rest:path}")
    async def rest(rest: str, request: Request) -> Response:
        return Response(rest)
    lanes = FastLane(_app(catch_all))
    assert lanes.find(_scope("GET", "/api/plain")) is None
    laned = error_router("text")
    laned.get("/api/{rest:path}")(rest)
    laned_catch_all = FastLane(_app(laned)).find(_scope("GET", "/api/plain"))  # its own lane answers
    assert laned_catch_all is not None and laned_catch_all.route.path == "/api/{rest:path}"
    assert lanes.find(_scope("POST", "/api/plain")) is not None  # the catch-all answers GET only
    assert lanes.find(_scope("GET", "/api/kv/a")) is None
    assert FastLane(_app(_router("/kv/special"))).find(_scope("GET", "/api/kv/a")) is not None  # not under /api/kv/
    assert FastLane(_app(_router("/api/kv/special"))).find(_scope("GET", "/api/kv/a")) is None
    assert FastLane(_app(_router("/api/kv"))).find(_scope("GET", "/api/kv/a")) is not None  # /api/kv is not under it
    later = _app()
    later.include_router(_router("/api/kv/special"))  # after: /api/kv/{key:path} answers it first, as FastAPI does
    assert FastLane(later).find(_scope("GET", "/api/kv/special")) is not None


@pytest.mark.parametrize(("method", "path", "query", "body"), [
    ("GET", "/api/plain", b"", b""),
    ("GET", "/api/plain", b"fail=bad", b""),
    ("GET", "/api/plain", b"fail=http", b""),
    ("POST", "/api/plain", b"", b"payload"),
    ("GET", "/api/kv/a/b%20c", b"", b""),
    ("GET", "/api/kv/", b"", b""),
])
async def test_the_lane_answers_as_the_framework(method: str, path: str, query: bytes, body: bytes) -> None:
    app = _app()
    lanes = FastLane(app)
    scope = _scope(method, path.replace("%20", " "), query)
    lane = lanes.find(scope)
    assert lane is not None
    framework_scope, lane_scope = dict(scope), dict(scope)
    want = await _call(app, framework_scope, body)
    got = await _call(lane, lane_scope, body)
    assert got == want
    assert lane_scope["route"] is framework_scope["route"]
    assert lane_scope["path_params"] == framework_scope["path_params"]
    assert lane_scope["endpoint"] is framework_scope["endpoint"]
    if query == b"fail=bad":
        assert want[0] == 400 and b'"errorType":"bad_data"' in want[2]
    if query == b"fail=http":
        assert want[0] == 418 and want[2] == b'{"detail":"teapot"}'


async def test_an_unexpected_error_propagates() -> None:
    app = _app()
    lane = FastLane(app).find(_scope("GET", "/api/plain", b"fail=boom"))
    assert lane is not None
    with pytest.raises(RuntimeError, match="boom"):
        await _call(lane, _scope("GET", "/api/plain", b"fail=boom"))


async def test_routes_changed_later_rebuild_the_table() -> None:
    app = _app()
    lanes = FastLane(app)
    assert lanes.find(_scope("GET", "/api/late")) is None
    late = error_router("text", prefix="/api")

    @late.get("/late")
    async def late_route(request: Request) -> Response:
        return Response("late")
    app.include_router(late)
    lane = lanes.find(_scope("GET", "/api/late"))
    assert lane is not None and (await _call(lane, _scope("GET", "/api/late")))[2] == b"late"


async def test_every_lane_of_the_server_is_the_route_fastapi_chooses(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Each lane of the real server (the control plane's Consul routes included) against FastAPI's own routing,
    with the route's handling replaced by a note of which route was chosen."""
    from pitwall.server import create_app
    app = create_app(load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False}))
    chosen: list[Any] = []

    async def note(self: APIRoute, scope: Scope, receive: Receive, send: Send) -> None:
        chosen.append(self)
        await Response(status_code=204)(scope, receive, send)
    monkeypatch.setattr(APIRoute, "handle", note)
    try:
        lanes: FastLane = app.edge.lanes  # type: ignore[attr-defined]
        lanes.find(_scope("GET", "/"))
        requests = list(lanes.lanes)
        for method, prefixed in lanes.prefixed.items():
            requests += [(method, lane.prefix + rest) for lane in prefixed for rest in ("", "a", "a/b/c", "x y")]
        assert len(lanes.lanes) > 50 and ("GET", "/api/v1/query_range") in lanes.lanes
        assert {("PUT", "/v1/kv/a"), ("GET", "/v1/kv/a")} <= {(m, lane.prefix + "a") for m, ls in lanes.prefixed.items()
                                                             for lane in ls}
        for method, path in requests:
            lane = lanes.find(_scope(method, path))
            assert lane is not None
            chosen.clear()
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app.router), base_url="http://t") as c:
                r = await c.request(method, path.replace(" ", "%20"))
            assert r.status_code == 204 and chosen == [lane.route], (method, path)
    finally:
        app.state.components.db.close()
