"""Narrow read-only views of the API for other pillars, over the in-process ``KubeClient``.

Each class here matches a Protocol the consuming pillar owns (structural
typing, so kube imports neither): ``KubePodSource`` is the metrics pillar's
``PodSource`` (pod discovery for scraping), ``KubeWorkloads`` the UI's
``WorkloadsSource`` (the workloads pages). The composition root hands them
over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pitwall.kube.client import KubeClient
from pitwall.kube.errors import Gone, NotFoundError

__all__ = ["KubePodSource", "KubeWorkloads"]

Obj = dict[str, Any]

# The kinds the workloads pages show: name in the URL -> (apiVersion, kind).
WORKLOAD_KINDS: dict[str, tuple[str, str]] = {
    "deployment": ("apps/v1", "Deployment"),
    "replicaset": ("apps/v1", "ReplicaSet"),
    "pod": ("v1", "Pod"),
    "job": ("batch/v1", "Job"),
    "cronjob": ("batch/v1", "CronJob"),
    "horizontalpodautoscaler": ("autoscaling/v2", "HorizontalPodAutoscaler"),
    "service": ("v1", "Service"),
    "namespace": ("v1", "Namespace"),
}


class KubePodSource:
    """Pods and their changes, for ``kubernetes_sd_configs`` (role pod)."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def list_pods(self, namespace: str = "", label_selector: str | None = None,
                        field_selector: str | None = None) -> list[Obj]:
        """The current pods of ``namespace`` (all when empty) matching the selectors."""
        res = await self.client.list("v1", "Pod", namespace, label_selector=label_selector,
                                     field_selector=field_selector)
        return list(res.items)

    async def pod_changes(self) -> AsyncIterator[None]:
        """Yields after every pod change from now on; ends when the watch is too old (``Gone``)."""
        rv = (await self.client.list("v1", "Pod", limit=1)).resource_version
        try:
            async for ev in self.client.watch("v1", "Pod", resource_version=rv):
                if ev.type != "BOOKMARK":
                    yield None
        except Gone:
            return


class KubeWorkloads:
    """The few reads the UI's workloads pages make: list a kind, get one object, its events."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    @staticmethod
    def kinds() -> list[str]:
        """The kind names the pages accept in URLs (lower case: ``deployment``, ``pod``...)."""
        return list(WORKLOAD_KINDS)

    async def objects(self, kind: str, namespace: str = "") -> list[Obj]:
        """Objects of ``kind`` (a name of ``kinds()``) in ``namespace`` (all when empty); [] for a kind
        the API does not serve."""
        api_version, k = WORKLOAD_KINDS[kind]
        try:
            return list((await self.client.list(api_version, k, namespace)).items)
        except NotFoundError:
            return []

    async def object(self, kind: str, namespace: str, name: str) -> Obj | None:
        """One object, or None when it does not exist."""
        api_version, k = WORKLOAD_KINDS[kind]
        try:
            return await self.client.get(api_version, k, name, namespace)
        except NotFoundError:
            return None

    async def events(self, namespace: str = "", kind: str = "", name: str = "") -> list[Obj]:
        """core/v1 Events of ``namespace`` (all when empty), about one object when ``kind`` and ``name``
        are given; oldest first."""
        fields = []
        if kind:
            fields.append(f"involvedObject.kind={WORKLOAD_KINDS[kind][1] if kind in WORKLOAD_KINDS else kind}")
        if name:
            fields.append(f"involvedObject.name={name}")
        try:
            items = (await self.client.list("v1", "Event", namespace,
                                            field_selector=",".join(fields) or None)).items
        except NotFoundError:
            return []
        return sorted(items, key=_event_time)


def _event_time(e: Obj) -> str:
    return str(e.get("lastTimestamp") or e.get("eventTime") or (e.get("metadata") or {}).get("creationTimestamp")
               or "")
