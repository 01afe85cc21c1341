"""Composition root: builds every component from Settings and serves them.

``build(settings)`` constructs each pillar as a ``core.lifecycle.Part``;
``create_app(settings)`` wraps them in a FastAPI app whose lifespan starts
their components in order and stops them in reverse, mounts their routers,
hands them new settings on reload and lets them register self-metrics. ``pitwall server``, ``pitwall
demo`` and the tests all go through ``create_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Receive, Scope, Send

from pitwall import __version__
from pitwall.alerting import ContactPager
from pitwall.alerting.notify.wiring import NotificationParts, build_notifications
from pitwall.alerting.rules.wiring import RulesPart, build_rules
from pitwall.backup.wiring import BackupPart, build_backup_part
from pitwall.chaos import ChaosConsole
from pitwall.chaos.wiring import ChaosPart, build_chaos_part
from pitwall.config import Settings, load_settings
from pitwall.controllers import ControllersPart, KubeStateMetrics, build_controllers_part
from pitwall.core.audit import AuditEntry, AuditLog
from pitwall.core.auth import Authenticator, BearerAuth, TokenTable
from pitwall.core.body import BodyLimits
from pitwall.core.browser_guard import BrowserGuard
from pitwall.core.edge import Edge
from pitwall.core.errors import ConfigError, PitwallError, Unavailable
from pitwall.core.fastlane import FastLane
from pitwall.core.http_errors import error_router
from pitwall.core.labels import labels_from_dict
from pitwall.core.lifecycle import Component, Part, Supervised
from pitwall.core.limits import InflightBudget
from pitwall.core.oidc import LOGIN_PATH, OIDC, SessionCSRF, load_key
from pitwall.core.rbac import Policy
from pitwall.core.routefilter import filter_included_routers
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.core.tenancy import AUDIT_TENANT, server_wide
from pitwall.incidents import AlertIntake, ChangeLog, IncidentDesk, IncidentService
from pitwall.incidents.model import Service as IncidentServiceRecord
from pitwall.incidents.wiring import IncidentsPart, build_incidents_part
from pitwall.kube import KubePodSource, KubeWorkloads
from pitwall.kube.wiring import KubePart, build_kube_part, build_revstore
from pitwall.logs import LogAppender, LogEntry, PushStream
from pitwall.logs.wiring import LogsParts, build_logs
from pitwall.metrics import Engine
from pitwall.metrics.wiring import MetricsPart, build_metrics
from pitwall.node import NodePart, build_node_part
from pitwall.pipelines import DoraIncident, PipelinesPart, build_pipelines_part
from pitwall.registry import ParkHeldQueries, RegistryPart, build_registry_part
from pitwall.releases import ReleasesConsole
from pitwall.releases.wiring import ABTestPart, ReleasesPart, build_releases_part
from pitwall.slo.wiring import SLOPart, build_slo_part
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.state import StateStore, sqlite_url
from pitwall.traces.wiring import TracesParts, build_traces
from pitwall.traffic import TrafficPart, build_traffic_part
from pitwall.ui.wiring import UIPart, build_ui

if TYPE_CHECKING:  # parts off by default: imported by the builders below when configured (gRPC: ~8 MiB)
    from pitwall.core.otlp_grpc import OtlpGrpcServer
    from pitwall.traffic.gateway.wiring import GatewayPart

log = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything the server runs: shared plumbing, then the parts in start order."""

    settings: Settings
    db: TelemetryDB
    state: StateStore
    inflight: InflightBudget
    self_metrics: SelfMetrics
    metrics: MetricsPart
    traces: TracesParts
    logs: LogsParts
    audit: AuditLog
    notifications: NotificationParts
    rules: RulesPart
    ui: UIPart
    incidents: IncidentsPart
    tokens: TokenTable  # HTTP and OTLP/gRPC check the same tokens
    policy: Policy  # roles and bindings
    backup: BackupPart
    abtest: ABTestPart  # A/B reports: metrics only, with or without the control plane
    otlp_grpc: OtlpGrpcServer | None = None  # None with otlp_grpc.enabled false
    control_plane: ControlPlane | None = None  # None with kube.enabled false: telemetry only
    gateway: GatewayPart | None = None
    started: list[Component] = field(default_factory=list)
    ready: bool = False

    @property
    def parts(self) -> list[Part]:
        cp = self.control_plane
        edge: list[Part] = [] if self.gateway is None else [self.gateway]
        # after the stores it feeds and the audit log it reports to
        grpc: list[Part] = [] if self.otlp_grpc is None else [self.otlp_grpc]
        return [self.metrics, self.traces, self.logs, self.audit, *grpc, self.notifications, self.rules,
                *(cp.parts() if cp is not None else []), *edge, self.backup, self.incidents, self.abtest, self.ui]

    @property
    def lifecycle(self) -> list[Component]:
        """Start order. The state store closes last; the metric store stops after all that append to it."""
        comps: list[Component] = [_Closer("state-store", self.state.close)]
        for part in self.parts:
            comps.extend(part.components())
        return comps

    @property
    def engine(self) -> Engine:
        return self.metrics.engine

    def problems(self) -> list[str]:
        """Why the server is not ready: not started yet, or a supervised loop died."""
        out = [] if self.ready else ["starting"]
        out.extend(self.metrics.problems())
        out.extend(self.logs.problems())
        out.extend(self.traces.problems())
        for comp in self.started:
            if isinstance(comp, Supervised):
                out.extend(comp.tasks.failures)
        return out


