"""Read-only view of the chaos pillar for the UI's chaos page, plus the one write it offers: halt-all,
the same call ``POST /api/chaos/v1/halt`` and ``pitwall chaos halt`` make."""

from __future__ import annotations

from typing import Any

from pitwall.chaos.api import halt_and_report
from pitwall.chaos.events import ChaosReport
from pitwall.chaos.model import API_VERSION, CHAOS_KINDS
from pitwall.chaos.resilience import ResilienceReporter
from pitwall.kube import KubeClient, NotFoundError

__all__ = ["EXPERIMENT_KINDS", "ChaosConsole"]

Obj = dict[str, Any]
# Everything the page lists: the fault kinds, then what drives them.
EXPERIMENT_KINDS: tuple[str, ...] = (*CHAOS_KINDS, "Schedule", "Workflow")


class ChaosConsole:
    """The reads the chaos page makes (it matches the UI's ``ChaosSource``) and the halt-all."""

    kinds = EXPERIMENT_KINDS

    def __init__(self, client: KubeClient, report: ChaosReport, resilience: ResilienceReporter | None = None) -> None:
        self.client = client
        self.report = report
        self.resilience = resilience or ResilienceReporter()

    async def experiments(self, namespace: str = "") -> list[Obj]:
        """Every chaos object, Schedule and Workflow of ``namespace`` (all when empty)."""
        out: list[Obj] = []
        for kind in EXPERIMENT_KINDS:
            try:
                out += (await self.client.list(API_VERSION, kind, namespace)).items
            except NotFoundError:  # the CRD is not installed
                continue
        return out

    async def experiment(self, kind: str, namespace: str, name: str) -> Obj | None:
        if kind not in EXPERIMENT_KINDS:
            return None
        try:
            return await self.client.get(API_VERSION, kind, name, namespace)
        except NotFoundError:
            return None

    async def events(self, namespace: str, kind: str, name: str) -> list[Obj]:
        """The object's core/v1 Events, oldest first."""
        sel = f"involvedObject.kind={kind},involvedObject.name={name}"
        try:
            items = (await self.client.list("v1", "Event", namespace, field_selector=sel)).items
        except NotFoundError:
            return []
        return sorted(items, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    async def resilience_report(self, obj: Obj, now: float) -> Obj:
        """The experiment's resilience report (``pitwall.chaos.resilience``)."""
        return await self.resilience.report(obj, now)

    async def halt(self, who: str) -> list[str]:
        """Pause every experiment (Gremlin's Halt); ``Kind ns/name`` of those newly paused."""
        return await halt_and_report(self.client, self.report, who)
