"""Defaulting of built-in kinds, as the apiserver fills in what kubectl then shows.

Only fields a user sees (``kubectl get -o yaml``, ``describe``) or a
controller relies on: pod spec and template defaults (restartPolicy Always,
terminationGracePeriodSeconds 30, dnsPolicy ClusterFirst, imagePullPolicy,
protocol TCP, probe timings), Deployment strategy 25%/25%,
revisionHistoryLimit 10, progressDeadlineSeconds 600, Service type ClusterIP
and sessionAffinity None, Job and CronJob policies, Namespace finalizers.
"""

from __future__ import annotations

import base64
from typing import Any

__all__ = ["default_object"]

Obj = dict[str, Any]


def _d(obj: Obj, key: str, value: Any) -> Any:
    if obj.get(key) is None:
        obj[key] = value
    return obj[key]


def _probe(p: Any) -> None:
    if not isinstance(p, dict):
        return
    for k, v in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)):
        _d(p, k, v)
    if isinstance(p.get("httpGet"), dict):
        _d(p["httpGet"], "scheme", "HTTP")
        _d(p["httpGet"], "path", "/")


def _pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _container(c: Any) -> None:
    if not isinstance(c, dict):
        return
    if isinstance(c.get("image"), str):
        _d(c, "imagePullPolicy", _pull_policy(c["image"]))
    _d(c, "terminationMessagePath", "/dev/termination-log")
    _d(c, "terminationMessagePolicy", "File")
    _d(c, "resources", {})
    res = c["resources"]
    if isinstance(res, dict) and isinstance(res.get("limits"), dict) and res.get("requests") is None:
        res["requests"] = dict(res["limits"])
    for p in c.get("ports") or []:
        if isinstance(p, dict):
            _d(p, "protocol", "TCP")
    for e in c.get("env") or []:
        if isinstance(e, dict) and isinstance(e.get("valueFrom"), dict):
            fr = e["valueFrom"].get("fieldRef")
            if isinstance(fr, dict):
                _d(fr, "apiVersion", "v1")
    for k in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(c.get(k))


def default_pod_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        return
    _d(spec, "restartPolicy", "Always")
    _d(spec, "terminationGracePeriodSeconds", 30)
    _d(spec, "dnsPolicy", "ClusterFirst")
    _d(spec, "securityContext", {})
    _d(spec, "schedulerName", "default-scheduler")
    for k in ("containers", "initContainers"):
        for c in spec.get(k) or []:
            _container(c)
    for v in spec.get("volumes") or []:
        if not isinstance(v, dict):
            continue
        for src in ("configMap", "secret"):
            if isinstance(v.get(src), dict):
                _d(v[src], "defaultMode", 420)
        if set(v) == {"name"}:  # no source: an emptyDir, as upstream defaults it
            v["emptyDir"] = {}


def _template(spec: Obj) -> None:
    tpl = spec.get("template")
    if isinstance(tpl, dict):
        tpl.setdefault("metadata", {})
        default_pod_spec(tpl.get("spec"))


