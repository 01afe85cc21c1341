"""``KubeAPI``: the Kubernetes API server as one pitwall component.

It owns the resource registry (built-in kinds plus the CRDs found in the
store), the verbs over the revisioned store, the OpenAPI documents, the
garbage collector, and the in-process ``client`` for controllers. ``start``
creates the default namespaces, loads CRDs and follows them (another pitwall
sharing an etcd may add some), and starts the garbage collector; ``stop``
ends both loops. ``router()`` is every HTTP route.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI

from pitwall import __version__
from pitwall.core.tasks import Supervisor
from pitwall.kube.api import SubresourceHandler, kube_router
from pitwall.kube.client import KubeClient
from pitwall.kube.crd import trust_shipped, types_from_crd
from pitwall.kube.defaults import default_object
from pitwall.kube.encryption import Encryption
from pitwall.kube.errors import AlreadyExists, NotFoundError
from pitwall.kube.gc import GarbageCollector
from pitwall.kube.metricsapi import NODE_METRICS, POD_METRICS, MetricsProvider
from pitwall.kube.openapi import OpenAPI
from pitwall.kube.rbac import RBACAuthorizer
from pitwall.kube.registry import Registry, ResourceType
from pitwall.kube.resources import Resources
from pitwall.kube.serviceaccounts import ServiceAccountTokens
from pitwall.kube.watchcache import WatchCache
from pitwall.storage.revstore import RevStore

__all__ = ["DEFAULT_NAMESPACES", "KubeAPI"]

log = logging.getLogger(__name__)
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_CRD_PREFIX = "/registry/apiextensions.k8s.io/customresourcedefinitions/"


class KubeAPI:
    """The Kubernetes API over one ``RevStore`` (a ``Component``)."""

    name = "kube"

    def __init__(self, store: RevStore, *, service_cidr: str = "", server_address: str = "",
                 watch_timeout_s: float = 1800.0, bookmark_interval_s: float = 60.0, gc_resync_s: float = 30.0,
                 run_gc: bool = True, sa_key_path: Path | None = None, encryption: Encryption | None = None,
                 watch_cache: bool = True) -> None:
        self.store = store
        self.registry = Registry()
        # encryption at rest (kube.encryption): Secrets (or what its config lists) are sealed in the store
        self.encryption = encryption
        self.resources = Resources(store, self.registry, service_cidr=service_cidr, encryption=encryption)
        # lists and watches from memory, fed by one store watch (kube.watch_cache)
        self.watch_cache = WatchCache(store) if watch_cache else None
        self.resources.watch_cache = self.watch_cache
        self.openapi = OpenAPI(self.registry)
        self.client = KubeClient(self.resources)
        self.authorizer = RBACAuthorizer(self.registry, self.resources)
        # ServiceAccount tokens, signed by a key in the data directory (in memory without one)
        self.service_accounts = ServiceAccountTokens(self.resources, sa_key_path)
        self.client.token_issuer = self.service_accounts
        self.gc = GarbageCollector(self.resources, resync_s=gc_resync_s)
        self.server_address = server_address
        self.watch_timeout_s = watch_timeout_s
        self.bookmark_interval_s = bookmark_interval_s
        self.run_gc = run_gc
        # (group, plural, subresource) -> handler, for subresources others serve (pods/log from node/).
        self.subresource_handlers: dict[tuple[str, str, str], SubresourceHandler] = {
            ("", "serviceaccounts", "token"): self.service_accounts.token_request}
        self.metrics_provider: MetricsProvider | None = None
        self.version_info: dict[str, Any] = {
            "major": "1", "minor": "32", "gitVersion": "v1.32.0-pitwall." + __version__,
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "python",
            "compiler": "cpython", "platform": "linux/amd64",
        }
        self.ready = False
        self.closing = False  # set on stop: open watch streams end
        self.active_watches = 0
        self.tasks = Supervisor("kube")
        self.builtin_crds: list[dict[str, Any]] = []

    def add_builtin_crds(self, crds: list[dict[str, Any]]) -> None:
        """CRDs a capability ships (Istio's, Flagger's, ...): installed on ``start`` as if
        ``kubectl apply``-ed, so they are served, listed and watched like any other CRD. Call before ``start``."""
        self.builtin_crds.extend(crds)
        trust_shipped(crds)

    def set_metrics_provider(self, provider: MetricsProvider) -> None:
        """Serve ``metrics.k8s.io/v1beta1`` (``kubectl top``) from ``provider``."""
        self.metrics_provider = provider
        self.registry.add_virtual([POD_METRICS, NODE_METRICS])

    def router(self) -> APIRouter:
        return kube_router(self)

    def install(self, app: FastAPI) -> None:
        """Add every route to ``app`` as is, so the core resources' catch-all yields /api/v1/query & co.
        to the Prometheus API wherever the routes sit."""
        app.router.routes.extend(self.router().routes)

    async def start(self) -> None:
        if self.watch_cache is not None:
            self.tasks.spawn(self.watch_cache.run(), name="watch-cache")
        ns_rt = self.registry.get("", "v1", "namespaces")
        assert ns_rt is not None
        for ns in DEFAULT_NAMESPACES:
            with contextlib.suppress(AlreadyExists):
                await self.resources.create(ns_rt, "", {"metadata": {"name": ns}}, field_manager="pitwall")
        await self.authorizer.ensure_bootstrap()
        rev = await self._load_crds(await self._install_builtin_crds())
        self.tasks.spawn(self._follow_crds(rev), name="kube-crds")
        if self.run_gc:
            await self.gc.start()
        self.closing = False
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        self.closing = True
        if self.run_gc:
            await self.gc.stop()
        await self.tasks.stop()

    @property
    def healthy(self) -> bool:
        """False once a background loop (CRD follower, garbage collector) died."""
        return self.tasks.healthy and (not self.run_gc or self.gc.healthy)

    async def _install_builtin_crds(self) -> dict[str, int]:
        """Create each shipped CRD, or bring its spec up to the shipped one (a newer pitwall's schema wins;
        servers sharing an etcd converge on the same objects). Returns the revision of each stored CRD
        the registry now serves from the shipped object itself (no second parsed copy of its schemas)."""
        rt = self.registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        assert rt is not None
        shared: dict[str, int] = {}
        for crd in self.builtin_crds:
            name = str(crd["metadata"]["name"])
            try:
                # a restart finds them stored as shipped: a read, not a create's and an update's preparation
                stored = await self.resources.get(rt, "", name)
            except NotFoundError:
                stored = None
            if stored is None:
                try:
                    stored = await self.resources.create(rt, "", crd, field_manager="pitwall")
                except AlreadyExists:  # another server sharing the store created it meanwhile
                    stored = await self._ship_spec(rt, crd)
            elif stored.get("spec") != _as_stored(crd["spec"]):
                stored = await self._ship_spec(rt, crd)
            if _served_view(stored) == _served_view(crd):
                self.registry.replace_crd(name, types_from_crd(crd))
                shared[name] = int(stored["metadata"]["resourceVersion"])
        return shared

    async def _ship_spec(self, rt: ResourceType, crd: dict[str, Any]) -> dict[str, Any]:
        """The stored CRD with the shipped spec (metadata, labels and status as stored)."""
        def same_spec(old: dict[str, Any]) -> dict[str, Any]:
            return {**old, "spec": crd["spec"]}
        return await self.resources.modify(rt, "", str(crd["metadata"]["name"]), same_spec)

    async def _load_crds(self, shared: dict[str, int] | None = None) -> int:
        """Serve every CRD in the store; one in ``shared`` at that revision is served already."""
        res = await self.store.range(_CRD_PREFIX)
        for kv in res.kvs:
            name = kv.key[len(_CRD_PREFIX):]
            if shared and shared.get(name) == kv.mod_revision:
                continue
            crd = json.loads(self.resources.plain_value(kv))
            self.registry.replace_crd(str(crd.get("metadata", {}).get("name", "")), types_from_crd(crd))
        return res.revision

    async def _follow_crds(self, rev: int) -> None:
        while True:
            try:
                async for batch in self.store.watch(_CRD_PREFIX, start_revision=rev + 1, prev_kv=True):
                    for ev in batch:
                        rev = ev.kv.mod_revision
                        name = ev.kv.key[len(_CRD_PREFIX):]
                        if ev.type == "PUT":
                            self.registry.replace_crd(name, types_from_crd(json.loads(self.resources.plain_value(ev.kv))))
                        else:
                            self.registry.replace_crd(name, [])
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kube: following CRDs failed; reloading")
                await asyncio.sleep(1)
                rev = await self._load_crds()


def _as_stored(spec: dict[str, Any]) -> dict[str, Any]:
    """A CRD spec as a create stores it: with the apiserver's defaults (the parts they touch copied, the
    schemas shared)."""
    out = dict(spec)
    for part in ("names", "conversion"):
        if isinstance(out.get(part), dict):
            out[part] = dict(out[part])
    default_object("CustomResourceDefinition", "apiextensions.k8s.io", {"spec": out})
    return out


def _served_view(crd: dict[str, Any]) -> tuple[Any, ...]:
    """What ``types_from_crd`` reads of a CRD: two CRDs equal in it serve the same kinds."""
    spec = crd.get("spec") or {}
    return ((crd.get("metadata") or {}).get("name"), spec.get("group"), spec.get("names"), spec.get("scope"),
            spec.get("versions"))
