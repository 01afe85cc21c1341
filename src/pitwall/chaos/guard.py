"""Guard rails every chaos experiment passes before it injects and while it runs, set per namespace.

A namespace opts in with its own labels and annotations (``kubectl label`` /
``kubectl annotate ns ...``), so the people who own a namespace set its
limits, and every chaos kind and every Schedule's spawn obeys them:

* ``chaos.pitwall.io/slo-guard: "<slo>[,<slo>...]"`` with
  ``chaos.pitwall.io/min-budget-remaining`` (a ratio, default ``0``: the
  budget not overspent) and ``chaos.pitwall.io/max-burn-rate`` (none by
  default): checked before injecting and on every reconcile while running
  (at most 5 s apart); crossing either halts the experiment at once (the
  pause annotation, so every fault is reverted) with a Warning event and a
  change event. An SLO the guard names that does not exist refuses the
  experiment (a guard that cannot be read is not a pass); an SLO without
  data yet does not stop it.
* ``chaos.pitwall.io/incident-services: "<service>[,<service>...]"``
  (PagerDuty services of pitwall's incidents, by name or id): an open
  (triggered or acknowledged) incident on one of them refuses new faults
  and halts running ones, like the SLO guard.
* label ``chaos.pitwall.io/protected: "true"``: experiments selecting pods
  there are refused.
* ``chaos.pitwall.io/max-blast-radius: "<n>"`` or ``"<p>%"``: at most that
  many of the namespace's live pods under chaos at once, counting every
  experiment's injected targets; an experiment that would go over is
  refused (and tried again later: the radius may free up).

Refusals leave nothing injected and say why in ``AllInjected``'s reason.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pitwall.chaos.model import API_VERSION, CHAOS_KINDS, INJECTED
from pitwall.kube import KubeClient, NotFoundError
from pitwall.slo import SLONotFound, SLOStatusQuery

__all__ = ["BLAST_RADIUS", "INCIDENT_SERVICES", "MAX_BURN", "MIN_BUDGET", "PROTECTED", "SLO_GUARD", "Guard",
           "OpenIncidents"]

Obj = dict[str, Any]
PROTECTED = "chaos.pitwall.io/protected"
BLAST_RADIUS = "chaos.pitwall.io/max-blast-radius"
SLO_GUARD = "chaos.pitwall.io/slo-guard"
MIN_BUDGET = "chaos.pitwall.io/min-budget-remaining"
MAX_BURN = "chaos.pitwall.io/max-burn-rate"
INCIDENT_SERVICES = "chaos.pitwall.io/incident-services"
# The open incidents (their numbers, "#12") of a PagerDuty service named or with that id.
OpenIncidents = Callable[[str], Awaitable[list[str]]]


def _pod_key(record_id: str) -> str:
    return "/".join(record_id.removeprefix("target:").split("/")[:2])


def namespaces_of(obj: Obj, records: Iterable[Obj]) -> list[str]:
    """The experiment's namespace and its targets'."""
    out = {str(obj["metadata"]["namespace"])}
    out |= {_pod_key(str(r["id"])).split("/")[0] for r in records}
    return sorted(out)


def _limit(text: str, total: int) -> int:
    t = text.strip()
    try:
        if t.endswith("%"):
            return math.floor(float(t[:-1]) * total / 100.0)
        return int(t)
    except ValueError:
        return 0  # an unreadable limit allows nothing: a guard that cannot be read is not a pass


class Guard:
    """The namespace guards (see the module doc); ``slo_status`` reads SLOs (none: SLO guards refuse)."""

    def __init__(self, client: KubeClient, slo_status: SLOStatusQuery | None = None,
                 open_incidents: OpenIncidents | None = None) -> None:
        self.client = client
        self.slo_status = slo_status
        self.open_incidents = open_incidents  # handed in once the incidents part exists (server.py)

    async def _namespace(self, name: str) -> Obj:
        try:
            return await self.client.get("v1", "Namespace", name)
        except NotFoundError:
            return {"metadata": {"name": name}}

    async def refuse(self, obj: Obj, records: list[Obj]) -> str | None:
        """Why the experiment may not inject into ``records`` (newly selected), or None."""
        for ns in namespaces_of(obj, records):
            meta = (await self._namespace(ns)).get("metadata") or {}
            if (meta.get("labels") or {}).get(PROTECTED) == "true":
                return f"GuardRefused: namespace {ns} is labelled {PROTECTED}=true"
            limit = (meta.get("annotations") or {}).get(BLAST_RADIUS)
            if limit is not None:
                why = await self._blast_radius(obj, records, ns, str(limit))
                if why:
                    return why
        return await self.halt_reason(obj, records)

    async def _blast_radius(self, obj: Obj, records: list[Obj], ns: str, limit: str) -> str | None:
        pods = [p for p in (await self.client.list("v1", "Pod", ns)).items
                if not p["metadata"].get("deletionTimestamp")]
        allowed = _limit(limit, len(pods))
        uid = obj["metadata"].get("uid")
        busy: set[str] = set()
        for kind in CHAOS_KINDS:
            for other in (await self.client.list(API_VERSION, kind, ns)).items:
                if other["metadata"].get("uid") == uid:
                    continue
                recs = ((other.get("status") or {}).get("experiment") or {}).get("containerRecords") or []
                busy |= {_pod_key(r["id"]) for r in recs if r.get("phase") == INJECTED}
        mine = {_pod_key(str(r["id"])) for r in records if _pod_key(str(r["id"])).startswith(f"{ns}/")}
        total = len(busy | mine)
        if total > allowed:
            return (f"GuardRefused: {total} pods of namespace {ns} would be under chaos, over its "
                    f"{BLAST_RADIUS} of {limit} ({allowed} of {len(pods)} pods)")
        return None

    async def halt_reason(self, obj: Obj, records: Iterable[Obj]) -> str | None:
        """Why a running experiment must stop now (an SLO guard crossed, an incident open), or None."""
        for ns in namespaces_of(obj, records):
            ann = ((await self._namespace(ns)).get("metadata") or {}).get("annotations") or {}
            why = await self._incidents(ns, str(ann.get(INCIDENT_SERVICES) or ""))
            if why:
                return why
            names = [n.strip() for n in str(ann.get(SLO_GUARD) or "").split(",") if n.strip()]
            if not names:
                continue
            try:
                floor = float(ann.get(MIN_BUDGET) or 0.0)
                burn = float(ann[MAX_BURN]) if ann.get(MAX_BURN) else None
            except ValueError:
                return f"GuardRefused: namespace {ns}: {MIN_BUDGET} / {MAX_BURN} must be numbers"
            for name in names:
                why = await self._slo(ns, name, floor, burn)
                if why:
                    return why
        return None

    async def _incidents(self, ns: str, services: str) -> str | None:
        for name in (n.strip() for n in services.split(",") if n.strip()):
            if self.open_incidents is None:
                return f"GuardRefused: namespace {ns} guards on incidents of {name}, but this server has no incidents"
            open_ = await self.open_incidents(name)
            if open_:
                return f"GuardHalted: incident {', '.join(open_[:5])} is open on service {name} (namespace {ns})"
        return None

    async def _slo(self, ns: str, name: str, floor: float, burn: float | None) -> str | None:
        if self.slo_status is None:
            return f"GuardRefused: namespace {ns} guards on SLO {name}, but this server has no SLO status"
        try:
            st = await self.slo_status(name)
        except SLONotFound:
            return f"GuardRefused: namespace {ns} guards on SLO {name}, which does not exist"
        if st.budget_remaining is not None and st.budget_remaining < floor:
            return (f"GuardHalted: SLO {name} has {st.budget_remaining:.3g} of its error budget left, under the "
                    f"floor {floor:g} of namespace {ns}")
        if burn is not None and st.burn_rate_now is not None and st.burn_rate_now > burn:
            return (f"GuardHalted: SLO {name} burns its error budget at {st.burn_rate_now:.3g}x, over the "
                    f"{burn:g}x of namespace {ns}")
        return None
