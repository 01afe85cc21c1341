"""The shop as Kubernetes objects: apply the shipped manifests to pitwall, wait for the rollout.

``manifests/shop.yaml`` is plain Kubernetes YAML (Namespace ``shop``, the
scenario's ConfigMap, a Service and a Deployment per service and for the
load generator). :func:`apply` sends each object to a pitwall server's
Kubernetes API as a server-side apply (``PATCH`` with
``application/apply-patch+yaml``, ``fieldManager=pitwall-demo``), the same
request ``kubectl apply --server-side`` makes, after putting the run's
scenario into the ConfigMap. :func:`wait_available` waits for every
Deployment as ``kubectl rollout status`` does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import httpx
import yaml

__all__ = ["MANIFEST", "NAMESPACE", "ApplyFailed", "PodInfo", "Scenario", "apply", "deployment_names", "manifests", "pods",
           "rollout_problem", "wait_available"]

MANIFEST = "manifests/shop.yaml"
NAMESPACE = "shop"
FIELD_MANAGER = "pitwall-demo"
SCENARIO_CONFIGMAP = "demo-scenario"
REQUEST_TIMEOUT_S = 30.0

Obj = dict[str, Any]

# kind -> (API path prefix, plural); every kind the shipped file holds.
_PATHS: dict[str, tuple[str, str]] = {
    "Namespace": ("/api/v1", "namespaces"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "Service": ("/api/v1", "services"),
    "Deployment": ("/apis/apps/v1", "deployments"),
}


class ApplyFailed(RuntimeError):
    """The server refused an object, or the Deployments did not become available in time."""


@dataclass(frozen=True)
class Scenario:
    """What the ConfigMap tells the pods about this run."""

    seed: int
    epoch: str  # Unix time; "" = when each pod starts
    day_s: float
    otlp_url: str


@dataclass(frozen=True)
class PodInfo:
    name: str
    app: str
    uid: str
    phase: str
    ip: str


def manifests() -> list[Obj]:
    """The shipped objects, in the file's order (Namespace, ConfigMap, Services, Deployments)."""
    text = resources.files("pitwall.demo").joinpath(MANIFEST).read_text()
    return [d for d in yaml.safe_load_all(text) if d]


def _path(obj: Obj) -> str:
    prefix, plural = _PATHS[str(obj["kind"])]
    md = obj["metadata"]
    if obj["kind"] == "Namespace":
        return f"{prefix}/{plural}/{md['name']}"
    return f"{prefix}/namespaces/{md['namespace']}/{plural}/{md['name']}"


def _with_scenario(obj: Obj, scenario: Scenario) -> Obj:
    if obj["kind"] != "ConfigMap" or obj["metadata"]["name"] != SCENARIO_CONFIGMAP:
        return obj
    data = {"DEMO_SEED": str(scenario.seed), "DEMO_EPOCH": scenario.epoch, "DEMO_DAY_S": f"{scenario.day_s:g}",
            "PITWALL_OTLP_URL": scenario.otlp_url}
    return {**obj, "data": {**obj.get("data", {}), **data}}


def apply(client: httpx.Client, scenario: Scenario) -> list[str]:
    """Server-side apply every shipped object (with ``scenario`` in its ConfigMap); ``kind/name`` of each."""
    done = []
    for obj in manifests():
        obj = _with_scenario(obj, scenario)
        r = client.patch(_path(obj), params={"fieldManager": FIELD_MANAGER, "force": "true"},
                         content=yaml.safe_dump(obj).encode(),
                         headers={"Content-Type": "application/apply-patch+yaml"})
        if r.status_code >= 300:
            raise ApplyFailed(f"apply {obj['kind']}/{obj['metadata']['name']}: HTTP {r.status_code}: "
                              f"{_message(r)}")
        done.append(f"{obj['kind'].lower()}/{obj['metadata']['name']}")
    return done


def _message(r: httpx.Response) -> str:
    try:
        return str(r.json().get("message", r.text[:300]))
    except ValueError:
        return r.text[:300]


def rollout_problem(dep: Obj) -> str:
    """Why Deployment ``dep`` has not rolled out yet ("" when it has), as ``kubectl rollout status`` says it."""
    md, spec, st = dep.get("metadata") or {}, dep.get("spec") or {}, dep.get("status") or {}
    name, want = md.get("name", "?"), int(spec.get("replicas", 1))
    if int(st.get("observedGeneration", 0)) < int(md.get("generation", 1)):
        return f"deployment {name!r}: waiting for the rollout to be observed"
    if int(st.get("updatedReplicas", 0)) < want:
        return f"deployment {name!r}: {st.get('updatedReplicas', 0)} of {want} updated replicas are available"
    if int(st.get("replicas", 0)) > int(st.get("updatedReplicas", 0)):
        return f"deployment {name!r}: old replicas are pending termination"
    if int(st.get("availableReplicas", 0)) < int(st.get("updatedReplicas", 0)):
        return f"deployment {name!r}: {st.get('availableReplicas', 0)} of {want} updated replicas are available"
    available = [c for c in st.get("conditions") or [] if c.get("type") == "Available"]
    if not available or available[0].get("status") != "True":
        return f"deployment {name!r}: not Available yet"
    return ""


def wait_available(client: httpx.Client, names: list[str], timeout_s: float,
                   stop: Callable[[], bool] = lambda: False) -> None:
    """Wait until every Deployment in ``names`` (namespace shop) has rolled out; ApplyFailed after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    problems = ["not checked yet"]
    while time.monotonic() < deadline and not stop():
        r = client.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")
        if r.status_code == 200:
            deps = {d["metadata"]["name"]: d for d in r.json().get("items", [])}
            problems = [rollout_problem(deps[n]) if n in deps else f"deployment {n!r} not found" for n in names]
            problems = [p for p in problems if p]
            if not problems:
                return
        else:
            problems = [f"listing deployments: HTTP {r.status_code}: {_message(r)}"]
        time.sleep(0.5)
    if not stop():
        raise ApplyFailed(f"the shop did not roll out in {timeout_s:.0f}s: " + "; ".join(problems))


def pods(client: httpx.Client) -> list[PodInfo]:
    """The pods of namespace shop, by name."""
    r = client.get(f"/api/v1/namespaces/{NAMESPACE}/pods")
    if r.status_code != 200:
        raise ApplyFailed(f"listing pods: HTTP {r.status_code}: {_message(r)}")
    out = []
    for p in r.json().get("items", []):
        md, st = p.get("metadata") or {}, p.get("status") or {}
        out.append(PodInfo(str(md.get("name")), str((md.get("labels") or {}).get("app", "")), str(md.get("uid")),
                           str(st.get("phase", "")), str(st.get("podIP", ""))))
    return sorted(out, key=lambda p: p.name)


def deployment_names() -> list[str]:
    """The Deployments the shipped file declares."""
    return [str(o["metadata"]["name"]) for o in manifests() if o["kind"] == "Deployment"]
