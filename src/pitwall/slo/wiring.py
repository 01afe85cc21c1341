"""Builds the SLO capability as a ``core.lifecycle.Part``: the PrometheusServiceLevel CRD built into the
Kubernetes API, its controller (leader-gated with the etcd state backend), and the error budget API."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from pitwall.controllers import ControllerManager, ControllerRunner
from pitwall.core.errors import PitwallError
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.core.vendored import yaml_documents
from pitwall.incidents import ChangeSink
from pitwall.kube import KubeAPI, KubeClient
from pitwall.metrics import InstantQuery
from pitwall.slo.api import slo_router
from pitwall.slo.budget import ScalarQuery, SLOService, SLOStatus
from pitwall.slo.controller import API_VERSION, KIND, RuleSink, SLOController
from pitwall.slo.model import SLO
from pitwall.slo.spec import parse_k8s_object
from pitwall.storage.revstore.election import Election

__all__ = ["SLOPart", "build_slo_part", "builtin_crds", "instant_values"]

log = logging.getLogger(__name__)


def builtin_crds() -> list[dict[str, Any]]:
    """The CRDs vendored from Sloth (see ``crds/PROVENANCE.md``)."""
    out: list[dict[str, Any]] = []
    for f in sorted(resources.files("pitwall.slo").joinpath("crds").iterdir(), key=lambda p: p.name):
        if f.name.endswith(".yaml"):
            out.extend(copy.deepcopy(d) for d in yaml_documents("pitwall.slo", "crds", f.name))
    return out


def instant_values(instant: InstantQuery, tenant: str = "default") -> ScalarQuery:
    """The metrics pillar's instant query as the budget's ``ScalarQuery`` (values of a vector or scalar)."""

    def run(expr: str, at_ms: int) -> list[float]:
        res = instant(expr, at_ms, tenant)
        if res.result_type not in ("vector", "scalar"):
            return []
        return [float(v[-1]) for v in res.values if len(v)]

    return run


def kube_source(client: KubeClient) -> Callable[[], Any]:
    """Every valid PrometheusServiceLevel's SLOs (invalid ones are reported by the controller)."""

    async def source() -> list[tuple[SLO, str]]:
        out: list[tuple[SLO, str]] = []
        for obj in (await client.list(API_VERSION, KIND)).items:
            m = obj.get("metadata") or {}
            try:
                group = parse_k8s_object(obj)
            except PitwallError:
                continue
            out.extend((s, f"{m.get('namespace', '')}/{m.get('name', '')}") for s in group.slos)
        return out

    return source


@dataclass
class SLOPart:
    """SLOs as a part of the server; ``slo_status`` is the gate other capabilities are handed."""

    service: SLOService
    manager: ControllerManager | None = None
    name: str = "slo"

    async def slo_status(self, name: str) -> SLOStatus:
        return await self.service.slo_status(name)

    def components(self) -> Sequence[Component]:
        return [self.manager] if self.manager is not None else []

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return [Mount(slo_router(self.service))]

    async def reload(self, settings: Any) -> None:
        """Nothing to reload: SLOs come from Kubernetes objects."""

    def register_metrics(self, metrics: SelfMetrics) -> None:
        m = self.manager
        if m is None:
            return
        metrics.add_gauges("pitwall_slo_controller_reconciles", "PrometheusServiceLevel reconciles run.",
                           lambda: float(sum(r.reconciles for r in m.runners)))
        metrics.add_gauges("pitwall_slo_controller_reconcile_errors", "PrometheusServiceLevel reconciles that failed.",
                           lambda: float(sum(r.errors for r in m.runners)))


def build_slo_part(kube: KubeAPI, *, rules: RuleSink, instant: InstantQuery, changes: ChangeSink,
                   election: Election | None = None) -> SLOPart:
    """The part over ``kube`` (call before ``kube`` starts: CRDs go in). Its controller runs while
    ``election`` (the controllers' one, when servers share an etcd) is won; generated rule groups go to
    ``rules``, each new generation is a change event on ``changes``."""
    query = instant_values(instant)
    kube.add_builtin_crds(builtin_crds())
    controller = SLOController(kube.client, rules, changes=changes)
    manager = ControllerManager([ControllerRunner(kube.client, controller, workers=1)], election=election)
    return SLOPart(SLOService(kube_source(kube.client), query), manager)
