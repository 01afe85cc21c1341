"""Builds the releases capability as a ``core.lifecycle.Part``: Flagger's CRDs built into the Kubernetes API
and the Canary controller (leader-gated like the other controllers)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pitwall.controllers import ControllerManager, ControllerRunner
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.incidents import ChangeSink
from pitwall.kube import KubeAPI
from pitwall.metrics import InstantQuery
from pitwall.releases.checks import MetricContext
from pitwall.releases.controller import CanaryController
from pitwall.releases.crds import flagger_crds
from pitwall.releases.gates import Gates
from pitwall.slo import SLOStatusQuery
from pitwall.storage.revstore.election import Election

__all__ = ["ReleasesPart", "build_releases_part", "self_addresses"]


@dataclass
class ReleasesPart:
    """Releases as a part of the server (after the traffic part, whose mesh carries the canary's traffic)."""

    manager: ControllerManager
    controller: CanaryController
    name: str = "releases"

    def components(self) -> Sequence[Component]:
        return [self.manager]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return []

    async def reload(self, settings: Any) -> None:
        """Nothing to reload: Canaries are Kubernetes objects."""

    def register_metrics(self, metrics: SelfMetrics) -> None:
        m = self.manager
        metrics.add_gauges("pitwall_releases_reconciles", "Canary reconciles run.",
                           lambda: float(sum(r.reconciles for r in m.runners)))
        metrics.add_gauges("pitwall_releases_reconcile_errors", "Canary reconciles that failed (and were retried).",
                           lambda: float(sum(r.errors for r in m.runners)))


def self_addresses(listen: str) -> frozenset[str]:
    """The Prometheus addresses that name this server (a MetricTemplate's ``address`` queried in process)."""
    host, _, port = listen.rpartition(":")
    hosts = {host, "127.0.0.1", "localhost"} if host in ("", "0.0.0.0", "127.0.0.1", "localhost", "[::]") else {host}
    return frozenset(f"{scheme}://{h}:{port}" for h in hosts if h for scheme in ("http", "https"))


def build_releases_part(kube: KubeAPI, *, instant: InstantQuery | None, changes: ChangeSink | None,
                        listen: str = "", election: Election | None = None,
                        slo_status: SLOStatusQuery | None = None) -> ReleasesPart:
    """The part over ``kube`` (call before ``kube`` starts: Flagger's CRDs go in). Canaries' metrics are
    queried through ``instant``; every phase change is a change event on ``changes``; with ``election`` (the
    controllers' one) the controller runs only on the leader; promotion gates read ``slo_status`` (and the open
    incidents the composition root hands ``controller.gates`` once the incidents part exists)."""
    kube.add_builtin_crds(flagger_crds())
    ctx = MetricContext(instant=instant, client=kube.client, self_addresses=self_addresses(listen))
    controller = CanaryController(kube.client, metrics=ctx, changes=changes, gates=Gates(slo_status))
    manager = ControllerManager([ControllerRunner(kube.client, controller, workers=2, resync_s=30.0)],
                                election=election)
    return ReleasesPart(manager, controller)
