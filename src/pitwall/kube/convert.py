"""Two views of one stored kind: core/v1 Event and events.k8s.io/v1 Event;
autoscaling/v2 and autoscaling/v1 HorizontalPodAutoscaler.

Both Event views live under ``/registry/events`` as kube-apiserver keeps them;
objects are stored in the core/v1 shape and converted when read or written
through the events.k8s.io group, as the apiserver's conversion functions map
the fields. HPAs are stored in the autoscaling/v2 shape; the v1 view has
``spec.targetCPUUtilizationPercentage`` and
``status.currentCPUUtilizationPercentage`` for the cpu Utilization metric, and
keeps what v1 cannot say in annotations, as upstream's v1 conversion does:
``autoscaling.alpha.kubernetes.io/metrics`` (the other metrics),
``.../current-metrics``, ``.../conditions`` and ``.../behavior``. Upstream
writes those annotations in the autoscaling/v1 (v2beta1-like) field names;
here they hold the v2 JSON, which round-trips through pitwall but is not
byte-for-byte what kube-apiserver shows.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pitwall.kube.registry import ResourceType

__all__ = ["from_storage", "hpa_v2", "to_storage"]

# events.k8s.io/v1 field -> core/v1 field
_EVENTS_V1 = {
    "note": "message",
    "regarding": "involvedObject",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
    "reportingController": "reportingComponent",
}
_SAME = ("reason", "type", "action", "related", "eventTime", "series", "reportingInstance")


_HPA_METRICS = "autoscaling.alpha.kubernetes.io/metrics"
_HPA_CURRENT = "autoscaling.alpha.kubernetes.io/current-metrics"
_HPA_CONDITIONS = "autoscaling.alpha.kubernetes.io/conditions"
_HPA_BEHAVIOR = "autoscaling.alpha.kubernetes.io/behavior"
_HPA_ANNOTATIONS = (_HPA_METRICS, _HPA_CURRENT, _HPA_CONDITIONS, _HPA_BEHAVIOR)
_HPA_STATUS = ("observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas")


def _is_hpa_v1(rt: ResourceType) -> bool:
    return rt.group == "autoscaling" and rt.version == "v1" and rt.kind == "HorizontalPodAutoscaler"


def _cpu_utilization(m: Any) -> bool:
    return (isinstance(m, dict) and m.get("type") == "Resource" and isinstance(m.get("resource"), dict)
            and m["resource"].get("name") == "cpu"
            and isinstance(m["resource"].get("target"), dict)
            and m["resource"]["target"].get("type") == "Utilization"
            and m["resource"]["target"].get("averageUtilization") is not None)


def _json_list(s: Any) -> list[Any]:
    try:
        v = json.loads(s) if isinstance(s, str) else None
    except ValueError:
        return []
    return v if isinstance(v, list) else []


def hpa_v2(obj: dict[str, Any]) -> dict[str, Any]:
    """An autoscaling/v1 HorizontalPodAutoscaler in the autoscaling/v2 shape."""
    m = dict(obj.get("metadata") or {})
    ann = dict(m.get("annotations") or {})
    extra = {k: ann.pop(k) for k in _HPA_ANNOTATIONS if k in ann}
    if ann:
        m["annotations"] = ann
    else:
        m.pop("annotations", None)
    out: dict[str, Any] = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": m}
    spec = obj.get("spec")
    if isinstance(spec, dict):
        s2: dict[str, Any] = {k: spec[k] for k in ("scaleTargetRef", "minReplicas", "maxReplicas") if k in spec}
        metrics: list[Any] = []
        cpu = spec.get("targetCPUUtilizationPercentage")
        if cpu is not None:
            metrics.append({"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}})
        metrics += [x for x in _json_list(extra.get(_HPA_METRICS)) if not (cpu is not None and _cpu_utilization(x))]
        if metrics:
            s2["metrics"] = metrics
        if _HPA_BEHAVIOR in extra:
            try:
                behavior = json.loads(extra[_HPA_BEHAVIOR])
            except ValueError:
                behavior = None
            if isinstance(behavior, dict):
                s2["behavior"] = behavior
        out["spec"] = s2
    elif spec is not None:
        out["spec"] = spec
    status = obj.get("status")
    if isinstance(status, dict):
        st: dict[str, Any] = {k: status[k] for k in _HPA_STATUS if k in status}
        if _HPA_CURRENT in extra:
            current = _json_list(extra[_HPA_CURRENT])
        elif status.get("currentCPUUtilizationPercentage") is not None:
            current = [{"type": "Resource", "resource": {"name": "cpu", "current": {
                "averageUtilization": status["currentCPUUtilizationPercentage"]}}}]
        else:
            current = []
        if current:
            st["currentMetrics"] = current
        conditions = _json_list(extra.get(_HPA_CONDITIONS))
        if conditions:
            st["conditions"] = conditions
        out["status"] = st
    return out


def _hpa_to_v1(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    m = dict(obj.get("metadata") or {})
    ann = dict(m.get("annotations") or {})
    out: dict[str, Any] = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": m}
    spec = obj.get("spec")
    if isinstance(spec, dict):
        s1: dict[str, Any] = {k: spec[k] for k in ("scaleTargetRef", "minReplicas", "maxReplicas") if k in spec}
        metrics = [x for x in spec.get("metrics") or []]
        cpu = next((x for x in metrics if _cpu_utilization(x)), None)
        if cpu is not None:
            s1["targetCPUUtilizationPercentage"] = cpu["resource"]["target"]["averageUtilization"]
        others = [x for x in metrics if x is not cpu]
        if others:
            ann[_HPA_METRICS] = json.dumps(others, separators=(",", ":"))
        if spec.get("behavior"):
            ann[_HPA_BEHAVIOR] = json.dumps(spec["behavior"], separators=(",", ":"))
        out["spec"] = s1
    status = obj.get("status")
    if isinstance(status, dict):
        st: dict[str, Any] = {k: status[k] for k in _HPA_STATUS if k in status}
        current = status.get("currentMetrics") or []
        for x in current:
            r = x.get("resource") if isinstance(x, dict) and x.get("type") == "Resource" else None
            if isinstance(r, dict) and r.get("name") == "cpu":
                util = (r.get("current") or {}).get("averageUtilization")
                if util is not None:
                    st["currentCPUUtilizationPercentage"] = util
        if current:
            ann[_HPA_CURRENT] = json.dumps(current, separators=(",", ":"))
        if status.get("conditions"):
            ann[_HPA_CONDITIONS] = json.dumps(status["conditions"], separators=(",", ":"))
        st.setdefault("currentReplicas", 0)
        st.setdefault("desiredReplicas", 0)
        out["status"] = st
    if ann:
        m["annotations"] = ann
    return out


def to_storage(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """The stored shape (core/v1 Event, autoscaling/v2 HPA) of ``obj`` written through ``rt``."""
    if _is_hpa_v1(rt):
        return hpa_v2(obj)
    if rt.group != "events.k8s.io":
        return obj
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Event", "metadata": obj.get("metadata", {})}
    for new, old in _EVENTS_V1.items():
        if new in obj:
            out[old] = obj[new]
    for k in _SAME:
        if k in obj:
            out[k] = obj[k]
    series = obj.get("series")
    if isinstance(series, dict) and "lastObservedTime" in series:
        out["series"] = {"count": series.get("count"), "lastObservedTime": series["lastObservedTime"]}
    return out


def from_storage(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as read through ``rt`` (apiVersion and kind set)."""
    if _is_hpa_v1(rt):
        return _hpa_to_v1(rt, obj)
    if rt.group == "events.k8s.io":
        out: dict[str, Any] = {"apiVersion": rt.api_version, "kind": "Event", "metadata": obj.get("metadata", {})}
        for new, old in _EVENTS_V1.items():
            if old in obj:
                out[new] = obj[old]
        for k in _SAME:
            if k in obj:
                out[k] = obj[k]
        return out
    if obj.get("apiVersion") != rt.api_version or obj.get("kind") != rt.kind:
        obj = copy.copy(obj)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
    return obj
