"""Kubernetes service discovery, ``role: pod``, answered from an in-process pod source.

Contract: ``PodSource`` is what the scrape manager needs from a Kubernetes
API (the metrics pillar never imports kube; ``pitwall.kube.KubePodSource``
implements it over the in-process client and the composition root hands it
to ``ScrapeManager.set_pod_source``). ``pod_groups`` turns pods into target
groups exactly as Prometheus' pod role does: one target per container port
(``<podIP>:<port>``), one port-less target (``<podIP>``) per container
without ports, pods without an IP skipped; group labels
``__meta_kubernetes_namespace``, ``__meta_kubernetes_pod_{name,ip,uid,
node_name,host_ip,ready,phase,controller_kind,controller_name}``,
``__meta_kubernetes_pod_label_<name>``/``labelpresent_``,
``__meta_kubernetes_pod_annotation_<name>``/``annotationpresent_`` (names
sanitised to ``[a-zA-Z0-9_]``), and per target
``__meta_kubernetes_pod_container_{name,image,init,port_name,port_number,
port_protocol}``. ``DEFAULT_POD_JOB`` is Prometheus' conventional
``kubernetes-pods`` job honouring ``prometheus.io/scrape``, ``/port``,
``/path`` and ``/scheme`` annotations.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, Protocol

from pitwall.metrics.scrape.config import KubernetesSDConfig, ScrapeConfig, parse_scrape_configs

__all__ = ["DEFAULT_POD_JOB", "PodSource", "default_pod_job", "pod_groups", "pods_of"]

Obj = dict[str, Any]
Groups = list[tuple[list[str], dict[str, str]]]

DEFAULT_POD_JOB = "kubernetes-pods"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")
_PREFIX = "__meta_kubernetes_pod_"


class PodSource(Protocol):
    """Pods of a Kubernetes API, and a signal when any of them changes."""

    async def list_pods(self, namespace: str = "", label_selector: str | None = None,
                        field_selector: str | None = None) -> list[Obj]:
        """The current pods (every namespace when ``namespace`` is empty), in their API shape."""
        ...

    def pod_changes(self) -> AsyncIterator[None]:
        """Yields once after each change to a pod; may end or raise (the caller subscribes again)."""
        ...


def _name(s: str) -> str:
    return _INVALID.sub("_", s)


def _pod_labels(pod: Obj) -> dict[str, str]:
    m = pod.get("metadata") or {}
    spec, st = pod.get("spec") or {}, pod.get("status") or {}
    out = {
        "__meta_kubernetes_namespace": str(m.get("namespace", "")),
        _PREFIX + "name": str(m.get("name", "")),
        _PREFIX + "ip": str(st.get("podIP", "")),
        _PREFIX + "uid": str(m.get("uid", "")),
        _PREFIX + "node_name": str(spec.get("nodeName", "")),
        _PREFIX + "host_ip": str(st.get("hostIP", "")),
        _PREFIX + "phase": str(st.get("phase", "")),
        _PREFIX + "ready": "unknown",
    }
    for c in st.get("conditions") or []:
        if c.get("type") == "Ready":
            out[_PREFIX + "ready"] = str(c.get("status", "Unknown")).lower()
    for ref in m.get("ownerReferences") or []:
        if ref.get("controller"):
            out[_PREFIX + "controller_kind"] = str(ref.get("kind", ""))
            out[_PREFIX + "controller_name"] = str(ref.get("name", ""))
    for key, prefix in (("labels", "label"), ("annotations", "annotation")):
        for k, v in (m.get(key) or {}).items():
            out[f"{_PREFIX}{prefix}_{_name(str(k))}"] = str(v)
            out[f"{_PREFIX}{prefix}present_{_name(str(k))}"] = "true"
    return out


def pod_groups(pods: list[Obj]) -> Groups:
    """Target groups of ``pods`` as Prometheus' pod role builds them (one target per group here)."""
    out: Groups = []
    for pod in pods:
        ip = str((pod.get("status") or {}).get("podIP", ""))
        if not ip:
            continue
        base = _pod_labels(pod)
        spec = pod.get("spec") or {}
        for init, containers in ((False, spec.get("containers") or []), (True, spec.get("initContainers") or [])):
            for c in containers:
                cl = {**base, _PREFIX + "container_name": str(c.get("name", "")),
                      _PREFIX + "container_image": str(c.get("image", "")),
                      _PREFIX + "container_init": "true" if init else "false"}
                ports = c.get("ports") or []
                if not ports:
                    if not init:  # Prometheus adds port-less targets for regular containers only
                        out.append(([ip], cl))
                    continue
                for p in ports:
                    port = str(p.get("containerPort", ""))
                    out.append(([f"{ip}:{port}"], {**cl, _PREFIX + "container_port_name": str(p.get("name", "")),
                                                   _PREFIX + "container_port_number": port,
                                                   _PREFIX + "container_port_protocol": str(p.get("protocol",
                                                                                                  "TCP"))}))
    return out


async def pods_of(source: PodSource, sd: KubernetesSDConfig) -> list[Obj]:
    """The pods one ``kubernetes_sd_configs`` entry sees: its namespaces, filtered by its pod selectors."""
    label = ",".join(s.label for s in sd.selectors if s.role == "pod" and s.label) or None
    field = ",".join(s.field for s in sd.selectors if s.role == "pod" and s.field) or None
    pods: list[Obj] = []
    for ns in sd.namespaces.names or [""]:
        pods += await source.list_pods(ns, label, field)
    return pods


# Prometheus' example ``kubernetes-pods`` job (documentation/examples/prometheus-kubernetes.yml), with the
# ``namespace`` and ``pod`` target labels community dashboards use.
_DEFAULT_RELABEL: list[dict[str, Any]] = [
    {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "action": "keep", "regex": "true"},
    {"source_labels": ["__meta_kubernetes_pod_phase"], "action": "drop", "regex": "Pending|Succeeded|Failed|Completed"},
    {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scheme"], "action": "replace",
     "regex": "(https?)", "target_label": "__scheme__"},
    {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"], "action": "replace",
     "regex": "(.+)", "target_label": "__metrics_path__"},
    {"source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"], "action": "replace",
     "regex": r"([^:]+)(?::\d+)?;(\d+)", "replacement": "$1:$2", "target_label": "__address__"},
    {"action": "labelmap", "regex": "__meta_kubernetes_pod_label_(.+)"},
    {"source_labels": ["__meta_kubernetes_namespace"], "action": "replace", "target_label": "namespace"},
    {"source_labels": ["__meta_kubernetes_pod_name"], "action": "replace", "target_label": "pod"},
]


def default_pod_job(interval_ms: int = 15_000, timeout_ms: int = 10_000) -> ScrapeConfig:
    """The ``kubernetes-pods`` job the manager adds when it has a pod source and no job uses
    ``kubernetes_sd_configs``: every running pod annotated ``prometheus.io/scrape: "true"``."""
    return parse_scrape_configs([{
        "job_name": DEFAULT_POD_JOB, "scrape_interval": f"{interval_ms}ms",
        "scrape_timeout": f"{min(timeout_ms, interval_ms)}ms",
        "kubernetes_sd_configs": [{"role": "pod"}], "relabel_configs": _DEFAULT_RELABEL,
    }])[0]
