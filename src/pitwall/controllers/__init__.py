"""Controllers with Kubernetes' semantics, reconciling objects of the Kubernetes API.

``loop`` holds the shared machinery (informers, work queue, runner,
leader-gated manager, Events); ``replicaset`` and ``deployment`` are the
workload controllers; ``wiring`` assembles them (``build_controllers_part``
for the composition root, ``RECONCILERS`` to register one more);
``KubeStateMetrics`` writes the objects as kube-state-metrics series;
``Schedule`` (the cron parser) serves every pillar that runs things on a schedule.
"""

from pitwall.controllers.cron import CronError, Schedule, missed_times
from pitwall.controllers.kube_state_metrics import KubeStateMetrics
from pitwall.controllers.loop import ControllerManager, ControllerRunner, Reconciler, object_key, record_event
from pitwall.controllers.wiring import (
    ControllersPart,
    Registration,
    build_controllers,
    build_controllers_part,
)

__all__ = [
    "ControllerManager",
    "ControllerRunner",
    "ControllersPart",
    "CronError",
    "KubeStateMetrics",
    "Reconciler",
    "Registration",
    "Schedule",
    "build_controllers",
    "build_controllers_part",
    "missed_times",
    "object_key",
    "record_event",
]
