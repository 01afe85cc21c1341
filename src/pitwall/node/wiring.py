"""Builds the node (the kubelet) over the Kubernetes API and the telemetry stores.

``NodePart`` follows the wiring contract of ``core.lifecycle.Part``: list it
after the kube part (the API must be started first) and after the parts
whose stores it appends to, so it stops before them. It has no routes of
its own: ``pods/log`` and ``metrics.k8s.io`` are served by the kube part's
router through the handlers the kubelet registers when it starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.kube import KubeAPI
from pitwall.logs import LogAppender
from pitwall.metrics import Appender
from pitwall.node.kubelet import Kubelet

__all__ = ["NodePart", "build_node", "build_node_part"]


def build_node(kube: KubeAPI, *, data_dir: Path, logs: LogAppender, metrics: Appender, **options: Any) -> Kubelet:
    """The kubelet for this machine: start it after ``kube`` (and the stores), stop it before them.

    ``options`` are ``Kubelet``'s keyword arguments (``node_name``, back-off constants, intervals).
    """
    return Kubelet(kube, data_dir=data_dir, logs=logs, metrics=metrics, **options)


@dataclass
class NodePart:
    """The node as a part of the server."""

    kubelet: Kubelet
    name: str = "node"

    def components(self) -> Sequence[Component]:
        return [self.kubelet]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return []

    async def reload(self, settings: Any) -> None:
        """Nothing to reload: the node's constants need a restart."""

    def register_metrics(self, metrics: SelfMetrics) -> None:
        k = self.kubelet
        metrics.add_gauges("pitwall_node_pods", "Pods this node runs.", lambda: float(len(k.workers)))
        metrics.add_gauges("pitwall_node_log_lines_dropped", "Container log lines the log store did not take.",
                           lambda: float(k.shipper.dropped))


def build_node_part(kube: KubeAPI, *, data_dir: Path, logs: LogAppender, metrics: Appender,
                    **options: Any) -> NodePart:
    """``build_node`` wrapped as a ``Part`` for ``server.py``."""
    return NodePart(build_node(kube, data_dir=data_dir, logs=logs, metrics=metrics, **options))
