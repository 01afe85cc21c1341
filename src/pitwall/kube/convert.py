"""The two views of one stored kind: core/v1 Event and events.k8s.io/v1 Event.

Both live under ``/registry/events`` as kube-apiserver keeps them; objects are
stored in the core/v1 shape and converted when read or written through the
events.k8s.io group, as the apiserver's conversion functions map the fields.
"""

from __future__ import annotations

import copy
from typing import Any

from pitwall.kube.registry import ResourceType

__all__ = ["from_storage", "to_storage"]

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


def to_storage(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """The stored (core/v1) shape of ``obj`` written through ``rt``."""
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
