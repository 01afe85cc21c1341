"""Builds the web UI from the other pillars' public query interfaces.

The UI reads every signal through typed interfaces handed in here (a pillar
that is not wired shows as "not available"), never through the server's
component tree; ``UIPart`` follows the wiring contract of ``core.lifecycle.Part``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pitwall.alerting import NotificationPipeline, RuleManager
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.logs import LogsApiDeps
from pitwall.metrics import InstantQuery, Queryable, RangeQuery, TargetsSnapshot
from pitwall.pipelines import PipelineRunner
from pitwall.storage.state import StateStore
from pitwall.traces import TraceQuery
from pitwall.ui.alerts_view import AlertsView
from pitwall.ui.backups_view import BackupsSource
from pitwall.ui.chaos_view import ChaosSource
from pitwall.ui.config_view import ConfigSource
from pitwall.ui.dashboards import DashboardStore
from pitwall.ui.gateway_view import GatewaySource
from pitwall.ui.incidents_view import IncidentsSource
from pitwall.ui.logs_view import LogsView
from pitwall.ui.pipelines_view import RunnerPipelines
from pitwall.ui.queries import MetricsView
from pitwall.ui.releases_view import ChangesSource, ReleasesSource
from pitwall.ui.routes import STATIC, ui_router
from pitwall.ui.settings import UISettings
from pitwall.ui.slo_view import SLOSource
from pitwall.ui.status_view import StatusView
from pitwall.ui.traces_view import TracesView
from pitwall.ui.web import UIDeps
from pitwall.ui.workloads_view import WorkloadsSource

__all__ = ["UIPart", "build_ui", "missing_assets"]

log = logging.getLogger(__name__)


@dataclass
class UIPart:
    deps: UIDeps
    name: str = "ui"
    registry: Any = None  # the server's self-metrics registry, read by the status page
    config: Any = None  # the server's settings, shown redacted on the status page

    def components(self) -> Sequence[Component]:
        return []

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return [Mount(ui_router(self.deps))] if self.deps.settings.enabled else []

    async def reload(self, settings: Any) -> None:
        """Dashboards are provisioned afresh from ``ui.dashboards_dir`` (files are also re-read whenever
        they change); other UI settings need a restart."""
        ui = getattr(settings, "ui", settings)
        self.deps.dashboards.reload(getattr(ui, "dashboards_dir", self.deps.settings.dashboards_dir))
        if hasattr(settings, "ui"):
            self.config = settings

    def register_metrics(self, metrics: SelfMetrics) -> None:
        """The UI reports nothing; it reads the registry for the status page."""
        self.registry = metrics.registry


def build_ui(
    settings: UISettings,
    *,
    instant: InstantQuery,
    range_: RangeQuery,
    metrics: Queryable,
    targets: Callable[[], TargetsSnapshot],
    state: StateStore,
    traces: TraceQuery | None = None,
    logs: LogsApiDeps | None = None,
    notifications: NotificationPipeline | None = None,
    rules: Callable[[], RuleManager | None] | None = None,
    workloads: WorkloadsSource | None = None,
    incidents: IncidentsSource | None = None,
    slos: SLOSource | None = None,
    releases: ReleasesSource | None = None,
    chaos: ChaosSource | None = None,
    changes: ChangesSource | None = None,
    pipelines: PipelineRunner | None = None,
    backups: BackupsSource | None = None,
    config_store: ConfigSource | None = None,
    config: Any = None,
    gateway: GatewaySource | None = None,
) -> UIPart:
    """The UI over these interfaces; ``rules`` is read at each call (the manager may be rebuilt on reload);
    ``workloads`` (e.g. ``pitwall.kube.KubeWorkloads``) serves the workloads pages; ``incidents``
    (``pitwall.incidents.IncidentDesk``) and ``slos`` (``pitwall.slo.SLOService``) the incidents and SLO
    pages, ``releases`` (``pitwall.releases.ReleasesConsole``) the releases pages, ``chaos``
    (``pitwall.chaos.ChaosConsole``) the chaos page, ``changes`` (``pitwall.incidents.ChangeLog``) their
    change events, ``pipelines`` (the pipelines pillar's runner) the pipelines pages, ``backups`` (e.g.
    ``pitwall.backup.BackupReads``) the backups pages, ``config_store`` (``pitwall.registry.ConfigConsole``) the
    config pages; ``config`` (the server's settings) is shown,
    redacted, on the status page; ``gateway`` (the API gateway's ``GatewayPart``) gives the gateway pages its
    consumers and routes."""
    alerts = None
    if notifications is not None or rules is not None:
        alerts = AlertsView(notifications, rules or (lambda: None))
    deps = UIDeps(
        settings=settings,
        metrics=MetricsView(instant, range_, metrics.querier),
        targets=targets,
        traces=TracesView(traces) if traces is not None else None,
        logs=LogsView(logs) if logs is not None else None,
        alerts=alerts,
        dashboards=DashboardStore(settings.dashboards_dir, state),
        workloads=workloads,
        incidents=incidents,
        slos=slos,
        releases=releases,
        chaos=chaos,
        changes=changes,
        pipelines=RunnerPipelines(pipelines) if pipelines is not None else None,
        backups=backups,
        config=config_store,
        gateway=gateway,
    )
    part = UIPart(deps, config=config)
    deps.status = StatusView(lambda: part.registry, lambda: part.config)
    if settings.enabled:
        missing_assets()
    return part


VENDOR_ASSETS = ("htmx.min.js", "uPlot.iife.min.js", "uPlot.min.css")


def missing_assets() -> list[str]:
    """The shipped browser assets that are absent (a broken install), each logged as a warning."""
    missing = [n for n in VENDOR_ASSETS if not (STATIC / "vendor" / n).is_file()]
    for name in missing:
        log.warning("ui: the asset %s is missing from %s: charts and live updates will not work; reinstall "
                    "pitwall (or run `make assets` in a checkout)", name, STATIC / "vendor")
    return missing
