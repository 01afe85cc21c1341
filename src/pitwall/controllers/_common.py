"""Helpers the workload controllers share: selectors, owner references, pod readiness, times.

Pure functions over objects in their API shape (dicts); no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pitwall.kube import parse_time

Obj = dict[str, Any]


def meta(obj: Obj) -> Obj:
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


def now() -> datetime:
    return datetime.now(UTC)


def match_selector(selector: Obj | None, labels: Obj | None) -> bool:
    """Whether ``labels`` match a ``metav1.LabelSelector``; an empty or missing selector matches nothing,
    as a workload controller reads it (upstream: an empty selector would select every pod)."""
    if not selector:
        return False
    labels = labels or {}
    ml = selector.get("matchLabels") or {}
    exprs = selector.get("matchExpressions") or []
    if not ml and not exprs:
        return False
    for k, v in ml.items():
        if labels.get(k) != v:
            return False
    for e in exprs:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def selector_string(selector: Obj | None) -> str:
    """A ``metav1.LabelSelector`` as the label-selector query string (``a=b,c in (d,e),!f``)."""
    parts: list[str] = []
    sel = selector or {}
    for k, v in sorted((sel.get("matchLabels") or {}).items()):
        parts.append(f"{k}={v}")
    for e in sel.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), ",".join(sorted(e.get("values") or []))
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": f"{key}",
                      "DoesNotExist": f"!{key}"}.get(str(op), ""))
    return ",".join(p for p in parts if p)


def controller_ref(obj: Obj) -> Obj | None:
    """The owner reference with ``controller: true``, if any."""
    for ref in meta(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def owner_ref(owner: Obj) -> Obj:
    """A controlling reference to ``owner`` (controller and blockOwnerDeletion set, as upstream)."""
    m = meta(owner)
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": m["name"], "uid": m["uid"],
            "controller": True, "blockOwnerDeletion": True}


def deleting(obj: Obj) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def is_active_pod(pod: Obj) -> bool:
    """Counted towards replicas: not Succeeded/Failed and not being deleted (upstream FilterActivePods)."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not deleting(pod)


def _ready_condition(pod: Obj) -> Obj | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Ready":
            return c
    return None


def is_pod_ready(pod: Obj) -> bool:
    c = _ready_condition(pod)
    return c is not None and c.get("status") == "True"


def ready_since(pod: Obj) -> datetime | None:
    """When the pod became ready (its Ready condition's lastTransitionTime); None when not ready."""
    c = _ready_condition(pod)
    if c is None or c.get("status") != "True":
        return None
    return parse_time(c.get("lastTransitionTime")) or parse_time(meta(pod).get("creationTimestamp"))


def is_pod_available(pod: Obj, min_ready_s: int, at: datetime) -> bool:
    """Ready for at least ``min_ready_s`` seconds (upstream IsPodAvailable)."""
    since = ready_since(pod)
    if since is None:
        return False
    return min_ready_s <= 0 or (at - since).total_seconds() >= min_ready_s


def until_available(pod: Obj, min_ready_s: int, at: datetime) -> float | None:
    """Seconds until a ready pod becomes available; None when it is not ready or already available."""
    since = ready_since(pod)
    if since is None or min_ready_s <= 0:
        return None
    left = min_ready_s - (at - since).total_seconds()
    return left if left > 0 else None


def restarts(pod: Obj) -> int:
    """The highest restart count of the pod's containers."""
    counts = [int(s.get("restartCount") or 0) for s in (pod.get("status") or {}).get("containerStatuses") or []
              if isinstance(s, dict)]
    return max(counts, default=0)


def int_or_percent(value: Any, total: int, round_up: bool) -> int:
    """``intstr.GetScaledValueFromIntOrPercent``: an int as is, ``"25%"`` of ``total`` rounded as asked."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    s = str(value)
    if s.endswith("%"):
        pct = int(s[:-1])
        n = pct * total
        return -(-n // 100) if round_up else n // 100
    return int(s)
