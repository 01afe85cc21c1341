"""core.browser_guard: the Host allow-list and the Origin check, through a bare ASGI app."""

from __future__ import annotations

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from pitwall.core.browser_guard import BrowserGuard, host_allowed, host_name


@pytest.mark.parametrize(("authority", "host"), [
    ("localhost:9900", "localhost"),
    ("LOCALHOST.", "localhost"),
    ("[::1]:9900", "::1"),
    ("127.0.0.1", "127.0.0.1"),
    ("pitwall.example.com:443", "pitwall.example.com"),
])
def test_host_name(authority: str, host: str) -> None:
    assert host_name(authority) == host


def test_host_allowed() -> None:
    allowed = {"localhost", "*.example.com"}
    assert host_allowed("localhost", allowed)
    assert host_allowed("a.b.example.com", allowed)
    assert not host_allowed("example.com", allowed)
    assert not host_allowed("badexample.com", allowed)
    assert host_allowed("anything", {"*"})


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _client(**kwargs: object) -> httpx.AsyncClient:
    guard = BrowserGuard(_ok, **kwargs)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://localhost:9900")


async def test_foreign_host_is_misdirected() -> None:
    async with _client(allowed_hosts={"localhost", "127.0.0.1"}) as c:
        assert (await c.get("/graph")).status_code == 200
        r = await c.get("/graph", headers={"Host": "attacker.example:9900"})
        assert r.status_code == 421 and "attacker.example" in r.text
        assert (await c.get("/-/healthy", headers={"Host": "10.1.2.3:9900"})).status_code == 200
    async with _client(allowed_hosts=None) as c:  # a non-loopback listen answers any name by default
        assert (await c.get("/graph", headers={"Host": "pitwall.internal"})).status_code == 200


CASES = [
    # (method, headers, status)
    ("POST", {}, 200),  # curl, Prometheus, SDKs: no Origin, no Sec-Fetch-Site
    ("POST", {"Origin": "http://attacker.example"}, 403),
    ("POST", {"Origin": "null"}, 403),
    ("POST", {"Sec-Fetch-Site": "cross-site"}, 403),
    ("POST", {"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:3000"}, 403),
    ("POST", {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost:9900"}, 200),
    ("POST", {"Sec-Fetch-Site": "none"}, 200),
    ("POST", {"Origin": "http://localhost:9900"}, 200),  # an older browser on pitwall's own page
    ("POST", {"Origin": "https://grafana.example.com", "Sec-Fetch-Site": "cross-site"}, 200),  # allowed_origins
    ("DELETE", {"Origin": "http://attacker.example"}, 403),
    ("GET", {"Origin": "http://attacker.example", "Sec-Fetch-Site": "cross-site"}, 200),  # reads are safe
]


@pytest.mark.parametrize(("method", "headers", "status"), CASES)
async def test_cross_site_writes_are_refused(method: str, headers: dict[str, str], status: int) -> None:
    async with _client(allowed_hosts={"localhost"}, allowed_origins=["https://grafana.example.com"]) as c:
        r = await c.request(method, "/alerts/silences", headers=headers)
        assert r.status_code == status, r.text
