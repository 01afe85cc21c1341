"""Access and identity reviews: what ``kubectl auth can-i``/``whoami`` and k9s ask before acting.

pitwall has no RBAC: a token's scopes decide. ``read`` allows get, list and
watch; ``write`` (or ``admin``) allows every verb. A server without tokens
allows everything. Reviews are answered, never stored, as upstream.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from pitwall.core.tenancy import principal_of
from pitwall.kube.errors import BadRequest
from pitwall.kube.registry import ResourceType

__all__ = ["REVIEW_GROUPS", "review"]

REVIEW_GROUPS = ("authorization.k8s.io", "authentication.k8s.io")
_READ_VERBS = {"get", "list", "watch"}
Obj = dict[str, Any]


def _allowed(request: Request, verb: str) -> tuple[bool, str]:
    p = principal_of(request)
    if p is None:
        return True, "the server has no tokens: every request is allowed"
    need = "read" if verb in _READ_VERBS else "write"
    if p.may(need):
        return True, f"{p.describe()} has the {need!r} scope"
    return False, f"{p.describe()} lacks the {need!r} scope"


def review(request: Request, rt: ResourceType, body: Any) -> Obj:
    """The answered review for a create of ``rt`` (one of the review kinds)."""
    if not isinstance(body, dict):
        raise BadRequest("the body of the request was in an unknown format")
    out: Obj = {"kind": rt.kind, "apiVersion": rt.api_version,
                "metadata": {"creationTimestamp": None, **(body.get("metadata") or {})}}
    spec = body.get("spec") or {}
    if rt.kind == "SelfSubjectAccessReview":
        attrs = spec.get("resourceAttributes") or spec.get("nonResourceAttributes") or {}
        allowed, reason = _allowed(request, str(attrs.get("verb", "get")))
        out["spec"] = spec
        out["status"] = {"allowed": allowed, "reason": reason} if allowed else \
            {"allowed": False, "denied": True, "reason": reason}
    elif rt.kind == "SelfSubjectRulesReview":
        verbs = ["*"] if _allowed(request, "create")[0] else (["get", "list", "watch"]
                                                               if _allowed(request, "get")[0] else [])
        out["spec"] = spec
        out["status"] = {"resourceRules": [{"verbs": verbs, "apiGroups": ["*"], "resources": ["*"]}] if verbs else [],
                         "nonResourceRules": [{"verbs": verbs, "nonResourceURLs": ["*"]}] if verbs else [],
                         "incomplete": False}
    else:  # SelfSubjectReview
        p = principal_of(request)
        name = (p.name or "token") if p is not None else "system:anonymous"
        groups = ["system:authenticated"] if p is not None else ["system:unauthenticated"]
        groups += sorted(f"pitwall:{s}" for s in (p.scopes if p is not None else ()))
        out["status"] = {"userInfo": {"username": name, "groups": groups}}
    return out
