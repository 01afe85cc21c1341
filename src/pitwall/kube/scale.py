"""The ``scale`` subresource: an autoscaling/v1 ``Scale`` view of a workload's replica count.

Built-in kinds keep replicas at ``spec.replicas`` / ``status.replicas`` and
their selector at ``spec.selector``; custom kinds name the paths in their
CRD (``specReplicasPath``, ``statusReplicasPath``, ``labelSelectorPath``).
"""

from __future__ import annotations

import copy
from typing import Any

from pitwall.kube.registry import ResourceType
from pitwall.kube.selectors import selector_string

__all__ = ["scale_of", "set_replicas"]

Obj = dict[str, Any]


def _paths(rt: ResourceType) -> tuple[str, str, str]:
    if rt.crd is not None:
        sc = ((rt.crd.get("subresources") or {}).get("scale")) or {}
        return (str(sc.get("specReplicasPath", ".spec.replicas")), str(sc.get("statusReplicasPath", ".status.replicas")),
                str(sc.get("labelSelectorPath", "")))
    return ".spec.replicas", ".status.replicas", ".spec.selector"


def _get(obj: Any, path: str) -> Any:
    cur = obj
    for p in [x for x in path.split(".") if x]:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def scale_of(rt: ResourceType, obj: Obj) -> Obj:
    spec_p, status_p, sel_p = _paths(rt)
    m = obj.get("metadata") or {}
    sel = _get(obj, sel_p) if sel_p else None
    status: Obj = {"replicas": int(_get(obj, status_p) or 0)}
    if isinstance(sel, dict):
        status["selector"] = selector_string(sel)
    elif isinstance(sel, str) and sel:
        status["selector"] = sel
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: m[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in m},
        "spec": {"replicas": int(_get(obj, spec_p) or 0)},
        "status": status,
    }


def set_replicas(rt: ResourceType, obj: Obj, replicas: int) -> Obj:
    out = copy.deepcopy(obj)
    parts = [x for x in _paths(rt)[0].split(".") if x]
    cur = out
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = replicas
    return out
