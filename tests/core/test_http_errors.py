"""Errors mapped once: each kind's status, and each wire format's body and headers."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI

from pitwall.core.errors import (
    BadData,
    Canceled,
    ExecutionError,
    Forbidden,
    Misdirected,
    NotFound,
    Overloaded,
    PitwallError,
    Timeout,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from pitwall.core.http_errors import error_router, render, status_of


@pytest.mark.parametrize(("err", "status"), [
    (BadData("x"), 400), (Unauthorized("x"), 401), (Forbidden("x"), 403), (NotFound("x"), 404),
    (TooLarge("x"), 413), (UnsupportedMediaType("x"), 415), (Misdirected("x"), 421),
    (ExecutionError("x"), 422), (Overloaded("x", 2.0), 429), (Canceled("x"), 499),
    (Unavailable("x"), 503), (Timeout("x"), 503),
])
def test_status_of_each_kind(err: PitwallError, status: int) -> None:
    assert status_of(err) == status


def test_prometheus_format_uses_its_closed_error_types() -> None:
    r = render(TooLarge("body too big"), "prometheus")
    assert r.status_code == 413
    assert json.loads(bytes(r.body)) == {"status": "error", "errorType": "bad_data", "error": "body too big"}
    r = render(ExecutionError("too many samples"), "prometheus")
    assert json.loads(bytes(r.body))["errorType"] == "execution"


def test_overload_carries_retry_after_and_auth_errors_a_challenge() -> None:
    r = render(Overloaded("busy", 2.4), "text")
    assert r.status_code == 429 and r.headers["retry-after"] == "2" and bytes(r.body) == b"busy\n"
    r = render(Unauthorized("missing bearer token"), "native")
    assert r.headers["www-authenticate"] == "Bearer"
    assert json.loads(bytes(r.body)) == {"error": {"kind": "unauthorized", "message": "missing bearer token",
                                                   "status": 401}}


def test_other_formats() -> None:
    assert json.loads(bytes(render(NotFound("no such silence"), "alertmanager").body)) == "no such silence"
    otlp = json.loads(bytes(render(BadData("bad proto"), "otlp").body))
    assert otlp == {"code": 3, "message": "bad proto"}  # INVALID_ARGUMENT
    page = bytes(render(NotFound("<script>"), "html").body).decode()
    assert "&lt;script&gt;" in page and "<script>" not in page


async def test_routers_render_raised_errors_and_validation_errors_in_their_format() -> None:
    router = error_router("prometheus")

    @router.get("/boom")
    async def boom() -> None:
        raise Timeout("query timed out")

    @router.get("/typed")
    async def typed(n: int) -> int:
        return n

    app = FastAPI()
    app.include_router(router)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
        r = await c.get("/boom")
        assert r.status_code == 503 and r.json() == {"status": "error", "errorType": "timeout",
                                                     "error": "query timed out"}
        r = await c.get("/typed", params={"n": "x"})
        assert r.status_code == 400 and r.json()["errorType"] == "bad_data" and r.json()["error"].startswith("n:")
