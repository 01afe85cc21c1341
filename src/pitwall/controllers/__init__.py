"""Controllers with Kubernetes' semantics, reconciling objects of the Kubernetes API.

``loop`` holds the shared machinery (informers, work queue, runner,
leader-gated manager, Events); ``replicaset`` and ``deployment`` are the
workload controllers; ``wiring.build_controllers`` assembles them.
"""

from pitwall.controllers.loop import ControllerManager, ControllerRunner, Reconciler, record_event

__all__ = ["ControllerManager", "ControllerRunner", "Reconciler", "record_event"]
