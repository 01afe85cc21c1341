"""Read-only view of the releases for the UI's releases pages: Canaries, their Events, the split the
VirtualService holds now, and the judge's last result, all read through the Kubernetes API."""

from __future__ import annotations

import json
from typing import Any

from pitwall.kube import KubeClient, NotFoundError
from pitwall.releases.abtest_kind import API_VERSION as ABTEST_API_VERSION
from pitwall.releases.abtest_kind import KIND as ABTEST
from pitwall.releases.model import API_VERSION, CANARY, CanaryView
from pitwall.releases.router import NET, routes_of
from pitwall.releases.verdicts import CONDITION, JUDGEMENT

__all__ = ["ReleasesConsole"]

Obj = dict[str, Any]


class ReleasesConsole:
    """The reads the releases pages make (it matches the UI's ``ReleasesSource``); writes nothing."""

    judged_condition = CONDITION

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    async def canaries(self, namespace: str = "") -> list[Obj]:
        """Every Canary of ``namespace`` (all when empty)."""
        try:
            return list((await self.client.list(API_VERSION, CANARY, namespace)).items)
        except NotFoundError:  # the CRD is not installed
            return []

    async def abtests(self) -> list[Obj]:
        """Every saved A/B experiment (``pitwall.dev/v1`` ABTest), in every namespace."""
        try:
            return list((await self.client.list(ABTEST_API_VERSION, ABTEST)).items)
        except NotFoundError:  # the CRD is not installed
            return []

    async def abtest(self, namespace: str, name: str) -> Obj | None:
        try:
            return await self.client.get(ABTEST_API_VERSION, ABTEST, name, namespace)
        except NotFoundError:
            return None

    async def canary(self, namespace: str, name: str) -> Obj | None:
        try:
            return await self.client.get(API_VERSION, CANARY, name, namespace)
        except NotFoundError:
            return None

    async def events(self, namespace: str, name: str) -> list[Obj]:
        """The Canary's core/v1 Events, oldest first."""
        sel = f"involvedObject.kind={CANARY},involvedObject.name={name}"
        try:
            items = (await self.client.list("v1", "Event", namespace, field_selector=sel)).items
        except NotFoundError:
            return []
        return sorted(items, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    async def split(self, canary: Obj) -> dict[str, Any] | None:
        """The traffic split the Canary's VirtualService holds now (primary and canary weights, hosts, whether
        mirrored), as the controller reads it; None when there is no VirtualService yet."""
        cd = CanaryView(canary)
        apex, primary, canary_host = cd.service_names()
        try:
            vs = await self.client.get(NET, "VirtualService", apex, cd.namespace)
        except NotFoundError:
            return None
        r = routes_of(cd, vs)
        return {"virtualService": apex, "primary": r.primary, "canary": r.canary, "mirrored": r.mirrored,
                "primaryHost": primary, "canaryHost": canary_host,
                "routes": len((vs.get("spec") or {}).get("http") or [])}

    @staticmethod
    def judgement(canary: Obj) -> dict[str, Any] | None:
        """The judge's last result (the ``releases.pitwall.dev/judgement`` annotation), or None."""
        raw = ((canary.get("metadata") or {}).get("annotations") or {}).get(JUDGEMENT)
        if not raw:
            return None
        try:
            doc = json.loads(raw)
        except ValueError:  # truncated past its limit: the Judged condition still explains it
            return None
        return doc if isinstance(doc, dict) else None
