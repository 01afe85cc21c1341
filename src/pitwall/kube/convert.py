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
``.../current-metrics`` (both in autoscaling/v1's MetricSpec/MetricStatus
field names: ``metricName``, ``targetAverageValue``, ``currentValue``...),
``.../conditions`` and ``.../behavior``.
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


def _put(d: dict[str, Any], key: str, v: Any) -> None:
    if v is not None:
        d[key] = v


def _target_v1(t: Any, value: str, average: str, util: str = "") -> dict[str, Any]:
    t = t if isinstance(t, dict) else {}
    out: dict[str, Any] = {}
    _put(out, value, t.get("value"))
    _put(out, average, t.get("averageValue"))
    if util:
        _put(out, util, t.get("averageUtilization"))
    return out


def _target_v2(src: dict[str, Any], value: str, average: str, util: str = "") -> dict[str, Any]:
    if util and src.get(util) is not None:
        return {"type": "Utilization", "averageUtilization": src[util]}
    if src.get(average) is not None:
        out = {"type": "AverageValue", "averageValue": src[average]}
        _put(out, "value", src.get(value) if value else None)
        return out
    t: dict[str, Any] = {"type": "Value"}
    _put(t, "value", src.get(value) if value else None)
    return t


def _metric_id_v1(m: Any, name: str = "metricName", selector: str = "selector") -> dict[str, Any]:
    m = m if isinstance(m, dict) else {}
    out: dict[str, Any] = {}
    _put(out, name, m.get("name"))
    _put(out, selector, m.get("selector"))
    return out


def _metric_id_v2(src: dict[str, Any], name: str = "metricName", selector: str = "selector") -> dict[str, Any]:
    out: dict[str, Any] = {}
    _put(out, "name", src.get(name))
    _put(out, "selector", src.get(selector))
    return out


def _metric_spec_v1(x: Any) -> Any:
    """An autoscaling/v2 MetricSpec in autoscaling/v1's field names (what upstream's annotation holds)."""
    if not isinstance(x, dict):
        return x
    typ = x.get("type")
    out: dict[str, Any] = {"type": typ}
    if typ == "Object" and isinstance(x.get("object"), dict):
        o = x["object"]
        t = o.get("target") or {}
        body = {**({"target": o["describedObject"]} if "describedObject" in o else {}), **_metric_id_v1(o.get("metric"))}
        _put(body, "targetValue", t.get("value"))
        _put(body, "averageValue", t.get("averageValue"))
        out["object"] = body
    elif typ == "Pods" and isinstance(x.get("pods"), dict):
        p = x["pods"]
        out["pods"] = {**_metric_id_v1(p.get("metric")), **_target_v1(p.get("target"), "", "targetAverageValue")}
    elif typ in ("Resource", "ContainerResource") and isinstance(x.get(_key(typ)), dict):
        r = x[_key(typ)]
        body = {"name": r.get("name"), **_target_v1(r.get("target"), "", "targetAverageValue",
                                                    "targetAverageUtilization")}
        _put(body, "container", r.get("container"))
        out[_key(typ)] = body
    elif typ == "External" and isinstance(x.get("external"), dict):
        e = x["external"]
        out["external"] = {**_metric_id_v1(e.get("metric"), selector="metricSelector"),
                           **_target_v1(e.get("target"), "targetValue", "targetAverageValue")}
    else:
        return x
    return out


def _metric_spec_v2(x: Any) -> Any:
    if not isinstance(x, dict):
        return x
    typ = x.get("type")
    out: dict[str, Any] = {"type": typ}
    if typ == "Object" and isinstance(x.get("object"), dict):
        o = x["object"]
        body: dict[str, Any] = {}
        _put(body, "describedObject", o.get("target"))
        body["metric"] = _metric_id_v2(o)
        t: dict[str, Any] = {"type": "AverageValue" if o.get("averageValue") is not None else "Value"}
        _put(t, "value", o.get("targetValue"))
        _put(t, "averageValue", o.get("averageValue"))
        body["target"] = t
        out["object"] = body
    elif typ == "Pods" and isinstance(x.get("pods"), dict):
        p = x["pods"]
        out["pods"] = {"metric": _metric_id_v2(p), "target": _target_v2(p, "", "targetAverageValue")}
    elif typ in ("Resource", "ContainerResource") and isinstance(x.get(_key(typ)), dict):
        r = x[_key(typ)]
        body = {"name": r.get("name")}
        _put(body, "container", r.get("container"))
        body["target"] = _target_v2(r, "", "targetAverageValue", "targetAverageUtilization")
        out[_key(typ)] = body
    elif typ == "External" and isinstance(x.get("external"), dict):
        e = x["external"]
        out["external"] = {"metric": _metric_id_v2(e, selector="metricSelector"),
                           "target": _target_v2(e, "targetValue", "targetAverageValue")}
    else:
        return x
    return out