@dataclass
class ControlPlane:
    """The parts that run services: the Kubernetes API and what gives its objects meaning."""

    kube: KubePart
    controllers: ControllersPart
    kube_state_metrics: KubeStateMetrics
    node: NodePart
    traffic: TrafficPart
    changes: ChangeLog  # the change-event stream every capability reports to (the incident timeline reads it)
    chaos: ChaosPart
    slo: SLOPart
    registry: RegistryPart
    releases: ReleasesPart
    pipelines: PipelinesPart | None = None  # None with pipelines.enabled false

    def parts(self) -> list[Part]:
        """In start order: the API first, then what gives its objects meaning."""
        extra: list[Part] = [] if self.pipelines is None else [self.pipelines]
        return [self.kube, self.controllers, self.kube_state_metrics, self.node, self.traffic, self.chaos, self.slo,
                self.registry, self.releases, *extra]


def build_control_plane(settings: Settings, metrics: MetricsPart, logs: LogsParts, traces: TracesParts,
                        rules: RulesPart) -> ControlPlane:
    kube = build_kube_part(settings)
    # Annotated pods are scraped (kubernetes_sd_configs role pod, default job kubernetes-pods).
    metrics.scrape.set_pod_source(KubePodSource(kube.api.client))
    changes = ChangeLog(kube.store)
    controllers = build_controllers_part(kube.api, settings, instant=metrics.instant, changes=changes)
    # Pods' output goes to the log store, their resource usage to the metric store.
    node = build_node_part(kube.api, data_dir=settings.data_dir, logs=logs.store, metrics=metrics.store,
                           node_name=settings.kube.node_name, pod_cidr=settings.kube.pod_cidr,
                           chaos_preload=settings.kube.chaos_preload)
    # Istio's metrics, a span per mesh hop and Envoy's access log into the stores.
    traffic = build_traffic_part(kube.api, metrics=metrics.store, spans=traces.store, changes=changes,
                                 node_name=node.kubelet.node_name, mtls=settings.kube.mesh_mtls,
                                 inbound_port=settings.kube.mesh_inbound_port,
                                 leaf_ttl_s=settings.kube.mesh_leaf_ttl_s,
                                 retry_budget=(settings.kube.mesh_retry_budget.as_tuple()
                                               if settings.kube.mesh_retry_budget else None),
                                 logs=logs.store, access_log=settings.kube.mesh_access_log,
                                 egress=settings.kube.mesh_egress_listener)
    node.kubelet.egress = traffic.egress  # pods' HTTP_PROXY: their egress listener, opened before they start
    # SLOs are Kubernetes objects whose generated rules the rule manager runs.
    slo = build_slo_part(kube.api, rules=rules.manager, instant=metrics.instant, changes=changes,
                         election=controllers.election)
    # Consul's API over the same store; its catalog follows Services and Endpoints; its config entries
    # (intentions, router, splitter, resolver) become Istio-shaped objects the service proxy enforces.
    registry = build_registry_part(kube.store, changes, listen=settings.listen, kube=kube.api.client,
                                   election=controllers.election, max_blocking_queries=settings.consul.max_blocking_queries,
                                   api=kube.api, groups_of=node.kubelet.container_groups)
    traffic.proxy.overlay = registry.config.mesh_objects
    registry.config.listeners.append(traffic.proxy.refresh_mesh)
    registry.connect = traffic.mesh_node  # Consul's Connect CA endpoints serve the mesh's CA
    return ControlPlane(
        kube=kube,
        controllers=controllers,
        kube_state_metrics=KubeStateMetrics(kube.api.client, metrics.store),
        node=node,
        traffic=traffic,
        changes=changes,
        # Faults act on pods through the node, on traffic through the service proxy's fault table; every one
        # is a change event and a series.
        chaos=build_chaos_part(kube.api, node=node.kubelet, changes=changes, appender=metrics.store,
                               election=controllers.election, mesh=traffic.proxy.faults, slo_status=slo.slo_status,
                               monkey=settings.chaos.monkey, range_query=metrics.range,
                               slo_budgets=slo.service.consumed_by_service),
        slo=slo,
        registry=registry,
        # Flagger's Canaries shift traffic through the mesh and judge it from the mesh's metrics.
        releases=build_releases_part(kube.api, instant=metrics.instant, changes=changes, listen=settings.listen,
                                     election=controllers.election, slo_status=slo.slo_status,
                                     releases=settings.releases, appender=metrics.store,
                                     tls=settings.tls_cert_file is not None),
        # .gitlab-ci.yml pipelines: runs as revstore keys, job logs and figures into the stores.
        pipelines=build_pipelines_part(kube.store, settings.data_dir, settings.pipelines, listen=settings.listen,
                                       logs=logs.store, metrics=metrics.store, changes=changes,
                                       kube=kube.api.client)
        if settings.pipelines.enabled else None,
    )


