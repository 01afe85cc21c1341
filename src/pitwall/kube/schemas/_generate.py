"""Regenerates ``definitions.json.gz`` from the upstream schemas shipped by ``kubernetes-validate``.

``python -m pitwall.kube.schemas._generate [VERSION]`` (default 1.32.0) keeps the
definitions reachable from the built-in kinds pitwall serves, in OpenAPI form
(``#/definitions/NAME`` references, ``type: T`` instead of ``[T, "null"]``).
The data is Kubernetes' own OpenAPI (Apache-2.0), converted, not edited.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

ROOTS = [
    "io.k8s.api.core.v1.Namespace", "io.k8s.api.core.v1.Node", "io.k8s.api.core.v1.Pod", "io.k8s.api.core.v1.Service",
    "io.k8s.api.core.v1.Endpoints", "io.k8s.api.core.v1.ConfigMap", "io.k8s.api.core.v1.Secret",
    "io.k8s.api.core.v1.ServiceAccount", "io.k8s.api.core.v1.Event", "io.k8s.api.apps.v1.Deployment",
    "io.k8s.api.apps.v1.ReplicaSet", "io.k8s.api.apps.v1.StatefulSet", "io.k8s.api.batch.v1.Job",
    "io.k8s.api.batch.v1.CronJob", "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler",
    "io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler",
    "io.k8s.api.autoscaling.v1.Scale", "io.k8s.api.discovery.v1.EndpointSlice", "io.k8s.api.coordination.v1.Lease", "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
    "io.k8s.api.authorization.v1.SelfSubjectRulesReview", "io.k8s.api.authentication.v1.SelfSubjectReview", "io.k8s.api.events.v1.Event",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Status", "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent", "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
    "io.k8s.api.rbac.v1.Role", "io.k8s.api.rbac.v1.ClusterRole", "io.k8s.api.rbac.v1.RoleBinding",
    "io.k8s.api.rbac.v1.ClusterRoleBinding", "io.k8s.api.authentication.v1.TokenRequest",
    "io.k8s.api.networking.v1.Ingress", "io.k8s.api.networking.v1.IngressClass",
]


def _convert(node: Any) -> Any:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                out[k] = v.replace("#/$defs/", "#/definitions/")
            elif k == "type" and isinstance(v, list):
                types = [t for t in v if t != "null"]
                out[k] = types[0] if len(types) == 1 else types
            elif k == "enum" and isinstance(v, list) and k != "properties":
                out[k] = [e for e in v if e is not None]
            elif k == "oneOf" and isinstance(v, list) and all(isinstance(e, dict) and "type" in e for e in v):
                # int-or-string: OpenAPI marks it with a format
                out["x-kubernetes-int-or-string"] = True
                out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            else:
                out[k] = _convert(v)
        return out
    if isinstance(node, list):
        return [_convert(e) for e in node]
    return node


def _refs(node: Any, acc: set[str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                acc.add(v.rsplit("/", 1)[-1])
            else:
                _refs(v, acc)
    elif isinstance(node, list):
        for e in node:
            _refs(e, acc)


def main(version: str = "1.32.0") -> None:
    import kubernetes_validate  # type: ignore[import-untyped]

    src = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{version}-local" / "_definitions.json"
    defs = json.loads(src.read_text())["$defs"]
    keep: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        acc: set[str] = set()
        _refs(defs[name], acc)
        todo.extend(acc - keep)
    out = {name: _convert(defs[name]) for name in sorted(keep)}
    # Quantity and IntOrString are strings/ints on the wire.
    for name in list(out):
        if name.endswith("util.intstr.IntOrString"):
            out[name] = {"type": "string", "format": "int-or-string", "x-kubernetes-int-or-string": True,
                         "description": out[name].get("description", "")}
    dest = Path(__file__).parent / "definitions.json.gz"
    with gzip.open(dest, "wt", encoding="utf-8") as f:
        json.dump({"version": version, "definitions": out}, f, separators=(",", ":"), sort_keys=True)
    print(f"{len(out)} definitions -> {dest}")


if __name__ == "__main__":
    main(*sys.argv[1:])
