"""Access and identity reviews: what ``kubectl auth can-i``/``whoami`` and k9s ask before acting.

SelfSubjectAccessReview and SelfSubjectRulesReview are answered by the same
authorizer that decides requests (``kube.rbac``: pitwall's roles, then
Kubernetes RBAC), so ``can-i`` says yes exactly when the request would pass.
A server without credentials allows everything. Reviews are answered, never
stored, as upstream.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from pitwall.core.tenancy import principal_of
from pitwall.kube.errors import BadRequest
from pitwall.kube.rbac import Attributes, RBACAuthorizer, user_of
from pitwall.kube.registry import ResourceType

__all__ = ["REVIEW_GROUPS", "review"]

REVIEW_GROUPS = ("authorization.k8s.io", "authentication.k8s.io")
Obj = dict[str, Any]


def _attributes(spec: Obj) -> Attributes:
    ra = spec.get("resourceAttributes")
    if isinstance(ra, dict):
        return Attributes(str(ra.get("verb", "")), True, "", str(ra.get("group", "")), str(ra.get("version", "")),
                          str(ra.get("namespace", "")), str(ra.get("resource", "")), str(ra.get("subresource", "")),
                          str(ra.get("name", "")))
    na = spec.get("nonResourceAttributes")
    if isinstance(na, dict):
        return Attributes(str(na.get("verb", "")), False, str(na.get("path", "")))
    raise BadRequest("spec: Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified")


async def review(request: Request, rt: ResourceType, body: Any, authorizer: RBACAuthorizer) -> Obj:
    """The answered review for a create of ``rt`` (one of the review kinds)."""
    if not isinstance(body, dict):
        raise BadRequest("the body of the request was in an unknown format")
    out: Obj = {"kind": rt.kind, "apiVersion": rt.api_version,
                "metadata": {"creationTimestamp": None, **(body.get("metadata") or {})}}
    spec = body.get("spec") or {}
    p = principal_of(request)
    if rt.kind == "SelfSubjectAccessReview":
        attrs = _attributes(spec)
        if p is None:
            allowed, reason = True, "the server has no credentials configured: every request is allowed"
        else:
            allowed, reason = await authorizer.decide(p, attrs)
        out["spec"] = spec
        out["status"] = {"allowed": allowed, **({"reason": reason} if reason else {})}
    elif rt.kind == "SelfSubjectRulesReview":
        out["spec"] = spec
        if p is None:
            out["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                             "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": False}
        else:
            res, non, err = await authorizer.rules(p, str(spec.get("namespace", "")))
            out["status"] = {"resourceRules": res, "nonResourceRules": non, "incomplete": bool(err),
                             **({"evaluationError": err} if err else {})}
    else:  # SelfSubjectReview
        if p is None:
            out["status"] = {"userInfo": {"username": "system:anonymous", "groups": ["system:unauthenticated"]}}
        else:
            user = user_of(p)
            out["status"] = {"userInfo": {"username": user.name or "token", "groups": list(user.groups)}}
    return out
