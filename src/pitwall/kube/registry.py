"""What the API serves: one ``ResourceType`` per kind, built in or from a CRD.

A resource type names its group/version/kind, plural and singular, short
names, whether it is namespaced, its verbs and subresources, and where its
objects live in the revisioned store (etcd's layout: ``/registry/<storage>/
<namespace>/<name>``). ``Registry`` answers lookups by group/version/plural
(or kind) and changes when CRDs come and go; it knows resources, not what
they mean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BUILTIN", "STANDARD_VERBS", "Registry", "ResourceType"]

STANDARD_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = STANDARD_VERBS
    subresources: tuple[str, ...] = ()  # "status", "scale", "log"
    storage: str = ""  # path below /registry/ ("" -> plural, or <group>/<plural> for CRs)
    has_generation: bool = True
    definition: str = ""  # OpenAPI definition name of a built-in kind
    crd: dict[str, Any] | None = field(default=None, compare=False, hash=False)  # the CRD version entry
    crd_name: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        """The store prefix of every object of this resource (ends with ``/``)."""
        if self.storage:
            return f"/registry/{self.storage}/"
        if self.crd is not None:
            return f"/registry/{self.group}/{self.plural}/"
        return f"/registry/{self.plural}/"

    def key(self, namespace: str, name: str) -> str:
        if self.namespaced:
            return f"{self.prefix}{namespace}/{name}"
        return f"{self.prefix}{name}"

    def list_prefix(self, namespace: str) -> str:
        if self.namespaced and namespace:
            return f"{self.prefix}{namespace}/"
        return self.prefix

    @property
    def list_kind(self) -> str:
        return self.kind + "List"


def _b(group: str, version: str, kind: str, plural: str, namespaced: bool = True, **kw: Any) -> ResourceType:
    pkg = {"": "core", "events.k8s.io": "events", "discovery.k8s.io": "discovery",
           "apiextensions.k8s.io": "apiextensions"}.get(group, group.split(".")[0])
    if group == "apiextensions.k8s.io":
        definition = f"io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}.{kind}"
    else:
        definition = f"io.k8s.api.{pkg}.{version}.{kind}"
    return ResourceType(group=group, version=version, kind=kind, plural=plural, singular=kind.lower(),
                        namespaced=namespaced, definition=definition, **kw)


_ALL = ("all",)
_NS_VERBS = ("create", "delete", "get", "list", "patch", "update", "watch")

BUILTIN: tuple[ResourceType, ...] = (
    _b("", "v1", "Namespace", "namespaces", False, short_names=("ns",), verbs=_NS_VERBS,
       subresources=("status", "finalize"), has_generation=False),
    _b("", "v1", "Node", "nodes", False, short_names=("no",), subresources=("status",), storage="minions",
       has_generation=False),
    _b("", "v1", "Pod", "pods", short_names=("po",), categories=_ALL,
       subresources=("status", "log", "binding")),
    _b("", "v1", "Service", "services", short_names=("svc",), categories=_ALL, subresources=("status",),
       storage="services/specs", verbs=("create", "delete", "deletecollection", "get", "list", "patch",
                                        "update", "watch")),
    _b("", "v1", "Endpoints", "endpoints", short_names=("ep",), storage="services/endpoints",
       has_generation=False),
    _b("", "v1", "ConfigMap", "configmaps", short_names=("cm",), has_generation=False),
    _b("", "v1", "Secret", "secrets", has_generation=False),
    _b("", "v1", "ServiceAccount", "serviceaccounts", short_names=("sa",), subresources=("token",),
       has_generation=False),
    _b("", "v1", "Event", "events", short_names=("ev",), has_generation=False),
    _b("apps", "v1", "Deployment", "deployments", short_names=("deploy",), categories=_ALL,
       subresources=("status", "scale")),
    _b("apps", "v1", "ReplicaSet", "replicasets", short_names=("rs",), categories=_ALL,
       subresources=("status", "scale")),
    _b("apps", "v1", "StatefulSet", "statefulsets", short_names=("sts",), categories=_ALL,
       subresources=("status", "scale")),
    _b("batch", "v1", "Job", "jobs", categories=_ALL, subresources=("status",)),
    _b("batch", "v1", "CronJob", "cronjobs", short_names=("cj",), categories=_ALL, subresources=("status",)),
    _b("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", short_names=("hpa",),
       categories=_ALL, subresources=("status",)),
    _b("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", short_names=("hpa",),
       categories=_ALL, subresources=("status",)),  # a view of the v2 objects (convert.py)
    _b("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", has_generation=False),
    _b("coordination.k8s.io", "v1", "Lease", "leases", has_generation=False),
    _b("networking.k8s.io", "v1", "Ingress", "ingresses", short_names=("ing",), subresources=("status",)),
    _b("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False),
    _b("events.k8s.io", "v1", "Event", "events", short_names=("ev",), storage="events", has_generation=False),
    _b("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", False,
       verbs=("create",), has_generation=False),
    _b("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", False,
       verbs=("create",), has_generation=False),
    _b("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", False, verbs=("create",),
       has_generation=False),
    _b("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False, has_generation=False),
    _b("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False, has_generation=False),
    _b("rbac.authorization.k8s.io", "v1", "Role", "roles", has_generation=False),
    _b("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", has_generation=False),
    _b("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False,
       short_names=("crd", "crds"), categories=("api-extensions",), subresources=("status",),
       storage="apiextensions.k8s.io/customresourcedefinitions"),
)

# Groups in the order kube-apiserver lists them (preferred first); CRD groups follow.
_GROUP_ORDER = ("", "apps", "events.k8s.io", "authentication.k8s.io", "authorization.k8s.io", "autoscaling", "batch",
                "networking.k8s.io", "rbac.authorization.k8s.io", "discovery.k8s.io", "coordination.k8s.io", "apiextensions.k8s.io", "metrics.k8s.io")


class Registry:
    """The served resource types; CRD kinds are added and removed at run time."""

    def __init__(self, builtin: tuple[ResourceType, ...] = BUILTIN) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._listeners: list[Callable[[], None]] = []
        for rt in builtin:
            self._types[(rt.group, rt.version, rt.plural)] = rt

    def on_change(self, fn: Callable[[], None]) -> None:
        self._listeners.append(fn)

    def _changed(self) -> None:
        for fn in self._listeners:
            fn()

    def __iter__(self) -> Iterator[ResourceType]:
        return iter(list(self._types.values()))

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self._types.values():
            if rt.group == group and rt.version == version and rt.kind == kind:
                return rt
        return None

    def by_plural(self, group: str, plural: str) -> list[ResourceType]:
        return [rt for rt in self._types.values() if rt.group == group and rt.plural == plural]

    def groups(self) -> list[tuple[str, list[str]]]:
        """(group, versions, preferred first) for every group, in the apiserver's order."""
        seen: dict[str, list[str]] = {}
        for rt in self._types.values():
            vs = seen.setdefault(rt.group, [])
            if rt.version not in vs:
                vs.append(rt.version)
        order = {g: i for i, g in enumerate(_GROUP_ORDER)}
        out = sorted(seen.items(), key=lambda gv: (order.get(gv[0], len(order)), gv[0]))
        return [(g, sorted(vs, key=_version_priority)) for g, vs in out]

    def resources(self, group: str, version: str) -> list[ResourceType]:
        return sorted((rt for rt in self._types.values() if rt.group == group and rt.version == version),
                      key=lambda rt: rt.plural)

    def add_virtual(self, types: list[ResourceType]) -> None:
        """Serve kinds that are answered, not stored (metrics.k8s.io)."""
        for rt in types:
            self._types[(rt.group, rt.version, rt.plural)] = rt
        self._changed()

    def replace_crd(self, crd_name: str, types: list[ResourceType]) -> None:
        """Serve exactly ``types`` for the CRD ``crd_name`` (none: stop serving it)."""
        for k in [k for k, rt in self._types.items() if rt.crd_name == crd_name]:
            del self._types[k]
        for rt in types:
            existing = self._types.get((rt.group, rt.version, rt.plural))
            if existing is not None and existing.crd is None:
                continue  # a CRD never shadows a built-in kind
            self._types[(rt.group, rt.version, rt.plural)] = rt
        self._changed()


def _version_priority(v: str) -> tuple[int, int, int]:
    """Kubernetes' version order: GA > beta > alpha, higher numbers first."""
    import re

    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
    if not m:
        return (3, 0, 0)
    major = int(m.group(1))
    level = {"": 0, "beta": 1, "alpha": 2}[m.group(2) or ""]
    minor = int(m.group(3) or 0)
    return (level, -major, -minor)
