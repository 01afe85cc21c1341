"""The HTTP/1.1 data path of the mesh: parse, route, authorise, forward with retries, count.

One ``HttpSession`` per client connection on a Service port Istio treats
as HTTP. Requests are parsed with ``httptools`` (llhttp) and handled one
after another (pipelined requests wait their turn); each is routed by the
``MeshConfig`` snapshot it took at its start (``mesh``), sent over a pooled
keep-alive connection (``cluster``), retried as Envoy does, and counted in
Istio's metrics (``telemetry``). Local replies carry Envoy's status codes,
bodies and response flags, so clients and dashboards read them as they
would Envoy's.

Bounds: request line plus headers ``max_header_bytes`` (431), request body
``max_body_bytes`` (413), response body ``max_response_bytes`` (502); an
idle client connection is closed after ``idle_timeout_s``. Bodies are
buffered (a retry must resend the request; a response is inspected before
it is passed on), which is why they are bounded. A connection that opens
with the HTTP/2 preface (gRPC, h2c) is relayed as TCP without L7 features.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httptools

from pitwall.traffic.accesslog import AccessLogSink, AccessRecord, TelemetryPolicies
from pitwall.traffic.authz import AuthzRequest
from pitwall.traffic.balancer import Backend
from pitwall.traffic.cluster import Cluster, Overflow, UpConn
from pitwall.traffic.faults import FaultTable, HttpMessage
from pitwall.traffic.mesh import DOMAIN, LbPolicy, MeshConfig, Policy, Request, Retry, Route, RouteDest
from pitwall.traffic.pods import UNKNOWN, PodInfo
from pitwall.traffic.relay import CHUNK
from pitwall.traffic.serviceentry import HostEntry
from pitwall.traffic.telemetry import NO_DESTINATION, MeshTelemetry, mesh_labels
from pitwall.traffic.tracing import MeshTracer

__all__ = ["H2_PREFACE", "HOP_HEADERS", "Failure", "HttpLimits", "HttpRequest", "HttpResponse", "HttpSession",
           "MeshView", "Target", "TooLarge", "UpstreamEOF", "cancel_mirrors", "connect_detail", "failure_response",
           "local_reply", "read_response", "request_head", "serialize_response", "serve_inbound"]

log = logging.getLogger(__name__)

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Headers that belong to one connection (RFC 9110 7.6.1) plus the framing this proxy writes itself: never
# copied from one side to the other.
HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                         "upgrade", "content-length", "expect"})
_TRACE = frozenset({"traceparent", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled"})
_DROP_UP = HOP_HEADERS | _TRACE | {"host"}  # not copied upstream: hop-by-hop, rewritten trace context, host
_UC_BODY = b"upstream connect error or disconnect/reset before headers. reset reason: "
_GRPC_RETRY = {"cancelled": "1", "deadline-exceeded": "4", "resource-exhausted": "8", "internal": "13",
               "unavailable": "14"}
_MAX_MIRRORS = 1000  # mirrored copies in flight, process-wide
_MIRRORS: set[asyncio.Task[Any]] = set()
_MIRROR_RETRY = Retry(0, 10.0)  # a copy is tried once and given up after 10 s
_BACKOFF_BASE_S = 0.025  # Envoy's default retry back-off base interval
_BACKOFF_MAX_S = 0.25  # and its default maximum (10 x base)


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = 60 * 1024  # Envoy's max_request_headers_kb default
    max_body_bytes: int = 16 * 1024 * 1024
    max_response_bytes: int = 64 * 1024 * 1024
    idle_timeout_s: float = 300.0


@dataclass
class Target:
    """Where a destination resolves: the Service, its port and the endpoints serving it now."""

    fqdn: str
    namespace: str
    name: str
    port: int
    endpoints: list[Backend]
    affinity: bool = False  # the Service has sessionAffinity ClientIP
    entry: HostEntry | None = None  # a ServiceEntry's host (``name`` is the host, ``namespace`` the entry's)
    endpoint_labels: Mapping[Backend, Mapping[str, str]] | None = None  # a ServiceEntry's endpoints' labels

    @property
    def external(self) -> bool:
        """A ``MESH_EXTERNAL`` ServiceEntry: no sidecar at the other end authorises or reports."""
        return self.entry is not None and self.entry.external

    def subset(self, endpoints: list[Backend], labels: tuple[tuple[str, str], ...],
               pods: Mapping[str, PodInfo]) -> list[Backend]:
        """The ``endpoints`` carrying ``labels`` (a DestinationRule subset): a ServiceEntry's endpoints
        by their own labels, a Service's by their pods'."""
        if not labels:
            return endpoints
        own = self.endpoint_labels
        if own is not None:
            return [b for b in endpoints if all((own.get(b) or {}).get(k) == v for k, v in labels)]
        return [b for b in endpoints if _has_labels(pods.get(b.ip), labels)]

    def endpoints_for(self, authority: str) -> list[Backend]:
        """The endpoints of a request naming ``authority``: a ServiceEntry of resolution ``NONE`` sends
        it where it names (Envoy's original destination: the host, on this port)."""
        if self.entry is None or not self.entry.original_dst:
            return self.endpoints
        host = authority.rpartition("]")[0][1:] if authority.startswith("[") else authority.partition(":")[0]
        return [Backend(host, self.port)] if host else []


class MeshView(Protocol):
    """What a session needs of the proxy (``ServiceProxy`` provides it)."""

    mesh: MeshConfig
    pods: dict[str, PodInfo]
    telemetry: MeshTelemetry | None
    tracer: MeshTracer | None
    access_log: AccessLogSink | None
    access_policies: TelemetryPolicies
    faults: FaultTable

    def target(self, fqdn: str, port: int, from_port: int, from_fqdn: str) -> Target | None: ...

    def cluster(self, name: str) -> Cluster: ...

    def remote_mode(self, dest: PodInfo | None, port: int, service: str) -> str | None:
        """None when ``dest`` runs on this node; else the mode of the hop to its node (``DISABLE``:
        plaintext, else mutual TLS for a mesh caller), where it is authorised."""
        ...

    async def connect(self, host: Backend, src: PodInfo | None, dest: PodInfo | None, http: bool,
                      service: str = "") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to ``host``: direct on this node, through its node's inbound listener else."""
        ...

    def hop_security(self, src: PodInfo | None, dest: PodInfo | None, port: int, service: str) -> str:
        """``connection_security_policy`` of the hop from ``src`` to ``dest`` (``traffic.telemetry``)."""
        ...


@dataclass(frozen=True, slots=True)
class _Hop:
    """A request's way to another node's endpoint: who calls (its certificate) and whom."""

    src: PodInfo | None
    dest: PodInfo
    service: str
    tls: bool  # the mode in force: a pooled connection of the other mode is not reused

    @property
    def ident(self) -> str:
        if self.src is None or not self.tls:
            return "plaintext"
        return self.src.principal


class TooLarge(Exception):
    """A message passed a size limit; ``status`` is the answer (413 body, 431 headers, 502 response)."""

    def __init__(self, status: int) -> None:
        self.status = status


@dataclass(slots=True)
class HttpRequest:
    """One parsed client request, body buffered (a retry must resend it)."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    keep_alive: bool
    version: str
    lower: dict[str, str]  # lower-cased name -> value (the last one), built while parsing


class _ReqParser:
    """httptools callbacks collecting complete requests, enforcing the size limits."""

    def __init__(self, limits: HttpLimits, on_expect: Callable[[], None]) -> None:
        self.limits = limits
        self.on_expect = on_expect
        self.parser = httptools.HttpRequestParser(self)
        self.done: list[HttpRequest] = []
        self._reset()

    def _reset(self) -> None:
        self.url = bytearray()
        self.headers: list[tuple[str, str]] = []
        self.lower: dict[str, str] = {}
        self.body = bytearray()
        self.head_bytes = 0

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > self.limits.max_header_bytes:
            raise TooLarge(431)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > self.limits.max_header_bytes:
            raise TooLarge(431)
        n, v = name.decode("latin-1"), value.decode("latin-1")
        self.headers.append((n, v))
        self.lower[n.lower()] = v

    def on_headers_complete(self) -> None:
        cl = self.lower.get("content-length", "")
        if cl.strip().isdigit() and int(cl) > self.limits.max_body_bytes:
            raise TooLarge(413)
        if self.lower.get("expect", "").lower() == "100-continue":
            self.on_expect()

    def on_body(self, body: bytes) -> None:
        self.body += body
        if len(self.body) > self.limits.max_body_bytes:
            raise TooLarge(413)

    def on_message_complete(self) -> None:
        p = self.parser
        self.done.append(HttpRequest(p.get_method().decode("latin-1"), self.url.decode("latin-1"), self.headers,
                              bytes(self.body), p.should_keep_alive(), p.get_http_version(), self.lower))


@dataclass(slots=True)
class HttpResponse:
    """One response, from an upstream or made here (``local_reply``), with Envoy's response flags."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    keep_alive: bool = True
    flags: str = "-"
    upstream: Backend | None = None
    service_ms: int | None = None  # the upstream's time to answer (Envoy's x-envoy-upstream-service-time)
    details: str | None = None  # Envoy's %RESPONSE_CODE_DETAILS% for a local reply (an upstream's: via_upstream)


class UpstreamEOF(Exception):
    """The upstream closed before a complete response; ``got_bytes`` tells whether it had sent any (a
    kept-alive connection closed by the server before any byte may be retried on a new one)."""

    def __init__(self, got_bytes: bool) -> None:
        self.got_bytes = got_bytes


class _RespParser:
    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.status = 0
        self.headers_done = False
        self.complete = False
        self.has_length = False
        self.keep_alive = False

    def on_message_begin(self) -> None:
        self.headers, self.body, self.headers_done = [], bytearray(), False

    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.decode("latin-1")
        if n.lower() in ("content-length", "transfer-encoding"):
            self.has_length = True
        self.headers.append((n, value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body += body
        if len(self.body) > self.max_body:
            raise TooLarge(502)

    def on_message_complete(self) -> None:
        if 100 <= self.status < 200:  # an interim response: the real one follows
            self.headers_done = False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # only meaningful inside this callback


async def read_response(reader: asyncio.StreamReader, head_only: bool, max_body: int) -> HttpResponse:
    """Read one response from an upstream (interim 1xx skipped). Raises ``UpstreamEOF`` when it closes
    early, ``TooLarge`` past ``max_body``, ``httptools.HttpParserError`` on a malformed one."""
    st = _RespParser(max_body)
    got = False
    while not st.complete:
        data = await reader.read(CHUNK)
        if not data:
            if st.headers_done and not st.has_length:  # body delimited by the close
                return HttpResponse(st.status, st.headers, bytes(st.body), keep_alive=False)
            raise UpstreamEOF(got)
        got = True
        try:
            st.parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, TooLarge):
                raise e.__context__ from None
            raise
        if head_only and st.headers_done and st.status >= 200:
            return HttpResponse(st.status, st.headers, b"", keep_alive=False)
    return HttpResponse(st.status, st.headers, bytes(st.body), keep_alive=st.keep_alive)


@dataclass(slots=True)
class Failure:
    """Why a try got no response (``failure_response`` makes Envoy's answer of it)."""

    kind: str  # connect | reset | timeout | overflow
    detail: str = ""


@dataclass
class _Outcome:
    resp: HttpResponse
    dest: PodInfo = UNKNOWN
    target: Target | None = None
    trace: _Trace | None = None
    cluster: str = ""
    route: str = ""


def local_reply(status: int, body: bytes = b"", flags: str = "-", headers: list[tuple[str, str]] | None = None,
           details: str | None = None) -> HttpResponse:
    """A reply made by the proxy itself (Envoy's local reply): ``flags`` and ``details`` are Envoy's
    response flags and %RESPONSE_CODE_DETAILS%."""
    hs = [("content-type", "text/plain")] if body else []
    return HttpResponse(status, hs + (headers or []), body, True, flags, details=details)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


class HttpSession:
    """Serves one client connection of an HTTP Service port."""

    def __init__(self, view: MeshView, service_fqdn: str, port: int, limits: HttpLimits, client_ip: str,
                 stats: Any, default_route: Route) -> None:
        self.view = view
        self.fqdn = service_fqdn
        self.port = port
        self.limits = limits
        self.client_ip = client_ip
        self.stats = stats
        self.default_route = default_route
        self.idle_since = 0.0  # monotonic time the connection started waiting for a request; 0 while busy
        self.local_addr = ""  # the Service address the client connected to (Envoy's downstream local address)
        self.remote_addr = ""  # the client's ip:port
        self._watchdog: asyncio.TimerHandle | None = None

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes) -> None:
        """Handle requests until the client closes, asks to, or goes idle. ``first`` was already read."""
        # One timer per connection, not one per read: it closes the connection once idle for too long.
        self._watchdog = asyncio.get_running_loop().call_later(self.limits.idle_timeout_s, self._idle_check, writer)
        if self.view.access_log is not None:
            self.local_addr, self.remote_addr = _addr(writer, "sockname"), _addr(writer, "peername")
        try:
            await self._serve(reader, writer, first)
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
            self._watchdog = None

    def _idle_check(self, writer: asyncio.StreamWriter) -> None:
        idle = self.idle_since
        limit = self.limits.idle_timeout_s
        if idle and time.monotonic() - idle >= limit:
            writer.transport.abort()  # the pending read sees a reset and the session ends
            return
        wait = limit - (time.monotonic() - idle) if idle else limit
        self._watchdog = asyncio.get_running_loop().call_later(wait, self._idle_check, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes) -> None:
        p = _ReqParser(self.limits, lambda: writer.write(b"HTTP/1.1 100 Continue\r\n\r\n"))
        data = first
        while True:
            if data:
                self.stats.add_sent(len(data))  # bytes from the client, as the TCP path counts them
                try:
                    p.parser.feed_data(data)
                except httptools.HttpParserCallbackError as e:
                    ctx = e.__context__
                    status = ctx.status if isinstance(ctx, TooLarge) else 400
                    await self._reply_and_close(writer, status)
                    return
                except httptools.HttpParserUpgrade:
                    await self._reply_and_close(writer, 501, b"protocol upgrade is not supported by the mesh proxy")
                    return
                except httptools.HttpParserError:
                    await self._reply_and_close(writer, 400)
                    return
            while p.done:
                req = p.done.pop(0)
                keep = await self._one(req, writer)
                if not keep:
                    return
            self.idle_since = time.monotonic()
            try:
                data = await reader.read(CHUNK)
            except OSError:  # the client reset the connection
                return
            self.idle_since = 0.0
            if not data:
                return

    async def _reply_and_close(self, writer: asyncio.StreamWriter, status: int, body: bytes = b"") -> None:
        if not body and status in (413, 431):
            body = b"request too large" if status == 413 else b"request header too large"
        resp = local_reply(status, body or _reason(status).encode())
        writer.write(serialize_response(resp, keep_alive=False, head_only=False))
        with contextlib.suppress(OSError):
            await writer.drain()

    async def _one(self, req: HttpRequest, writer: asyncio.StreamWriter) -> bool:
        t0 = time.perf_counter()
        start_ns = time.time_ns()
        view = self.view
        src = view.pods.get(self.client_ip)
        out = await self._handle(req, src)
        resp = out.resp
        keep = req.keep_alive
        head_only = req.method == "HEAD"
        data = serialize_response(resp, keep_alive=keep, head_only=head_only)
        writer.write(data)
        self.stats.add_received(len(data))
        try:
            await writer.drain()
        except OSError:
            keep = False
        elapsed = time.perf_counter() - t0
        tel = view.telemetry
        if tel is not None:
            tel.record(self._labels(req, resp, src, out), elapsed * 1000.0, len(req.body), len(resp.body))
        if out.trace is not None and out.trace.sampled and view.tracer is not None:
            self._span(view.tracer, req, resp, src, out, start_ns, int(elapsed * 1e9))
        if view.access_log is not None and view.access_policies.active:
            self._access_log(view.access_log, view.access_policies, req, resp, src, out, start_ns, elapsed)
        return keep

    def _access_log(self, sink: AccessLogSink, policies: TelemetryPolicies, req: HttpRequest, resp: HttpResponse,
                    src: PodInfo | None, out: _Outcome, start_ns: int, elapsed: float) -> None:
        """One line of Envoy's access log, under the caller's sidecar (the destination's for a caller
        outside the mesh; nobody's when neither side is a known pod, as no sidecar saw it)."""
        pod = src if src is not None else out.dest
        if pod is UNKNOWN or pod.name == "unknown":
            return
        policy = policies.for_pod(pod)
        if policy is None:
            return
        low = req.lower
        up = resp.upstream
        sink.offer(policy, pod, AccessRecord(
            start_ns=start_ns, method=req.method, path=low.get("x-envoy-original-path") or req.target,
            protocol=f"HTTP/{req.version}", code=resp.status, flags=resp.flags,
            details=resp.details or ("via_upstream" if up is not None else None),
            failure_reason=resp.details[len(_CONNECT_DETAIL):-1] if resp.details and resp.details.startswith(
                _CONNECT_DETAIL) else None,
            bytes_received=len(req.body), bytes_sent=len(resp.body), duration_ms=int(elapsed * 1000),
            service_time_ms=resp.service_ms, forwarded_for=low.get("x-forwarded-for"),
            user_agent=low.get("user-agent"), request_id=low.get("x-request-id"), authority=low.get("host"),
            upstream_host=f"{up.ip}:{up.port}" if up is not None else None, upstream_cluster=out.cluster or None,
            downstream_local=self.local_addr or None, downstream_remote=self.remote_addr or None,
            route_name=out.route or None))

    def _span(self, tracer: MeshTracer, req: HttpRequest, resp: HttpResponse, src: PodInfo | None, out: _Outcome,
              start_ns: int, duration_ns: int) -> None:
        assert out.trace is not None
        s = src or UNKNOWN
        t = out.target
        _, dest_name, dest_ns, is_entry = self._service(t)
        if out.dest is not UNKNOWN:
            remote = f"{out.dest.canonical_service}.{dest_ns}"
        else:  # no known pod answered: the Service by name, a ServiceEntry by its host
            remote = dest_name if is_entry else f"{dest_name}.{dest_ns}"
        authority = req.lower.get("host", "")
        tracer.record(
            trace_id=out.trace.trace_id, span_id=out.trace.span_id, parent_id=out.trace.parent_id,
            service=f"{s.canonical_service}.{s.namespace}" if src else "unknown", remote=remote,
            name=f"{t.fqdn if t else self.fqdn}:{t.port if t else self.port}/*", start_ns=start_ns,
            duration_ns=duration_ns, status=resp.status,
            attributes={"http.method": req.method, "http.url": f"http://{authority}{req.target}",
                        "http.status_code": str(resp.status), "response_flags": resp.flags,
                        "upstream_cluster": out.cluster, "istio.canonical_service": s.canonical_service,
                        "istio.namespace": s.namespace, "component": "proxy", "peer.address": self.client_ip,
                        "guid:x-request-id": req.lower.get("x-request-id", ""),
                        "request_size": str(len(req.body)), "response_size": str(len(resp.body))})

    def _service(self, t: Target | None) -> tuple[str, str, str, bool]:
        """Istio's destination service (fqdn, name, namespace) of a request, and whether it is a
        ServiceEntry's host: the target's, else (no route reached one) the host the session serves."""
        if t is not None:
            return t.fqdn, t.name, t.namespace, t.entry is not None
        parts = self.fqdn.split(".")
        if len(parts) > 1 and self.fqdn.endswith("." + DOMAIN):
            return self.fqdn, parts[0], parts[1], False
        entry = self.view.mesh.entries.lookup(self.fqdn)
        return self.fqdn, self.fqdn, entry.namespace if entry is not None else "unknown", True

    def _labels(self, req: HttpRequest, resp: HttpResponse, src: PodInfo | None, out: _Outcome) -> tuple[str, ...]:
        svc_fqdn, svc_name, svc_ns, is_entry = self._service(out.target)
        grpc = req.lower.get("content-type", "").startswith("application/grpc")
        up = resp.upstream
        if is_entry and out.dest.name == "unknown":
            security = NO_DESTINATION  # a ServiceEntry's endpoint that is no pod: no sidecar there reports
        else:
            security = self.view.hop_security(src, out.dest, up.port if up is not None else 0, svc_fqdn)
        return mesh_labels(src, out.dest, (svc_fqdn, svc_name, svc_ns), "grpc" if grpc else "http", str(resp.status),
                           _get(resp.headers, "grpc-status") or "", resp.flags, security)

    # -- routing --------------------------------------------------------------------------------

    async def _handle(self, req: HttpRequest, src: PodInfo | None) -> _Outcome:
        cfg = self.view.mesh  # one snapshot for the whole request
        headers = req.lower
        authority = headers.get("host", "")
        mreq = Request(req.method, req.target, headers, authority, self.port, src)
        routes = cfg.routes_for(self.fqdn)
        route: Route | None = self.default_route if routes is None else next(
            (r for r in routes if r.test(mreq)), None)
        if route is None:
            return _Outcome(local_reply(404, flags="NR", details="route_not_found"))
        out = await self._routed(cfg, route, req, mreq, src, authority)
        out.route = route.name
        return out

    async def _routed(self, cfg: MeshConfig, route: Route, req: HttpRequest, mreq: Request, src: PodInfo | None,
                      authority: str) -> _Outcome:
        if route.redirect is not None:
            out = _Outcome(_redirect(route, req, authority))
            out.resp.details = "direct_response"
            return out
        if route.direct is not None:
            return _Outcome(local_reply(route.direct[0], route.direct[1], details="direct_response"))
        delay = 0.0
        if route.fault is not None:
            delay = route.fault.delay()
            if delay:
                await asyncio.sleep(delay)
            if route.fault.abort():
                f = route.fault
                if f.abort_grpc is not None:
                    return _Outcome(local_reply(200, flags="FI", headers=[("content-type", "application/grpc"),
                                                                     ("grpc-status", str(f.abort_grpc))],
                                           details="fault_filter_abort"))
                return _Outcome(local_reply(f.abort_status, b"fault filter abort", "FI",
                                            details="fault_filter_abort"))
        out = await self._to_destination(cfg, route, route.pick(), req, mreq, src)
        if delay and out.resp.flags == "-":
            out.resp.flags = "DI"  # Envoy's flag for an injected delay
        return out

    async def _to_destination(self, cfg: MeshConfig, route: Route, dest: RouteDest, req: HttpRequest, mreq: Request,
                              src: PodInfo | None) -> _Outcome:
        view = self.view
        target = view.target(dest.host, dest.port, self.port, self.fqdn)
        if target is None:
            return _Outcome(local_reply(503, flags="NC", details="cluster_not_found"))
        dr = cfg.dest_rule(target.fqdn)
        labels: tuple[tuple[str, str], ...] = ()
        policy = Policy()
        if dr is not None or dest.subset:
            sub = dr.for_subset(dest.subset) if dr is not None else None
            if sub is None:  # a subset no DestinationRule defines: Istio builds no such cluster (Envoy's NC)
                return _Outcome(local_reply(503, flags="NC", details="cluster_not_found"), target=target)
            labels, policy = sub
        endpoints = target.subset(target.endpoints_for(mreq.authority), labels, view.pods)
        if not endpoints and dest.failover:  # Consul's Failover: the first target with a ready endpoint
            for fd in dest.failover:
                if self._ready(cfg, fd):
                    return await self._to_destination(cfg, route, fd, req, mreq, src)
        cluster = view.cluster(f"outbound|{target.port}|{dest.subset}|{target.fqdn}")
        lb = policy.lb
        hash_key: str | None = None
        if lb.consistent:
            hash_key = _hash_key(lb, mreq, self.client_ip)
        elif target.affinity and dr is None:  # Istio hashes on the source IP for sessionAffinity ClientIP
            lb, hash_key = LbPolicy("RING_HASH", hash_source_ip=True), self.client_ip
        head_headers, trace = self._upstream_headers(route, dest, req)
        path, authority = _rewritten(route, req.target, mreq.authority)
        for mdest, pct in route.mirrors:
            if pct >= 100 or random.random() * 100 < pct:
                self._mirror(cfg, mdest, req, path, authority, head_headers)
        try:
            cluster.admit(policy.pool)
        except Overflow:
            out = _Outcome(_overflow(), target=target)
            out.cluster = cluster.name
            return out
        try:
            out = await self._forward(cluster, policy, lb, hash_key, endpoints, route, dest, target, req, path,
                                      authority, head_headers, src)
            out.trace = trace
            out.cluster = cluster.name
            return out
        finally:
            cluster.release_request()

    def _ready(self, cfg: MeshConfig, dest: RouteDest) -> bool:
        """Whether ``dest`` (a Service and subset) has a ready endpoint now."""
        target = self.view.target(dest.host, dest.port, self.port, self.fqdn)
        if target is None:
            return False
        dr = cfg.dest_rule(target.fqdn)
        if dr is None:
            return not dest.subset and bool(target.endpoints)
        sub = dr.for_subset(dest.subset)
        if sub is None:
            return False
        return bool(target.subset(target.endpoints, sub[0], self.view.pods))

    def _mirror(self, cfg: MeshConfig, dest: RouteDest, req: HttpRequest, path: str, authority: str,
                headers: list[tuple[str, str]]) -> None:
        """Send a copy (Host ``<authority>-shadow``, as Envoy) and forget it: its answer, errors and
        time never reach the caller. Bounded: past ``_MAX_MIRRORS`` copies in flight, copies are skipped."""
        if len(_MIRRORS) >= _MAX_MIRRORS:
            return
        target = self.view.target(dest.host, dest.port, self.port, self.fqdn)
        if target is None:
            return
        dr = cfg.dest_rule(target.fqdn)
        sub = dr.for_subset(dest.subset) if dr is not None else ((), Policy())
        if sub is None:
            return
        labels, policy = sub
        endpoints = target.subset(target.endpoints_for(authority), labels, self.view.pods)
        cluster = self.view.cluster(f"outbound|{target.port}|{dest.subset}|{target.fqdn}")
        host = cluster.pick(endpoints, policy.lb, self.client_ip, set(), time.monotonic())
        if host is None:
            return
        host_part, sep, port_part = authority.partition(":")
        head = request_head(req.method, path, f"{host_part}-shadow{sep}{port_part}", headers, req.body)
        task = asyncio.create_task(self._try(cluster, host, policy, head, req.body, _MIRROR_RETRY, False))
        _MIRRORS.add(task)
        task.add_done_callback(_MIRRORS.discard)

    def _upstream_headers(self, route: Route, dest: RouteDest,
                          req: HttpRequest) -> tuple[list[tuple[str, str]], _Trace]:
        low = req.lower
        hs = [(k, v) for k, v in req.headers if k.lower() not in _DROP_UP]
        if "x-request-id" not in low:
            rid = low["x-request-id"] = _uuid4()  # as Envoy: the access log and the span name the id sent on
            hs.append(("x-request-id", rid))
        if "x-forwarded-proto" not in low:
            hs.append(("x-forwarded-proto", "http"))
        tracer = self.view.tracer
        trace = _trace_headers(hs, low, tracer.sample_new if tracer is not None else _never)
        if route.request_headers:
            hs = route.request_headers.apply(hs)
        if dest.request_headers:
            hs = dest.request_headers.apply(hs)
        return hs, trace

    # -- forwarding with retries ----------------------------------------------------------------

    async def _forward(self, cluster: Cluster, policy: Policy, lb: Any, hash_key: str | None,
                       endpoints: list[Backend], route: Route, dest: RouteDest, target: Target, req: HttpRequest,
                       path: str, authority: str, headers: list[tuple[str, str]], src: PodInfo | None) -> _Outcome:
        retry = route.retry
        retrying = False  # a retry is counted in cluster.active_retries (maxRetries) while it is outstanding
        tried: set[Backend] = set()
        last: HttpResponse | None = None
        last_pod = UNKNOWN
        try:
            async with _maybe_timeout(route.timeout_s):
                for n in range(1 + retry.attempts):
                    if cluster.budget is not None and n == 0:
                        cluster.budget.request(time.monotonic())
                    if n > 0:
                        if cluster.active_retries >= policy.pool.max_retries:
                            break  # Envoy's retry overflow: the last answer stands
                        if cluster.budget is not None and not cluster.budget.withdraw(time.monotonic()):
                            break  # the retry budget is spent: the last answer stands, as Linkerd's
                        retrying = True
                        cluster.active_retries += 1  # outstanding until this try ends
                        await asyncio.sleep(random.uniform(0, min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * (2**n - 1))))
                    host = cluster.pick(endpoints, lb, hash_key, tried, time.monotonic())
                    if host is None:
                        if last is None:
                            self.stats.no_endpoint += 1
                            last = local_reply(503, b"no healthy upstream", "UH", details="no_healthy_upstream")
                        break
                    tried.add(host)
                    # no known pod: Istio's destination workload is unknown, in the Service's namespace (none
                    # for a ServiceEntry's endpoint, a workload of no namespace)
                    dpod = self.view.pods.get(host.ip) or (
                        UNKNOWN if target.entry is not None else PodInfo("unknown", target.namespace, "unknown"))
                    last_pod = dpod
                    # Another node's endpoint is authorised there, from the certificate this side presents.
                    mode = self.view.remote_mode(dpod, host.port, target.fqdn)
                    hop = _Hop(src, dpod, target.fqdn, mode != "DISABLE") if mode is not None else None
                    if hop is None and not target.external:  # MESH_EXTERNAL: no sidecar there to check
                        if self._refused_plaintext(dpod, host, src):
                            last = failure_response(Failure("reset", "connection termination"))
                            break
                        if not self._authorized(dpod, req, authority, host, src):
                            return _Outcome(local_reply(403, b"RBAC: access denied",
                                                   details="rbac_access_denied_matched_policy[none]"), dpod, target)
                    t_try = time.perf_counter()
                    if self.view.faults.active:
                        res = await self._try_faulted(cluster, host, policy, req, path, authority, headers, retry,
                                                      hop)
                    else:
                        head = request_head(req.method, path, authority, headers, req.body)
                        res = await self._try(cluster, host, policy, head, req.body, retry, req.method == "HEAD",
                                              hop)
                    if retrying:
                        retrying = False
                        cluster.active_retries -= 1
                    now = time.monotonic()
                    if isinstance(res, Failure):
                        if res.kind == "overflow":
                            return _Outcome(_overflow(), dpod, target)
                        cluster.result(host, 0, policy.outlier, len(endpoints), now)
                        last = failure_response(res)
                        if not _retriable_failure(retry, res):
                            break
                        continue
                    cluster.result(host, res.status, policy.outlier, len(endpoints), now)
                    res.upstream = host
                    res.service_ms = int((time.perf_counter() - t_try) * 1000)
                    last = res
                    if not _retriable_response(retry, res):
                        break
                else:  # every try failed in a way the policy retries: Envoy's retry limit exceeded
                    if retry.attempts and last is not None:
                        last.flags = "URX" if last.flags == "-" else last.flags + ",URX"
        except TimeoutError:
            return _Outcome(local_reply(504, b"upstream request timeout", "UT",
                                        details="upstream_response_timeout"),
                            last_pod, target)
        finally:
            if retrying:
                cluster.active_retries -= 1
        assert last is not None
        if last.upstream is not None:
            extra = route.response_headers.apply(last.headers) if route.response_headers else last.headers
            last.headers = dest.response_headers.apply(extra) if dest.response_headers else extra
        return _Outcome(last, last_pod, target)

    def _authorized(self, dest: PodInfo, req: HttpRequest, authority: str, host: Backend,
                    src: PodInfo | None) -> bool:
        authz = self.view.mesh.authz
        if authz is None or not authz.policies:
            return True
        ar = AuthzRequest(src, self.client_ip, req.method, req.target, authority.split(":")[0], host.port,
                          req.lower, host.ip)
        return authz.allowed(dest, ar)

    def _refused_plaintext(self, dest: PodInfo, host: Backend, src: PodInfo | None) -> bool:
        """A caller that is no mesh pod reaching a STRICT workload on this node: refused as Envoy resets
        plaintext under STRICT (a known pod on this node needs no TLS: this proxy is both sidecars)."""
        pa = self.view.mesh.peer_auth
        return src is None and pa is not None and pa.strict_anywhere and pa.mode(dest, host.port) == "STRICT"

    async def _try_faulted(self, cluster: Cluster, host: Backend, policy: Policy, req: HttpRequest, path: str,
                           authority: str, headers: list[tuple[str, str]], retry: Retry,
                           hop: _Hop | None = None) -> HttpResponse | Failure:
        """``_try`` through the chaos faults on this client -> endpoint hop (``traffic.faults``): a partition
        refuses the connect, a lost message or an HTTP abort is a reset, and the faults may delay, change
        or duplicate the request and delay or change the response."""
        faults = self.view.faults
        link = faults.link(self.client_ip, host.ip)
        if link is not None and link.refused():
            self.stats.connect_failures += 1
            return Failure("connect", "delayed connect error: 111")
        http_faults = faults.http_for(host.ip, host.port)
        if link is None and not http_faults:  # faults elsewhere, none on this hop
            head = request_head(req.method, path, authority, headers, req.body)
            return await self._try(cluster, host, policy, head, req.body, retry, req.method == "HEAD", hop)
        msg = HttpMessage(req.method, path, list(headers), req.body)
        for f in http_faults:
            if not await f.on_request(msg):
                return Failure("reset", "connection termination")
        if link is not None and link.up:
            if link.lost_up():
                return Failure("reset", "connection termination")
            msg.body = await link.send_up(self.client_ip, msg.body)  # an empty body still waits out the delay
        head = request_head(msg.method, msg.target, authority, msg.headers, msg.body)
        if link is not None and link.duplicated_up() and len(_MIRRORS) < _MAX_MIRRORS:
            dup = asyncio.create_task(self._try(cluster, host, policy, head, msg.body, _MIRROR_RETRY, False, hop))
            _MIRRORS.add(dup)
            dup.add_done_callback(_MIRRORS.discard)
        res = await self._try(cluster, host, policy, head, msg.body, retry, msg.method == "HEAD", hop)
        if isinstance(res, Failure):
            return res
        if link is not None and link.down:
            if link.lost_down():
                return Failure("reset", "connection termination")
            res.body = await link.send_down(host.ip, res.body)
        if http_faults:
            out = HttpMessage(msg.method, msg.target, res.headers, res.body, res.status)
            for f in http_faults:
                if not await f.on_response(msg, out):
                    return Failure("reset", "connection termination")
            res.status, res.headers, res.body = out.status, out.headers, out.body
        return res

    async def _try(self, cluster: Cluster, host: Backend, policy: Policy, head: bytes, body: bytes, retry: Retry,
                   head_only: bool, hop: _Hop | None = None) -> HttpResponse | Failure:
        pool = policy.pool
        try:
            await cluster.acquire_slot(pool)
        except Overflow:
            return Failure("overflow")
        hs = cluster.host(host)
        hs.active += 1
        conn: UpConn | None = None
        try:
            async with _maybe_timeout(retry.per_try_timeout_s) as per_try:
                for fresh in (False, True):
                    ident = hop.ident if hop is not None else ""  # a pooled mTLS connection carries its caller
                    conn = None if fresh else cluster.take_idle(host, ident)
                    reused = conn is not None
                    if conn is None:
                        cluster.make_room(pool)
                        try:
                            async with asyncio.timeout(pool.connect_timeout_s):
                                if hop is None:
                                    r, w = await asyncio.open_connection(host.ip, host.port, limit=CHUNK)
                                else:
                                    r, w = await self.view.connect(host, hop.src, hop.dest, True, hop.service)
                        except (OSError, TimeoutError) as e:
                            self.stats.connect_failures += 1
                            return Failure("connect", connect_detail(e))
                        conn = UpConn(host, r, w, ident=ident)
                    try:
                        conn.writer.write(head + body if len(body) < 65536 else head)
                        if len(body) >= 65536:
                            conn.writer.write(body)
                        await conn.writer.drain()
                        resp = await read_response(conn.reader, head_only, self.limits.max_response_bytes)
                    except UpstreamEOF as e:
                        conn.close()
                        if reused and not e.got_bytes:
                            continue  # a kept-alive connection the server had closed: once more on a new one
                        return Failure("reset", "connection termination")
                    except TooLarge:
                        conn.close()
                        return HttpResponse(502, [("content-type", "text/plain")], b"upstream response too large",
                                            False)
                    except (OSError, httptools.HttpParserError, asyncio.IncompleteReadError):
                        conn.close()
                        return Failure("reset", "connection termination")
                    conn.requests += 1
                    if resp.keep_alive:
                        cluster.give_back(conn, pool)
                    else:
                        conn.close()
                    conn = None
                    return resp
                return Failure("reset", "connection termination")
        except TimeoutError:
            if conn is not None:
                conn.close()
            if per_try is not None and per_try.expired():
                return Failure("timeout")
            raise
        except BaseException:
            if conn is not None:
                conn.close()
            raise
        finally:
            hs.active -= 1
            cluster.release_slot()


