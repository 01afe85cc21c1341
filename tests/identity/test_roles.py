"""pitwall roles (issue 23, "Beyond the anchors"): viewer, editor, admin and custom roles, bound to tokens
per tenant, deciding every API and UI route through ``core.auth.action``; refusals in each route's format."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Match

from pitwall.config import load_settings
from pitwall.core.auth import ACTION_LINK_PATHS, SAFE_METHODS, SIGNED_PATHS, action
from pitwall.core.errors import ConfigError
from pitwall.core.rbac import BUILTIN_ROLES, Grant, RBACSettings
from pitwall.core.tenancy import Principal
from pitwall.server import create_app
from tests.test_security import _concrete, _routes

pytestmark = pytest.mark.timeout(120)

VIEWER, EDITOR, ADMIN = "viewer-token-0000", "editor-token-0000", "admin-token-00000"
SILENCER, TEAM_A, LEGACY_W = "silencer-token-00", "team-a-viewer-000", "legacy-write-0000"
INGEST = "ingest-token-0000"
TOKENS = [
    {"token": VIEWER, "name": "viewer", "scopes": []},
    {"token": EDITOR, "name": "editor", "scopes": []},
    {"token": ADMIN, "name": "admin", "scopes": []},
    {"token": SILENCER, "name": "silencer", "scopes": []},
    {"token": TEAM_A, "name": "team-a-viewer", "scopes": []},
    {"token": LEGACY_W, "name": "legacy-writer", "scopes": ["write"]},
    {"token": INGEST, "name": "ingester", "scopes": []},
]
RBAC = {
    "roles": [{"name": "silencer", "rules": [
        {"verbs": ["read"], "paths": ["*"]},
        {"verbs": ["write"], "paths": ["/api/v2/silences", "/api/v2/silence/*", "/alerts/silences*"]},
    ]}, {"name": "ingest", "rules": [{"verbs": ["write"], "paths": ["/api/v1/write", "/loki/api/v1/push", "/v1/*"]}]}],
    "bindings": [
        {"role": "ingest", "subjects": [{"kind": "token", "name": "ingester"}]},
        {"role": "viewer", "subjects": [{"kind": "token", "name": "viewer"}]},
        {"role": "editor", "subjects": [{"kind": "token", "name": "editor"}]},
        {"role": "admin", "subjects": [{"kind": "token", "name": "admin"}]},
        {"role": "silencer", "subjects": [{"kind": "token", "name": "silencer"}]},
        {"role": "viewer", "subjects": [{"kind": "token", "name": "team-a-viewer"}], "tenants": ["team-a"]},
    ],
}


def h(token: str, tenant: str | None = None) -> dict[str, str]:
    out = {"Authorization": f"Bearer {token}"}
    if tenant:
        out["X-Scope-OrgID"] = tenant
    return out


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = load_settings(data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
                             auth_tokens=TOKENS, rbac=RBAC)
    a = create_app(settings)
    transport = httpx.ASGITransport(app=a)
    async with a.router.lifespan_context(a), httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        c.app = a  # type: ignore[attr-defined]
        yield c


def _principal(role: str, tenants: frozenset[str] | None = None) -> Principal:
    return Principal(role, frozenset(), frozenset(), (Grant(BUILTIN_ROLES[role], tenants),))


# ---------------------------------------------------------------- the one decision, over every route


def test_every_route_decided_by_role(app: httpx.AsyncClient) -> None:
    viewer, editor, admin = _principal("viewer"), _principal("editor"), _principal("admin")
    routes = _routes(app)
    mutating = [(m, p) for m, p, _ in routes if m not in SAFE_METHODS and m != "WEBSOCKET"]
    assert len(mutating) >= 20
    checked = 0
    for method, path in mutating:
        concrete = _concrete(path)
        verb = action(method, concrete)
        assert admin.allows(verb, concrete, "default"), (method, path)
        if verb == "read":  # the read-only query POSTs
            assert viewer.allows(verb, concrete, "default") and editor.allows(verb, concrete, "default")
            continue
        checked += 1
        assert not viewer.allows(verb, concrete, "default"), f"viewer may {method} {path}"
        assert editor.allows(verb, concrete, "default") == (verb == "write"), f"editor and {method} {path}"
    assert checked >= 20
    for method, path, _ in routes:
        if method in SAFE_METHODS or method == "WEBSOCKET":
            concrete = _concrete(path)
            assert viewer.allows(action("GET", concrete), concrete, "default") == \
                (action("GET", concrete) == "read"), path


async def test_viewer_is_refused_on_every_mutating_route(app: httpx.AsyncClient) -> None:
    mutating = [(m, p, r) for m, p, r in _routes(app) if m not in SAFE_METHODS and m != "WEBSOCKET"
                and action(m, _concrete(p)) != "read"]
    for method, path, route in mutating:
        r = await app.request(method, _concrete(path), headers=h(VIEWER), content=b"{}")
        if path in SIGNED_PATHS:  # a signed body is its credential: no role opens it, a bad signature is 401
            assert r.status_code == 401, f"{method} {path}: {r.status_code}"
            continue
        if path in ACTION_LINK_PATHS:  # the link's signed token is the credential: no role opens it, none is 403
            assert r.status_code == 403 and "This link does not work" in r.text, f"{method} {path}"
            continue
        assert r.status_code == 403, f"{method} {path}: {r.status_code} {r.text[:200]}"
        fmt = getattr(route, "error_format", None)
        if fmt == "prometheus":
            assert r.json()["status"] == "error" and "lacks the" in r.json()["error"], path
        elif fmt == "alertmanager":
            assert "lacks the" in r.json(), path
        elif getattr(route, "authorizes_itself", False) and _kube_owns(route, method, _concrete(path)):
            body = r.json()
            assert body["kind"] == "Status" and body["reason"] == "Forbidden" and body["code"] == 403, path
        else:
            assert "lacks the" in r.text, (path, r.text)


def _kube_owns(route: Any, method: str, path: str) -> bool:
    """Whether the Kubernetes API answers this path (its catch-all yields /api/v1/<not a resource>)."""
    match, _ = route.matches({"type": "http", "path": path, "method": method, "headers": [], "root_path": ""})
    return bool(match != Match.NONE)


async def test_editor_writes_but_cannot_reload(app: httpx.AsyncClient) -> None:
    silence = {"matchers": [{"name": "alertname", "value": "x", "isRegex": False, "isEqual": True}],
               "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z", "createdBy": "t", "comment": "c"}
    assert (await app.post("/api/v2/silences", json=silence, headers=h(VIEWER))).status_code == 403
    assert (await app.post("/api/v2/silences", json=silence, headers=h(EDITOR))).status_code == 200
    r = await app.post("/-/reload", headers=h(EDITOR))
    assert r.status_code == 403 and "lacks the 'admin' scope" in r.text
    r = await app.post("/v1/metrics", content=b"", headers={**h(VIEWER), "Content-Type": "application/json"})
    assert r.status_code == 403 and r.json() == {"code": 7, "message": "token 'viewer' lacks the 'write' scope"}


async def test_ingest_only_role_gets_prometheus_errors_on_queries(app: httpx.AsyncClient) -> None:
    r = await app.get("/api/v1/query", params={"query": "up"}, headers=h(INGEST))
    assert r.status_code == 403
    assert r.json() == {"status": "error", "errorType": "bad_data", "error": "token 'ingester' lacks the 'read' scope"}
    r = await app.post("/loki/api/v1/push", json={"streams": []}, headers=h(INGEST))
    assert r.status_code == 204, r.text


async def test_custom_role_writes_only_its_paths(app: httpx.AsyncClient) -> None:
    silence = {"matchers": [{"name": "alertname", "value": "x", "isRegex": False, "isEqual": True}],
               "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z", "createdBy": "t", "comment": "c"}
    r = await app.post("/api/v2/silences", json=silence, headers=h(SILENCER))
    assert r.status_code == 200, r.text
    r = await app.post("/api/v2/alerts", json=[{"labels": {"alertname": "x"}}], headers=h(SILENCER))
    assert r.status_code == 403
    assert json.loads(r.text) == "token 'silencer' lacks the 'write' scope"  # Alertmanager: a JSON string
    assert (await app.get("/api/v2/silences", headers=h(SILENCER))).status_code == 200


async def test_binding_tenants_bound_the_role(app: httpx.AsyncClient) -> None:
    r = await app.get("/api/v1/query", params={"query": "1"}, headers=h(TEAM_A))
    assert r.status_code == 200, r.text  # one tenant and no header: acts as it
    r = await app.get("/api/v1/query", params={"query": "1"}, headers=h(TEAM_A, "team-b"))
    assert r.status_code == 403 and "may not use tenant 'team-b'" in r.json()["error"]
    r = await app.get("/api/v1/query", params={"query": "1"}, headers=h(VIEWER, "team-a"))
    assert r.status_code == 403


async def test_legacy_scopes_keep_working(app: httpx.AsyncClient) -> None:
    """``scopes: [write]`` is the editor role now (it reads too); ``[]`` without bindings may nothing."""
    r = await app.post("/api/v2/alerts", json=[{"labels": {"alertname": "x"}}], headers=h(LEGACY_W))
    assert r.status_code == 200, r.text
    assert (await app.get("/api/v2/alerts", headers=h(LEGACY_W))).status_code == 200
    assert (await app.post("/-/reload", headers=h(LEGACY_W))).status_code == 403


def test_rbac_settings_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"rbac.*bindings\[0\].role: no role 'ghost'"):
        load_settings(rbac={"bindings": [{"role": "ghost", "subjects": [{"kind": "user", "name": "a"}]}]})
    with pytest.raises(ConfigError, match="role 'viewer' is already defined"):
        load_settings(rbac={"roles": [{"name": "viewer", "rules": [{"verbs": ["read"]}]}]})
    with pytest.raises(ConfigError, match="'\\*' may only end a path pattern"):
        load_settings(rbac={"roles": [{"name": "x", "rules": [{"verbs": ["read"], "paths": ["/a/*/b"]}]}]})
    s = RBACSettings.model_validate(RBAC)
    b = s.compiled()
    assert b[1].tenants == frozenset({"default"}) and b[3].tenants is None  # admin: any tenant by default


def _grants(role: str) -> Any:
    return BUILTIN_ROLES[role]


def test_builtin_roles() -> None:
    assert _grants("viewer").allows("read", "/x") and not _grants("viewer").allows("write", "/x")
    assert _grants("editor").allows("write", "/x") and not _grants("editor").allows("admin", "/-/reload")
    assert _grants("admin").allows("admin", "/-/reload")