def _open_incidents(service: IncidentService) -> Callable[[str], Awaitable[list[str]]]:
    """The open incidents ("#12") of the PagerDuty service with that name or id (the chaos guard's and the
    release gates' query)."""
    async def query(name: str) -> list[str]:
        out = []
        for id_ in await service.store.open_ids():
            inc = await service.store.get_incident(id_)
            if inc is None:
                continue
            svc = await service.store.get(IncidentServiceRecord, inc.service_id)
            if name in (inc.service_id, svc.name if svc is not None else ""):
                out.append(f"#{inc.number}")
        return out
    return query


def _dora_incidents(service: IncidentService) -> Callable[[], Awaitable[list[DoraIncident]]]:
    """Every incident with its service's id, name and the service its first alert named, for DORA's join."""
    async def query() -> list[DoraIncident]:
        names = {s.id: s.name for s in await service.store.list_all(IncidentServiceRecord)}
        return [DoraIncident(services=frozenset(x for x in (i.service_id, names.get(i.service_id, ""),
                                                            i.signal_service) if x),
                             created_at=i.created_ns / 1e9, resolved_at=i.resolved_ns / 1e9 or None)
                for i in await service.store.incidents()]
    return query


def _any_open_incident(service: IncidentService) -> Callable[[], Awaitable[str | None]]:
    """Chaos Monkey's outage checker: the open incidents ("#12, #14"), or None when there are none."""
    async def check() -> str | None:
        ids = await service.store.open_ids()
        if not ids:
            return None
        numbers = [f"#{inc.number}" for inc in [await service.store.get_incident(i) for i in ids[:5]] if inc]
        return "open incidents " + ", ".join(numbers)
    return check


class _AuditToLogs:
    """``core.audit``'s sink: entries into the log store under the reserved tenant, as logfmt lines."""

    def __init__(self, store: LogAppender) -> None:
        self.store = store
        self._labels: dict[tuple[str, int], tuple[tuple[str, str], ...]] = {}  # (method, status) -> labels

    async def record(self, entries: Sequence[AuditEntry]) -> None:
        streams: dict[tuple[tuple[str, str], ...], list[LogEntry]] = {}
        known = self._labels
        if len(known) > 256:  # a client picks the method: bounded
            known.clear()
        for e in entries:
            labels = known.get((e.method, e.status))
            if labels is None:
                labels = known[(e.method, e.status)] = labels_from_dict(e.stream_labels())
            streams.setdefault(labels, []).append(LogEntry(e.ts_ns, e.logfmt()))
        await self.store.push(AUDIT_TENANT, [PushStream(k, sorted(v, key=lambda x: x.ts_ns))
                                             for k, v in streams.items()])