class _NoTimeout:
    """``asyncio.timeout(None)`` without its bookkeeping: most routes have no timeout."""

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


_NO_TIMEOUT = _NoTimeout()


def _maybe_timeout(seconds: float | None) -> asyncio.Timeout | _NoTimeout:
    return _NO_TIMEOUT if seconds is None else asyncio.timeout(seconds)


def _never() -> bool:
    return False


async def cancel_mirrors() -> None:
    """End the mirrored copies still in flight (the proxy is stopping)."""
    tasks = list(_MIRRORS)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _has_labels(pod: PodInfo | None, labels: tuple[tuple[str, str], ...]) -> bool:
    return pod is not None and all(pod.labels.get(k) == v for k, v in labels)


def _hash_key(lb: Any, r: Request, client_ip: str) -> str | None:
    if lb.hash_header:
        return r.headers.get(lb.hash_header)
    if lb.hash_cookie:
        for part in (r.headers.get("cookie") or "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == lb.hash_cookie:
                return v
        return None
    if lb.hash_query:
        return r.query().get(lb.hash_query)
    return client_ip if lb.hash_source_ip else None


def _rewritten(route: Route, target: str, authority: str) -> tuple[str, str]:
    rw = route.rewrite
    if rw is None:
        return target, authority
    path, q, query = target.partition("?")
    if rw.regex is not None:
        path = rw.regex.replace_all(path, rw.regex_rewrite)
    elif rw.uri is not None:
        # a prefix match has its matched prefix replaced (Envoy's prefix_rewrite); otherwise the whole path
        pm = next((m.uri for m in route.matches if m.uri is not None and m.uri.kind == "prefix"
                   and m.uri.test(path)), None)
        path = rw.uri + path[len(pm.value):] if pm is not None else rw.uri
    return path + q + query, rw.authority or authority


def _redirect(route: Route, req: HttpRequest, authority: str) -> HttpResponse:
    rd = route.redirect
    assert rd is not None
    path = rd.uri or req.target
    host = rd.authority or authority
    if rd.port:
        host = f"{host.split(':')[0]}:{rd.port}"
    loc = f"{rd.scheme or 'http'}://{host}{path}"
    return local_reply(rd.code, headers=[("location", loc)])


def _overflow() -> HttpResponse:
    return local_reply(503, _UC_BODY + b"overflow", "UO", [("x-envoy-overloaded", "true")],
                  "upstream_reset_before_response_started{overflow}")


_CONNECT_DETAIL = "upstream_reset_before_response_started{remote_connection_failure|"


def _addr(writer: asyncio.StreamWriter, which: str) -> str:
    a = writer.get_extra_info(which)
    return f"{a[0]}:{a[1]}" if a else ""


def connect_detail(e: BaseException) -> str:
    """Envoy's transport failure reason of a failed connect (``connection timeout``, ``delayed connect
    error: <errno>``)."""
    if isinstance(e, TimeoutError):
        return "connection timeout"
    errno = getattr(e, "errno", None)
    return f"delayed connect error: {errno}" if errno else "connection failure"


def failure_response(f: Failure) -> HttpResponse:
    """Envoy's answer to a try that failed: 503 ``UF`` (connect), 504 ``UT`` (per-try timeout), 503 ``UC``."""
    if f.kind == "connect":
        return local_reply(503, _UC_BODY + b"remote connection failure, transport failure reason: "
                      + f.detail.encode(), "UF", details=f"{_CONNECT_DETAIL}{f.detail.replace(' ', '_')}}}")
    if f.kind == "timeout":
        return local_reply(504, b"upstream request timeout", "UT", details="upstream_per_try_timeout")
    return local_reply(503, _UC_BODY + f.detail.encode(), "UC",
                  details=f"upstream_reset_before_response_started{{{f.detail.replace(' ', '_')}}}")


def _retriable_failure(r: Retry, f: Failure) -> bool:
    on = r.on
    if f.kind == "connect":
        return bool(on & {"connect-failure", "5xx", "gateway-error", "reset"})
    return bool(on & {"5xx", "gateway-error", "reset"})


def _retriable_response(r: Retry, resp: HttpResponse) -> bool:
    on, s = r.on, resp.status
    if not on:
        return False
    if "5xx" in on and s >= 500:
        return True
    if "gateway-error" in on and s in (502, 503, 504):
        return True
    if "retriable-4xx" in on and s == 409:
        return True
    if "retriable-status-codes" in on and s in r.codes:
        return True
    if "envoy-ratelimited" in on and _get(resp.headers, "x-envoy-ratelimited") is not None:
        return True
    g = _get(resp.headers, "grpc-status")
    return g is not None and any(name in on and code == g for name, code in _GRPC_RETRY.items())


def request_head(method: str, path: str, authority: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    """The request line and headers to send upstream (``headers`` without hop-by-hop ones and Host; the
    content-length is written here from ``body``)."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {authority}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def serialize_response(resp: HttpResponse, *, keep_alive: bool, head_only: bool) -> bytes:
    """``resp`` as bytes for the client: hop-by-hop headers dropped, framed by content-length."""
    lines = [f"HTTP/1.1 {resp.status} {_reason(resp.status)}"]
    lines += [f"{k}: {v}" for k, v in resp.headers if k.lower() not in HOP_HEADERS]
    no_body = resp.status in (204, 304) or 100 <= resp.status < 200
    if not no_body:
        lines.append(f"content-length: {len(resp.body)}")
    if not keep_alive:
        lines.append("connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only or no_body else head + resp.body


def _uuid4() -> str:
    # ids need to be unique, not secret: the PRNG spares a syscall per request
    h = f"{random.getrandbits(128):032x}"
    h = h[:12] + "4" + h[13:16] + "89ab"[int(h[16], 16) & 3] + h[17:]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(slots=True)
class _Trace:
    trace_id: str
    span_id: str
    parent_id: str
    sampled: bool


def _trace_headers(hs: list[tuple[str, str]], low: dict[str, str], sample_new: Callable[[], bool]) -> _Trace:
    """Continue the caller's trace with a new span for this hop (W3C and B3), or start one; ``hs`` has no
    trace headers yet and gets this hop's."""
    span = f"{random.getrandbits(64):016x}"
    trace: str | None = None
    parent = ""
    sampled: bool | None = None
    tp = low.get("traceparent")
    if tp is not None:
        parts = tp.split("-")
        if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
            trace, parent, sampled = parts[1], parts[2], parts[3][-1:] in ("1", "3", "5", "7", "9", "b", "d", "f")
    if trace is None:
        b3 = low.get("x-b3-traceid")
        if b3 is not None and len(b3) in (16, 32):
            trace = b3.rjust(32, "0")
            parent = low.get("x-b3-spanid", "")
            s = low.get("x-b3-sampled")
            sampled = None if s is None else s in ("1", "true")
    if trace is None:
        trace = f"{random.getrandbits(128):032x}"
    if sampled is None:
        sampled = sample_new()
    flag = "01" if sampled else "00"
    hs += [("traceparent", f"00-{trace}-{span}-{flag}"), ("x-b3-traceid", trace), ("x-b3-spanid", span),
           ("x-b3-sampled", "1" if sampled else "0")]
    if parent:
        hs.append(("x-b3-parentspanid", parent))
    return _Trace(trace, span, parent, sampled)


# -- the inbound side of a mutual-TLS hop (traffic.meshtls) -----------------------------------------


async def serve_inbound(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: Backend,
                        allowed: Callable[[str, str, str, dict[str, str]], bool], limits: HttpLimits) -> None:
    """Serve the requests another node's proxy relays to the local endpoint ``host``: each is checked by
    ``allowed(method, target, authority, lower-cased headers)`` (the AuthorizationPolicy with the caller
    identified by its certificate): ``403 RBAC: access denied`` when refused, else passed on over one
    connection to the endpoint and its response passed back. Routing, retries and metrics happened on
    the caller's side."""
    p = _ReqParser(limits, lambda: writer.write(b"HTTP/1.1 100 Continue\r\n\r\n"))
    up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    try:
        while True:
            try:
                async with asyncio.timeout(limits.idle_timeout_s):
                    data = await reader.read(CHUNK)
            except (OSError, TimeoutError):
                return
            if not data:
                return
            try:
                p.parser.feed_data(data)
            except httptools.HttpParserError:
                writer.write(serialize_response(local_reply(400, b"bad request"), keep_alive=False,
                                                head_only=False))
                return
            while p.done:
                req = p.done.pop(0)
                authority = req.lower.get("host", "")
                if not allowed(req.method, req.target, authority, req.lower):
                    resp = local_reply(403, b"RBAC: access denied")
                else:
                    if up is None or up[1].is_closing():
                        up = await asyncio.open_connection(host.ip, host.port, limit=CHUNK)
                    hs = [(k, v) for k, v in req.headers if k.lower() not in HOP_HEADERS
                          and k.lower() not in ("host", "content-length")]
                    up[1].write(request_head(req.method, req.target, authority, hs, req.body) + req.body)
                    await up[1].drain()
                    resp = await read_response(up[0], req.method == "HEAD", limits.max_response_bytes)
                    if not resp.keep_alive:
                        up[1].close()
                        up = None
                writer.write(serialize_response(resp, keep_alive=req.keep_alive, head_only=req.method == "HEAD"))
                await writer.drain()
                if not req.keep_alive:
                    return
    except (OSError, UpstreamEOF, TooLarge, httptools.HttpParserError, asyncio.IncompleteReadError):
        writer.transport.abort()  # the endpoint failed mid-request: the caller sees a reset, as from Envoy
    finally:
        if up is not None:
            up[1].transport.abort()
