"""Builds the chaos pillar: Chaos Mesh's CRDs, a controller per kind plus Schedules (leader-gated like the
other controllers), the startup sweep of faults left by a previous run, and the halt-all API."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from pitwall.chaos.api import chaos_router
from pitwall.chaos.controller import ChaosReconciler
from pitwall.chaos.crds import chaos_mesh_crds
from pitwall.chaos.events import ChaosReport
from pitwall.chaos.faults import NodeHooks, sweep_stressors
from pitwall.chaos.guard import Guard
from pitwall.chaos.meshsync import MeshFaultSync
from pitwall.chaos.model import API_VERSION, CHAOS_KINDS
from pitwall.chaos.monkey import ChaosMonkey
from pitwall.chaos.resilience import ResilienceReporter, SloBudgets
from pitwall.chaos.schedule import ScheduleReconciler
from pitwall.chaos.settings import MonkeySettings
from pitwall.chaos.statuscheck import StatusCheckReconciler
from pitwall.chaos.workflow import WorkflowNodeReconciler, WorkflowReconciler
from pitwall.controllers import ControllerManager, ControllerRunner
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.incidents import ChangeSink
from pitwall.kube import KubeAPI, KubeClient, NotFoundError
from pitwall.metrics import Appender, RangeQuery
from pitwall.slo import SLOStatusQuery
from pitwall.storage.revstore import RevStore
from pitwall.storage.revstore.election import Election
from pitwall.traffic import FaultTable

__all__ = ["ChaosPart", "build_chaos_part", "build_chaos_runners"]


def build_chaos_runners(client: KubeClient, *, node: NodeHooks | None, store: RevStore,
                        report: ChaosReport, mesh: FaultTable | None = None,
                        slo_status: SLOStatusQuery | None = None, guard: Guard | None = None) -> list[ControllerRunner]:
    """A runner per chaos kind, one for Schedules, Workflows, WorkflowNodes and StatusChecks (start them after
    the API); HTTPChaos and NetworkChaos
    go into ``mesh``, the service proxy's fault table; the namespaces' guard rails (``guard``, else one over
    ``slo_status``) are checked before and while injecting."""
    guard = guard or Guard(client, slo_status)
    runners = [ControllerRunner(client, ChaosReconciler(k, client, node=node, store=store, report=report, mesh=mesh,
                                                        guard=guard), workers=2, resync_s=30.0) for k in CHAOS_KINDS]
    runners.append(ControllerRunner(client, ScheduleReconciler(client, report), workers=1, resync_s=30.0))
    runners.append(ControllerRunner(client, WorkflowReconciler(client, report), workers=1, resync_s=30.0))
    runners.append(ControllerRunner(client, WorkflowNodeReconciler(client, node), workers=2, resync_s=30.0))
    # an execution holds a worker for up to its timeout: a few, so one slow target does not stall the others
    runners.append(ControllerRunner(client, StatusCheckReconciler(client), workers=4, resync_s=30.0))
    return runners


class _Sweep:
    """On start, before the controllers: kill stressors whose experiment is gone (deleted while pitwall was
    down); faults of experiments that still exist are reconciled by their controller."""

    name = "chaos-sweep"

    def __init__(self, client: KubeClient, store: RevStore) -> None:
        self.client = client
        self.store = store
        self.removed = 0

    async def _exists(self, ns: str, name: str) -> bool:
        try:
            await self.client.get(API_VERSION, "StressChaos", name, ns)
        except NotFoundError:
            return False
        return True

    async def start(self) -> None:
        self.removed = await sweep_stressors(self.store, self._exists)

    async def stop(self) -> None:
        return None


class _Counters(Collector):
    def __init__(self, report: ChaosReport) -> None:
        self.report = report

    def collect(self):  # type: ignore[no-untyped-def]
        r = self.report
        for name, doc, counter in (("pitwall_chaos_injections", "Faults injected, by kind and action.", r.injections),
                                   ("pitwall_chaos_recoveries", "Faults reverted, by kind and action.", r.recoveries),
                                   ("pitwall_chaos_failures", "Fault applies/recoveries that failed.", r.failures)):
            fam = CounterMetricFamily(name, doc, labels=["kind", "action"])
            for (kind, action), n in sorted(counter.items()):
                fam.add_metric([kind, action], float(n))
            yield fam
        runs = CounterMetricFamily("pitwall_chaos_runs", "Chaos Toolkit runs reported, by status.",
                                   labels=["status"])
        for status, n in sorted(r.runs.items()):
            runs.add_metric([status], float(n))
        yield runs
        yield CounterMetricFamily("pitwall_chaos_halts", "Halt-all requests.", value=float(r.halts))


@dataclass
class ChaosPart:
    """The chaos pillar as a part of the server (after the node and the controllers)."""

    client: KubeClient
    store: RevStore
    report: ChaosReport
    manager: ControllerManager
    name: str = "chaos"
    mesh_sync: MeshFaultSync | None = None  # servers sharing an etcd: the leader's mesh faults, mirrored
    guard: Guard | None = None  # the namespaces' guard rails (its incident query is set by server.py)
    monkey: ChaosMonkey | None = None  # Chaos Monkey's schedule (its outage checker is set by server.py)
    resilience: ResilienceReporter = field(default_factory=ResilienceReporter)
    sweep: _Sweep = field(init=False)

    def __post_init__(self) -> None:
        self.sweep = _Sweep(self.client, self.store)

    def components(self) -> Sequence[Component]:
        extra = [c for c in (self.mesh_sync, self.monkey) if c is not None]
        return [self.sweep, self.manager, *extra]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return [Mount(chaos_router(self.client, self.report, self.resilience), server_wide=True)]

    async def reload(self, settings: Any) -> None:
        """Nothing to reload."""

    def register_metrics(self, metrics: SelfMetrics) -> None:
        metrics.registry.register(_Counters(self.report))


def build_chaos_part(kube: KubeAPI, *, node: NodeHooks | None, changes: ChangeSink | None,
                     appender: Appender | None = None, election: Election | None = None,
                     mesh: FaultTable | None = None, slo_status: SLOStatusQuery | None = None,
                     monkey: MonkeySettings | None = None, range_query: RangeQuery | None = None,
                     slo_budgets: SloBudgets | None = None) -> ChaosPart:
    """Install Chaos Mesh's CRDs in ``kube`` (call before it starts) and build the controllers over it,
    injecting through ``node`` (the kubelet) and ``mesh`` (the service proxy's fault table), reporting to
    ``changes`` and ``appender``; with ``election`` (the controllers'), they run only on the leader. The
    namespaces' SLO guards read ``slo_status``; with ``monkey`` enabled, Chaos Monkey's schedule runs on the leader.
    Resilience reports read the target's signals through ``range_query`` and its SLOs' budgets through
    ``slo_budgets``."""
    kube.add_builtin_crds(chaos_mesh_crds())
    report = ChaosReport(changes, appender)
    guard = Guard(kube.client, slo_status)
    runners = build_chaos_runners(kube.client, node=node, store=kube.store, report=report, mesh=mesh, guard=guard)
    manager = ControllerManager(runners, election=election)
    # with an election, other servers serve the cluster IPs too: they mirror the leader's mesh faults
    sync = MeshFaultSync(kube.client, mesh, lambda: manager.leading) if mesh is not None and election is not None else None
    cm = ChaosMonkey(kube.client, kube.store, monkey, changes, leading=lambda: manager.leading) \
        if monkey is not None and monkey.enabled else None
    return ChaosPart(kube.client, kube.store, report, manager, mesh_sync=sync, guard=guard, monkey=cm,
                     resilience=ResilienceReporter(range_query, slo_budgets))
