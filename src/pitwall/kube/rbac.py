"""Kubernetes RBAC, evaluated as kube-apiserver's RBAC authorizer does.

Each request of the Kubernetes API is turned into authorization attributes
(``request_info``, after the apiserver's RequestInfoFactory: verb, API group,
namespace, resource, subresource, name; or a non-resource path), then
decided by, in order (a union, as kube-apiserver's authorizer chain):

1. pitwall's own roles (``core.rbac``): a grant of ``read`` on the path
   allows get/list/watch, ``write`` every verb (tokens' ``read``/``write``
   scopes keep their meaning on this API);
2. the group ``system:masters`` (pitwall ``admin`` principals), allowed all;
3. ClusterRoleBindings, then the RoleBindings of the request's namespace,
   whose subjects (User, Group, ServiceAccount) name the user, granting the
   rules of their Role or ClusterRole (aggregated ClusterRoles included):
   verbs and ``*``, apiGroups, resources with subresources (``pods/log``,
   ``*/scale``), resourceNames, nonResourceURLs with ``*`` suffixes.

A refusal is the Status kube-apiserver sends (``pods is forbidden: User "x"
cannot list resource "pods" in API group "" in the namespace "default"``).
``start`` creates the bootstrap policy kube-apiserver creates (cluster-admin
for system:masters, discovery and the self-reviews for every authenticated
user, view and edit) when absent. Requests on a server without credentials
are allowed, as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection

from pitwall.core.tenancy import DEFAULT_TENANT, Principal, principal_of
from pitwall.kube.errors import AlreadyExists, Forbidden, KubeError, qualified
from pitwall.kube.registry import Registry
from pitwall.kube.resources import Resources
from pitwall.kube.selectors import match_label_selector_object

__all__ = ["Attributes", "RBACAuthorizer", "UserInfo", "request_info", "user_of"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]
RBAC_GROUP = "rbac.authorization.k8s.io"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
READ_VERBS = frozenset({"get", "list", "watch"})
RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
# Who is writing an RBAC object in this request, with the policy they hold (None: no check: a server
# without credentials, system:masters, a pitwall role, or pitwall's own controllers).
_WRITER: contextvars.ContextVar[tuple[UserInfo, Any] | None] = contextvars.ContextVar("rbac_writer", default=None)
_NS_SUBRESOURCES = frozenset({"status", "finalize"})
_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...]


def user_of(p: Principal) -> UserInfo:
    """The Kubernetes user a pitwall principal is: its name, its groups plus ``system:authenticated``,
    and ``system:masters`` for principals holding pitwall's admin role."""
    groups = sorted(p.groups | {AUTHENTICATED} | ({MASTERS} if p.may("admin") else set()))
    return UserInfo(p.name, tuple(groups))


@dataclass(frozen=True)
class Attributes:
    """What a request does, as the apiserver's authorizers see it."""

    verb: str
    resource_request: bool
    path: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


def request_info(method: str, path: str, query: dict[str, str]) -> Attributes:
    """The attributes of a request (k8s.io/apiserver RequestInfoFactory.NewRequestInfo)."""
    parts = [p for p in path.strip("/").split("/") if p]
    verb = method.lower()
    if not parts or parts[0] not in ("api", "apis"):
        return Attributes(verb, False, path)
    if parts[0] == "api":
        if len(parts) < 2:
            return Attributes(verb, False, path)
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 3:
            return Attributes(verb, False, path)
        group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:  # /api/v1, /apis/<group>/<version>: discovery
        return Attributes(verb, False, path)
    verb = _METHOD_VERBS.get(method, verb)
    if rest[0] == "watch":  # the deprecated /watch/ prefix
        verb, rest = "watch", rest[1:]
    namespace = ""
    if rest and rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NS_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if not name and verb == "get":
        verb = "watch" if query.get("watch", "").lower() in ("1", "true") else "list"
    elif name and verb == "get" and query.get("watch", "").lower() in ("1", "true"):
        verb = "watch"
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(verb, True, path, group, version, namespace, resource, sub, name)


