"""``metrics.k8s.io/v1beta1`` (what ``kubectl top`` reads), served from a provider pitwall plugs in.

The API server keeps no metrics: whoever samples pods and nodes (the node,
from its process statistics) registers a ``MetricsProvider`` on ``KubeAPI``
and the group appears in discovery. PodMetrics and NodeMetrics are answered,
never stored, as metrics-server does.
"""

from __future__ import annotations

from typing import Any, Protocol

from pitwall.kube.errors import NotFoundError
from pitwall.kube.registry import ResourceType
from pitwall.kube.selectors import FieldSelector, LabelSelector

__all__ = ["METRICS_GROUP", "NODE_METRICS", "POD_METRICS", "MetricsProvider", "get_metrics", "list_metrics"]

Obj = dict[str, Any]
METRICS_GROUP = "metrics.k8s.io"
POD_METRICS = ResourceType(group=METRICS_GROUP, version="v1beta1", kind="PodMetrics", plural="pods",
                           singular="", namespaced=True, verbs=("get", "list"), has_generation=False)
NODE_METRICS = ResourceType(group=METRICS_GROUP, version="v1beta1", kind="NodeMetrics", plural="nodes",
                            singular="", namespaced=False, verbs=("get", "list"), has_generation=False)


class MetricsProvider(Protocol):
    """Current usage: PodMetrics / NodeMetrics objects as metrics-server shapes them (``metadata``
    with name, namespace and the pod's labels; ``timestamp``, ``window``; ``containers[].usage`` or
    ``usage`` with ``cpu`` and ``memory`` quantities)."""

    async def pod_metrics(self, namespace: str) -> list[Obj]: ...

    async def node_metrics(self) -> list[Obj]: ...


async def list_metrics(provider: MetricsProvider, rt: ResourceType, namespace: str, label_selector: str | None,
                       field_selector: str | None) -> Obj:
    labels = LabelSelector.parse(label_selector)
    fields = FieldSelector.parse(field_selector, rt.kind)
    items = await (provider.pod_metrics(namespace) if rt.kind == "PodMetrics" else provider.node_metrics())
    out = [{"kind": rt.kind, "apiVersion": rt.api_version, **o} for o in items
           if labels.matches((o.get("metadata") or {}).get("labels")) and fields.matches(o)]
    return {"kind": rt.kind + "List", "apiVersion": rt.api_version, "metadata": {}, "items": out}


async def get_metrics(provider: MetricsProvider, rt: ResourceType, namespace: str, name: str) -> Obj:
    listed = await list_metrics(provider, rt, namespace, None, None)
    for o in listed["items"]:
        if (o.get("metadata") or {}).get("name") == name:
            return dict(o)
    raise NotFoundError.of(rt.plural, rt.group, name)
