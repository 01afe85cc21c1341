"""Who a pod is, as the mesh sees it: workload, labels, ServiceAccount identity, looked up by pod IP.

Pods run on loopback addresses (127.42.x.y), so the source address of a
connection names the calling pod, and an endpoint address names the serving
one. ``PodInfo`` carries what routing (``sourceLabels``, DestinationRule
subsets), authorisation (``principals``) and telemetry (Istio's
``*_workload``, ``*_app``, ``*_canonical_*`` labels) need, computed once per
pod change rather than per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["UNKNOWN", "PodInfo", "pod_info", "spiffe_id"]

Obj = dict[str, Any]
TRUST_DOMAIN = "cluster.local"


def spiffe_id(namespace: str, service_account: str) -> str:
    """The SPIFFE ID Istio gives a workload running as ``service_account`` in ``namespace``."""
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True)
class PodInfo:
    """A pod as a mesh workload (one per pod IP)."""

    name: str
    namespace: str
    workload: str
    labels: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    service_account: str = "default"
    app: str = "unknown"
    version: str = "unknown"
    canonical_service: str = "unknown"
    canonical_revision: str = "latest"
    node: str = field(default="", compare=False)  # spec.nodeName: the node whose proxy serves it inbound

    @property
    def principal(self) -> str:
        """``spiffe://cluster.local/ns/<ns>/sa/<sa>``."""
        return spiffe_id(self.namespace, self.service_account)


UNKNOWN = PodInfo(name="unknown", namespace="unknown", workload="unknown")


def _workload(meta: Obj) -> str:
    """The controller's name as Istio derives it: a ReplicaSet's Deployment (the pod-template-hash
    suffix dropped), a Job's CronJob likewise, else the owner, else the pod itself."""
    labels = meta.get("labels") or {}
    refs = meta.get("ownerReferences") or []
    ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    if not ref:
        return str(meta.get("name") or "unknown")
    name, kind = str(ref.get("name") or ""), ref.get("kind")
    if kind == "ReplicaSet":
        h = labels.get("pod-template-hash")
        if h and name.endswith("-" + h):
            return name[: -len(h) - 1]
    if kind == "Job" and name.rsplit("-", 1)[-1].isdigit() and "-" in name:
        return name.rsplit("-", 1)[0]  # a CronJob's Job: <cronjob>-<scheduled time>
    return name


def pod_info(pod: Obj) -> PodInfo:
    """The mesh's view of one pod object."""
    meta = pod.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    workload = _workload(meta)
    app = labels.get("app") or labels.get("app.kubernetes.io/name") or "unknown"
    version = labels.get("version") or labels.get("app.kubernetes.io/version") or "unknown"
    return PodInfo(
        name=str(meta.get("name") or ""), namespace=str(meta.get("namespace") or "default"), workload=workload,
        labels=labels, service_account=str((pod.get("spec") or {}).get("serviceAccountName") or "default"),
        app=app, version=version,
        canonical_service=labels.get("service.istio.io/canonical-name") or labels.get("app.kubernetes.io/name")
        or labels.get("app") or workload,
        canonical_revision=labels.get("service.istio.io/canonical-revision")
        or labels.get("app.kubernetes.io/version") or labels.get("version") or "latest",
        node=str((pod.get("spec") or {}).get("nodeName") or ""),
    )
