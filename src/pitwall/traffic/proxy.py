"""The service proxy: every TCP port of every Service with a ClusterIP, served on ``clusterIP:port``.

``ServiceProxy`` is a component. It follows Services and EndpointSlices
through the Kubernetes API's in-process client (list, then watch from the
list's revision; re-list on ``Gone``), and keeps one listener per
``(clusterIP, port)``: opened when a Service port appears, closed when it
goes. Each accepted connection is relayed to an endpoint of that port
(``traffic.balancer``: round-robin over ready endpoints, ClientIP affinity,
terminating-but-serving endpoints only when none is ready) with a connect
budget and retry on another endpoint (``traffic.relay``).

Endpoints come from the Service's EndpointSlices (label
``kubernetes.io/service-name``), as kube-proxy reads them: a slice port is
matched to the Service port by name, so a ``targetPort`` given by name is
resolved per endpoint by whoever wrote the slice. Endpoints objects are not
read. Headless Services (``clusterIP: None``), ExternalName Services and
non-TCP ports get no listener; NodePort and LoadBalancer Services are served
on their ClusterIP only.

Ports Istio treats as HTTP (``is_http``) are served by the mesh instead of
the byte relay: each connection becomes a ``traffic.http.HttpSession`` that
routes request by request with the current ``MeshConfig``. The proxy also
follows Pods (who is behind a pod IP: ``traffic.pods``) and Istio's
VirtualServices, DestinationRules and AuthorizationPolicies; any change
compiles a new ``MeshConfig`` that replaces the old one in one assignment.
An object the mesh cannot use is rejected whole (its previous version, if
any, stays). Per-destination runtime state (pools, outlier detection) lives
in ``traffic.cluster.Cluster`` objects keyed like Envoy's clusters.

Chaos faults (HTTPChaos, NetworkChaos) reach the data path through one
hook, ``self.faults`` (``traffic.faults.FaultTable``): consulted per TCP
connection here and per HTTP request in ``traffic.http``; when it is empty
the only cost is one attribute test.

Connections to an endpoint that stops being ready (or serving, once
terminating) are left open; if they are still open ``drain_timeout_s`` after
it left, they are closed. A removed Service port stops accepting at once and
its open connections drain the same way.

Invariants: listeners and connections are only touched from the event
loop, under ``_lock`` for listener changes; every task (the watch loops,
the bind retry loop, each connection, each drain timer) runs under
``self.tasks``, and mirrored copies are cancelled, so ``stop`` leaves
nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pitwall.core.tasks import Supervisor
from pitwall.incidents import ChangeEvent, ChangeSink
from pitwall.kube import Gone, KubeClient, NotFoundError
from pitwall.traffic.accesslog import AccessLogSink, AccessRecord, TelemetryPolicies, telemetry_error
from pitwall.traffic.authz import compile_authz
from pitwall.traffic.balancer import Backend, PortBalancer
from pitwall.traffic.cluster import Cluster, RetryBudget
from pitwall.traffic.faults import FaultTable, Link
from pitwall.traffic.http import H2_PREFACE, HttpLimits, HttpSession, Target, cancel_mirrors
from pitwall.traffic.mesh import DOMAIN, MeshConfig, Route, RouteDest, compile_mesh
from pitwall.traffic.meshtls import MeshNode
from pitwall.traffic.peerauth import compile_peer_auth
from pitwall.traffic.pods import PodInfo, pod_info
from pitwall.traffic.relay import CHUNK, NoEndpoint, close_writer, connect_any, splice
from pitwall.traffic.serviceentry import HostEntry, ServiceEntries, compile_service_entries, entry_error
from pitwall.traffic.telemetry import MUTUAL_TLS, PLAINTEXT, MeshTelemetry, TcpReport, mesh_labels
from pitwall.traffic.tracing import MeshTracer

__all__ = ["PortSpec", "ServiceProxy", "ServiceStats", "default_route_for", "endpoints_of", "is_http", "port_specs"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
SvcKey = tuple[str, str]  # namespace, name
Addr = tuple[str, int]  # clusterIP, port
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_AFFINITY_S = 10800.0  # sessionAffinityConfig.clientIP.timeoutSeconds default
_RELIST_BACKOFF_MAX_S = 5.0
_MAX_HOP_MODES = 10_000  # hop_security's cache: cleared whole when full (pairs in use come back at once)


class PlaintextRefused(Exception):
    """A caller that is no mesh pod reached a STRICT workload on this node (Envoy resets it)."""


@dataclass
class ServiceStats:
    """Counters of one Service (all its ports), for the proxy's metrics."""

    connections_total: int = 0
    connections_active: int = 0
    bytes_sent: int = 0  # client → endpoints
    bytes_received: int = 0  # endpoints → client
    connect_failures: int = 0  # connect attempts an endpoint refused or let time out
    no_endpoint: int = 0  # connections closed because no endpoint accepted in time

    def add_sent(self, n: int) -> None:
        self.bytes_sent += n

    def add_received(self, n: int) -> None:
        self.bytes_received += n


