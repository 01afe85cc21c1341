"""Builds pitwall's controllers over the Kubernetes API: one ``ControllerManager``, gated by an election.

Every controller is a ``Reconciler`` registered in ``RECONCILERS`` (a
factory from the API's client to the reconciler) with its number of
workers; the composition root calls ``build_controllers`` and adds the
manager to the kube part's components, after the API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pitwall.controllers.deployment import DeploymentController
from pitwall.controllers.loop import ControllerManager, ControllerRunner, Reconciler
from pitwall.controllers.replicaset import ReplicaSetController
from pitwall.kube import KubeAPI, KubeClient
from pitwall.storage.revstore.election import Election

__all__ = ["RECONCILERS", "Registration", "build_controllers"]


@dataclass(frozen=True)
class Registration:
    """A controller to run: how to build its reconciler, and with how many workers."""

    make: Callable[[KubeClient], Reconciler]
    workers: int = 2
    resync_s: float = 300.0


# Add a controller here (the endpoints controller, Jobs, HPAs...): one line each.
RECONCILERS: list[Registration] = [
    Registration(ReplicaSetController),
    Registration(DeploymentController),
]


def build_controllers(kube: KubeAPI, *, election: Election | None,
                      extra: list[Registration] | None = None) -> ControllerManager:
    """Every registered controller (and ``extra``) over ``kube.client``, run while ``election`` is won
    (always without one). Start it after ``kube``; start ``election`` too (the manager only follows it)."""
    runners = [ControllerRunner(kube.client, reg.make(kube.client), workers=reg.workers, resync_s=reg.resync_s)
               for reg in [*RECONCILERS, *(extra or [])]]
    return ControllerManager(runners, election=election)