class _Closer:
    """A component that only closes something when the server stops."""

    def __init__(self, name: str, close: Callable[[], None]) -> None:
        self.name = name
        self._close = close

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._close()


def build(settings: Settings) -> Components:
    """Construct every part (no I/O beyond opening files)."""
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    db = TelemetryDB(data / "telemetry.duckdb", memory_limit=settings.storage.duckdb_memory_limit)
    state = StateStore(settings.notifications.state_url or sqlite_url(data))
    inflight = InflightBudget(settings.limits.max_inflight_bytes)
    fsync = settings.storage.fsync
    metrics = build_metrics(settings, db, inflight)
    traces = build_traces(settings.traces, settings.limits, db, data, appender=metrics.store, inflight=inflight,
                          fsync=fsync, backend=settings.backends.traces)
    logs = build_logs(settings.logs, db=db, data_dir=data, limits=settings.limits, inflight=inflight, fsync=fsync,
                      backend=settings.backends.logs)
    try:
        notifications = build_notifications(settings, state, inflight)
        rules = build_rules(settings, instant=metrics.instant, store=metrics.store, notify=notifications.notify,
                            logs=logs)
    except BaseException:
        state.close()
        raise
    cp = build_control_plane(settings, metrics, logs, traces, rules) if settings.kube.enabled else None
    if cp is not None and cp.controllers.election is not None:  # servers sharing the state: the leader sends
        notifications.pipeline.follow(cp.controllers.election.elected.is_set, shared=cp.kube.store)
        rules.follow(settings, cp.controllers.election.elected.is_set)  # and writes rule series to a shared engine
    gateway = None if settings.gateway.listen is None else _gateway(settings, metrics, cp)
    # Incidents live in the control plane's state store; without a control plane they start one of their own.
    pager = ContactPager(lambda: notifications.pipeline.config.config.global_, notifications.pipeline.external_url)
    incidents = build_incidents_part(settings, cp.kube.store if cp else build_revstore(settings.state, data),
                                     inflight, pager=pager, own_store=cp is None)
    # pitwall_incident_configs: the pipeline's alerts become incidents in process (always on: see incidents.md).
    notifications.pipeline.incidents = AlertIntake(incidents.service)
    if cp is not None and cp.chaos.guard is not None:  # chaos is refused and halted while an incident is open
        cp.chaos.guard.open_incidents = _open_incidents(incidents.service)
    if cp is not None:  # a Canary with an incident gate waits while its service has an open incident
        cp.releases.controller.gates.open_incidents = _open_incidents(incidents.service)
    if cp is not None and cp.chaos.monkey is not None:  # Chaos Monkey's outage checker: any open incident
        cp.chaos.monkey.outage = _any_open_incident(incidents.service)
    if cp is not None and cp.pipelines is not None:  # DORA's change failure rate joins incidents
        cp.pipelines.runner.incidents = _dora_incidents(incidents.service)
    if cp is not None:  # the postmortem's impact: the budget the service's SLOs spent during the incident
        incidents.rest.slo_budgets = cp.slo.service.consumed_by_service
    policy = Policy(settings.rbac.compiled())
    tokens = TokenTable([(t.secret, t.principal(list(policy.bindings))) for t in settings.auth_tokens])
    audit = AuditLog(_AuditToLogs(logs.store), settings.audit)
    otlp_grpc = _otlp_grpc(settings, tokens, inflight, metrics, traces, logs, audit) \
        if settings.otlp_grpc.enabled else None
    # Self-backup of the data directory; with a control plane each run is a change event.
    outside = [f"state store on etcd {settings.state.endpoints}"] if settings.state.backend == "etcd" else []
    outside += ["notifications.state_url"] if settings.notifications.state_url else []
    backup = build_backup_part(data, db, appender=metrics.store, changes=cp.changes if cp else None, outside=outside,
                               kube=cp.kube.api if cp else None, election=cp.controllers.election if cp else None,
                               host=cp.node.kubelet if cp else None, rules=rules.manager,
                               self_settings=settings.backup.self_)
    ui = build_ui(settings.ui, instant=metrics.instant, range_=metrics.range, metrics=metrics.store,
                  targets=metrics.scrape.targets, state=state, traces=traces.deps.query, logs=logs.deps,
                  notifications=notifications.pipeline, rules=lambda: rules.manager,
                  workloads=KubeWorkloads(cp.kube.api.client) if cp is not None else None, config=settings,
                  incidents=IncidentDesk(incidents.rest), slos=cp.slo.service if cp is not None else None,
                  releases=ReleasesConsole(cp.kube.api.client) if cp is not None else None,
                  chaos=ChaosConsole(cp.chaos.client, cp.chaos.report, cp.chaos.resilience) if cp is not None else None,
                  changes=cp.changes if cp is not None else None,
                  pipelines=cp.pipelines.runner if cp is not None and cp.pipelines is not None else None,
                  backups=backup.reads(), config_store=cp.registry.console() if cp is not None else None,
                  gateway=gateway)
    return Components(
        settings=settings, db=db, state=state, inflight=inflight, self_metrics=SelfMetrics(),
        metrics=metrics, traces=traces, logs=logs, audit=audit,
        notifications=notifications, rules=rules, ui=ui, incidents=incidents, tokens=tokens, policy=policy, backup=backup,
        abtest=ABTestPart(metrics.instant, cp.kube.api.client if cp is not None else None), otlp_grpc=otlp_grpc, control_plane=cp, gateway=gateway,
    )


