"""Builds the Kubernetes API from the revisioned store (what ``server.py`` calls)."""

from __future__ import annotations

from pitwall.kube.server import KubeAPI
from pitwall.kube.strategy import DEFAULT_SERVICE_CIDR
from pitwall.storage.revstore import RevStore

__all__ = ["build_kube"]


def build_kube(store: RevStore, *, service_cidr: str = DEFAULT_SERVICE_CIDR, server_address: str = "") -> KubeAPI:
    """The API server over ``store``: include ``kube.router()`` in the app, start/stop it after the store."""
    return KubeAPI(store, service_cidr=service_cidr, server_address=server_address)