def forbidden(user: UserInfo, a: Attributes, reason: str = "") -> Forbidden:
    """The 403 kube-apiserver answers (responsewriters.ForbiddenStatusError)."""
    if not a.resource_request:
        msg = f'User "{user.name}" cannot {a.verb} path "{a.path}"'
    else:
        res = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        where = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
        msg = f'User "{user.name}" cannot {a.verb} resource "{res}" in API group "{a.api_group}" {where}'
    if reason:
        msg = f"{msg}: {reason}"
    if not a.resource_request or not a.resource:
        return Forbidden(f"forbidden: {msg}", details={})
    qual = qualified(a.resource, a.api_group)
    details: Obj = {"name": a.name} if a.name else {}
    if a.api_group:
        details["group"] = a.api_group
    details["kind"] = a.resource
    head = f'{qual} "{a.name}" is forbidden' if a.name else f"{qual} is forbidden"
    return Forbidden(f"{head}: {msg}", details=details)


# ---------------------------------------------------------------- rules


def _verb_ok(rule: Obj, verb: str) -> bool:
    verbs = rule.get("verbs") or []
    return "*" in verbs or verb in verbs


def resource_rule_allows(rule: Obj, a: Attributes) -> bool:
    if not _verb_ok(rule, a.verb):
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and a.api_group not in groups:
        return False
    combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    ok = False
    for r in rule.get("resources") or []:
        if r == "*" or r == combined or (a.subresource and r == "*/" + a.subresource):
            ok = True
            break
    if not ok:
        return False
    names = rule.get("resourceNames") or []
    return not names or a.name in names


def non_resource_rule_allows(rule: Obj, a: Attributes) -> bool:
    if not _verb_ok(rule, a.verb):
        return False
    for u in rule.get("nonResourceURLs") or []:
        if u == "*" or u == a.path or (u.endswith("*") and a.path.startswith(u[:-1])):
            return True
    return False


def rule_allows(rule: Obj, a: Attributes) -> bool:
    if a.resource_request:
        return bool(rule.get("resources")) and resource_rule_allows(rule, a)
    return bool(rule.get("nonResourceURLs")) and non_resource_rule_allows(rule, a)