def _otlp_grpc(settings: Settings, tokens: TokenTable, inflight: InflightBudget, metrics: MetricsPart,
               traces: TracesParts, logs: LogsParts, audit: AuditLog) -> OtlpGrpcServer:
    """The OTLP/gRPC listener, handed the same export functions as the pillars' OTLP/HTTP routes."""
    from pitwall.core.otlp_grpc import OtlpGrpcServer, TlsFiles

    cert, key = settings.tls_cert_file, settings.tls_key_file
    return OtlpGrpcServer(
        settings.otlp_grpc, {"traces": traces.otlp_export, "metrics": metrics.otlp_export, "logs": logs.otlp_export},
        tokens=tokens, inflight=inflight, body_limits=BodyLimits.of(settings.limits),
        tls=TlsFiles(cert, key) if cert and key else None, audit=audit)


def _gateway(settings: Settings, metrics: MetricsPart, cp: ControlPlane | None) -> GatewayPart:
    from pitwall.traffic.gateway.wiring import build_gateway_part

    return build_gateway_part(settings, metrics=metrics.store, kube=cp.kube.api if cp else None,
                              changes=cp.changes if cp else None)


class _DataDirLock:
    def __init__(self, path: Path) -> None:
        self.path = path / "lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise ConfigError(f"data_dir: {self.path.parent} is in use by another pitwall process") from None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


