"""Builds the incidents capability from Settings: a ``core.lifecycle.Part`` for ``server.py``.

The part writes the ``incidents:`` objects into the state store at start and
on reload, runs the escalation loop (every ``incidents.tick_interval``: due
escalations, acknowledgement and auto-resolve timeouts, queued pages) under a
supervisor, runs the ITSM ticket sync (``itsm.ItsmSync``) when
``incidents.itsm`` configures Jira or ServiceNow (its settings apply at
start, not on reload), and mounts the Events API (``/v2/...``), the REST
API (``/pagerduty/...``) and the pages behind the acknowledge/resolve links
in notifications (``/incident-actions/...``, ``links_api``). It shares the revisioned store the Kubernetes API runs
on; with the control plane turned off it is handed a store of its own to
start and stop (``own_store``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from pitwall.core.lifecycle import Component, Mount
from pitwall.core.limits import InflightBudget
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.core.tasks import Supervisor
from pitwall.incidents.api import RestDeps, incidents_router
from pitwall.incidents.api_config import config_router
from pitwall.incidents.changes import ChangeLog
from pitwall.incidents.events_api import EventsLimiter, events_router
from pitwall.incidents.itsm import ItsmSync, build_systems
from pitwall.incidents.links import ActionLinks
from pitwall.incidents.links_api import action_links_router
from pitwall.incidents.service import IncidentService, Pager
from pitwall.incidents.settings import IncidentsSettings
from pitwall.incidents.store import IncidentStore
from pitwall.storage.revstore import RevStore
from pitwall.storage.revstore.election import Election

__all__ = ["EscalationLoop", "IncidentsPart", "apply_settings", "build_incidents_part"]

log = logging.getLogger(__name__)


async def apply_settings(store: IncidentStore, settings: IncidentsSettings) -> None:
    """Write the configured objects (users first: the others refer to them)."""
    for group in (settings.users, settings.schedules, settings.escalation_policies, settings.services):
        for obj in group:
            await store.put(obj)


class EscalationLoop:
    """Applies the settings at start, then ticks the service on the clock."""

    name = "incidents"

    def __init__(self, service: IncidentService, settings: IncidentsSettings) -> None:
        self.service = service
        self.settings = settings
        self.tasks = Supervisor("incidents")
        self.ticks = 0

    async def start(self) -> None:
        await apply_settings(self.service.store, self.settings)
        await self.service.flush_all()  # pages decided before a restart and not yet claimed
        self.tasks.spawn(self._run(), name="escalation")

    async def stop(self) -> None:
        await self.tasks.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_interval / 1000)
            try:
                await self.service.tick()
                self.ticks += 1
            except Exception:
                # One bad tick (a store hiccup) must not end escalation for every incident.
                log.exception("escalation tick failed")


@dataclass
class IncidentsPart:
    service: IncidentService
    loop: EscalationLoop
    rest: RestDeps
    limiter: EventsLimiter
    budget: InflightBudget
    own_store: RevStore | None = None
    links: ActionLinks | None = None
    itsm: ItsmSync | None = None  # when incidents.itsm configures a ticketing system
    name: str = "incidents"

    def components(self) -> Sequence[Component]:
        own: list[Component] = [self.own_store] if self.own_store is not None else []  # type: ignore[list-item]
        return [*own, self.loop, *([self.itsm] if self.itsm is not None else [])]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        # Incidents are the whole server's, not one tenant's.
        return [Mount(events_router(self.service, self.limiter, self.budget), server_wide=True),
                Mount(incidents_router(self.rest), server_wide=True),
                Mount(config_router(self.rest), server_wide=True),
                *([Mount(action_links_router(self.service, self.links), server_wide=True)] if self.links else [])]

    async def reload(self, settings: Any) -> None:
        new: IncidentsSettings = settings.incidents
        await apply_settings(self.service.store, new)
        self.loop.settings = new
        self.limiter.per_minute = new.events_per_minute
        if self.links is not None:
            self.links.ttl_ms = new.action_link_ttl  # links sent from now on; those out keep their expiry

    def register_metrics(self, metrics: SelfMetrics) -> None:
        metrics.add_gauges("pitwall_incidents_escalation_ticks", "Escalation loop passes since start.",
                           lambda: float(self.loop.ticks))
        if self.itsm is not None:
            metrics.registry.register(_ItsmFailures(self.itsm))


class _ItsmFailures(Collector):
    """``pitwall_itsm_sync_failures_total{system}``: failed requests to each ticketing system since start."""

    def __init__(self, sync: ItsmSync) -> None:
        self.sync = sync

    def collect(self) -> Iterator[CounterMetricFamily]:
        fam = CounterMetricFamily("pitwall_itsm_sync_failures", "Failed ITSM ticket syncs by system.",
                                  labels=["system"])
        for system, n in sorted(self.sync.failures.items()):
            fam.add_metric([system], float(n))
        yield fam


def build_incidents_part(settings: Any, store: RevStore, budget: InflightBudget, *, pager: Pager | None,
                         own_store: bool = False) -> IncidentsPart:
    """The part for ``pitwall.config.Settings`` over ``store`` (started by the part when ``own_store``)."""
    cfg: IncidentsSettings = settings.incidents
    base = cfg.external_url or settings.notifications.external_url or f"http://{settings.listen}"
    changes = ChangeLog(store)
    incidents = IncidentStore(store)
    links = ActionLinks(incidents, base, cfg.action_link_ttl)
    service = IncidentService(incidents, changes, pager=pager, base_url=base, links=links)
    rest = RestDeps(service, changes, budget, external_url=cfg.external_url)
    itsm = None
    if cfg.itsm.enabled:
        election = None
        if settings.state.backend in ("etcd", "postgres"):  # servers sharing the store: one of them syncs
            identity = f"{socket.gethostname()}/{os.getpid()}/{settings.listen}"
            election = Election(store, "incidents-itsm", identity, ttl_s=settings.state.election_ttl / 1000)
        itsm = ItsmSync(incidents, cfg.itsm, build_systems(cfg.itsm), base_url=base, election=election)
    return IncidentsPart(service, EscalationLoop(service, cfg), rest, EventsLimiter(cfg.events_per_minute),
                         budget, own_store=store if own_store else None, links=links, itsm=itsm)
