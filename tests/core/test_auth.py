"""core.auth and core.tenancy: the scope a request needs, the tenant it acts as."""

from __future__ import annotations

import pytest

from pitwall.core.auth import READ_ONLY_POSTS, is_read_only_post, required_scope
from pitwall.core.errors import BadData, Forbidden
from pitwall.core.tenancy import Principal, resolve_tenant

SCOPES = [
    ("GET", "/api/v1/query", "read"),
    ("HEAD", "/elasticsearch", "read"),
    ("OPTIONS", "/api/v1/write", "read"),
    ("POST", "/api/v1/query", "read"),
    ("POST", "/loki/api/v1/label/app/values", "read"),
    ("POST", "/api/v1/write", "write"),
    ("POST", "/alerts/silences", "write"),
    ("POST", "/alerts/silences/abc/expire", "write"),
    ("POST", "/dashboards/import", "write"),
    ("PUT", "/api/v1/query", "write"),  # only POST is the read-only twin of a query
    ("DELETE", "/api/v2/silence/abc", "write"),
    ("PATCH", "/anything/new", "write"),
    ("POST", "/api/v1/query/extra", "write"),
    ("POST", "/loki/api/v1/label/a/b/values", "write"),
    ("POST", "/-/reload", "admin"),
    ("GET", "/-/reload", "admin"),
    ("PUT", "/-/quit", "admin"),
    ("POST", "/api/v1/admin/tsdb/snapshot", "admin"),
    ("GET", "/api/v1/admin", "admin"),
]


@pytest.mark.parametrize(("method", "path", "scope"), SCOPES)
def test_scope_follows_method_and_effect(method: str, path: str, scope: str) -> None:
    assert required_scope(method, path) == scope


def test_read_only_posts_are_query_endpoints() -> None:
    assert all(p.startswith(("/api/v1/", "/loki/api/v1/")) or p.endswith(("accessreviews", "rulesreviews",
               "subjectreviews")) or p == "/api/releases/v1/abtest" for p in READ_ONLY_POSTS)  # A/B: queries
    assert is_read_only_post("/api/v1/series") and not is_read_only_post("/api/v1/write")


def _p(tenants: set[str] | None, name: str = "ci") -> Principal:
    return Principal(name, frozenset({"read"}), None if tenants is None else frozenset(tenants))


TENANTS = [
    (None, "", "default"),  # no tokens configured: as before
    (None, "team-a", "team-a"),
    (_p(None), "team-b", "team-b"),  # a token without a list: any tenant
    (_p(None), "", "default"),
    (_p({"team-a"}), "", "team-a"),  # one tenant and no header: acts as it
    (_p({"team-a"}), "team-a", "team-a"),
    (_p({"team-a", "team-b"}), "team-b", "team-b"),
    (_p({"team-a", "default"}), "", "default"),
]


@pytest.mark.parametrize(("principal", "named", "tenant"), TENANTS)
def test_tenant_resolution(principal: Principal | None, named: str, tenant: str) -> None:
    assert resolve_tenant(principal, named) == tenant


@pytest.mark.parametrize(("principal", "named"), [
    (_p({"team-a"}), "team-b"),
    (_p({"team-a"}), "default"),
    (_p({"default"}), "team-a"),
    (_p({"team-a", "team-b"}), ""),  # several tenants: the request must name one
])
def test_tenant_outside_the_token_is_forbidden(principal: Principal, named: str) -> None:
    with pytest.raises(Forbidden, match="may not use tenant"):
        resolve_tenant(principal, named)


def test_tenant_message_names_the_token_and_its_tenants() -> None:
    with pytest.raises(Forbidden) as e:
        resolve_tenant(_p({"team-a"}, name="grafana-a"), "team-b")
    assert e.value.message.startswith("token 'grafana-a' may not use tenant 'team-b' (its tenants: team-a)")


@pytest.mark.parametrize("named", ["a/b", "..", "x" * 151, "a\\b"])
def test_invalid_tenant_ids(named: str) -> None:
    with pytest.raises(BadData):
        resolve_tenant(None, named)
