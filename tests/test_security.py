"""Security issue 23 on the real app: scopes by what a route does, tokens bound to tenants,
cross-site writes, foreign Host names (docs/security.md)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import cramjam
import httpx
import pytest
import websockets
from fastapi import FastAPI
from starlette.routing import WebSocketRoute
from websockets.sync.client import connect as ws_connect

from pitwall.config import load_settings
from pitwall.core.auth import ACTION_LINK_PATHS, READ_ONLY_POSTS, SAFE_METHODS, SIGNED_PATHS, required_scope
from pitwall.metrics.ingest import prompb
from pitwall.server import create_app
from tests.conftest import LiveServer

READ, WRITE, ADMIN = "read-token-000000", "write-token-00000", "admin-token-00000"
A_READ, A_WRITE = "team-a-read-00000", "team-a-write-0000"
AB_READ, ANY_READ = "team-ab-read-0000", "any-tenant-read-0"
TOKENS = [
    {"token": READ, "scopes": ["read"]},
    {"token": WRITE, "scopes": ["read", "write"]},
    {"token": ADMIN, "scopes": ["admin"]},
    {"token": A_READ, "scopes": ["read"], "tenants": ["team-a"], "name": "grafana-a"},
    {"token": A_WRITE, "scopes": ["read", "write"], "tenants": ["team-a"]},
    {"token": AB_READ, "scopes": ["read"], "tenants": ["team-a", "team-b"]},
    {"token": ANY_READ, "scopes": ["read"], "tenants": ["*"]},
]
TENANT_DATA = ("default", "team-a", "team-b")


def h(token: str, tenant: str | None = None, **extra: str) -> dict[str, str]:
    out = {"Authorization": f"Bearer {token}", **extra}
    if tenant:
        out["X-Scope-OrgID"] = tenant
    return out


def _settings(tmp_path: Path, **kw: Any) -> Any:
    return load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False}, **kw)


async def _client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            c.app = app  # type: ignore[attr-defined]
            yield c


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(create_app(_settings(tmp_path, auth_tokens=TOKENS))):
        yield c


@pytest.fixture
async def open_app(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The default server: loopback, no tokens."""
    settings = _settings(tmp_path, allowed_origins=["https://grafana.example.com"])
    async for c in _client(create_app(settings)):
        yield c


# ---------------------------------------------------------------- every route, by what it does


