"""Builds the Kubernetes API and the revisioned store under it from Settings.

``KubePart`` follows the wiring contract of ``core.lifecycle.Part``: the
store starts before the API and stops after it. Its routes must be mounted
after the Prometheus API's (both serve below ``/api/v1``): the parts' order
in ``server.py`` sees to that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.kube.encryption import KEY_ENV, Encryption, load_encryption, local_encryption
from pitwall.kube.server import KubeAPI
from pitwall.storage.revstore import RevStore
from pitwall.storage.revstore.sqlite import SqliteRevStore

if TYPE_CHECKING:
    from pitwall.storage.revstore.etcd import EtcdRevStore
    from pitwall.storage.revstore.postgres import PostgresRevStore

__all__ = ["KubePart", "build_encryption", "build_kube", "build_kube_part", "build_revstore"]

log = logging.getLogger(__name__)


def build_kube(store: RevStore, *, service_cidr: str = "", server_address: str = "",
               sa_key_path: Path | None = None, encryption: Encryption | None = None,
               watch_cache: bool = True) -> KubeAPI:
    """The API server over ``store``: include ``kube.router()`` in the app, start/stop it after the store.
    ``sa_key_path``: the key signing ServiceAccount tokens (created if absent; None: in memory).
    ``encryption``: what is sealed at rest (``build_encryption``; None: nothing).
    ``watch_cache``: serve lists and watches from memory (``kube/watchcache.py``)."""
    return KubeAPI(store, service_cidr=service_cidr, server_address=server_address, sa_key_path=sa_key_path,
                   encryption=encryption, watch_cache=watch_cache)


def build_encryption(kube: Any, data_dir: Path, backend: str = "sqlite") -> Encryption:
    """Encryption at rest from ``kube`` (``pitwall.config.KubeSettings``): its ``encryption_config`` file, else
    Secrets sealed with aesgcm under ``$PITWALL_SECRETS_KEY`` or ``data_dir/secrets.key`` (made once)."""
    if kube.encryption_config is not None:
        return load_encryption(kube.encryption_config)
    enc = local_encryption(data_dir)
    if backend != "sqlite" and enc.source != KEY_ENV:
        # servers sharing a store each made their own key: a Secret one writes, the others cannot read
        log.warning("state.backend %s is shared, but Secrets are encrypted with this server's own key (%s): "
                    "give every server the same PITWALL_SECRETS_KEY or kube.encryption_config", backend, enc.source)
    return enc


def build_revstore(state: Any, data_dir: Path) -> SqliteRevStore | EtcdRevStore | PostgresRevStore:
    """The store ``state`` (``pitwall.config.StateSettings``) names: SQLite in ``data_dir``, an etcd
    cluster or a PostgreSQL database."""
    every = state.compact_interval / 1000 or None  # 0: never compact
    # the other backends' clients (psycopg: 78 modules, 9 MiB) load only when configured
    if state.backend == "etcd":
        from pitwall.storage.revstore.etcd import EtcdRevStore

        return EtcdRevStore(list(state.endpoints), compact_interval_s=every)
    if state.backend == "postgres":
        from pitwall.storage.revstore.postgres import PostgresRevStore

        return PostgresRevStore(state.dsn, compact_interval_s=every)
    return SqliteRevStore(data_dir / "revstore.db", compact_interval_s=every)


@dataclass
class KubePart:
    store: SqliteRevStore | EtcdRevStore | PostgresRevStore
    api: KubeAPI
    name: str = "kube"

    def components(self) -> Sequence[Component]:
        return [self.store, self.api]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        # Per tenant as far as core.tenancy goes: the API itself refuses tokens bound to other tenants.
        return [Mount(self.api.router())]

    async def reload(self, settings: Any) -> None:
        """The store and the API's address need a restart."""

    def register_metrics(self, metrics: SelfMetrics) -> None:
        metrics.add_gauges("pitwall_kube_watches", "Open watch streams of the Kubernetes API.",
                           lambda: float(self.api.active_watches))


def build_kube_part(settings: Any) -> KubePart:
    """The Kubernetes API over the state store of ``pitwall.config.Settings``."""
    store = build_revstore(settings.state, settings.data_dir)
    encryption = build_encryption(settings.kube, settings.data_dir, settings.state.backend)
    return KubePart(store, build_kube(store, service_cidr=settings.kube.service_cidr, server_address=settings.listen,
                                      sa_key_path=settings.data_dir / "identity" / "sa-signing-key.pem",
                                      encryption=encryption, watch_cache=settings.kube.watch_cache))
