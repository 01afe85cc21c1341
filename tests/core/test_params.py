"""Prometheus' time and duration parameters, and query + form parameters together."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request

from pitwall.core.errors import BadData
from pitwall.core.params import all_params, parse_duration_param_ms, parse_time_ms


@pytest.mark.parametrize(("text", "ms"), [
    ("1700000000", 1_700_000_000_000), ("1700000000.123", 1_700_000_000_123),
    ("2023-11-14T22:13:20Z", 1_700_000_000_000), ("2023-11-14T23:13:20.5+01:00", 1_700_000_000_500),
])
def test_times(text: str, ms: int) -> None:
    assert parse_time_ms(text) == ms


@pytest.mark.parametrize("text", ["NaN", "Inf", "yesterday", "2023-11-14T22:13:20"])  # no zone
def test_bad_times(text: str) -> None:
    with pytest.raises(BadData, match="to a valid timestamp"):
        parse_time_ms(text)


@pytest.mark.parametrize(("text", "ms"), [("15", 15_000), ("0.5", 500), ("1m30s", 90_000), ("2h", 7_200_000)])
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_param_ms(text) == ms


def test_bad_durations() -> None:
    with pytest.raises(BadData, match="to a valid duration"):
        parse_duration_param_ms("fast")
    with pytest.raises(BadData, match="overflows int64"):
        parse_duration_param_ms("1e300")


async def test_all_params_merges_query_and_form() -> None:
    app = FastAPI()

    @app.post("/q")
    async def q(request: Request) -> dict[str, list[str]]:
        p = await all_params(request)
        return {k: p.getlist(k) for k in sorted(set(p.keys()))}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
        r = await c.post("/q", params={"match[]": "up"}, data={"match[]": "down", "time": "1"})
        assert r.json() == {"match[]": ["up", "down"], "time": ["1"]}


async def test_form_bodies_are_bounded() -> None:
    """A url-encoded query form past the form limit is refused while it streams in (413)."""
    from pitwall.core.errors import PitwallError
    from pitwall.core.http_errors import render

    app = FastAPI()

    @app.post("/q")
    async def q(request: Request) -> dict[str, int]:
        try:
            p = await all_params(request)
        except PitwallError as e:
            return {"status": render(e, "text").status_code}
        return {"n": len(p.getlist("query"))}

    async def chunks():  # type: ignore[no-untyped-def]
        yield b"query=up"
        for _ in range(9):
            yield b"&query=" + b"x" * (1 << 20)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as c:
        r = await c.post("/q", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"})
        assert r.json() == {"status": 413}
        r = await c.post("/q", data={"query": ["up", "down"]})
        assert r.json() == {"n": 2}