async def reload_config(app: FastAPI) -> None:
    """Re-read the config file and env; each part applies what can change live."""
    c: Components = app.state.components
    old = c.settings
    new = load_settings(old.config_file, data_dir=old.data_dir, listen=old.listen, insecure=old.insecure)
    for hook in app.state.reloaders:  # the edge's own, first: the CLI's TLS certificate
        hook(new)
    for part in c.parts:
        await part.reload(new)
    c.settings = new
    log.info("configuration reloaded", extra={"config_file": str(old.config_file)})


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app for ``settings``; components start with its lifespan."""
    lock = _DataDirLock(settings.data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock.acquire()
    try:
        c = build(settings)
    except BaseException:
        lock.release()
        raise

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload_logged(app)))
        try:
            for comp in c.lifecycle:
                await comp.start()
                c.started.append(comp)
            c.ready = True
            log.info("pitwall ready", extra={"listen": settings.listen, "data_dir": str(settings.data_dir)})
            yield
        finally:
            c.ready = False
            for comp in reversed(c.started):
                try:
                    await comp.stop()
                except Exception:
                    log.exception("component failed to stop", extra={"component": comp.name})
            c.started.clear()
            c.db.close()
            lock.release()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)

    app = PitwallApp(
        title="pitwall",
        version=__version__,
        description="Production support for microservices: Prometheus-, OTLP- and Loki-compatible APIs.",
        lifespan=lifespan,
        # pitwall counts its requests itself (core.selfmetrics, in the edge); FastAPI's OpenTelemetry hooks would only look
        # for a global provider on every request (none is set in the server).
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.components = c
    app.state.reloaders = list[Callable[[Settings], None]]()
    # Routes that act on the whole server rather than one tenant (see core.tenancy).
    whole_server = [Depends(server_wide)]
    app.include_router(_ops_router(c), dependencies=whole_server)
    for part in c.parts:
        for mount in part.mounts(lambda: c.ready):
            app.include_router(mount.router, dependencies=whole_server if mount.server_wide else None)
        part.register_metrics(c.self_metrics)
    auth, csrf = _install_auth(app, c)
    framework = super(PitwallApp, app).__call__  # FastAPI's whole stack, its error layer outermost
    app.edge = Edge(
        framework,
        # First, only watching: the audit log sees every answer, the refusals below included.
        audit=c.audit,
        # A foreign Host or a cross-site write is refused before anything else looks at it.
        guard=BrowserGuard(framework, allowed_hosts=settings.host_allow_list(),
                           allowed_origins=settings.allowed_origins),
        auth=auth, csrf=csrf, metrics=c.self_metrics,
        # Held Consul blocking reads wait past auth, in front of the framework (less memory per held query).
        park=ParkHeldQueries(framework, hub=c.control_plane.registry.hub) if c.control_plane is not None else None,
        # Routes whose endpoint takes only the request skip FastAPI's routing and dependency solving.
        lanes=FastLane(app),
    )
    filter_included_routers(app.router.routes)  # a route late in the list no longer pays for those before it
    return app


class PitwallApp(FastAPI):
    """FastAPI behind pitwall's ``core.edge.Edge`` (set by ``create_app``), which calls FastAPI's own stack."""

    edge: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (self.edge or super().__call__)(scope, receive, send)


def _install_auth(app: FastAPI, c: Components) -> tuple[BearerAuth | None, SessionCSRF | None]:
    """Tokens, roles and bindings (reloaded), OIDC bearer JWTs and UI sessions, ServiceAccount JWTs: the edge's
    authentication and session CSRF check (None when not configured)."""
    settings, policy, tokens = c.settings, c.policy, c.tokens
    authenticators: list[Authenticator] = []
    if settings.oidc is not None:
        oidc = OIDC(settings.oidc, policy, load_key(settings.data_dir / "identity" / "session.key"))
        app.include_router(oidc.router())
        authenticators.append(oidc.authenticate)
    if c.control_plane is not None:
        authenticators.append(c.control_plane.kube.api.service_accounts.authenticator(policy))
    auth = csrf = None  # the edge calls their ``admit``: the app they would wrap as middleware is never called
    if tokens or settings.oidc is not None:
        auth = BearerAuth(app.router, tokens=tokens, authenticators=authenticators, routes=app.router.routes,
                          login_path=LOGIN_PATH if settings.oidc is not None else None)
    if settings.oidc is not None:
        csrf = SessionCSRF(app.router)  # after BearerAuth: checks a session's form posts

    def reload(s: Settings) -> None:
        policy.replace(s.rbac.compiled())
        tokens.replace([(t.secret, t.principal(list(policy.bindings))) for t in s.auth_tokens])

    app.state.reloaders.append(reload)
    return auth, csrf


async def _reload_logged(app: FastAPI) -> None:
    try:
        await reload_config(app)
    except Exception:
        log.exception("configuration reload failed")


def _ops_router(c: Components) -> Any:
    r = error_router("text", tags=["ops"])

    @r.get("/-/healthy")
    async def healthy() -> Response:
        return Response("pitwall is Healthy.\n", media_type="text/plain")

    @r.get("/-/ready")
    async def ready() -> Response:
        problems = c.problems()
        if problems:
            raise Unavailable("Service Unavailable" if problems == ["starting"] else
                              "Service Unavailable: " + "; ".join(problems))
        return Response("pitwall is Ready.\n", media_type="text/plain")

    @r.post("/-/reload")
    async def reload(request: Request) -> Response:
        try:
            await reload_config(request.app)
        except PitwallError as e:
            return Response(f"failed to reload config: {e.message}\n", 500, media_type="text/plain")
        return Response("", 200)

    @r.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(c.self_metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return r