def _metric_status_v1(x: Any) -> Any:
    if not isinstance(x, dict):
        return x
    typ = x.get("type")
    out: dict[str, Any] = {"type": typ}
    src = x.get(_key(typ)) if isinstance(typ, str) else None
    if not isinstance(src, dict):
        return x
    raw_cur = src.get("current")
    cur: dict[str, Any] = raw_cur if isinstance(raw_cur, dict) else {}
    if typ == "Object":
        body = {**({"target": src["describedObject"]} if "describedObject" in src else {}),
                **_metric_id_v1(src.get("metric"))}
        _put(body, "currentValue", cur.get("value"))
        _put(body, "averageValue", cur.get("averageValue"))
    elif typ == "Pods":
        body = _metric_id_v1(src.get("metric"))
        _put(body, "currentAverageValue", cur.get("averageValue"))
    elif typ in ("Resource", "ContainerResource"):
        body = {"name": src.get("name")}
        _put(body, "currentAverageUtilization", cur.get("averageUtilization"))
        _put(body, "currentAverageValue", cur.get("averageValue"))
        _put(body, "container", src.get("container"))
    elif typ == "External":
        body = _metric_id_v1(src.get("metric"), selector="metricSelector")
        _put(body, "currentValue", cur.get("value"))
        _put(body, "currentAverageValue", cur.get("averageValue"))
    else:
        return x
    out[_key(typ)] = body
    return out


def _metric_status_v2(x: Any) -> Any:
    if not isinstance(x, dict):
        return x
    typ = x.get("type")
    out: dict[str, Any] = {"type": typ}
    src = x.get(_key(typ)) if isinstance(typ, str) else None
    if not isinstance(src, dict):
        return x
    cur: dict[str, Any] = {}
    if typ == "Object":
        body: dict[str, Any] = {}
        _put(body, "describedObject", src.get("target"))
        body["metric"] = _metric_id_v2(src)
        _put(cur, "value", src.get("currentValue"))
        _put(cur, "averageValue", src.get("averageValue"))
    elif typ == "Pods":
        body = {"metric": _metric_id_v2(src)}
        _put(cur, "averageValue", src.get("currentAverageValue"))
    elif typ in ("Resource", "ContainerResource"):
        body = {"name": src.get("name")}
        _put(body, "container", src.get("container"))
        _put(cur, "averageUtilization", src.get("currentAverageUtilization"))
        _put(cur, "averageValue", src.get("currentAverageValue"))
    elif typ == "External":
        body = {"metric": _metric_id_v2(src, selector="metricSelector")}
        _put(cur, "value", src.get("currentValue"))
        _put(cur, "averageValue", src.get("currentAverageValue"))
    else:
        return x
    body["current"] = cur
    out[_key(typ)] = body
    return out


def _key(typ: str) -> str:
    return typ[:1].lower() + typ[1:]


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
        metrics += [m2 for m2 in map(_metric_spec_v2, _json_list(extra.get(_HPA_METRICS)))
                    if not (cpu is not None and _cpu_utilization(m2))]
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
            current = [_metric_status_v2(x) for x in _json_list(extra[_HPA_CURRENT])]
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
            ann[_HPA_METRICS] = json.dumps([_metric_spec_v1(x) for x in others], separators=(",", ":"))
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
            ann[_HPA_CURRENT] = json.dumps([_metric_status_v1(x) for x in current], separators=(",", ":"))
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
