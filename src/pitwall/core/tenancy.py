"""Who is asking and as which tenant: the principal a token stands for, and the tenant a request acts as.

A request names its tenant with ``X-Scope-OrgID`` (as Loki, Mimir and Tempo
do); without it, it acts as ``default``. When bearer tokens are configured,
``core.auth.BearerAuth`` resolves the token once and leaves its ``Principal``
in the ASGI scope (``PRINCIPAL_KEY``); ``resolve_tenant`` then binds the
request to the token's tenants:

- a token limited to one tenant and a request naming none acts as that tenant;
- a request naming a tenant outside the token's list is ``Forbidden`` (403);
- a token without a list (``tenants`` is None) may use any tenant.

The middleware applies the rule before routing (so a websocket is refused
before it is accepted), and ``core.params.tenant_of`` applies it again, so
every route that reads the tenant is bound whichever way it was reached.

The audit log (``core.audit``) lives in the reserved tenant ``pitwall-audit``:
only a token with the ``admin`` scope may name it, whatever its ``tenants``
say, and ``core.auth`` refuses every write to it (the server alone writes it).

Routes that are not per tenant (the alerting pipeline, rules, scrape targets,
self-metrics) act on the server as a whole, whose data lives in the default
tenant: ``require_server_wide`` lets only principals allowed that tenant in.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from starlette.requests import HTTPConnection
from starlette.types import Scope

from pitwall.core.errors import BadData, Forbidden
from pitwall.core.rbac import BUILTIN_ROLES, SCOPE_ROLES, Grant

__all__ = ["ANY_TENANT", "AUDIT_TENANT", "DEFAULT_TENANT", "PRINCIPAL_KEY", "TENANT_HEADER", "Principal",
           "principal_of",
           "require_server_wide", "resolve_tenant", "sees_whole_server", "tenant_problem"]

TENANT_HEADER = "X-Scope-OrgID"
DEFAULT_TENANT = "default"
ANY_TENANT = "*"
PRINCIPAL_KEY = "pitwall.principal"
AUDIT_TENANT = "pitwall-audit"


@dataclass(frozen=True)
class Principal:
    """Who a request comes from and what it may do.

    ``scopes`` and ``tenants`` are a token's own (``auth_tokens[].scopes`` and ``.tenants``; the
    configuration's ``tenants: ["*"]`` becomes None: any); each scope stands for a built-in role held
    for those tenants (``core.rbac.SCOPE_ROLES``). ``grants`` are the roles bindings add (``rbac.bindings``),
    each for its own tenants. ``kind`` says how it authenticated (``token``, ``user`` for OIDC,
    ``serviceaccount``); ``groups`` are its groups (OIDC's groups claim; Kubernetes RBAC subjects)."""

    name: str
    scopes: frozenset[str]
    tenants: frozenset[str] | None
    grants: tuple[Grant, ...] = ()
    groups: frozenset[str] = frozenset()
    kind: str = "token"

    def all_grants(self) -> tuple[Grant, ...]:
        return self._all_grants

    @cached_property
    def _all_grants(self) -> tuple[Grant, ...]:
        # built once per principal (a configured token's lives as long as the config): every request asks
        own = tuple(Grant(BUILTIN_ROLES[SCOPE_ROLES[s]], self.tenants) for s in sorted(self.scopes)
                    if s in SCOPE_ROLES)
        return own + self.grants

    def allows(self, verb: str, path: str | None = None, tenant: str | None = None) -> bool:
        """Whether a grant allows ``verb`` (read, write, admin) on ``path`` (None: every path) as ``tenant``."""
        return any(g.allows(verb, path, tenant) for g in self.all_grants())

    def may(self, scope: str) -> bool:
        """Whether the principal holds ``scope`` on every path (``admin`` implies the others)."""
        return self.allows(scope)

    @property
    def reach(self) -> frozenset[str] | None:
        """Every tenant some grant of the principal covers (None: any)."""
        grants = self.all_grants()
        if not grants:
            return self.tenants
        out: set[str] = set()
        for g in grants:
            if g.tenants is None:
                return None
            out |= g.tenants
        return frozenset(out)

    def may_use(self, tenant: str) -> bool:
        reach = self.reach
        return reach is None or tenant in reach

    def describe(self) -> str:
        if self.kind == "token":
            return f"token {self.name!r}" if self.name else "this token"
        return f"{self.kind} {self.name!r}"


def principal_of(conn: HTTPConnection | Scope) -> Principal | None:
    """The principal ``BearerAuth`` resolved for this request; None when the server has no tokens."""
    scope = conn.scope if isinstance(conn, HTTPConnection) else conn
    p = scope.get(PRINCIPAL_KEY)
    return p if isinstance(p, Principal) else None


def tenant_problem(tenant: str) -> str | None:
    """Why ``tenant`` is not a valid tenant ID (None when it is); the rules Loki and Mimir apply."""
    if not tenant:
        return "empty tenant ID"
    if len(tenant) > 150:
        return "tenant ID longer than 150 characters"
    if any(c in tenant for c in "/\\\n\r") or tenant in (".", ".."):
        return f"invalid tenant ID {tenant[:64]!r}"
    return None


def resolve_tenant(principal: Principal | None, named: str) -> str:
    """The tenant a request acts as, given the tenant it names (``""`` for none) and its principal."""
    named = named.strip()
    if named:
        problem = tenant_problem(named)
        if problem:
            raise BadData(problem)
    if principal is None:
        return named or DEFAULT_TENANT
    reach = principal.reach
    if not named:
        one = reach is not None and len(reach) == 1
        named = next(iter(reach)) if reach and one else DEFAULT_TENANT
    if named == AUDIT_TENANT and not principal.may("admin"):
        raise Forbidden(f"{principal.describe()} may not use tenant {named!r}: the audit log needs an admin token")
    if reach is None or named in reach:
        return named
    allowed = ", ".join(sorted(reach)) or "none"
    raise Forbidden(f"{principal.describe()} may not use tenant {named!r} (its tenants: {allowed}); "
                    f"name one of them with {TENANT_HEADER}")


def sees_whole_server(conn: HTTPConnection) -> bool:
    """Whether this request may use routes that act on the whole server (its token may use ``default``)."""
    p = principal_of(conn)
    return p is None or p.may_use(DEFAULT_TENANT)


def require_server_wide(request: HTTPConnection) -> None:
    """FastAPI dependency for routes that act on the whole server: the token must be allowed ``default``."""
    p = principal_of(request)
    reach = p.reach if p is not None else None
    if p is not None and reach is not None and DEFAULT_TENANT not in reach:
        raise Forbidden(f"{p.describe()} is limited to tenants {', '.join(sorted(reach)) or 'none'}; "
                        f"{request.url.path} serves the whole server (tenant {DEFAULT_TENANT!r})")


async def server_wide(request: HTTPConnection) -> None:
    """``require_server_wide`` as a FastAPI dependency: FastAPI runs a plain function dependency in a worker
    thread (a thread hop, ~70 µs of a ~150 µs request on this machine), a coroutine inline."""
    require_server_wide(request)