def _applies(subject: Obj, user: UserInfo, binding_ns: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User":
        return bool(name == user.name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_ns
        return bool(ns) and user.name == f"system:serviceaccount:{ns}:{name}"
    return False


def _describe_subject(s: Obj, binding_ns: str) -> str:
    if s.get("kind") == "ServiceAccount":
        return f'ServiceAccount "{s.get("namespace") or binding_ns}/{s.get("name", "")}"'
    return f'{s.get("kind")} "{s.get("name", "")}"'


@dataclass
class _Policy:
    """A snapshot of the RBAC objects, read from the store for one decision."""

    roles: dict[tuple[str, str], Obj] = field(default_factory=dict)  # (namespace, name)
    cluster_roles: dict[str, Obj] = field(default_factory=dict)
    bindings: list[Obj] = field(default_factory=list)  # RoleBindings
    cluster_bindings: list[Obj] = field(default_factory=list)

    def cluster_role_rules(self, name: str) -> list[Obj] | None:
        cr = self.cluster_roles.get(name)
        if cr is None:
            return None
        rules = list(cr.get("rules") or [])
        agg = cr.get("aggregationRule") or {}
        for sel in agg.get("clusterRoleSelectors") or []:
            for other_name, other in sorted(self.cluster_roles.items()):
                if other_name != name and match_label_selector_object(sel, (other.get("metadata") or {}).get("labels")):
                    rules.extend(other.get("rules") or [])
        return rules

    def visit(self, user: UserInfo, namespace: str) -> Iterator[tuple[str, list[Obj] | None, str]]:
        """(description, rules or None when the role is missing, missing-role error) of every binding
        naming ``user``: the cluster's, then those of ``namespace``."""
        for b in self.cluster_bindings:
            bname = (b.get("metadata") or {}).get("name", "")
            for s in b.get("subjects") or []:
                if _applies(s, user, ""):
                    ref = b.get("roleRef") or {}
                    rules = self.cluster_role_rules(ref.get("name", "")) if ref.get("kind") == "ClusterRole" else None
                    desc = (f'ClusterRoleBinding "{bname}" of ClusterRole "{ref.get("name", "")}" to '
                            f"{_describe_subject(s, '')}")
                    yield desc, rules, f'clusterrole.rbac.authorization.k8s.io "{ref.get("name", "")}" not found'
                    break
        if not namespace:
            return
        for b in self.bindings:
            meta = b.get("metadata") or {}
            if meta.get("namespace") != namespace:
                continue
            for s in b.get("subjects") or []:
                if _applies(s, user, namespace):
                    ref = b.get("roleRef") or {}
                    kind, rname = ref.get("kind"), ref.get("name", "")
                    if kind == "ClusterRole":
                        rules = self.cluster_role_rules(rname)
                        missing = f'clusterrole.rbac.authorization.k8s.io "{rname}" not found'
                    else:
                        role = self.roles.get((namespace, rname))
                        rules = None if role is None else list(role.get("rules") or [])
                        missing = f'role.rbac.authorization.k8s.io "{rname}" not found'
                    desc = (f'RoleBinding "{meta.get("name", "")}/{namespace}" of {kind} "{rname}" to '
                            f"{_describe_subject(s, namespace)}")
                    yield desc, rules, missing
                    break


class RBACAuthorizer:
    """Decides Kubernetes API requests by RBAC objects in the store (see the module doc)."""

    def __init__(self, registry: Registry, resources: Resources) -> None:
        self.registry = registry
        self.resources = resources
        for kind in RBAC_KINDS:
            resources.add_admission(RBAC_GROUP, kind, validate=_escalation_check(kind))

    async def _policy(self) -> _Policy:
        p = _Policy()
        for plural in ("roles", "clusterroles", "rolebindings", "clusterrolebindings"):
            res = await self.resources.store.range(f"/registry/{plural}/")
            for kv in res.kvs:
                try:
                    obj = json.loads(self.resources.plain_value(kv))
                except (ValueError, KubeError):
                    continue
                meta = obj.get("metadata") or {}
                if plural == "roles":
                    p.roles[(meta.get("namespace", ""), meta.get("name", ""))] = obj
                elif plural == "clusterroles":
                    p.cluster_roles[meta.get("name", "")] = obj
                elif plural == "rolebindings":
                    p.bindings.append(obj)
                else:
                    p.cluster_bindings.append(obj)
        return p

    @staticmethod
    def by_pitwall_role(p: Principal, a: Attributes) -> bool:
        """pitwall's roles on this API: ``read`` allows the read verbs, ``write`` all (tenant default)."""
        need = "read" if a.verb in READ_VERBS else "write"
        return p.allows(need, a.path, DEFAULT_TENANT)

    async def decide(self, p: Principal, a: Attributes) -> tuple[bool, str]:
        """(allowed, reason) for principal ``p`` doing ``a``."""
        if self.by_pitwall_role(p, a):
            return True, f"{p.describe()} holds a pitwall role allowing it"
        user = user_of(p)
        if MASTERS in user.groups:
            return True, ""
        errors: list[str] = []
        for desc, rules, missing in (await self._policy()).visit(user, a.namespace):
            if rules is None:
                errors.append(missing)
                continue
            if any(rule_allows(r, a) for r in rules):
                return True, f"RBAC: allowed by {desc}"
        return False, f"RBAC: [{', '.join(errors)}]" if len(errors) > 1 else (f"RBAC: {errors[0]}" if errors else "")

    async def check(self, request: HTTPConnection) -> None:
        """Raise the apiserver's 403 unless the request's principal may do it (no principal: allowed)."""
        p = principal_of(request)
        if p is None:
            return
        a = request_info(request.scope.get("method", "GET"), request.url.path, dict(request.query_params))
        allowed, reason = await self.decide(p, a)
        if not allowed:
            raise forbidden(user_of(p), a, reason)
        user = user_of(p)
        writes_rbac = a.api_group == RBAC_GROUP and a.verb in ("create", "update", "patch")
        if writes_rbac and MASTERS not in user.groups and not self.by_pitwall_role(p, a):
            _WRITER.set((user, await self._policy()))  # the escalation check (admission) reads it

    async def rules(self, p: Principal, namespace: str) -> tuple[list[Obj], list[Obj], str]:
        """(resourceRules, nonResourceRules, evaluationError) for SelfSubjectRulesReview."""
        res: list[Obj] = []
        non: list[Obj] = []
        for verb, verbs in (("write", ["*"]), ("read", sorted(READ_VERBS))):
            if p.allows(verb, "/api/v1/pods", DEFAULT_TENANT):  # a pitwall role on every kube path
                res.append({"verbs": verbs, "apiGroups": ["*"], "resources": ["*"]})
                non.append({"verbs": ["get"] if verb == "read" else ["*"], "nonResourceURLs": ["*"]})
                break
        user = user_of(p)
        policy = await self._policy()
        if MASTERS in user.groups:
            res.append({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
            non.append({"verbs": ["*"], "nonResourceURLs": ["*"]})
        errors: list[str] = []
        for _desc, rules, missing in policy.visit(user, namespace):
            if rules is None:
                errors.append(missing)
                continue
            for r in rules:
                if r.get("nonResourceURLs"):
                    non.append({"verbs": list(r.get("verbs") or []), "nonResourceURLs": list(r["nonResourceURLs"])})
                if r.get("resources"):
                    out = {k: list(r[k]) for k in ("verbs", "apiGroups", "resources", "resourceNames") if r.get(k)}
                    out.setdefault("apiGroups", [])
                    res.append(out)
        return res, non, "; ".join(errors)

    async def ensure_bootstrap(self) -> None:
        """Create the bootstrap ClusterRoles and ClusterRoleBindings that are absent (kube-apiserver's
        bootstrap policy, the parts pitwall serves); existing ones are left as the user made them."""
        crt = self.registry.get(RBAC_GROUP, "v1", "clusterroles")
        crbt = self.registry.get(RBAC_GROUP, "v1", "clusterrolebindings")
        assert crt is not None and crbt is not None
        for obj in BOOTSTRAP_ROLES:
            with contextlib.suppress(AlreadyExists):
                await self.resources.create(crt, "", obj, field_manager="pitwall")
        for obj in BOOTSTRAP_BINDINGS:
            with contextlib.suppress(AlreadyExists):
                await self.resources.create(crbt, "", obj, field_manager="pitwall")


def _atoms(rule: Obj) -> Iterator[Attributes]:
    """The single permissions a rule grants, wildcards kept literal (only a ``*`` covers a ``*``)."""
    for verb in rule.get("verbs") or []:
        for url in rule.get("nonResourceURLs") or []:
            yield Attributes(str(verb), False, str(url))
        for group in rule.get("apiGroups") or []:
            for res in rule.get("resources") or []:
                resource, _, sub = str(res).partition("/")
                for name in rule.get("resourceNames") or [""]:
                    yield Attributes(str(verb), True, "", str(group), "", "", resource, sub, str(name))


def _uncovered(rules: list[Obj], held: list[Obj]) -> list[str]:
    """The rules of ``rules`` not covered by ``held`` (as upstream prints them), empty when all are."""
    out = []
    for r in rules:
        if not all(any(rule_allows(h, atom) for h in held) for atom in _atoms(r)):
            parts = [f"{k[0].upper()}{k[1:]}:[{', '.join(json.dumps(v) for v in r[k])}]"
                     for k in ("apiGroups", "resources", "resourceNames", "nonResourceURLs", "verbs") if r.get(k)]
            out.append("{" + ", ".join(parts) + "}")
    return out


def check_escalation(kind: str, obj: Obj, old: Obj | None) -> list[Any]:
    """Admission for RBAC objects written over HTTP, as kube-apiserver's escalation check: a Role or
    ClusterRole may grant only what its writer holds (or may ``escalate``), a binding may bind only a role
    whose rules its writer holds (or may ``bind``). Raises the apiserver's 403."""
    writer = _WRITER.get()
    if writer is None:
        return []
    user, policy = writer
    m = obj.get("metadata") or {}
    ns, name = str(m.get("namespace", "")), str(m.get("name", ""))
    held = [r for _d, rules, _m in policy.visit(user, ns) for r in rules or []]
    plural = {"Role": "roles", "ClusterRole": "clusterroles", "RoleBinding": "rolebindings",
              "ClusterRoleBinding": "clusterrolebindings"}[kind]
    if kind in ("Role", "ClusterRole"):
        if any(rule_allows(h, Attributes("escalate", True, "", RBAC_GROUP, "v1", ns, plural, "", name)) for h in held):
            return []
        granted = list(obj.get("rules") or [])
    else:
        ref = obj.get("roleRef") or {}
        ref_plural = "roles" if ref.get("kind") == "Role" else "clusterroles"
        bind = Attributes("bind", True, "", RBAC_GROUP, "v1", ns, ref_plural, "",
                          str(ref.get("name", "")))
        if any(rule_allows(h, bind) for h in held):
            return []
        if ref.get("kind") == "Role":
            role = policy.roles.get((ns, str(ref.get("name", ""))))
            granted = list((role or {}).get("rules") or [])
        else:
            granted = policy.cluster_role_rules(str(ref.get("name", ""))) or []
    missing = _uncovered(granted, held)
    if not missing:
        return []
    groups = ", ".join(json.dumps(g) for g in user.groups)
    raise Forbidden(f'{plural}.{RBAC_GROUP} "{name}" is forbidden: user "{user.name}" (groups=[{groups}]) is '
                    f"attempting to grant RBAC permissions not currently held:\n" + "\n".join(missing),
                    details={"name": name, "group": RBAC_GROUP, "kind": plural})


def _escalation_check(kind: str) -> Callable[[Obj, Obj | None], list[Any]]:
    def validate(obj: Obj, old: Obj | None) -> list[Any]:
        return check_escalation(kind, obj, old)

    return validate


_BOOT_META = {"labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
              "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}}
_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_VIEW_RULES: list[Obj] = [
    {"apiGroups": [""], "resources": ["configmaps", "endpoints", "persistentvolumeclaims", "pods", "pods/log",
                                      "pods/status", "replicationcontrollers", "serviceaccounts", "services",
                                      "services/status", "events", "namespaces", "namespaces/status"],
     "verbs": _READ},
    {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale", "deployments/status", "replicasets",
                                          "replicasets/scale", "replicasets/status", "statefulsets",
                                          "statefulsets/scale", "statefulsets/status", "daemonsets"], "verbs": _READ},
    {"apiGroups": ["batch"], "resources": ["cronjobs", "cronjobs/status", "jobs", "jobs/status"], "verbs": _READ},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers", "horizontalpodautoscalers/status"],
     "verbs": _READ},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": _READ},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": _READ},
]
_EDIT_RULES: list[Obj] = [
    *_VIEW_RULES,
    {"apiGroups": [""], "resources": ["configmaps", "endpoints", "persistentvolumeclaims", "pods", "secrets",
                                      "serviceaccounts", "services", "replicationcontrollers"],
     "verbs": _WRITE},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": _READ},
    {"apiGroups": ["apps"], "resources": ["deployments", "deployments/scale", "replicasets", "replicasets/scale",
                                          "statefulsets", "statefulsets/scale", "daemonsets"], "verbs": _WRITE},
    {"apiGroups": ["batch"], "resources": ["cronjobs", "jobs"], "verbs": _WRITE},
    {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": _WRITE},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": [*_READ, *_WRITE]},
]


def _cr(name: str, rules: list[Obj]) -> Obj:
    return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole", "metadata": {"name": name, **_BOOT_META},
            "rules": rules}


def _crb(name: str, role: str, group: str) -> Obj:
    return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name, **_BOOT_META},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": group}]}


BOOTSTRAP_ROLES: list[Obj] = [
    _cr("cluster-admin", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                          {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
    _cr("system:discovery", [{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                                                  "/openapi", "/openapi/*", "/readyz", "/version", "/version/"],
                              "verbs": ["get"]}]),
    _cr("system:public-info-viewer", [{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
                                       "verbs": ["get"]}]),
    _cr("system:basic-user", [
        {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
         "verbs": ["create"]},
        {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
    _cr("view", _VIEW_RULES),
    _cr("edit", _EDIT_RULES),
]
BOOTSTRAP_BINDINGS: list[Obj] = [
    _crb("cluster-admin", "cluster-admin", MASTERS),
    _crb("system:discovery", "system:discovery", AUTHENTICATED),
    _crb("system:basic-user", "system:basic-user", AUTHENTICATED),
    _crb("system:public-info-viewer", "system:public-info-viewer", AUTHENTICATED),
]
