"""Builds pitwall's controllers over the Kubernetes API: one ``ControllerManager``, gated by an election.

Every controller is a ``Reconciler`` registered in ``RECONCILERS`` (a
factory from the API's client to the reconciler) with its number of
workers. ``build_controllers`` makes the manager; ``build_controllers_part``
wraps it, with the leader election when the state store is shared (etcd),
as a ``core.lifecycle.Part`` placed after the kube part in ``server.py``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pitwall.controllers.cronjob import CronJobController
from pitwall.controllers.deployment import DeploymentController
from pitwall.controllers.endpoints import EndpointsReconciler
from pitwall.controllers.hpa import SYNC_PERIOD_S, HorizontalPodAutoscalerController, pod_metrics_of
from pitwall.controllers.job import JobController
from pitwall.controllers.loop import ControllerManager, ControllerRunner, Reconciler
from pitwall.controllers.replicaset import ReplicaSetController
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.incidents import ChangeSink
from pitwall.kube import KubeAPI, KubeClient
from pitwall.storage.revstore.election import Election

if TYPE_CHECKING:
    from pitwall.metrics import InstantQuery

__all__ = ["RECONCILERS", "ControllersPart", "Registration", "build_controllers", "build_controllers_part"]

ELECTION_NAME = "controllers"


@dataclass(frozen=True)
class Registration:
    """A controller to run: how to build its reconciler, and with how many workers."""

    make: Callable[[KubeClient], Reconciler]
    workers: int = 2
    resync_s: float = 300.0


# Add a controller here (the endpoints controller, Jobs, HPAs...): one line each.
RECONCILERS: list[Registration] = [
    Registration(ReplicaSetController),
    Registration(EndpointsReconciler),
    Registration(JobController),
    Registration(CronJobController),
]


def _hpa(kube: KubeAPI, instant: InstantQuery | None) -> Registration:
    """The HorizontalPodAutoscaler controller: Resource metrics from the metrics API ``kube`` serves,
    Pods/Object/External ones through ``instant`` (PromQL; without it those report FailedGet*Metric)."""
    return Registration(lambda client: HorizontalPodAutoscalerController(
        client, instant=instant, pod_metrics=pod_metrics_of(kube)), resync_s=SYNC_PERIOD_S)


def _deployments(changes: ChangeSink | None) -> Registration:
    """The Deployment controller, reporting rollouts and rollbacks to ``changes`` (the incident timeline)."""
    return Registration(lambda client: DeploymentController(client, changes=changes))


def build_controllers(kube: KubeAPI, *, election: Election | None,
                      extra: list[Registration] | None = None,
                      instant: InstantQuery | None = None, changes: ChangeSink | None = None) -> ControllerManager:
    """Every registered controller, the Deployment one (reporting to ``changes``), the
    HorizontalPodAutoscaler one (reading metrics through ``instant``) and ``extra`` over ``kube.client``, run
    while ``election`` is won (always without one). Start it after ``kube``; start ``election`` too (the
    manager only follows it)."""
    runners = [ControllerRunner(kube.client, reg.make(kube.client), workers=reg.workers, resync_s=reg.resync_s)
               for reg in [*RECONCILERS, _deployments(changes), _hpa(kube, instant), *(extra or [])]]
    return ControllerManager(runners, election=election)


class _Campaign:
    """The election as a component: campaign on start, resign on stop."""

    name = "controllers-election"

    def __init__(self, election: Election) -> None:
        self.election = election

    async def start(self) -> None:
        await self.election.start()

    async def stop(self) -> None:
        await self.election.stop()


@dataclass
class ControllersPart:
    """The controllers as a part of the server: the election (if any) starts before the manager."""

    manager: ControllerManager
    election: Election | None = None
    name: str = "controllers"
    _campaign: list[Component] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.election is not None:
            self._campaign = [_Campaign(self.election)]

    def components(self) -> Sequence[Component]:
        return [*self._campaign, self.manager]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return []

    async def reload(self, settings: Any) -> None:
        """Nothing to reload: controllers and the election need a restart."""

    def register_metrics(self, metrics: SelfMetrics) -> None:
        m = self.manager
        metrics.add_gauges("pitwall_controllers_leading", "1 while this server runs the controllers.",
                           lambda: float(m.leading))
        metrics.add_gauges("pitwall_controllers_reconciles", "Reconciles run by every controller.",
                           lambda: float(sum(r.reconciles for r in m.runners)))
        metrics.add_gauges("pitwall_controllers_reconcile_errors", "Reconciles that failed (and were retried).",
                           lambda: float(sum(r.errors for r in m.runners)))
        metrics.add_gauges("pitwall_controllers_queue_depth", "Keys waiting in the controllers' work queues.",
                           lambda: float(sum(len(r.queue) for r in m.runners)))


def build_controllers_part(kube: KubeAPI, settings: Any, *, instant: InstantQuery | None = None,
                           changes: ChangeSink | None = None) -> ControllersPart:
    """The controllers over ``kube`` for ``pitwall.config.Settings``: with the etcd or postgres backend, several
    servers may share the store, so they run only on the leader of an election on it (lease ``state.election_ttl``).
    ``instant`` (the metrics part's) answers the HPAs' Pods/Object/External metrics."""
    election: Election | None = None
    if settings.state.backend in ("etcd", "postgres"):  # a store several servers may share
        identity = f"{socket.gethostname()}/{os.getpid()}/{settings.listen}"
        election = Election(kube.store, ELECTION_NAME, identity, ttl_s=settings.state.election_ttl / 1000)
    return ControllersPart(build_controllers(kube, election=election, instant=instant, changes=changes), election)