@dataclass(frozen=True)
class PortSpec:
    """One Service port the proxy listens for."""

    service: SvcKey
    port_name: str
    cluster_ip: str
    port: int
    affinity_timeout_s: float | None = None
    http: bool = False  # Istio treats the port as HTTP: requests are routed (traffic.http)
    host: str = ""  # a ServiceEntry's host (no listener, no ClusterIP); "" for a Service

    @property
    def fqdn(self) -> str:
        return self.host or f"{self.service[1]}.{self.service[0]}.{DOMAIN}"


def is_http(port: Obj) -> bool:
    """Istio's protocol selection: ``appProtocol`` first, else the port name's ``<protocol>[-suffix]``."""
    app = str(port.get("appProtocol") or "").lower()
    if app:
        return app.startswith(("http", "grpc", "kubernetes.io/h2c"))
    proto = str(port.get("name") or "").lower().split("-", 1)[0]
    return proto in ("http", "http2", "grpc", "grpc-web") or proto.startswith("grpc")


@dataclass(eq=False)
class _Listener:
    spec: PortSpec
    server: asyncio.Server
    balancer: PortBalancer
    conns: dict[asyncio.Task[Any], Backend | None] = field(default_factory=dict)


def port_specs(key: SvcKey, svc: Obj) -> list[PortSpec]:
    """The TCP ports of a Service that get a listener (none when headless or ExternalName)."""
    spec = svc.get("spec") or {}
    ip = spec.get("clusterIP")
    if not ip or ip == "None" or spec.get("type") == "ExternalName":
        return []
    affinity: float | None = None
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = float(cfg.get("timeoutSeconds") or DEFAULT_AFFINITY_S)
    out = []
    for p in spec.get("ports") or []:
        if (p.get("protocol") or "TCP") != "TCP" or not isinstance(p.get("port"), int):
            continue
        out.append(PortSpec(key, str(p.get("name") or ""), str(ip), int(p["port"]), affinity, is_http(p)))
    return out


def endpoints_of(slices: Iterable[Obj], port_name: str) -> tuple[list[Backend], list[Backend]]:
    """The ready and the terminating-but-serving endpoints of the Service port ``port_name``."""
    ready: list[Backend] = []
    fallback: list[Backend] = []
    for sl in slices:
        if sl.get("addressType", "IPv4") != "IPv4":
            continue
        port = next((sp.get("port") for sp in sl.get("ports") or []
                     if str(sp.get("name") or "") == port_name and (sp.get("protocol") or "TCP") == "TCP"), None)
        if not isinstance(port, int):
            continue
        for ep in sl.get("endpoints") or []:
            addrs = ep.get("addresses") or []
            if not addrs:
                continue
            cond = ep.get("conditions") or {}
            is_ready = cond.get("ready") is not False  # unset means ready (upstream)
            serving = cond.get("serving", is_ready) is not False
            b = Backend(str(addrs[0]), port)
            if is_ready and cond.get("terminating") is not True:
                ready.append(b)
            elif serving and cond.get("terminating") is True:
                fallback.append(b)
    return ready, fallback


