"""Builds the Consul API over the control plane's revisioned store (``core.lifecycle.Part``).

Its components start after the store (the kube part's) and stop before it:
the watch hub first (blocking queries and session expiry need it), then the
session reaper. Its routes serve ``/v1/...`` (INTERFACES.md) and pitwall's
own ``/api/config/v1/history``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pitwall.controllers import ControllerManager, ControllerRunner
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.incidents import ChangeSink
from pitwall.kube import KubeAPI, KubeClient
from pitwall.registry.agent import AGENT_PREFIX, AgentServices, CheckRunner
from pitwall.registry.api import AgentInfo, consul_router, history_router
from pitwall.registry.blocking import WatchHub
from pitwall.registry.catalog import KUBE_PREFIX, Catalog
from pitwall.registry.catalog_api import catalog_routes
from pitwall.registry.config_api import config_routes
from pitwall.registry.config_entries import CONFIG_PREFIX, ConfigEntries
from pitwall.registry.connect_api import ConnectCA, connect_routes
from pitwall.registry.console import ConfigConsole
from pitwall.registry.crds import config_template_crds
from pitwall.registry.history import ConfigHistory
from pitwall.registry.kube_history import KubeConfigHistory
from pitwall.registry.kv import KVStore
from pitwall.registry.model import KV_PREFIX, SESSION_PREFIX
from pitwall.registry.reload import ReloadController
from pitwall.registry.sessions import LockDelays, SessionStore
from pitwall.registry.templates import ConfigTemplateController, GroupsOf
from pitwall.storage.revstore import RevStore
from pitwall.storage.revstore.election import Election

__all__ = ["MAX_BLOCKING_QUERIES", "RegistryPart", "build_registry_part"]

# Held blocking queries (setting ``consul.max_blocking_queries``); ``pitwall server`` sets uvicorn's
# connection limit to this plus 1000, so waiting clients never take every slot from other requests.
MAX_BLOCKING_QUERIES = 10_000


@dataclass
class RegistryPart:
    """Consul's HTTP API as a part of the server."""

    hub: WatchHub
    kv: KVStore
    sessions: SessionStore
    history: ConfigHistory
    agent: AgentInfo
    services: AgentServices
    checks: CheckRunner
    catalog: Catalog
    config: ConfigEntries
    kube_history: KubeConfigHistory | None = None
    reloader: ControllerManager | None = None  # reload-on-config-change and ConfigTemplates, leader only
    templates: ConfigTemplateController | None = None
    connect: ConnectCA | None = None  # the mesh CA behind /v1/agent/connect/ca/* (set by the server)
    name: str = "registry"

    def components(self) -> Sequence[Component]:
        own: list[Component] = [self.hub, self.config, self.history, self.sessions, self.checks]
        return own + [c for c in (self.kube_history, self.reloader) if c is not None]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        def extra(r: Any, blocking: Any) -> None:
            catalog_routes(r, self.catalog, self.services, self.hub, blocking)
            config_routes(r, self.config, blocking, self.hub.parks)
            connect_routes(r, self.connect, self.hub)
        return [Mount(consul_router(self.kv, self.sessions, self.hub, self.agent, extra)),
                Mount(history_router(self.console()))]

    def console(self) -> ConfigConsole:
        """The config pages' and ``/api/config/v1``'s reads and rollbacks."""
        return ConfigConsole(self.kv, self.history, self.kube_history)

    async def reload(self, settings: Any) -> None:
        """Nothing of it is configured live."""

    def register_metrics(self, metrics: SelfMetrics) -> None:
        metrics.add_gauges("pitwall_consul_blocking_queries", "Consul blocking queries held open.",
                           lambda: float(self.hub.waiting))
        if self.reloader is not None:
            reloaders = [r.reconciler for r in self.reloader.runners]
            metrics.add_gauges("pitwall_config_reloads", "Deployments rolled because a ConfigMap or Secret changed.",
                               lambda: float(sum(getattr(r, "reloads", 0) for r in reloaders)))
        if self.templates is not None:
            t = self.templates
            metrics.add_gauges("pitwall_config_template_renders", "ConfigTemplate renders (changed or not).",
                               lambda: float(t.renders))
            metrics.add_gauges("pitwall_config_template_writes", "ConfigMap writes by ConfigTemplates.",
                               lambda: float(t.writes))


def build_registry_part(store: RevStore, changes: ChangeSink | None, *, listen: str, kube: KubeClient | None = None,
                        max_blocking_queries: int = MAX_BLOCKING_QUERIES,
                        election: Election | None = None, api: KubeAPI | None = None,
                        groups_of: GroupsOf | None = None) -> RegistryPart:
    """The Consul API over ``store``; KV changes are reported to ``changes``; the catalog shows ``kube``'s
    Services; Deployments reload on their ConfigMaps' and Secrets' changes while ``election`` is won (the
    controllers' election; always without one). With ``api`` (call before it starts) ConfigTemplates are
    served and rendered; ``groups_of`` (the node's container process groups) lets them signal containers."""
    history = ConfigHistory(store, changes)
    delays = LockDelays()
    kv = KVStore(store, history, delays.until)
    agent = AgentInfo(socket.gethostname() or "pitwall", listen)
    sessions = SessionStore(store, kv, delays, node=agent.node)
    hub = WatchHub(store, [KV_PREFIX, SESSION_PREFIX, AGENT_PREFIX, KUBE_PREFIX, CONFIG_PREFIX],
                   prev_kv=frozenset({SESSION_PREFIX}), max_waiters=max_blocking_queries)
    hub.listen(sessions.on_events)
    config = ConfigEntries(store, changes)
    hub.listen(config.on_events)
    services = AgentServices(store, agent.node)
    catalog = Catalog(kube, services, node=agent.node, node_address=agent.raft_address.rsplit(":", 1)[0])
    kube_history = reloader = templates = None
    if kube is not None:
        kube_history = KubeConfigHistory(store, {k.lower(): kube.resource_type("v1", k).prefix
                                                 for k in ("ConfigMap", "Secret")}, changes, kube=kube,
                                         plain=kube.stored_value)
        reloads = ReloadController(kube, changes)
        runners = [ControllerRunner(kube, reloads, workers=2)]
        if api is not None:
            api.add_builtin_crds(config_template_crds())
            templates = ConfigTemplateController(kube, kv, catalog, reloads, changes=changes, groups_of=groups_of)
            runner = ControllerRunner(kube, templates, workers=2)
            templates.enqueue = lambda key: runner.enqueue(key) if runner.running else None
            hub.listen(templates.on_events)
            runners.append(runner)
        reloader = ControllerManager(runners, election=election)
    # servers sharing the state are one agent: the controllers' leader runs its checks
    checks = CheckRunner(services, leading=election.elected.is_set if election is not None else None)
    return RegistryPart(hub, kv, sessions, history, agent, services, checks, catalog, config,
                        kube_history, reloader, templates)
