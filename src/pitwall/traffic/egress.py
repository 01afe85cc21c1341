"""Per-pod egress listeners: a pod's HTTP calls reach the mesh as that pod, whatever their source address.

Istio captures a pod's outbound traffic with iptables into the sidecar's
port 15001. pitwall's pods share the host's network namespace, so nothing
can be captured; instead each running pod gets a listener on its own pod IP
at that port (``EGRESS_PORT``) and its containers get ``HTTP_PROXY`` /
``http_proxy`` naming it (``NO_PROXY`` / ``no_proxy``: localhost,
127.0.0.1 and the pod's own IP, so calls inside the pod stay direct).
Clients that honour the variables (Python's urllib and requests, curl,
Go's net/http, ...) send their requests there in proxy form; the listener's
address says which pod calls, so the source address no longer matters.

A request is resolved to a Service port (its ClusterIP, or
``<svc>[.<ns>[.svc[.cluster.local]]]``, short names in the pod's
namespace). On a port Istio treats as HTTP it is handed to the service
proxy's HTTP path (``traffic.http.HttpSession``) exactly as a request to
that ClusterIP:port from the pod's IP would be: VirtualService,
DestinationRule, AuthorizationPolicy with the pod's SPIFFE principal,
retries, Istio's metrics, spans, access logs. On a port Istio treats as TCP
it is sent over a connection to the ClusterIP from the pod's IP, so the
service proxy relays it as bytes and knows the caller, as without the
listener (no L7 features, no spans added). A ServiceEntry's host and port
(``traffic.serviceentry``) is served the same way: its HTTP ports by the HTTP
path (routes, policies, metrics of the entry's host), its other ports relayed
to one of its endpoints and counted here. Other hosts are forwarded as Istio's
``ALLOW_ANY`` outbound policy does (the PassthroughCluster): one upstream
connection per request, from the pod's IP when the destination is a
loopback address (so pods and other proxies see the pod). ``CONNECT``
tunnels TCP: to a Service's ClusterIP (from the pod's IP, so the service
proxy sees the pod) or to the named host.

Bounds: the HTTP path's limits (headers 60 KiB → 431, bodies), a
``CONNECT`` head within the same header limit, at most ``max_connections``
connections per pod (more are reset), the HTTP path's idle timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httptools

from pitwall.traffic.http import (
    HOP_HEADERS,
    Failure,
    HttpRequest,
    HttpResponse,
    HttpSession,
    TooLarge,
    UpstreamEOF,
    connect_detail,
    failure_response,
    local_reply,
    read_response,
    request_head,
    serialize_response,
)
from pitwall.traffic.pods import PodInfo, pod_info
from pitwall.traffic.proxy import PortSpec, ServiceProxy, ServiceStats, default_route_for
from pitwall.traffic.relay import CHUNK, close_writer, splice
from pitwall.traffic.telemetry import NO_DESTINATION, TcpReport, mesh_labels, passthrough_labels

__all__ = ["EGRESS_PORT", "EgressListeners", "EgressSession", "EgressStats"]

log = logging.getLogger(__name__)

Obj = dict[str, Any]
EGRESS_PORT = 15001  # Envoy's outbound (virtualOutbound) port in an Istio sidecar
MAX_CONNECTIONS = 256  # per pod
_CONNECT = b"CONNECT "
_DROP_PASSTHROUGH = HOP_HEADERS | {"host", "proxy-authorization"}


@dataclass
class EgressStats:
    """Counters of every pod's egress listener, for the proxy's metrics."""

    connections_total: int = 0
    rejected: int = 0  # connections reset because the pod had max_connections open
    service_requests: int = 0  # requests routed to a Service through the mesh
    tcp_service_requests: int = 0  # requests to a Service port Istio treats as TCP: relayed from the pod's IP
    passthrough_requests: int = 0  # requests to hosts that are no Service
    tunnels: int = 0  # CONNECT tunnels opened


@dataclass(eq=False)
class _PodListener:
    pod_ip: str
    info: PodInfo
    server: asyncio.Server
    conns: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{self.pod_ip}:{self.server.sockets[0].getsockname()[1]}"


class EgressListeners:
    """The egress listeners of this node's pods (a Component; the kubelet opens and closes one per pod
    through ``open``/``close``, before its containers start and after they stopped)."""

    name = "mesh-egress"

    def __init__(self, proxy: ServiceProxy, *, port: int = EGRESS_PORT, max_connections: int = MAX_CONNECTIONS,
                 connect_timeout_s: float = 10.0) -> None:
        self.proxy = proxy
        self.port = port
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self.stats = EgressStats()
        self._pods: dict[str, _PodListener] = {}  # pod IP -> its listener
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to start: listeners come with pods (the kubelet may open some before this)."""

    async def stop(self) -> None:
        """Close every listener and connection; later ``open`` calls answer None."""
        self._stopped = True
        for ip in list(self._pods):
            await self.close(ip)

    @property
    def healthy(self) -> bool:
        return True

    def listening(self) -> dict[str, str]:
        """Pod IP -> the egress URL handed to its containers, for every listener open now."""
        return {ip: lst.url for ip, lst in self._pods.items()}

    def open_connections(self) -> int:
        return sum(len(lst.conns) for lst in self._pods.values())

    async def open(self, pod: Obj, pod_ip: str) -> str | None:
        """Listen on ``pod_ip``'s egress port for ``pod``; the URL for ``HTTP_PROXY``, or None when the
        port cannot be had (the pod then runs without a proxy: logged)."""
        if self._stopped or not pod_ip:
            return None
        info = pod_info(pod)
        lst = self._pods.get(pod_ip)
        if lst is not None:
            lst.info = info
            return lst.url
        holder: list[_PodListener] = []

        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self._stopped or not holder or self._pods.get(pod_ip) is not holder[0]:  # not (or no more) ours
                writer.transport.abort()
                return
            if len(holder[0].conns) >= self.max_connections:
                self.stats.rejected += 1
                writer.transport.abort()
                return
            task = asyncio.get_running_loop().create_task(self._serve(holder[0], reader, writer),
                                                          name=f"egress {pod_ip}")
            holder[0].conns.add(task)
            task.add_done_callback(holder[0].conns.discard)

        try:
            server = await asyncio.start_server(accepted, pod_ip, self.port, limit=CHUNK, reuse_address=True)
        except OSError as e:
            log.warning("mesh egress: cannot listen on %s:%d for pod %s/%s: %s", pod_ip, self.port,
                        info.namespace, info.name, e)
            return None
        lst = _PodListener(pod_ip, info, server)
        holder.append(lst)
        self._pods[pod_ip] = lst
        self._claim(lst)
        return lst.url

    async def close(self, pod_ip: str) -> None:
        """Stop listening for the pod at ``pod_ip`` and end its open connections (idempotent)."""
        lst = self._pods.pop(pod_ip, None)
        if lst is None:
            return
        lst.server.close()
        for t in list(lst.conns):
            t.cancel()
        for t in list(lst.conns):
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(lst.server.wait_closed(), 1.0)
        if self.proxy.pods.get(pod_ip) is lst.info:  # our own entry: the watch never replaced it
            del self.proxy.pods[pod_ip]

    def _claim(self, lst: _PodListener) -> None:
        """Make the proxy know the pod behind ``lst`` before the watch has seen its pod IP (the kubelet
        publishes the IP after the containers started): the HTTP path looks callers up by IP."""
        if self.proxy.pods.get(lst.pod_ip) is None:
            self.proxy.pods[lst.pod_ip] = lst.info

    # -- connections --------------------------------------------------------------------------

    async def _serve(self, lst: _PodListener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.connections_total += 1
        try:
            first = await self._first_bytes(reader)
            if not first:
                return
            self._claim(lst)
            if first.startswith(_CONNECT):
                await self._tunnel(lst, reader, writer, first)
                return
            session = EgressSession(self, lst)
            await session.serve(reader, writer, first)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if not writer.is_closing():
                await close_writer(writer)

    async def _first_bytes(self, reader: asyncio.StreamReader) -> bytes:
        """Enough of what the client sent to tell ``CONNECT`` from other requests; ``b""`` when it
        closed or stayed silent for the idle timeout."""
        data = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.proxy.http_limits.idle_timeout_s):
                while len(data) < len(_CONNECT) and _CONNECT.startswith(data):
                    chunk = await reader.read(CHUNK)
                    if not chunk:
                        return b""
                    data += chunk
        return data

    def resolve(self, host: str, port: int, namespace: str) -> PortSpec | None:
        """The Service port (or ServiceEntry host and port) ``host:port`` names for a pod of
        ``namespace``, or None."""
        return self.proxy.service_port(host, port, namespace)

    def upstream(self, spec: PortSpec, host: str, port: int) -> tuple[str, int]:
        """Where a connection for ``spec`` goes when its bytes are relayed: a Service's ClusterIP (the
        service proxy takes it from there), one of a ServiceEntry's endpoints (picked at random, in
        proportion to their weights), or, for an entry of resolution ``NONE``, ``host:port`` itself."""
        if not spec.host:
            return spec.cluster_ip, spec.port
        entry = self.proxy.mesh.entries.lookup(spec.host)
        ep = entry.port(spec.port) if entry is not None else None
        if ep is None or not ep.endpoints:
            return host, port
        b = random.choice(ep.endpoints)
        return b.ip, b.port

    async def _tunnel(self, lst: _PodListener, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      first: bytes) -> None:
        """``CONNECT host:port``: a TCP tunnel, to the Service's ClusterIP from the pod's IP (the service
        proxy sees the pod) or to the named host."""
        head = first
        limit = self.proxy.http_limits.max_header_bytes
        while b"\r\n\r\n" not in head:
            if len(head) > limit:
                await _answer(writer, 431, b"request header too large")
                return
            chunk = await reader.read(CHUNK)
            if not chunk:
                return
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        if len(head) > limit:
            await _answer(writer, 431, b"request header too large")
            return
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        where = _host_port(parts[1], None) if len(parts) == 3 else None
        if where is None:
            await _answer(writer, 400, b"CONNECT needs host:port")
            return
        host, port = where
        spec = self.resolve(host, port, lst.info.namespace)
        dest = self.upstream(spec, host, port) if spec is not None else (host, port)
        # A Service's ClusterIP is counted by the service proxy; a ServiceEntry's host and another host
        # (Istio's PassthroughCluster) are counted here.
        meter = _TunnelMeter(self, lst.info, _entry_service(spec)) if spec is None or spec.host else None
        try:
            ur, uw = await self._open_upstream(lst, *dest)
        except (OSError, TimeoutError) as e:
            resp = failure_response(Failure("connect", connect_detail(e)))
            if meter is not None:
                meter.opened("UF")
                meter.closed()
            await _answer(writer, resp.status, resp.body)
            return
        self.stats.tunnels += 1
        if meter is not None:
            meter.opened("-")
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            if rest:
                uw.write(rest)
                if meter is not None:
                    meter.up_bytes += len(rest)
            await splice((reader, writer), (ur, uw), sent=meter.sent if meter else _ignore,
                         received=meter.received if meter else _ignore)
        finally:
            if meter is not None:
                meter.closed()

    async def _open_upstream(self, lst: _PodListener, host: str,
                             port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to ``host:port`` leaving from the pod's IP when ``host`` is a loopback address
        (where pods, the service proxy and NetworkChaos tell callers apart by source address)."""
        local = (lst.pod_ip, 0) if _loopback(host) else None
        async with asyncio.timeout(self.connect_timeout_s):
            return await asyncio.open_connection(host, port, limit=CHUNK, local_addr=local)

    async def forward(self, lst: _PodListener, req: HttpRequest, host: str, port: int,
                      authority: str) -> HttpResponse:
        """Forward one request to ``host:port`` (a host that is no Service: Istio's PassthroughCluster under
        ``ALLOW_ANY``; or a TCP Service port's ClusterIP) over a connection of its own from the pod's IP
        when ``host`` is a loopback address, closed after the answer."""
        try:
            ur, uw = await self._open_upstream(lst, host, port)
        except (OSError, TimeoutError) as e:
            return failure_response(Failure("connect", connect_detail(e)))
        hs = [(k, v) for k, v in req.headers if k.lower() not in _DROP_PASSTHROUGH]
        hs.append(("connection", "close"))
        limits = self.proxy.http_limits
        t0 = time.perf_counter()
        try:
            uw.write(request_head(req.method, req.target, authority, hs, req.body) + req.body)
            async with asyncio.timeout(limits.idle_timeout_s):
                resp = await read_response(ur, req.method == "HEAD", limits.max_response_bytes)
        except TimeoutError:
            return local_reply(504, b"upstream request timeout", "UT", details="upstream_response_timeout")
        except TooLarge:
            return local_reply(502, b"upstream response too large")  # as the HTTP path answers it
        except (UpstreamEOF, OSError, httptools.HttpParserError, asyncio.IncompleteReadError):
            return failure_response(Failure("reset", "connection termination"))
        finally:
            await close_writer(uw)
        resp.service_ms = int((time.perf_counter() - t0) * 1000)
        return resp


class EgressSession(HttpSession):
    """One client connection on a pod's egress listener: each request (proxy form, or origin form with
    a Host) is routed as the service proxy routes a request to the Service it names, from the pod."""

    def __init__(self, egress: EgressListeners, lst: _PodListener) -> None:
        proxy = egress.proxy
        super().__init__(proxy, "", 0, proxy.http_limits, lst.pod_ip, ServiceStats(), default_route_for(""))
        self.egress = egress
        self.lst = lst

    async def _one(self, req: HttpRequest, writer: asyncio.StreamWriter) -> bool:
        """Resolve the request's destination, then serve it as the Service's port would (or pass it
        through when it names no Service)."""
        dest = _destination(req)
        if dest is None:
            return await _reply(writer, req,
                                local_reply(400, b"bad proxy request: an http:// URL or a Host is needed"))
        host, port, authority, path = dest
        req.target = path
        req.headers = [(k, v) for k, v in req.headers if k.lower() not in ("host", "proxy-authorization")]
        req.headers.append(("Host", authority))
        req.lower["host"] = authority
        req.lower.pop("proxy-authorization", None)
        spec = self.egress.resolve(host, port, self.lst.info.namespace)
        if spec is None:
            self.egress.stats.passthrough_requests += 1
            t0 = time.perf_counter()
            resp = await self.egress.forward(self.lst, req, host, port, authority)
            keep = await _reply(writer, req, resp)
            tel = self.egress.proxy.telemetry
            if tel is not None:  # Istio's PassthroughCluster series, from this pod's sidecar only
                proto = "grpc" if req.lower.get("content-type", "").startswith("application/grpc") else "http"
                tel.record(passthrough_labels(self.lst.info, authority, proto, str(resp.status), resp.flags),
                           (time.perf_counter() - t0) * 1000.0, len(req.body), len(resp.body))
            return keep
        if not spec.http:  # as the ClusterIP serves it: a byte relay that knows the pod by its address
            self.egress.stats.tcp_service_requests += 1
            resp = await self.egress.forward(self.lst, req, *self.egress.upstream(spec, host, port), authority)
            service = _entry_service(spec)
            if service is not None:  # a ServiceEntry's TCP port: no service proxy counts it, a TCP series here
                meter = _TunnelMeter(self.egress, self.lst.info, service)
                meter.opened("UF" if resp.flags == "UF" else "-")
                meter.up_bytes, meter.down_bytes = len(req.body), len(resp.body)
                meter.closed()
            return await _reply(writer, req, resp)
        self.egress.stats.service_requests += 1
        if self.remote_addr:  # the access log's downstream peer is the pod (as the app's address to a sidecar)
            self.remote_addr = f"{self.lst.pod_ip}:{self.remote_addr.rpartition(':')[2]}"
        self.fqdn, self.port = spec.fqdn, spec.port
        self.stats = self.egress.proxy.stats.setdefault(spec.service, ServiceStats())
        self.default_route = default_route_for(spec.fqdn)
        return await super()._one(req, writer)


class _TunnelMeter:
    """The bytes of one ``CONNECT`` tunnel to a host that is no Service, and its Istio TCP series
    (``PassthroughCluster``, the pod's source labels), kept as the service proxy's relay keeps its own."""

    __slots__ = ("down_bytes", "egress", "pod", "report", "service", "up_bytes")

    def __init__(self, egress: EgressListeners, pod: PodInfo, service: tuple[str, str, str] | None = None) -> None:
        self.egress, self.pod = egress, pod
        self.service = service  # a ServiceEntry's (host, host, namespace); None: the PassthroughCluster
        self.report: TcpReport | None = None
        self.up_bytes = 0  # from the pod (Istio's "received")
        self.down_bytes = 0  # to the pod (Istio's "sent")

    def sent(self, n: int) -> None:
        self.up_bytes += n

    def received(self, n: int) -> None:
        self.down_bytes += n

    def opened(self, flags: str) -> None:
        tel = self.egress.proxy.telemetry
        if tel is not None:
            key = passthrough_labels(self.pod, "", "tcp", "", flags) if self.service is None else mesh_labels(
                self.pod, None, self.service, "tcp", "", "", flags, NO_DESTINATION)
            self.report = tel.tcp_opened(key, self)

    def closed(self) -> None:
        tel = self.egress.proxy.telemetry
        if tel is not None and self.report is not None:
            tel.tcp_closed(self.report)
            self.report = None


def _entry_service(spec: PortSpec | None) -> tuple[str, str, str] | None:
    """Istio's destination service labels of a ServiceEntry's host (the host is the service name, the
    entry's namespace its namespace); None for anything else."""
    if spec is None or not spec.host:
        return None
    return spec.host, spec.host, spec.service[0]


def _destination(req: HttpRequest) -> tuple[str, int, str, str] | None:
    """(host, port, authority, origin-form path) of a proxy-form request (the URL's authority wins over
    the Host header, RFC 9112 3.2.2), or of an origin-form one by its Host; None when neither names one."""
    target = req.target
    if target.startswith("/"):
        authority = req.lower.get("host", "")
        path = target
    else:
        try:
            u = urlsplit(target)
        except ValueError:
            return None
        if u.scheme.lower() != "http" or not u.netloc:
            return None
        authority = u.netloc.rpartition("@")[2]
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    where = _host_port(authority, 80)
    if where is None:
        return None
    return where[0], where[1], authority, path


def _host_port(authority: str, default: int | None) -> tuple[str, int] | None:
    """``host[:port]`` (``[v6]:port`` too) split; None when malformed or a needed port is missing."""
    try:
        u = urlsplit(f"//{authority}")
        host, port = u.hostname, u.port
    except ValueError:
        return None
    if not host or (port is None and default is None):
        return None
    return host, port if port is not None else int(default or 0)


def _loopback(host: str) -> bool:
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return addr.version == 4 and addr.is_loopback


def _ignore(n: int) -> None:
    return None


async def _reply(writer: asyncio.StreamWriter, req: HttpRequest, resp: HttpResponse) -> bool:
    keep = req.keep_alive
    writer.write(serialize_response(resp, keep_alive=keep, head_only=req.method == "HEAD"))
    try:
        await writer.drain()
    except OSError:
        return False
    return keep


async def _answer(writer: asyncio.StreamWriter, status: int, body: bytes) -> None:
    writer.write(serialize_response(local_reply(status, body), keep_alive=False, head_only=False))
    with contextlib.suppress(OSError):
        await writer.drain()