class ServiceProxy:
    """Serves every Service's ClusterIP ports and relays connections to their endpoints (a Component)."""

    name = "service-proxy"

    def __init__(self, client: KubeClient, *, connect_budget_s: float = 5.0, attempt_timeout_s: float = 1.0,
                 drain_timeout_s: float = 30.0, bind_retry_s: float = 5.0, telemetry: MeshTelemetry | None = None,
                 tracer: MeshTracer | None = None, http_limits: HttpLimits | None = None,
                 changes: ChangeSink | None = None, mesh_node: MeshNode | None = None,
                 retry_budget: tuple[float, float, float] | None = None, access_log: AccessLogSink | None = None,
                 access_log_default: str = "off") -> None:
        self.client = client
        # Envoy's access log (traffic.accesslog): lines to ``access_log`` as Telemetry objects and the
        # ``kube.mesh_access_log`` default say; without a sink Telemetry objects are not even watched.
        self.access_log = access_log
        self.access_log_default = access_log_default
        self.access_policies = TelemetryPolicies((), access_log_default)
        self.retry_budget = retry_budget  # (ratio, min per second, ttl s) for every cluster; None: no budget
        # This node's end of the mesh (mutual TLS to other nodes' endpoints); None: every hop is direct.
        self.mesh_node = mesh_node
        if mesh_node is not None:
            mesh_node.view = self
        self.changes = changes  # outlier ejections are reported to the change-event stream
        self.telemetry = telemetry
        self.tracer = tracer
        self.http_limits = http_limits or HttpLimits()
        self.faults = FaultTable()  # chaos faults in force (traffic.faults): consulted per request/connection
        # The mesh: one immutable snapshot, replaced whole on any Istio object or Service change.
        self.mesh = MeshConfig()
        self.pods: dict[str, PodInfo] = {}  # pod IP -> the pod as a workload
        # hop_security's client-side mode per (destination pod, port, service), asked per request and per
        # TCP connection; only valid for one mesh snapshot (``_hop_modes_of``) and one set of pods: cleared
        # when either changes.
        self._hop_modes: dict[tuple[PodInfo, int, str], str] = {}
        self._hop_modes_of = self.mesh
        self._clusters: dict[str, Cluster] = {}
        self._istio: dict[str, dict[tuple[str, str], Obj]] = {"VirtualService": {}, "DestinationRule": {},
                                                              "AuthorizationPolicy": {}, "PeerAuthentication": {},
                                                              "Telemetry": {}, "ServiceEntry": {}}
        self._rejected: dict[tuple[str, tuple[str, str]], str] = {}  # (kind, key) -> why its last version is not used
        # More Istio-shaped objects from outside the Kubernetes API (Consul's config entries), computed from the
        # Services on every rebuild: (objects by kind, errors). Real Istio objects win per host.
        self.overlay: Callable[[dict[SvcKey, Obj]], tuple[dict[str, list[Obj]], dict[str, str]]] | None = None
        self.connect_budget_s = connect_budget_s
        self.attempt_timeout_s = attempt_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.bind_retry_s = bind_retry_s
        self.tasks = Supervisor("service-proxy")
        self.stats: dict[SvcKey, ServiceStats] = {}
        self.bind_errors: dict[Addr, str] = {}
        self._services: dict[SvcKey, Obj] = {}
        self._slices: dict[tuple[str, str], Obj] = {}  # (namespace, slice name) -> slice
        self._listeners: dict[Addr, _Listener] = {}
        self._by_port: dict[tuple[SvcKey, int], _Listener] = {}  # (Service, port) -> its listener
        self._retired: list[_Listener] = []
        self._lock = asyncio.Lock()
        self._synced = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._lock = asyncio.Lock()
        svc_ready, sl_ready = asyncio.Event(), asyncio.Event()
        self.tasks.spawn(self._follow("v1", "Service", self._on_services, svc_ready), name="watch-services")
        self.tasks.spawn(self._follow("discovery.k8s.io/v1", "EndpointSlice", self._on_slices, sl_ready),
                         name="watch-endpointslices")
        self.tasks.spawn(self._follow("v1", "Pod", self._on_pods, asyncio.Event()), name="watch-pods")
        for api_version, kind in (("networking.istio.io/v1", "VirtualService"),
                                  ("networking.istio.io/v1", "DestinationRule"),
                                  ("networking.istio.io/v1", "ServiceEntry"),
                                  ("security.istio.io/v1", "AuthorizationPolicy"),
                                  ("security.istio.io/v1", "PeerAuthentication")):
            self.tasks.spawn(self._follow(api_version, kind, self._istio_handler(kind), asyncio.Event()),
                             name=f"watch-{kind.lower()}")
        if self.access_log is not None:
            self.tasks.spawn(self._follow("telemetry.istio.io/v1", "Telemetry", self._istio_handler("Telemetry"),
                                          asyncio.Event()), name="watch-telemetry")
        self.tasks.spawn(self._retry_binds(), name="bind-retry")
        self.tasks.spawn(self._mark_synced(svc_ready, sl_ready), name="first-sync", loop=False)

    async def stop(self) -> None:
        for lst in [*self._listeners.values(), *self._retired]:
            lst.server.close()
        await self.tasks.stop()
        await cancel_mirrors()
        for lst in [*self._listeners.values(), *self._retired]:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lst.server.wait_closed(), 1.0)
        self._listeners.clear()
        self._by_port.clear()
        self._retired.clear()
        self._synced.clear()
        for c in self._clusters.values():
            c.close_idle()

    @property
    def healthy(self) -> bool:
        return self.tasks.healthy

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Until the first list of Services and EndpointSlices has been applied."""
        await asyncio.wait_for(self._synced.wait(), timeout)

    def listening(self) -> set[Addr]:
        """The ``(clusterIP, port)`` pairs served now."""
        return set(self._listeners)

    def endpoints(self, cluster_ip: str, port: int) -> list[Backend]:
        """The endpoints new connections to ``clusterIP:port`` may go to now."""
        lst = self._listeners.get((cluster_ip, port))
        return lst.balancer.usable() if lst else []

    def open_connections(self) -> int:
        return sum(len(lst.conns) for lst in [*self._listeners.values(), *self._retired])

    def service_port(self, host: str, port: int, namespace: str) -> PortSpec | None:
        """The Service port served here that ``host:port`` names for a caller in ``namespace``: a
        ClusterIP, or ``<svc>``, ``<svc>.<ns>``, ``<svc>.<ns>.svc`` or the FQDN (pods have no DNS, so
        the egress listener resolves names this way), else a ServiceEntry's host and port; None when it
        names none."""
        lst = self._listeners.get((host, port))
        if lst is not None:
            return lst.spec
        spec = self._service_by_name(host, port, namespace)
        if spec is not None:
            return spec
        entry = self.mesh.entries.lookup(host)
        ep = entry.port(port) if entry is not None else None
        if entry is None or ep is None:
            return None
        return PortSpec((entry.namespace, entry.host), ep.name, "", ep.number, None, ep.http, entry.host)

    def _service_by_name(self, host: str, port: int, namespace: str) -> PortSpec | None:
        name = host.rstrip(".").lower()
        for suffix in ("." + DOMAIN, ".svc"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        parts = name.split(".")
        if len(parts) > 2 or not all(parts):
            return None
        key = (parts[1], parts[0]) if len(parts) == 2 else (namespace, parts[0])
        lst = self._by_port.get((key, port))
        return lst.spec if lst is not None else None

    async def _mark_synced(self, *events: asyncio.Event) -> None:
        for e in events:
            await e.wait()
        self._synced.set()

    # -- following the API --------------------------------------------------------------------

    async def _follow(self, api_version: str, kind: str,
                      apply: Callable[[list[Obj], list[tuple[str, Obj]] | None], Awaitable[None]],
                      first: asyncio.Event) -> None:
        """List then watch ``kind`` forever; ``apply(items, None)`` on a list, ``apply([], events)`` after."""
        backoff = 0.1
        while True:
            try:
                lr = await self.client.list(api_version, kind)
                await apply(lr.items, None)
                first.set()
                async for ev in self.client.watch(api_version, kind, resource_version=lr.resource_version):
                    if ev.type != "BOOKMARK":
                        await apply([], [(ev.type, ev.object)])
                    backoff = 0.1
            except Gone:
                continue
            except asyncio.CancelledError:
                raise
            except NotFoundError:  # the kind is not served (Istio's CRDs not installed): look again later
                first.set()
                await asyncio.sleep(_RELIST_BACKOFF_MAX_S)
            except Exception:
                log.exception("service proxy: following %s failed; listing again", kind)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _RELIST_BACKOFF_MAX_S)

    async def _on_services(self, items: list[Obj], events: list[tuple[str, Obj]] | None) -> None:
        touched: set[SvcKey] = set()
        if events is None:
            touched |= set(self._services)
            self._services = {_key(o): o for o in items}
            touched |= set(self._services)
        else:
            for typ, o in events:
                k = _key(o)
                if typ == "DELETED":
                    self._services.pop(k, None)
                else:
                    self._services[k] = o
                touched.add(k)
        await self._sync(touched)
        self._rebuild_mesh()

    async def _on_slices(self, items: list[Obj], events: list[tuple[str, Obj]] | None) -> None:
        touched: set[SvcKey] = set()
        if events is None:
            touched |= {_owner(o) for o in self._slices.values()}
            self._slices = {_key(o): o for o in items}
            touched |= {_owner(o) for o in self._slices.values()}
        else:
            for typ, o in events:
                k = _key(o)
                old = self._slices.pop(k, None)
                if old is not None:
                    touched.add(_owner(old))
                if typ != "DELETED":
                    self._slices[k] = o
                    touched.add(_owner(o))
        await self._sync(touched)

    async def _retry_binds(self) -> None:
        while True:
            await asyncio.sleep(self.bind_retry_s)
            if self.bind_errors:
                await self._sync(set(self._services))

    # -- the mesh -----------------------------------------------------------------------------

    async def _on_pods(self, items: list[Obj], events: list[tuple[str, Obj]] | None) -> None:
        if events is None:
            self.pods = {}
            events = [("ADDED", o) for o in items]
        for typ, o in events:
            st = o.get("status") or {}
            ips = {str(p.get("ip")) for p in st.get("podIPs") or [] if p.get("ip")} | (
                {str(st["podIP"])} if st.get("podIP") else set())
            info = pod_info(o)
            self._hop_modes.clear()  # a pod's labels may move it under another PeerAuthentication
            for ip in ips:
                if typ == "DELETED":
                    if (cur := self.pods.get(ip)) is not None and cur.name == info.name:
                        del self.pods[ip]
                else:
                    self.pods[ip] = info

    def _istio_handler(self, kind: str) -> Callable[[list[Obj], list[tuple[str, Obj]] | None], Awaitable[None]]:
        async def apply(items: list[Obj], events: list[tuple[str, Obj]] | None) -> None:
            objs = self._istio[kind]
            if events is None:
                objs.clear()
                events = [("ADDED", o) for o in items]
            for typ, o in events:
                k = _key(o)
                self._rejected.pop((kind, k), None)
                if typ == "DELETED":
                    objs.pop(k, None)
                    continue
                err = _compile_error(kind, o)
                if err is None:
                    objs[k] = o
                    continue
                # Rejected whole: the version in force before (if any) stays, the error names the field.
                self._rejected[(kind, k)] = err
                if k not in objs:
                    log.warning("mesh: %s %s/%s ignored: %s", kind, k[0], k[1], err)
                else:
                    log.warning("mesh: %s %s/%s: the new version is ignored, the previous one stays: %s",
                                kind, k[0], k[1], err)
            self._rebuild_mesh()
        return apply

    def refresh_mesh(self) -> None:
        """Recompile now (the overlay's source changed)."""
        self._rebuild_mesh()

    def _rebuild_mesh(self) -> None:
        """Compile and swap in a new snapshot (requests in flight keep the one they took)."""
        fqdns = [f"{name}.{ns}.{DOMAIN}" for ns, name in self._services]
        extra, extra_errors = self.overlay(self._services) if self.overlay is not None else ({}, {})

        def objs(kind: str) -> list[Obj]:
            return [*self._istio[kind].values(), *extra.get(kind, ())]
        entries = compile_service_entries(objs("ServiceEntry"))
        known = set(fqdns)  # a Service wins over a ServiceEntry of the same name
        cfg = compile_mesh([*fqdns, *(h for h in entries.names() if h not in known)], objs("VirtualService"),
                           objs("DestinationRule"), compile_authz(objs("AuthorizationPolicy")))
        pa = compile_peer_auth(objs("PeerAuthentication"))
        rejected = {f"{kind} {ns}/{name}": err for (kind, (ns, name)), err in self._rejected.items()}
        pa_errors = {f"PeerAuthentication {k}": v for k, v in pa.errors.items()}
        self.access_policies = TelemetryPolicies(self._istio["Telemetry"].values(), self.access_log_default)
        self.mesh = dataclasses.replace(cfg, errors={**cfg.errors, **rejected, **extra_errors, **pa_errors,
                                                     **entries.errors}, peer_auth=pa, entries=entries)
        self._forget_entry_hosts(entries)

    def _forget_entry_hosts(self, entries: ServiceEntries) -> None:
        """Pooled connections and host state of ServiceEntry endpoints that left (as ``_set_endpoints``
        does for a Service's), or of a whole entry that went."""
        for name, c in self._clusters.items():
            parts = name.split("|", 3)
            if len(parts) != 4 or parts[3].endswith("." + DOMAIN):
                continue  # a Service's: _set_endpoints keeps it
            port, host = parts[1], parts[3]
            entry = entries.lookup(host)
            if entry is not None and entry.original_dst:
                continue  # its endpoints are whatever the requests name
            ep = entry.port(int(port)) if entry is not None and port.isdigit() else None
            c.forget(set(ep.endpoints) if ep is not None else set())

    # -- hops to endpoints --------------------------------------------------------------------

    def remote_mode(self, dest: PodInfo | None, port: int, service: str) -> str | None:
        """None when ``dest`` runs on this node; else the client-side mode of the hop to its node."""
        node = self.mesh_node
        if node is None or dest is None or not node.remote(dest):
            return None
        pa = self.mesh.peer_auth
        return _client_mode(self.mesh, service, pa.mode(dest, port) if pa is not None else "PERMISSIVE")

    def hop_security(self, src: PodInfo | None, dest: PodInfo | None, port: int, service: str) -> str:
        """The destination reporter's ``connection_security_policy`` of a hop from ``src`` to ``dest``:
        ``mutual_tls`` when the hop authenticated the caller as a mesh workload, ``none`` otherwise.

        Another node's endpoint: exactly when ``connect`` opens mutual TLS (a mesh caller, a mode other
        than DISABLE, this node holding leaves). An endpoint on this node: the node plays both sidecars
        and knows the caller by its pod IP or egress listener, the identity AuthorizationPolicy and
        STRICT already trust there, so a mesh caller counts as mutual TLS unless the workload's mode (or
        the DestinationRule's ``tls.mode``) is DISABLE, where Istio's sidecars would talk plaintext."""
        if src is None or dest is None or dest.name == "unknown":
            return PLAINTEXT
        mesh = self.mesh
        if self._hop_modes_of is not mesh:  # a new snapshot was swapped in: the answers may differ
            self._hop_modes.clear()
            self._hop_modes_of = mesh
        key = (dest, port, service)
        mode = self._hop_modes.get(key)
        if mode is None:  # PeerAuthentication's inheritance walk and the DestinationRule: once per key
            if len(self._hop_modes) >= _MAX_HOP_MODES:
                self._hop_modes.clear()
            pa = mesh.peer_auth
            mode = self._hop_modes[key] = _client_mode(mesh, service,
                                                       pa.mode(dest, port) if pa is not None else "PERMISSIVE")
        if mode == "DISABLE":
            return PLAINTEXT
        node = self.mesh_node
        if node is not None and node.leaves is None and node.remote(dest):
            return PLAINTEXT  # no certificates here yet: connect goes in plaintext (not cached: leaves come)
        return MUTUAL_TLS

    async def connect(self, host: Backend, src: PodInfo | None, dest: PodInfo | None, http: bool,
                      service: str = "") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to endpoint ``host`` for caller ``src``: through another node's inbound listener
        when ``dest`` runs there, else direct; a caller that is no mesh pod is refused (reset) by a STRICT
        workload here as there."""
        node = self.mesh_node
        pa = self.mesh.peer_auth
        mode = pa.mode(dest, host.port) if pa is not None and dest is not None else "PERMISSIVE"
        if node is not None and dest is not None and node.remote(dest):
            return await node.connect(host, src, dest, http=http, mode=_client_mode(self.mesh, service, mode))
        if src is None and mode == "STRICT" and dest is not None:
            raise PlaintextRefused(f"{dest.namespace}/{dest.name} accepts mutual TLS only (STRICT)")
        return await asyncio.open_connection(host.ip, host.port, limit=CHUNK)

    def target(self, fqdn: str, port: int, from_port: int, from_fqdn: str) -> Target | None:
        """The Service a route destination names and the endpoints of the port it goes to: ``port``, else
        the port the request came in on (same Service), else the Service's only or first port."""
        parts = fqdn.split(".")
        want = port or (from_port if fqdn == from_fqdn else 0)
        if len(parts) < 2 or not fqdn.endswith("." + DOMAIN):
            return self._entry_target(fqdn, want)
        key = (parts[1], parts[0])
        lst = self._by_port.get((key, want)) if want else None
        if lst is None:
            lsts = [x for x in self._listeners.values() if x.spec.service == key]
            if not lsts or want:
                return self._entry_target(fqdn, want)
            lst = min(lsts, key=lambda x: x.spec.port)
        return Target(fqdn, key[0], key[1], lst.spec.port, lst.balancer.usable(),
                      lst.spec.affinity_timeout_s is not None)

    def _entry_target(self, host: str, want: int) -> Target | None:
        """A ServiceEntry's host as a route destination: its port ``want`` (0: its first) and endpoints."""
        entry: HostEntry | None = self.mesh.entries.lookup(host)
        ep = entry.port(want) if entry is not None else None
        if entry is None or ep is None:
            return None
        return Target(entry.host, entry.namespace, entry.host, ep.number, list(ep.endpoints), entry=entry,
                      endpoint_labels=ep.labels)

    def cluster(self, name: str) -> Cluster:
        c = self._clusters.get(name)
        if c is None:
            budget = RetryBudget(*self.retry_budget) if self.retry_budget is not None else None
            c = self._clusters[name] = Cluster(name, self._ejected, budget)
        return c

    def _ejected(self, cluster: str, backend: Backend, seconds: float) -> None:
        """Report an outlier ejection as a change (it moves traffic); never blocks the request."""
        if self.changes is None:
            return
        _, port, subset, fqdn = cluster.split("|", 3)
        name, ns = fqdn.split(".")[:2]
        pod = self.pods.get(backend.ip)
        who = f"pod {pod.namespace}/{pod.name}" if pod else str(backend)
        event = ChangeEvent(kind="other", source="mesh", service=f"{ns}/{name}",
                            summary=f"outlier detection ejected {who} from {cluster} for {seconds:g}s",
                            details={"cluster": cluster, "endpoint": str(backend), "subset": subset, "port": port,
                                     "ejection_s": seconds})
        sink = self.changes

        async def record() -> None:
            try:
                await sink.record(event)
            except Exception:
                log.exception("mesh: recording an ejection failed")

        with contextlib.suppress(RuntimeError):  # stopping
            self.tasks.spawn(record(), name="record-ejection", loop=False)

    def clusters(self) -> dict[str, Cluster]:
        return self._clusters

    # -- listeners ----------------------------------------------------------------------------

    async def _sync(self, keys: set[SvcKey]) -> None:
        async with self._lock:
            for key in sorted(keys):
                await self._sync_service(key)

    async def _sync_service(self, key: SvcKey) -> None:
        svc = self._services.get(key)
        want = {(s.cluster_ip, s.port): s for s in (port_specs(key, svc) if svc else [])}
        for addr in [a for a, lst in self._listeners.items() if lst.spec.service == key and a not in want]:
            self._retire(addr)
        if not want:
            return
        slices = [o for o in self._slices.values() if _owner(o) == key]
        for addr, spec in want.items():
            lst = self._listeners.get(addr)
            if lst is not None and lst.spec.service != key:
                self.bind_errors[addr] = f"already served for {'/'.join(lst.spec.service)}"
                continue
            if lst is None:
                lst = await self._open(spec)
                if lst is None:
                    continue
            lst.spec = spec
            lst.balancer.affinity_timeout_s = spec.affinity_timeout_s
            self._set_endpoints(lst, *endpoints_of(slices, spec.port_name))

    async def _open(self, spec: PortSpec) -> _Listener | None:
        addr = (spec.cluster_ip, spec.port)
        holder: list[_Listener] = []

        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                self.tasks.spawn(self._serve(holder[0], reader, writer), name=f"conn {spec.cluster_ip}:{spec.port}",
                                 loop=False)
            except RuntimeError:  # stopping
                writer.transport.abort()

        try:
            # reuse_port: servers sharing an etcd on one machine all serve every ClusterIP; the kernel spreads
            # the connections over them.
            server = await asyncio.start_server(accepted, spec.cluster_ip, spec.port, limit=CHUNK,
                                                reuse_address=True, reuse_port=True, backlog=1024)
        except OSError as e:
            if addr not in self.bind_errors:
                log.warning("service proxy: cannot listen on %s:%d for %s: %s", *addr, "/".join(spec.service), e)
            self.bind_errors[addr] = str(e)
            return None
        self.bind_errors.pop(addr, None)
        lst = _Listener(spec, server, PortBalancer(spec.affinity_timeout_s))
        holder.append(lst)
        self._listeners[addr] = lst
        self._by_port[(spec.service, spec.port)] = lst
        return lst

    def _retire(self, addr: Addr) -> None:
        lst = self._listeners.pop(addr)
        if self._by_port.get((lst.spec.service, lst.spec.port)) is lst:
            del self._by_port[(lst.spec.service, lst.spec.port)]
        lst.server.close()
        if lst.conns:
            self._retired.append(lst)
            self.tasks.spawn(self._drain(lst, None), name=f"drain {addr[0]}:{addr[1]}", loop=False)

    def _set_endpoints(self, lst: _Listener, ready: list[Backend], fallback: list[Backend]) -> None:
        before = lst.balancer.active()
        lst.balancer.set_endpoints(ready, fallback)
        keep = lst.balancer.active()
        suffix = f"|{lst.spec.fqdn}"
        prefix = f"outbound|{lst.spec.port}|"
        for name, c in self._clusters.items():  # pooled connections and host state of endpoints that left
            if name.startswith(prefix) and name.endswith(suffix):
                c.forget(keep)
        gone = before - keep
        if gone and any(b in gone for b in lst.conns.values()):
            self.tasks.spawn(self._drain(lst, gone), name=f"drain {lst.spec.cluster_ip}:{lst.spec.port}", loop=False)

    async def _drain(self, lst: _Listener, gone: set[Backend] | None) -> None:
        """After the drain timeout, close the connections still open to endpoints that did not come back
        (``gone``), or all of a retired listener's (``None``)."""
        await asyncio.sleep(self.drain_timeout_s)
        retired = gone is None
        for task, backend in list(lst.conns.items()):
            if retired or (backend in (gone or set()) and backend not in lst.balancer.active()):
                task.cancel()
        if retired and lst in self._retired:
            self._retired.remove(lst)

    # -- connections --------------------------------------------------------------------------

    async def _first_bytes(self, reader: asyncio.StreamReader) -> bytes:
        """What the client sent first, enough to tell HTTP/1 from the HTTP/2 preface (a slow client's
        ``P`` could be either); ``b""`` when it closed or stayed silent for the idle timeout."""
        data = b""
        try:
            async with asyncio.timeout(self.http_limits.idle_timeout_s):
                while True:
                    chunk = await reader.read(CHUNK)
                    if not chunk:
                        return b""
                    data += chunk
                    if len(data) >= len(H2_PREFACE) or not H2_PREFACE.startswith(data):
                        return data
        except (TimeoutError, OSError):
            return b""

    def _tcp_access_log(self, sink: AccessLogSink, spec: PortSpec, tcp: _TcpLog, client_ip: str,
                        writer: asyncio.StreamWriter) -> None:
        """Envoy's TCP line for one relayed connection: no HTTP fields, response code 0, bytes each way."""
        up = tcp.upstream
        src = self.pods.get(client_ip)
        pod = src if src is not None else (self.pods.get(up.ip) if up is not None else None)
        if pod is None:
            return  # neither end is a mesh pod: no sidecar saw the connection
        policy = self.access_policies.for_pod(pod)
        if policy is None:
            return
        local, peer = writer.get_extra_info("sockname"), writer.get_extra_info("peername")
        sink.offer(policy, pod, AccessRecord(
            start_ns=tcp.start_ns, method=None, path=None, protocol=None, code=0, flags=tcp.flags, details=None,
            failure_reason=None, bytes_received=tcp.up_bytes, bytes_sent=tcp.down_bytes,
            duration_ms=int((time.perf_counter() - tcp.t0) * 1000), service_time_ms=None, forwarded_for=None,
            user_agent=None, request_id=None, authority=None,
            upstream_host=f"{up.ip}:{up.port}" if up is not None else None,
            upstream_cluster=f"outbound|{spec.port}||{spec.fqdn}",
            downstream_local=f"{local[0]}:{local[1]}" if local else None,
            downstream_remote=f"{peer[0]}:{peer[1]}" if peer else None, route_name=None))

    def _tcp_key(self, spec: PortSpec, client_ip: str, tcp: _TcpLog) -> tuple[str, ...]:
        """Istio's labels of a relayed connection (``traffic.telemetry``), as the HTTP path builds them."""
        dest = self.pods.get(tcp.upstream.ip) if tcp.upstream is not None else None
        src = self.pods.get(client_ip)
        security = self.hop_security(src, dest, tcp.upstream.port, spec.fqdn) if tcp.upstream is not None \
            else PLAINTEXT
        return mesh_labels(src, dest, (spec.fqdn, spec.service[1], spec.service[0]), "tcp", "", "", tcp.flags,
                           security)

    @staticmethod
    def _default_route(spec: PortSpec) -> Route:
        """The route of a Service no VirtualService names: all its endpoints, Istio's default retries."""
        return default_route_for(spec.fqdn)

    async def _serve(self, lst: _Listener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        stats = self.stats.setdefault(lst.spec.service, ServiceStats())
        stats.connections_total += 1
        stats.connections_active += 1
        lst.conns[task] = None
        peer = writer.get_extra_info("peername")
        client_ip = str(peer[0]) if peer else ""

        tcp = _TcpLog(time.time_ns(), time.perf_counter())

        def failed(backend: Backend, e: BaseException) -> None:
            stats.connect_failures += 1
            tcp.failures += 1

        first = b""
        try:
            if lst.spec.http:
                first = await self._first_bytes(reader)
                if not first:
                    tcp.logged = True
                    return
                if not H2_PREFACE.startswith(first[:len(H2_PREFACE)]):
                    tcp.logged = True  # each request is logged by the session
                    session = HttpSession(self, lst.spec.fqdn, lst.spec.port, self.http_limits, client_ip, stats,
                                          self._default_route(lst.spec))
                    await session.serve(reader, writer, first)
                    return
            faults = self.faults

            def candidates() -> list[Backend]:
                got = lst.balancer.candidates(client_ip, time.monotonic())
                if faults.active:  # a NetworkChaos partition: the endpoints cut off from this client refuse
                    got = [b for b in got if not ((link := faults.link(client_ip, b.ip)) and link.refused())]
                return got

            if faults.active and not candidates() and lst.balancer.candidates(client_ip, time.monotonic()):
                writer.transport.abort()  # every endpoint is partitioned from this client: refused at once
                return
            opener = None
            if self.mesh_node is not None:
                src = self.pods.get(client_ip)

                async def opener(b: Backend) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                    return await self.connect(b, src, self.pods.get(b.ip), False, lst.spec.fqdn)
            try:
                up = await connect_any(candidates, budget_s=self.connect_budget_s,
                                       attempt_timeout_s=self.attempt_timeout_s, on_failure=failed, opener=opener)
            except NoEndpoint:
                stats.no_endpoint += 1
                tcp.flags = "UF,URX" if tcp.failures else "UH"
                writer.transport.abort()
                return
            except PlaintextRefused:  # a caller that is no mesh pod, to a STRICT workload: reset at once
                tcp.flags = "UF"
                writer.transport.abort()
                return
            tcp.upstream = up.backend
            if self.telemetry is not None:
                tcp.report = self.telemetry.tcp_opened(self._tcp_key(lst.spec, client_ip, tcp), tcp)
            lst.balancer.chosen(client_ip, up.backend, time.monotonic())
            lst.conns[task] = up.backend
            link = faults.link(client_ip, up.backend.ip) if faults.active else None
            if link is not None and (link.lost_up() or link.lost_down()):
                writer.transport.abort()  # NetworkChaos loss: this connection is lost
                up.writer.transport.abort()
                return
            if first:  # HTTP/2 on an HTTP port: relayed as bytes (no L7 routing)
                up.writer.write(first)
                stats.add_sent(len(first))
                tcp.up_bytes += len(first)
            await splice((reader, writer), (up.reader, up.writer), sent=tcp.counter(stats.add_sent, True),
                         received=tcp.counter(stats.add_received, False), **_shapers(link, client_ip, up.backend.ip))
        finally:
            if tcp.logged is False and self.telemetry is not None:
                # one that never reached an endpoint is counted opened and closed now, as Envoy does
                report = tcp.report or self.telemetry.tcp_opened(self._tcp_key(lst.spec, client_ip, tcp), tcp)
                self.telemetry.tcp_closed(report)
            if tcp.logged is False and self.access_log is not None and self.access_policies.active:
                self._tcp_access_log(self.access_log, lst.spec, tcp, client_ip, writer)
            stats.connections_active -= 1
            lst.conns.pop(task, None)
            if not writer.is_closing():
                await close_writer(writer)


def _shapers(link: Link | None, client_ip: str, endpoint_ip: str) -> dict[str, Any]:
    """``splice``'s per-direction shapers for the network faults on a connection (none without faults)."""
    if link is None:
        return {}
    out: dict[str, Any] = {}
    if link.up:
        async def up(data: bytes) -> bytes:
            return await link.send_up(client_ip, data)
        out["shape_up"] = up
    if link.down:
        async def down(data: bytes) -> bytes:
            return await link.send_down(endpoint_ip, data)
        out["shape_down"] = down
    return out


_DEFAULT_ROUTES: dict[str, Route] = {}


@dataclass
class _TcpLog:
    """What the access log needs of one relayed TCP connection, filled in as it goes."""

    start_ns: int
    t0: float
    failures: int = 0
    flags: str = "-"
    upstream: Backend | None = None
    up_bytes: int = 0
    down_bytes: int = 0
    logged: bool = False  # HTTP sessions log per request; the connection itself is not logged then
    report: TcpReport | None = None  # Istio's TCP metrics follow the connection once an endpoint took it

    def counter(self, inner: Callable[[int], None], up: bool) -> Callable[[int], None]:
        """``inner`` (the Service's byte counter) that also counts this connection's bytes."""
        def count(n: int) -> None:
            inner(n)
            if up:
                self.up_bytes += n
            else:
                self.down_bytes += n
        return count


def default_route_for(fqdn: str) -> Route:
    """The route of a Service no VirtualService names (shared per FQDN): all its endpoints, Istio's
    default retries."""
    r = _DEFAULT_ROUTES.get(fqdn)
    if r is None:
        if len(_DEFAULT_ROUTES) > 10_000:
            _DEFAULT_ROUTES.clear()
        r = _DEFAULT_ROUTES[fqdn] = Route("default", (), (RouteDest(fqdn),))
    return r


def _compile_error(kind: str, o: Obj) -> str | None:
    """Why the mesh cannot use this object (a bad regex, a bad duration), or None."""
    if kind == "VirtualService":
        errs = compile_mesh([], [o], []).errors
    elif kind == "DestinationRule":
        errs = compile_mesh([], [], [o]).errors
    elif kind == "Telemetry":
        return telemetry_error(o)
    elif kind == "ServiceEntry":
        return entry_error(o)
    else:
        return None
    return next(iter(errs.values()), None)


def _key(o: Obj) -> tuple[str, str]:
    m = o.get("metadata") or {}
    return str(m.get("namespace") or "default"), str(m.get("name") or "")


def _owner(sl: Obj) -> SvcKey:
    m = sl.get("metadata") or {}
    return str(m.get("namespace") or "default"), str((m.get("labels") or {}).get(SERVICE_NAME_LABEL) or "")


def _client_mode(mesh: MeshConfig, service: str, server_mode: str) -> str:
    """Istio's auto-mTLS on the client side: TLS unless the server's mode is DISABLE, overridden by the
    DestinationRule of ``service`` when its ``tls.mode`` is ``DISABLE`` (plaintext) or ``ISTIO_MUTUAL``."""
    rule = mesh.dest_rule(service) if service else None
    if rule is not None and rule.tls_mode == "DISABLE":
        return "DISABLE"
    if rule is not None and rule.tls_mode == "ISTIO_MUTUAL":
        return "STRICT"
    return server_mode
