"""Builds the service proxy over the Kubernetes API.

The composition root starts the proxy after ``KubeAPI`` (it lists and
watches through ``kube.client``) and stops it before.
"""

from __future__ import annotations

from pitwall.kube import KubeAPI
from pitwall.traffic.proxy import ServiceProxy

__all__ = ["build_proxy"]


def build_proxy(kube: KubeAPI, *, drain_timeout_s: float = 30.0, connect_budget_s: float = 5.0) -> ServiceProxy:
    """The service proxy for every Service ``kube`` serves: a Component, its loops under ``.tasks``."""
    return ServiceProxy(kube.client, drain_timeout_s=drain_timeout_s, connect_budget_s=connect_budget_s)
