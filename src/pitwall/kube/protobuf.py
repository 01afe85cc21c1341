"""Kubernetes' protobuf request bodies, decoded to JSON objects for the kinds kubectl's generators send.

kubectl's typed clients (``kubectl create namespace|configmap|secret|
deployment|job|cronjob|service|serviceaccount``, ``kubectl run``, ``kubectl
expose``, ``kubectl autoscale`` (an autoscaling/v1 HPA), ``kubectl create ingress``) send ``application/vnd.kubernetes.protobuf``: the magic bytes
``k8s\\0`` and a ``runtime.Unknown`` holding the type and the encoded object.
This module reads that wire format for those kinds with a table of their
messages (field number -> JSON name and type, as Kubernetes' protobuf
definitions number them). A field the table does not know is refused (415)
rather than dropped, so nothing a client sent is silently lost. Answers stay
JSON, which every client accepts.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from pitwall.kube.errors import UnsupportedMedia

__all__ = ["PROTOBUF", "decode"]

PROTOBUF = "application/vnd.kubernetes.protobuf"
_MAGIC = b"k8s\x00"

# A field: (json name, type, flags). Types: s string, i integer, b bool, y bytes (base64 in JSON),
# q Quantity, t Time, ios IntOrString, m:<message>, map:<value type>. Flags: r repeated,
# p keep a zero value (a pointer field in Go), n inline (an embedded struct: its fields join the parent).
F = tuple[str, str, str]
_MSG: dict[str, dict[int, F]] = {
    "Unknown": {1: ("typeMeta", "m:TypeMetaR", ""), 2: ("raw", "y", ""), 3: ("contentEncoding", "s", ""),
                4: ("contentType", "s", "")},
    "TypeMetaR": {1: ("apiVersion", "s", ""), 2: ("kind", "s", "")},
    "ObjectMeta": {1: ("name", "s", ""), 2: ("generateName", "s", ""), 3: ("namespace", "s", ""),
                   4: ("selfLink", "s", ""), 5: ("uid", "s", ""), 6: ("resourceVersion", "s", ""),
                   7: ("generation", "i", ""), 8: ("creationTimestamp", "t", ""), 9: ("deletionTimestamp", "t", ""),
                   10: ("deletionGracePeriodSeconds", "i", "p"), 11: ("labels", "map:s", ""),
                   12: ("annotations", "map:s", ""), 13: ("ownerReferences", "m:OwnerReference", "r"),
                   14: ("finalizers", "s", "r")},
    "OwnerReference": {5: ("apiVersion", "s", ""), 1: ("kind", "s", ""), 3: ("name", "s", ""), 4: ("uid", "s", ""),
                       6: ("controller", "b", "p"), 7: ("blockOwnerDeletion", "b", "p")},
    "LabelSelector": {1: ("matchLabels", "map:s", ""), 2: ("matchExpressions", "m:LabelSelectorRequirement", "r")},
    "LabelSelectorRequirement": {1: ("key", "s", ""), 2: ("operator", "s", ""), 3: ("values", "s", "r")},
    "LocalObjectReference": {1: ("name", "s", "")},
    "ObjectReference": {1: ("kind", "s", ""), 2: ("namespace", "s", ""), 3: ("name", "s", ""), 4: ("uid", "s", ""),
                        5: ("apiVersion", "s", ""), 6: ("resourceVersion", "s", ""), 7: ("fieldPath", "s", "")},
    # core/v1
    "Namespace": {1: ("metadata", "m:ObjectMeta", ""), 2: ("spec", "m:NamespaceSpec", ""),
                  3: ("status", "m:NamespaceStatus", "")},
    "NamespaceSpec": {1: ("finalizers", "s", "r")},
    "NamespaceStatus": {1: ("phase", "s", "")},
    "ConfigMap": {1: ("metadata", "m:ObjectMeta", ""), 4: ("immutable", "b", "p"), 2: ("data", "map:s", ""),
                  3: ("binaryData", "map:y", "")},
    "Secret": {1: ("metadata", "m:ObjectMeta", ""), 5: ("immutable", "b", "p"), 2: ("data", "map:y", ""),
               4: ("stringData", "map:s", ""), 3: ("type", "s", "")},
    "ServiceAccount": {1: ("metadata", "m:ObjectMeta", ""), 2: ("secrets", "m:ObjectReference", "r"),
                       3: ("imagePullSecrets", "m:LocalObjectReference", "r"),
                       4: ("automountServiceAccountToken", "b", "p")},
    "Pod": {1: ("metadata", "m:ObjectMeta", ""), 2: ("spec", "m:PodSpec", ""), 3: ("status", "m:PodStatus", "")},
    "PodStatus": {1: ("phase", "s", "")},
    "PodTemplateSpec": {1: ("metadata", "m:ObjectMeta", ""), 2: ("spec", "m:PodSpec", "")},
    "PodSpec": {1: ("volumes", "m:Volume", "r"), 20: ("initContainers", "m:Container", "r"),
                2: ("containers", "m:Container", "r"), 3: ("restartPolicy", "s", ""),
                4: ("terminationGracePeriodSeconds", "i", "p"), 5: ("activeDeadlineSeconds", "i", "p"),
                6: ("dnsPolicy", "s", ""), 7: ("nodeSelector", "map:s", ""), 8: ("serviceAccountName", "s", ""),
                9: ("serviceAccount", "s", ""), 21: ("automountServiceAccountToken", "b", "p"),
                10: ("nodeName", "s", ""), 11: ("hostNetwork", "b", ""), 15: ("imagePullSecrets",
                                                                               "m:LocalObjectReference", "r"),
                12: ("hostPID", "b", ""), 13: ("hostIPC", "b", ""),
                16: ("hostname", "s", ""), 17: ("subdomain", "s", ""), 19: ("schedulerName", "s", ""),
                22: ("tolerations", "m:Toleration", "r"), 24: ("priorityClassName", "s", ""),
                25: ("priority", "i", "p"), 30: ("enableServiceLinks", "b", "p"), 31: ("preemptionPolicy", "s", "")},
    "Container": {1: ("name", "s", ""), 2: ("image", "s", ""), 3: ("command", "s", "r"), 4: ("args", "s", "r"),
                  5: ("workingDir", "s", ""), 6: ("ports", "m:ContainerPort", "r"),
                  19: ("envFrom", "m:EnvFromSource", "r"), 7: ("env", "m:EnvVar", "r"),
                  8: ("resources", "m:ResourceRequirements", ""), 9: ("volumeMounts", "m:VolumeMount", "r"),
                  13: ("terminationMessagePath", "s", ""), 20: ("terminationMessagePolicy", "s", ""),
                  14: ("imagePullPolicy", "s", ""), 16: ("stdin", "b", ""), 17: ("stdinOnce", "b", ""),
                  18: ("tty", "b", "")},
    "ContainerPort": {1: ("name", "s", ""), 2: ("hostPort", "i", ""), 3: ("containerPort", "i", "p"),
                      4: ("protocol", "s", ""), 5: ("hostIP", "s", "")},
    "EnvVar": {1: ("name", "s", ""), 2: ("value", "s", ""), 3: ("valueFrom", "m:EnvVarSource", "")},
    "EnvVarSource": {1: ("fieldRef", "m:ObjectFieldSelector", ""), 3: ("configMapKeyRef", "m:KeySelector", ""),
                     4: ("secretKeyRef", "m:KeySelector", "")},
    "KeySelector": {1: ("", "m:LocalObjectReference", "n"), 2: ("key", "s", ""), 3: ("optional", "b", "p")},
    "ObjectFieldSelector": {1: ("apiVersion", "s", ""), 2: ("fieldPath", "s", "")},
    "EnvFromSource": {1: ("prefix", "s", ""), 2: ("configMapRef", "m:EnvSource", ""),
                      3: ("secretRef", "m:EnvSource", "")},
    "EnvSource": {1: ("", "m:LocalObjectReference", "n"), 2: ("optional", "b", "p")},
    "ResourceRequirements": {1: ("limits", "map:q", ""), 2: ("requests", "map:q", "")},
    "VolumeMount": {1: ("name", "s", ""), 2: ("readOnly", "b", ""), 3: ("mountPath", "s", ""),
                    4: ("subPath", "s", ""), 6: ("subPathExpr", "s", "")},
    "Volume": {1: ("name", "s", ""), 2: ("", "m:VolumeSource", "n")},
    "VolumeSource": {2: ("emptyDir", "m:EmptyDirVolumeSource", "p"), 6: ("secret", "m:SecretVolumeSource", ""),
                     19: ("configMap", "m:ConfigMapVolumeSource", "")},
    "EmptyDirVolumeSource": {1: ("medium", "s", ""), 2: ("sizeLimit", "q", "")},
    "SecretVolumeSource": {1: ("secretName", "s", ""), 2: ("items", "m:KeyToPath", "r"), 3: ("defaultMode", "i", "p"),
                           4: ("optional", "b", "p")},
    "ConfigMapVolumeSource": {1: ("", "m:LocalObjectReference", "n"), 2: ("items", "m:KeyToPath", "r"),
                              3: ("defaultMode", "i", "p"), 4: ("optional", "b", "p")},
    "KeyToPath": {1: ("key", "s", ""), 2: ("path", "s", ""), 3: ("mode", "i", "p")},
    "Toleration": {1: ("key", "s", ""), 2: ("operator", "s", ""), 3: ("value", "s", ""), 4: ("effect", "s", ""),
                   5: ("tolerationSeconds", "i", "p")},
    "Service": {1: ("metadata", "m:ObjectMeta", ""), 2: ("spec", "m:ServiceSpec", ""),
                3: ("status", "m:ServiceStatus", "")},
    "ServiceSpec": {1: ("ports", "m:ServicePort", "r"), 2: ("selector", "map:s", ""), 3: ("clusterIP", "s", ""),
                    18: ("clusterIPs", "s", "r"), 4: ("type", "s", ""), 5: ("externalIPs", "s", "r"),
                    7: ("sessionAffinity", "s", ""), 8: ("loadBalancerIP", "s", ""), 10: ("externalName", "s", ""),
                    12: ("healthCheckNodePort", "i", ""),
                    11: ("externalTrafficPolicy", "s", ""), 13: ("publishNotReadyAddresses", "b", ""),
                    19: ("ipFamilies", "s", "r"), 17: ("ipFamilyPolicy", "s", ""),
                    22: ("internalTrafficPolicy", "s", "")},
    "ServicePort": {1: ("name", "s", ""), 2: ("protocol", "s", ""), 6: ("appProtocol", "s", ""),
                    3: ("port", "i", "p"), 4: ("targetPort", "ios", ""), 5: ("nodePort", "i", "")},
    "ServiceStatus": {1: ("loadBalancer", "m:LoadBalancerStatus", "")},
    "LoadBalancerStatus": {},
    # apps/v1
    "Deployment": {1: ("metadata", "m:ObjectMeta", ""), 2: ("spec", "m:DeploymentSpec", ""),
                   3: ("status", "m:DeploymentStatus", "")},
    "DeploymentSpec": {1: ("replicas", "i", "p"), 2: ("selector", "m:LabelSelector", ""),
                       3: ("template", "m:PodTemplateSpec", ""), 4: ("strategy", "m:DeploymentStrategy", ""),
                       5: ("minReadySeconds", "i", ""), 6: ("revisionHistoryLimit", "i", "p"),
                       7: ("paused", "b", ""), 9: ("progressDeadlineSeconds", "i", "p")},
    "DeploymentStrategy": {1: ("type", "s", "")},
    "DeploymentStatus": {},
    # batch/v1
    "Job": {1: ("metadata", "m:ObjectMeta", ""), 2: ("spec", "m:JobSpec", ""), 3: ("status", "m:JobStatus", "")},
    "JobSpec": {1: ("parallelism", "i", "p"), 2: ("completions", "i", "p"), 3: ("activeDeadlineSeconds", "i", "p"),
                7: ("backoffLimit", "i", "p"), 4: ("selector", "m:LabelSelector", ""), 5: ("manualSelector", "b", "p"),
                6: ("template", "m:PodTemplateSpec", ""), 8: ("ttlSecondsAfterFinished", "i", "p"),
                9: ("completionMode", "s", ""), 10: ("suspend", "b", "p")},
    "JobStatus": {},
    "JobTemplateSpec": {1: ("metadata", "m:ObjectMeta", ""), 2: ("spec", "m:JobSpec", "")},
    "CronJob": {1: ("metadata", "m:ObjectMeta", ""), 2: ("spec", "m:CronJobSpec", ""),
                3: ("status", "m:CronJobStatus", "")},
    "CronJobSpec": {1: ("schedule", "s", ""), 8: ("timeZone", "s", ""), 2: ("startingDeadlineSeconds", "i", "p"),
                    3: ("concurrencyPolicy", "s", ""), 4: ("suspend", "b", "p"), 5: ("jobTemplate", "m:JobTemplateSpec", ""),
                    6: ("successfulJobsHistoryLimit", "i", "p"), 7: ("failedJobsHistoryLimit", "i", "p")},
    "CronJobStatus": {},
    # authorization.k8s.io/v1, authentication.k8s.io/v1 (kubectl auth can-i / whoami)
    "SelfSubjectAccessReview": {1: ("metadata", "m:ObjectMeta", ""), 2: ("spec", "m:SelfSubjectAccessReviewSpec", ""),
                                3: ("status", "m:SubjectAccessReviewStatus", "")},
    "SelfSubjectAccessReviewSpec": {1: ("resourceAttributes", "m:ResourceAttributes", ""),
                                    2: ("nonResourceAttributes", "m:NonResourceAttributes", "")},
    "ResourceAttributes": {1: ("namespace", "s", ""), 2: ("verb", "s", ""), 3: ("group", "s", ""),
                           4: ("version", "s", ""), 5: ("resource", "s", ""), 6: ("subresource", "s", ""),
                           7: ("name", "s", "")},
    "NonResourceAttributes": {1: ("path", "s", ""), 2: ("verb", "s", "")},
    "SubjectAccessReviewStatus": {},
    "Binding": {1: ("metadata", "m:ObjectMeta", ""), 2: ("target", "m:ObjectReference", "")},
    # autoscaling/v1 (kubectl autoscale)
    "HorizontalPodAutoscaler": {1: ("metadata", "m:ObjectMeta", ""), 2: ("spec", "m:HorizontalPodAutoscalerSpec", ""),
                                3: ("status", "m:HorizontalPodAutoscalerStatus", "")},
    "HorizontalPodAutoscalerSpec": {1: ("scaleTargetRef", "m:CrossVersionObjectReference", ""),
                                    2: ("minReplicas", "i", "p"), 3: ("maxReplicas", "i", ""),
                                    4: ("targetCPUUtilizationPercentage", "i", "p")},
    "CrossVersionObjectReference": {1: ("kind", "s", ""), 2: ("name", "s", ""), 3: ("apiVersion", "s", "")},
    "HorizontalPodAutoscalerStatus": {1: ("observedGeneration", "i", "p"), 2: ("lastScaleTime", "t", ""),
                                      3: ("currentReplicas", "i", ""), 4: ("desiredReplicas", "i", ""),
                                      5: ("currentCPUUtilizationPercentage", "i", "p")},
    "SelfSubjectRulesReview": {1: ("metadata", "m:ObjectMeta", ""), 2: ("spec", "m:SelfSubjectRulesReviewSpec", ""),
                               3: ("status", "m:SubjectRulesReviewStatus", "")},
    "SelfSubjectRulesReviewSpec": {1: ("namespace", "s", "")},
    "SubjectRulesReviewStatus": {},
    "SelfSubjectReview": {1: ("metadata", "m:ObjectMeta", ""), 2: ("status", "m:SelfSubjectReviewStatus", "")},
    "SelfSubjectReviewStatus": {},
    # authentication.k8s.io/v1 TokenRequest (kubectl create token)
    "TokenRequest": {1: ("metadata", "m:ObjectMeta", ""), 2: ("spec", "m:TokenRequestSpec", ""),
                     3: ("status", "m:TokenRequestStatus", "")},
    "TokenRequestSpec": {1: ("audiences", "s", "r"), 4: ("expirationSeconds", "i", "p"),
                         3: ("boundObjectRef", "m:BoundObjectReference", "")},
    "BoundObjectReference": {1: ("kind", "s", ""), 2: ("apiVersion", "s", ""), 3: ("name", "s", ""), 4: ("uid", "s", "")},
    "TokenRequestStatus": {1: ("token", "s", ""), 2: ("expirationTimestamp", "t", "")},
    # rbac.authorization.k8s.io/v1 (kubectl create role|clusterrole|rolebinding|clusterrolebinding)
    "PolicyRule": {1: ("verbs", "s", "r"), 2: ("apiGroups", "s", "r"), 3: ("resources", "s", "r"),
                   4: ("resourceNames", "s", "r"), 5: ("nonResourceURLs", "s", "r")},
    "AggregationRule": {1: ("clusterRoleSelectors", "m:LabelSelector", "r")},
    "Role": {1: ("metadata", "m:ObjectMeta", ""), 2: ("rules", "m:PolicyRule", "r")},
    "ClusterRole": {1: ("metadata", "m:ObjectMeta", ""), 2: ("rules", "m:PolicyRule", "r"),
                    3: ("aggregationRule", "m:AggregationRule", "")},
    "RbacSubject": {1: ("kind", "s", ""), 2: ("apiGroup", "s", ""), 3: ("name", "s", ""), 4: ("namespace", "s", "")},
    "RoleRef": {1: ("apiGroup", "s", ""), 2: ("kind", "s", ""), 3: ("name", "s", "")},
    "RoleBinding": {1: ("metadata", "m:ObjectMeta", ""), 2: ("subjects", "m:RbacSubject", "r"),
                    3: ("roleRef", "m:RoleRef", "")},
    # networking.k8s.io/v1 (kubectl create ingress|ingressclass)
    "Ingress": {1: ("metadata", "m:ObjectMeta", ""), 2: ("spec", "m:IngressSpec", ""),
                3: ("status", "m:IngressStatus", "")},
    "IngressSpec": {4: ("ingressClassName", "s", ""), 1: ("defaultBackend", "m:IngressBackend", ""),
                    2: ("tls", "m:IngressTLS", "r"), 3: ("rules", "m:IngressRule", "r")},
    "IngressBackend": {4: ("service", "m:IngressServiceBackend", ""),
                       3: ("resource", "m:TypedLocalObjectReference", "")},
    "IngressServiceBackend": {1: ("name", "s", ""), 2: ("port", "m:ServiceBackendPort", "")},
    "ServiceBackendPort": {1: ("name", "s", ""), 2: ("number", "i", "")},
    "TypedLocalObjectReference": {1: ("apiGroup", "s", ""), 2: ("kind", "s", ""), 3: ("name", "s", "")},
    "IngressTLS": {1: ("hosts", "s", "r"), 2: ("secretName", "s", "")},
    "IngressRule": {1: ("host", "s", ""), 2: ("", "m:IngressRuleValue", "n")},
    "IngressRuleValue": {1: ("http", "m:HTTPIngressRuleValue", "")},
    "HTTPIngressRuleValue": {1: ("paths", "m:HTTPIngressPath", "r")},
    "HTTPIngressPath": {1: ("path", "s", ""), 3: ("pathType", "s", ""), 2: ("backend", "m:IngressBackend", "")},
    "IngressStatus": {},
    "IngressClass": {1: ("metadata", "m:ObjectMeta", ""), 2: ("spec", "m:IngressClassSpec", "")},
    "IngressClassSpec": {1: ("controller", "s", ""), 2: ("parameters", "m:IngressClassParametersReference", "")},
    "IngressClassParametersReference": {1: ("apiGroup", "s", ""), 2: ("kind", "s", ""), 3: ("name", "s", ""),
                                        4: ("scope", "s", ""), 5: ("namespace", "s", "")},
}

# (group, kind) -> root message
_ROOTS = {("", "Namespace"): "Namespace", ("", "ConfigMap"): "ConfigMap", ("", "Secret"): "Secret",
          ("", "ServiceAccount"): "ServiceAccount", ("", "Pod"): "Pod", ("", "Service"): "Service",
          ("apps", "Deployment"): "Deployment", ("batch", "Job"): "Job", ("batch", "CronJob"): "CronJob",
          ("autoscaling", "HorizontalPodAutoscaler"): "HorizontalPodAutoscaler", ("", "Binding"): "Binding",
          ("authorization.k8s.io", "SelfSubjectAccessReview"): "SelfSubjectAccessReview",
          ("authorization.k8s.io", "SelfSubjectRulesReview"): "SelfSubjectRulesReview",
          ("authentication.k8s.io", "SelfSubjectReview"): "SelfSubjectReview",
          ("authentication.k8s.io", "TokenRequest"): "TokenRequest",
          ("rbac.authorization.k8s.io", "Role"): "Role", ("rbac.authorization.k8s.io", "ClusterRole"): "ClusterRole",
          ("rbac.authorization.k8s.io", "RoleBinding"): "RoleBinding",
          ("rbac.authorization.k8s.io", "ClusterRoleBinding"): "RoleBinding",
          ("networking.k8s.io", "Ingress"): "Ingress", ("networking.k8s.io", "IngressClass"): "IngressClass"}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise UnsupportedMedia("truncated protobuf body")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 70:
            raise UnsupportedMedia("malformed protobuf varint")


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    out: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
            out.append((num, wt, v))
        elif wt == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise UnsupportedMedia("truncated protobuf body")
            out.append((num, wt, buf[i:i + n]))
            i += n
        elif wt == 1:
            out.append((num, wt, buf[i:i + 8]))
            i += 8
        elif wt == 5:
            out.append((num, wt, buf[i:i + 4]))
            i += 4
        else:
            raise UnsupportedMedia(f"unsupported protobuf wire type {wt}")
    return out


def _int(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _scalar(typ: str, wt: int, v: Any) -> Any:
    if typ == "s":
        return bytes(v).decode("utf-8")
    if typ == "y":
        return base64.b64encode(bytes(v)).decode()
    if typ == "i":
        return _int(int(v))
    if typ == "b":
        return bool(v)
    if typ == "q":
        return _message("Quantity", bytes(v))
    if typ == "t":
        return _message("Time", bytes(v))
    if typ == "ios":
        return _message("IntOrString", bytes(v))
    raise UnsupportedMedia(f"unsupported protobuf field type {typ}")


# Status is the server's to write: fields of these messages that the table lacks are skipped, not refused.
_LENIENT = {"NamespaceStatus", "PodStatus", "ServiceStatus", "LoadBalancerStatus", "DeploymentStatus", "JobStatus",
            "CronJobStatus", "SubjectAccessReviewStatus", "SubjectRulesReviewStatus", "SelfSubjectReviewStatus",
            "IngressStatus"}


def _message(name: str, buf: bytes) -> Any:
    if name == "Quantity":
        return next((bytes(v).decode() for n, _, v in _fields(buf) if n == 1), "0")
    if name == "Time":
        secs = next((_int(v) for n, _, v in _fields(buf) if n == 1), 0)
        return dt.datetime.fromtimestamp(secs, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if secs else None
    if name == "IntOrString":
        f = {n: v for n, _, v in _fields(buf)}
        return bytes(f.get(3, b"")).decode() if f.get(1) == 1 else _int(int(f.get(2, 0)))
    table = _MSG[name]
    out: dict[str, Any] = {}
    for num, wt, v in _fields(buf):
        spec = table.get(num)
        if spec is None and name in _LENIENT:
            continue
        if spec is None:
            raise UnsupportedMedia(f"protobuf field {num} of {name} is not supported here; send the object as "
                                   "JSON or YAML (kubectl apply -f)")
        key, typ, flags = spec
        if typ.startswith("map:"):
            entry = {n: x for n, _, x in _fields(bytes(v))}
            k = bytes(entry.get(1, b"")).decode()
            out.setdefault(key, {})[k] = _scalar(typ[4:], 2, entry.get(2, b""))
            continue
        if typ.startswith("m:"):
            val: Any = _message(typ[2:], bytes(v))
        elif "r" in flags and wt == 2 and typ in ("i", "b"):  # a packed repeated scalar
            vals = []
            j, data = 0, bytes(v)
            while j < len(data):
                x, j = _varint(data, j)
                vals.append(_scalar(typ, 0, x))
            out.setdefault(key, []).extend(vals)
            continue
        else:
            val = _scalar(typ, wt, v)
        if "n" in flags and isinstance(val, dict):
            out.update(val)
        elif "r" in flags:
            out.setdefault(key, []).append(val)
        elif val is None:
            continue
        elif "p" not in flags and (val == "" or val is False or (type(val) is int and val == 0)):
            continue  # Go's zero value of a plain field: what JSON's omitempty leaves out
        else:
            out[key] = val
    return out


def decode(raw: bytes, group: str, kind: str) -> dict[str, Any]:
    """The JSON object a protobuf request body encodes (415 for what this server cannot read)."""
    if not raw.startswith(_MAGIC):
        raise UnsupportedMedia("the protobuf body does not start with the Kubernetes magic bytes")
    unknown = _message("Unknown", raw[len(_MAGIC):])
    tm = unknown.get("typeMeta") or {}
    if unknown.get("contentEncoding"):
        raise UnsupportedMedia(f"protobuf content encoding {unknown['contentEncoding']!r} is not supported")
    root = _ROOTS.get((group, str(tm.get("kind") or kind)))
    if root is None:
        raise UnsupportedMedia(f"protobuf bodies of kind {tm.get('kind') or kind} are not supported here; send the "
                               "object as JSON or YAML (kubectl apply -f)")
    obj: dict[str, Any] = {}
    if tm.get("apiVersion"):
        obj["apiVersion"] = tm["apiVersion"]
    if tm.get("kind"):
        obj["kind"] = tm["kind"]
    obj.update(_message(root, base64.b64decode(unknown.get("raw", ""))))
    return obj