def _walk(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for r in routes:
        sub = getattr(r, "original_router", None)  # FastAPI's included routers
        if sub is not None:
            yield from _walk(sub.routes, prefix + r.include_context.prefix)
        else:
            yield prefix + r.path, r


def _concrete(path: str) -> str:
    return "/".join("x" if part.startswith("{") else part for part in path.split("/"))


def _routes(c: httpx.AsyncClient) -> list[tuple[str, str, Any]]:
    """(method, path, route) for every route of the app, websockets as method ``WEBSOCKET``."""
    out = []
    for path, route in _walk(list(c.app.routes)):  # type: ignore[attr-defined]
        if isinstance(route, WebSocketRoute) or type(route).__name__ == "APIWebSocketRoute":
            out.append(("WEBSOCKET", path, route))
        for m in sorted(getattr(route, "methods", None) or ()):
            out.append((m, path, route))
    return out


def test_every_mutating_route_needs_write_or_admin(secured: httpx.AsyncClient) -> None:
    routes = _routes(secured)
    mutating = [(m, p) for m, p, _ in routes if m not in SAFE_METHODS and m != "WEBSOCKET"]
    assert ("POST", "/alerts/silences") in mutating and ("POST", "/dashboards/import") in mutating
    for method, path in mutating:
        scope = required_scope(method, _concrete(path))
        if method == "POST" and path in READ_ONLY_POSTS:
            assert scope == "read", path
        else:
            assert scope in ("write", "admin"), f"{method} {path} needs only {scope!r}"
    for method, path, _ in routes:
        if method == "WEBSOCKET" or method in SAFE_METHODS:
            assert required_scope("GET" if method == "WEBSOCKET" else method, _concrete(path)) in ("read", "admin")


def test_read_only_posts_are_twins_of_get_routes(secured: httpx.AsyncClient) -> None:
    """The allow-list holds only POST forms of GET endpoints: the same handler, which only reads."""
    routes = _routes(secured)
    gets = {p: r.endpoint for m, p, r in routes if m == "GET"}
    posts = {p: r.endpoint for m, p, r in routes if m == "POST"}
    for path in READ_ONLY_POSTS:
        if path in posts:
            assert gets.get(path) is posts[path], f"POST {path} is not the GET handler"


async def test_read_token_is_refused_on_every_mutating_route(secured: httpx.AsyncClient) -> None:
    mutating = [(m, p) for m, p, _ in _routes(secured) if m not in SAFE_METHODS and m != "WEBSOCKET"
                and not (m == "POST" and p in READ_ONLY_POSTS)]
    assert len(mutating) >= 20
    for method, path in mutating:
        r = await secured.request(method, _concrete(path), headers=h(READ), content=b"{}")
        if path in SIGNED_PATHS:  # a signed body is its credential: a token does not open it, a bad one is 401
            assert r.status_code == 401, f"{method} {path}: {r.status_code}"
            continue
        if path in ACTION_LINK_PATHS:  # the link's signed token is the credential: without one, the route's 403
            assert r.status_code == 403 and "This link does not work" in r.text, f"{method} {path}"
            continue
        assert r.status_code == 403, f"{method} {path}: {r.status_code}"
        assert "lacks the" in r.text or '"reason": "Forbidden"' in r.text  # the Kubernetes API: a Status


# ---------------------------------------------------------------- the finding's requests

YEAR_SILENCE = {"name": "alertname", "op": "=~", "value": ".+", "duration": "8760h", "created_by": "x",
                "comment": "read token"}


async def test_read_token_cannot_silence_expire_or_import(secured: httpx.AsyncClient) -> None:
    c = secured
    assert (await c.post("/alerts/silences", data=YEAR_SILENCE, headers=h(READ))).status_code == 403
    assert (await c.get("/api/v2/silences", headers=h(READ))).json() == []
    r = await c.post("/alerts/silences", data=YEAR_SILENCE, headers=h(WRITE))
    assert r.status_code == 303
    sid = r.headers["location"].split("created=")[1].split("#")[0]
    assert (await c.post(f"/alerts/silences/{sid}/expire", headers=h(READ))).status_code == 403
    assert (await c.post(f"/alerts/silences/{sid}/expire", headers=h(WRITE))).status_code == 303
    doc = json.dumps({"title": "Imported", "panels": [{"type": "stat", "title": "Up",
                                                          "targets": [{"expr": "up"}]}]})
    assert (await c.post("/dashboards/import", data={"json": doc}, headers=h(READ))).status_code == 403
    assert (await c.post("/dashboards/import", data={"json": doc}, headers=h(WRITE))).status_code == 303
    assert (await c.post("/-/reload", headers=h(WRITE))).status_code == 403


async def test_read_only_posts_work_with_a_read_token(secured: httpx.AsyncClient) -> None:
    r = await secured.post("/api/v1/query", data={"query": "1"}, headers=h(READ))
    assert r.status_code == 200, r.text
    r = await secured.post("/loki/api/v1/labels", headers=h(READ))
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------- tokens bound to tenants


def _rw_body(name: str) -> bytes:
    w = prompb.WriteRequest()
    ts = w.timeseries.add()
    lb = ts.labels.add()
    lb.name, lb.value = "__name__", name
    s = ts.samples.add()
    s.timestamp, s.value = int(time.time() * 1000), 1.0
    return bytes(cramjam.snappy.compress_raw(w.SerializeToString()))


def _slug(tenant: str) -> str:
    return tenant.replace("-", "_")


async def _write(c: httpx.AsyncClient, pillar: str, token: str, tenant: str | None, mark: str) -> httpx.Response:
    """Writes one item named after ``mark`` into ``pillar``, as ``token`` naming ``tenant``."""
    if pillar == "metrics":
        return await c.post("/api/v1/write", content=_rw_body(f"m_{_slug(mark)}"), headers=h(token, tenant))
    if pillar == "logs":
        body = {"streams": [{"stream": {"app": mark}, "values": [[str(time.time_ns()), "line"]]}]}
        return await c.post("/loki/api/v1/push", json=body, headers=h(token, tenant))
    span = {"traceId": "463ac35c9f6413ad", "id": f"{abs(hash(mark)) % 16**15:016x}", "name": "op",
            "timestamp": time.time_ns() // 1000, "duration": 10, "localEndpoint": {"serviceName": f"svc-{mark}"}}
    return await c.post("/api/v2/spans", json=[span], headers=h(token, tenant))


async def _read(c: httpx.AsyncClient, pillar: str, token: str, tenant: str | None) -> httpx.Response:
    if pillar == "metrics":
        return await c.get("/api/v1/label/__name__/values", headers=h(token, tenant))
    if pillar == "logs":
        return await c.get("/loki/api/v1/label/app/values", headers=h(token, tenant))
    return await c.get("/api/v2/services", headers=h(token, tenant))


def _marks(pillar: str, r: httpx.Response) -> set[str]:
    items = r.json() if pillar == "traces" else r.json()["data"]
    prefix = {"metrics": "m_", "logs": "", "traces": "svc-"}[pillar]
    return {i.removeprefix(prefix).replace("_", "-") for i in items if i.startswith(prefix)}


@pytest.fixture
async def tenant_data(secured: httpx.AsyncClient) -> httpx.AsyncClient:
    for pillar in ("metrics", "logs", "traces"):
        for tenant in TENANT_DATA:
            r = await _write(secured, pillar, ADMIN, None if tenant == "default" else tenant, tenant)
            assert r.status_code < 300, r.text
    return secured


READS = [
    # (token, X-Scope-OrgID, status, tenant whose data is seen)
    (READ, None, 200, "default"),
    (READ, "team-a", 403, None),  # the finding: any read token plus a header read team-a
    (A_READ, None, 200, "team-a"),  # one tenant and no header: acts as it
    (A_READ, "team-a", 200, "team-a"),
    (A_READ, "team-b", 403, None),
    (A_READ, "default", 403, None),
    (AB_READ, None, 403, None),  # several tenants: name one
    (AB_READ, "team-b", 200, "team-b"),
    (ANY_READ, "team-b", 200, "team-b"),
    (ANY_READ, None, 200, "default"),
    (ADMIN, "team-a", 200, "team-a"),  # admin tokens without tenants: as before
    (ADMIN, None, 200, "default"),
]


@pytest.mark.parametrize("pillar", ["metrics", "logs", "traces"])
async def test_reads_are_bound_to_the_tokens_tenants(tenant_data: httpx.AsyncClient, pillar: str) -> None:
    for token, tenant, status, seen in READS:
        r = await _read(tenant_data, pillar, token, tenant)
        assert r.status_code == status, (token, tenant, r.text)
        if seen is not None:
            assert _marks(pillar, r) == {seen}, (token, tenant)
        else:
            assert "may not use tenant" in r.text


@pytest.mark.parametrize("pillar", ["metrics", "logs", "traces"])
async def test_writes_are_bound_to_the_tokens_tenants(secured: httpx.AsyncClient, pillar: str) -> None:
    c = secured
    assert (await _write(c, pillar, A_WRITE, "team-b", "x")).status_code == 403
    assert (await _write(c, pillar, WRITE, "team-a", "x")).status_code == 403
    assert (await _write(c, pillar, A_WRITE, None, "from-a")).status_code < 300
    assert (await _write(c, pillar, WRITE, None, "from-default")).status_code < 300
    assert _marks(pillar, await _read(c, pillar, ADMIN, "team-a")) == {"from-a"}
    assert _marks(pillar, await _read(c, pillar, ADMIN, None)) == {"from-default"}


async def test_server_wide_routes_need_the_default_tenant(secured: httpx.AsyncClient) -> None:
    c = secured
    for path in ("/api/v2/alerts", "/api/v2/silences", "/api/v1/rules", "/api/v1/targets", "/metrics", "/alerts",
                 "/targets"):
        r = await c.get(path, headers=h(A_READ))
        assert r.status_code == 403 and "serves the whole server" in r.text, path
        assert (await c.get(path, headers=h(READ))).status_code == 200, path
        assert (await c.get(path, headers=h(ANY_READ))).status_code == 200, path
    r = await c.post("/alerts/silences", data=YEAR_SILENCE, headers=h(A_WRITE))
    assert r.status_code == 403
    page = await c.get("/", headers=h(A_READ))  # the overview leaves the server's alerts out
    assert page.status_code == 200 and "Firing alerts" in page.text


async def test_ui_reads_as_the_tokens_tenant(tenant_data: httpx.AsyncClient) -> None:
    c = tenant_data
    r = await c.get("/ui/api/complete", params={"kind": "metric", "prefix": "m_"}, headers=h(A_READ))
    assert [i for i in r.json()["items"] if i.startswith("m_")] == ["m_team_a"]
    r = await c.get("/graph", params={"expr": "m_team_a", "view": "table"}, headers=h(A_READ))
    assert r.status_code == 200 and "m_team_a" in r.text.split("<table", 1)[1]
    r = await c.get("/graph", params={"expr": "m_team_a", "view": "table"}, headers=h(READ))
    assert "<table" not in r.text or "m_team_a" not in r.text.split("<table", 1)[1]
    r = await c.get("/graph", headers=h(A_READ, "team-b"))
    assert r.status_code == 403


# ---------------------------------------------------------------- cross-site writes and foreign hosts (no tokens)


async def test_cross_origin_form_cannot_silence(open_app: httpx.AsyncClient) -> None:
    c = open_app
    r = await c.post("/alerts/silences", data=YEAR_SILENCE, headers={"Origin": "http://attacker.example"})
    assert r.status_code == 403 and "cross-site request refused" in r.text
    r = await c.post("/alerts/silences", data=YEAR_SILENCE,
                     headers={"Origin": "http://attacker.example", "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    assert (await c.get("/api/v2/silences")).json() == []
    alert = json.dumps([{"labels": {"alertname": "Injected"}}])
    r = await c.post("/api/v2/alerts", content=alert,
                     headers={"Origin": "http://attacker.example", "Content-Type": "text/plain"})
    assert r.status_code == 403
    assert (await c.get("/api/v2/alerts")).json() == []
    # pitwall's own page, and the origins allowed in the settings
    r = await c.post("/alerts/silences", data=YEAR_SILENCE,
                     headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 303
    r = await c.post("/api/v2/alerts", json=[{"labels": {"alertname": "FromGrafana"}}],
                     headers={"Origin": "https://grafana.example.com", "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 200, r.text


async def test_foreign_host_is_not_answered(open_app: httpx.AsyncClient) -> None:
    r = await open_app.get("/api/v1/query", params={"query": "1"}, headers={"Host": "attacker.example:9900"})
    assert r.status_code == 421 and "allowed_hosts" in r.text
    for host in ("localhost:9900", "127.0.0.1:9900", "[::1]:9900"):
        assert (await open_app.get("/api/v1/query", params={"query": "1"}, headers={"Host": host})).status_code == 200


# ---------------------------------------------------------------- over a real socket: Host, Origin, tail websocket


def test_live_server_host_origin_and_tail(tmp_path: Path) -> None:
    srv = LiveServer(_settings(tmp_path, auth_tokens=TOKENS))
    srv.start()
    try:
        with httpx.Client(base_url=srv.url, timeout=10) as c:
            r = c.get("/api/v1/query", params={"query": "1"}, headers={**h(READ), "Host": "attacker.example"})
            assert r.status_code == 421
            now = time.time_ns()
            for tenant in TENANT_DATA:
                body = {"streams": [{"stream": {"app": tenant}, "values": [[str(now), f"line of {tenant}"]]}]}
                r = c.post("/loki/api/v1/push", json=body, headers=h(ADMIN, None if tenant == "default" else tenant))
                assert r.status_code == 204, r.text
        tail = srv.url.replace("http", "ws") + f"/loki/api/v1/tail?query=%7Bapp%3D~%22.%2B%22%7D&start={now - 10**9}"
        refused = [h(READ, "team-a"), h(A_READ, "team-b"), h(AB_READ),
                   {**h(READ), "Origin": "http://attacker.example"}]
        for headers in refused:
            with pytest.raises(websockets.InvalidStatus) as e:
                ws_connect(tail, additional_headers=headers, open_timeout=10).close()
            assert e.value.response.status_code == 403, headers
        for headers, tenant in ((h(A_READ), "team-a"), (h(AB_READ, "team-b"), "team-b"), (h(READ), "default")):
            with ws_connect(tail, additional_headers=headers, open_timeout=10) as ws:
                msg = json.loads(ws.recv(timeout=10))
                assert {s["stream"]["app"] for s in msg["streams"]} == {tenant}, headers
    finally:
        srv.stop()
