"""pitwall's roles: what a principal may do on which routes, per tenant.

One function decides every API and UI request: ``action(method, path)`` gives
the verb a request needs (``read``, ``write`` or ``admin``, from what it does:
``core.auth.required_scope``), and a principal is allowed when one of its
grants holds a rule with that verb and a path pattern matching the path, for
the tenant the request acts as.

- A ``Role`` is a list of ``Rule`` s ({verbs, paths}); built in: ``viewer``
  (read everything), ``editor`` (read and write), ``admin`` (every verb,
  including reload and the admin APIs). Custom roles come from settings.
- A ``Binding`` gives a role to subjects (token names, OIDC users, OIDC
  groups) for a set of tenants.
- A ``Grant`` is one role held for some tenants (None: any tenant); a
  principal's grants are the union of its token's scopes (``read`` is
  ``viewer``, ``write`` ``editor``, ``admin`` ``admin``) and every binding
  naming it, its user or one of its groups.

Path patterns are exact paths or prefixes ending in ``*`` (``/api/v1/*``);
``*`` alone matches every path. Verbs: ``read``, ``write``, ``admin``, ``*``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["BUILTIN_ROLES", "SCOPE_ROLES", "VERBS", "Binding", "Grant", "Policy", "RBACSettings", "Role", "Rule",
           "Subject", "grants_for"]

VERBS = frozenset({"read", "write", "admin", "*"})


@dataclass(frozen=True)
class Rule:
    """Verbs allowed on the paths matching any of ``paths``."""

    verbs: frozenset[str]
    paths: tuple[str, ...] = ("*",)

    def allows(self, verb: str, path: str | None) -> bool:
        """Whether this rule allows ``verb`` on ``path`` (None: on every path, i.e. a rule for ``*``)."""
        if verb not in self.verbs and "*" not in self.verbs:
            return False
        if path is None:
            return "*" in self.paths
        return any(_path_matches(p, path) for p in self.paths)


def _path_matches(pattern: str, path: str) -> bool:
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    return path == pattern


@dataclass(frozen=True)
class Role:
    name: str
    rules: tuple[Rule, ...]

    def allows(self, verb: str, path: str | None) -> bool:
        return any(r.allows(verb, path) for r in self.rules)


BUILTIN_ROLES: Mapping[str, Role] = {
    "viewer": Role("viewer", (Rule(frozenset({"read"})),)),
    "editor": Role("editor", (Rule(frozenset({"read", "write"})),)),
    "admin": Role("admin", (Rule(frozenset({"*"})),)),
}
# The role each legacy token scope stands for.
SCOPE_ROLES: Mapping[str, str] = {"read": "viewer", "write": "editor", "admin": "admin"}


@dataclass(frozen=True)
class Grant:
    """One role held for ``tenants`` (None: any tenant)."""

    role: Role
    tenants: frozenset[str] | None

    def allows(self, verb: str, path: str | None, tenant: str | None) -> bool:
        """``tenant`` None: the question is about the verb and path alone."""
        if tenant is not None and self.tenants is not None and tenant not in self.tenants:
            return False
        return self.role.allows(verb, path)


@dataclass(frozen=True)
class Subject:
    """Who a binding names: ``kind`` is ``token`` (a token's ``name``), ``user`` or ``group`` (OIDC claims,
    ServiceAccounts as ``system:serviceaccount:<ns>:<name>``)."""

    kind: str
    name: str


@dataclass(frozen=True)
class Binding:
    role: Role
    subjects: tuple[Subject, ...]
    tenants: frozenset[str] | None

    def names(self, kind: str, name: str, groups: Iterable[str]) -> bool:
        """Whether this binding applies to the principal ``kind:name`` in ``groups``."""
        gs = set(groups)
        return any((s.kind == kind and s.name == name) or (s.kind == "group" and s.name in gs)
                   for s in self.subjects)


def grants_for(kind: str, name: str, groups: Iterable[str], bindings: Sequence[Binding]) -> tuple[Grant, ...]:
    """The grants the bindings give principal ``kind:name`` (``kind`` ``token`` or ``user``) in ``groups``."""
    gs = tuple(groups)
    return tuple(Grant(b.role, b.tenants) for b in bindings if b.names(kind, name, gs))


class Policy:
    """The bindings in force; replaced whole on reload, read by every authenticator."""

    def __init__(self, bindings: Sequence[Binding] = ()) -> None:
        self.bindings = tuple(bindings)

    def replace(self, bindings: Sequence[Binding]) -> None:
        self.bindings = tuple(bindings)

    def grants(self, kind: str, name: str, groups: Iterable[str]) -> tuple[Grant, ...]:
        return grants_for(kind, name, groups, self.bindings)


# ---------------------------------------------------------------- settings (``rbac:``)

_ANY = "*"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuleSettings(_Model):
    verbs: list[Literal["read", "write", "admin", "*"]] = Field(min_length=1)
    paths: list[str] = Field(default_factory=lambda: ["*"], min_length=1,
                             description="exact paths or prefixes ending in '*'; '*' for every path")

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        for p in v:
            if p != _ANY and not p.startswith("/"):
                raise ValueError(f"a path pattern starts with '/' or is '*', got {p!r}")
            if "*" in p[:-1]:
                raise ValueError(f"'*' may only end a path pattern, got {p!r}")
        return v


class RoleSettings(_Model):
    name: str = Field(min_length=1, max_length=128)
    rules: list[RuleSettings] = Field(min_length=1)


class SubjectSettings(_Model):
    kind: Literal["token", "user", "group"]
    name: str = Field(min_length=1, max_length=512)


class BindingSettings(_Model):
    role: str
    subjects: list[SubjectSettings] = Field(min_length=1)
    tenants: list[str] | None = Field(None, description="tenants the role holds for; '*' for any; "
                                                        "unset: any for admin, else 'default'")


class RBACSettings(_Model):
    """The ``rbac`` section: custom roles and the bindings that give roles to tokens, users and groups."""

    roles: list[RoleSettings] = Field(default_factory=list)
    bindings: list[BindingSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> RBACSettings:
        names = set(BUILTIN_ROLES)
        for i, r in enumerate(self.roles):
            if r.name in names:
                raise ValueError(f"roles[{i}].name: role {r.name!r} is already defined")
            names.add(r.name)
        for i, b in enumerate(self.bindings):
            if b.role not in names:
                raise ValueError(f"bindings[{i}].role: no role {b.role!r} (roles: {', '.join(sorted(names))})")
            if b.tenants is not None and not b.tenants:
                raise ValueError(f"bindings[{i}].tenants: name at least one tenant ('*' for any), or leave the key out")
        return self

    def role_table(self) -> dict[str, Role]:
        out = dict(BUILTIN_ROLES)
        for r in self.roles:
            out[r.name] = Role(r.name, tuple(Rule(frozenset(x.verbs), tuple(x.paths)) for x in r.rules))
        return out

    def compiled(self) -> list[Binding]:
        """The bindings as ``Policy`` takes them."""
        roles = self.role_table()
        out = []
        for b in self.bindings:
            if b.tenants is None:
                tenants = None if b.role == "admin" else frozenset({"default"})
            else:
                tenants = None if _ANY in b.tenants else frozenset(b.tenants)
            out.append(Binding(roles[b.role], tuple(Subject(s.kind, s.name) for s in b.subjects), tenants))
        return out