def default_object(kind: str, group: str, obj: Obj) -> None:
    """Fill in the defaults of a built-in kind (in place)."""
    spec = obj.get("spec")
    if kind == "Pod" and group == "":
        if isinstance(spec, dict):
            default_pod_spec(spec)
            _d(spec, "enableServiceLinks", True)
            _d(spec, "priority", 0)
            _d(spec, "preemptionPolicy", "PreemptLowerPriority")
            _d(spec, "serviceAccountName", "default")
            _d(spec, "serviceAccount", spec["serviceAccountName"])
            tol = spec.setdefault("tolerations", [])
            if isinstance(tol, list) and not tol:
                for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
                    tol.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    elif kind == "Deployment" and isinstance(spec, dict):
        _d(spec, "replicas", 1)
        strat = _d(spec, "strategy", {})
        if isinstance(strat, dict):
            _d(strat, "type", "RollingUpdate")
            if strat["type"] == "RollingUpdate":
                ru = _d(strat, "rollingUpdate", {})
                if isinstance(ru, dict):
                    _d(ru, "maxSurge", "25%")
                    _d(ru, "maxUnavailable", "25%")
        _d(spec, "revisionHistoryLimit", 10)
        _d(spec, "progressDeadlineSeconds", 600)
        _template(spec)
    elif kind == "ReplicaSet" and isinstance(spec, dict):
        _d(spec, "replicas", 1)
        _template(spec)
    elif kind == "StatefulSet" and isinstance(spec, dict):
        _d(spec, "replicas", 1)
        _d(spec, "podManagementPolicy", "OrderedReady")
        us = _d(spec, "updateStrategy", {"type": "RollingUpdate"})
        if isinstance(us, dict) and us.get("type", "RollingUpdate") == "RollingUpdate":
            us.setdefault("type", "RollingUpdate")
            _d(us, "rollingUpdate", {"partition": 0})
        _d(spec, "revisionHistoryLimit", 10)
        _d(spec, "persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
        _template(spec)
    elif kind == "Job" and isinstance(spec, dict):
        _default_job_spec(spec)
    elif kind == "CronJob" and isinstance(spec, dict):
        _d(spec, "concurrencyPolicy", "Allow")
        _d(spec, "suspend", False)
        _d(spec, "successfulJobsHistoryLimit", 3)
        _d(spec, "failedJobsHistoryLimit", 1)
        jt = spec.get("jobTemplate")
        if isinstance(jt, dict):
            jt.setdefault("metadata", {})
            if isinstance(jt.get("spec"), dict):
                _default_job_spec(jt["spec"])
    elif kind == "Service" and isinstance(spec, dict):
        _d(spec, "type", "ClusterIP")
        _d(spec, "sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            _d(spec, "internalTrafficPolicy", "Cluster")
            _d(spec, "ipFamilyPolicy", "SingleStack")
            _d(spec, "ipFamilies", ["IPv4"])
        if spec["type"] in ("NodePort", "LoadBalancer"):
            _d(spec, "externalTrafficPolicy", "Cluster")
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                _d(p, "protocol", "TCP")
                if p.get("targetPort") is None and "port" in p:
                    p["targetPort"] = p["port"]
        obj.setdefault("status", {"loadBalancer": {}})
    elif kind == "Namespace":
        if not isinstance(spec, dict):
            spec = obj["spec"] = {}
        _d(spec, "finalizers", ["kubernetes"])
        st = obj.setdefault("status", {})
        if isinstance(st, dict):
            _d(st, "phase", "Active")
        labels = obj.setdefault("metadata", {}).setdefault("labels", {})
        if isinstance(labels, dict):
            labels["kubernetes.io/metadata.name"] = obj["metadata"].get("name", "")
    elif kind == "Secret" and group == "":
        _d(obj, "type", "Opaque")
        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict) and string_data:  # written into data, as the apiserver does
            data = obj.setdefault("data", {})
            if isinstance(data, dict):
                for k, v in string_data.items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
    elif kind == "HorizontalPodAutoscaler" and isinstance(spec, dict):
        _d(spec, "minReplicas", 1)
        if not spec.get("metrics"):
            spec["metrics"] = [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
    elif kind == "CustomResourceDefinition" and isinstance(spec, dict):
        conv = _d(spec, "conversion", {"strategy": "None"})
        if isinstance(conv, dict):
            _d(conv, "strategy", "None")
        names = spec.get("names")
        if isinstance(names, dict) and names.get("kind"):
            _d(names, "singular", str(names["kind"]).lower())
            _d(names, "listKind", str(names["kind"]) + "List")


def _default_job_spec(spec: Obj) -> None:
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    _d(spec, "parallelism", 1)
    _d(spec, "backoffLimit", 6)
    _d(spec, "completionMode", "NonIndexed")
    _d(spec, "suspend", False)
    _d(spec, "podReplacementPolicy", "TerminatingOrFailed")
    _template(spec)
