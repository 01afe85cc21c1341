"""Builds the node (the kubelet) over the Kubernetes API and the telemetry stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pitwall.kube import KubeAPI
from pitwall.logs import LogAppender
from pitwall.metrics import Appender
from pitwall.node.kubelet import Kubelet

__all__ = ["build_node"]


def build_node(kube: KubeAPI, *, data_dir: Path, logs: LogAppender, metrics: Appender, **options: Any) -> Kubelet:
    """The kubelet for this machine: start it after ``kube`` (and the stores), stop it before them.

    ``options`` are ``Kubelet``'s keyword arguments (``node_name``, back-off constants, intervals).
    """
    return Kubelet(kube, data_dir=data_dir, logs=logs, metrics=metrics, **options)
