"""The gateway's public listener: HTTP/1.1 on a raw asyncio Protocol with httptools, proxied as Kong does.

Per request: match a route (``router``), run the route's plugins' access
phase (they may answer instead), build the upstream request (Kong's
``strip_path``/``path_handling``/``preserve_host`` and ``X-Forwarded-*``
headers), send it to the service's host, Kong upstream targets (weighted
round-robin) or pitwall Service (``<name>.<namespace>.svc``, its ClusterIP
from the Kubernetes API) through keep-alive pools, retry connection
failures up to the service's ``retries``, then run the response and log
phases. Errors answer as Kong does: 404 ``no Route matched with those
values``, 502 ``An invalid response was received from the upstream
server``, 503 ``name resolution failed`` / ``failure to get a peer from the
ring-balancer``, 504 ``The upstream server is timing out``.

Limits: request line ``MAX_URL`` bytes (414), headers ``MAX_HEADER_BYTES``
(431), body ``max_body_bytes`` (413); pipelined requests are answered in
order, at most ``MAX_PIPELINE`` queued before reading pauses.

A request is driven by callbacks, not a task: parsed, routed, its access
phase run and written to an idle pooled upstream connection in one plain
call; the upstream parser's ``upstream_done`` finishes it and writes the
answer. Only what has to wait on something else (a new upstream
connection, a Kubernetes Service lookup, a retry) runs as a coroutine.

The configuration is one reference (``self.config``) read once per request:
a reload swaps it, so a request never sees half of one configuration and
half of another.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from ssl import SSLContext
from typing import TYPE_CHECKING, Protocol, cast

import httptools

from pitwall.core.native import optional_module
from pitwall.traffic.gateway.context import Ctx, Reply, Request, ResponseHead, kong_error
from pitwall.traffic.gateway.kuberoutes import KubeRoutes
from pitwall.traffic.gateway.plugins import Plugin
from pitwall.traffic.gateway.runtime import GatewayConfig, RouteRT, ServiceRT
from pitwall.traffic.gateway.upstream import (
    BadResponse,
    ConnectFailed,
    NameResolutionFailed,
    Pools,
    ReadTimeout,
    UpstreamResponse,
    _Conn,
)

if TYPE_CHECKING:
    from pitwall.traffic.gateway._gwfast import Engine

__all__ = ["GatewayServer", "upstream_path"]

log = logging.getLogger(__name__)

MAX_URL = 8 << 10
MAX_HEADER_BYTES = 32 << 10
MAX_PIPELINE = 16
LINGER_S = 2.0  # how long a refused request's remaining bytes are read and dropped
# Request headers not passed upstream as received (hop-by-hop, framing, and the ones the gateway sets).
_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
                  "content-length", "host", "x-real-ip"})
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_REASONS = {s.value: s.phrase for s in HTTPStatus}
_STATUS_LINES = {code: f"HTTP/1.1 {code} {phrase}\r\n".encode("latin-1") for code, phrase in _REASONS.items()}
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")}
Resolver = Callable[[str, str], Awaitable[str | None]]
# The plain-HTTP listener's connections in C (``_native/gwfast.c``), when built; ``native=False`` (the
# setting ``gateway.native``) or a missing build keeps ``_ClientConn`` for every connection.
_gwfast = optional_module("pitwall.traffic.gateway._gwfast")


class Client(Protocol):
    """Who a request's answer goes to: ``_ClientConn``, or the C connection of ``native``."""

    loop: asyncio.AbstractEventLoop
    client_ip: str

    def respond(self, req: Request, head: ResponseHead) -> None: ...

    def close(self) -> None: ...


def upstream_path(service_path: str | None, req_path: str, matched: str, strip: bool, handling: str) -> str:
    """The path sent upstream: Kong's ``path_handling`` v0 or v1 joining service path and request path."""
    rest = req_path[len(matched):] if strip and matched else req_path
    if handling == "v1":
        if not service_path:
            return rest or "/"
        if service_path.endswith("/") and rest.startswith("/"):
            return service_path + rest[1:]
        return service_path + rest
    if not rest:
        return service_path or "/"
    if not rest.startswith("/"):
        rest = "/" + rest
    if not service_path or service_path == "/":
        return rest
    return service_path.rstrip("/") + rest


class GatewayServer:
    """The listener and everything a request needs; ``config`` is swapped whole on reload."""

    def __init__(self, config: GatewayConfig, *, resolve: Resolver | None = None,
                 max_body_bytes: int = 16 << 20, native: bool = True) -> None:
        self.engine: Engine | None = None  # the C connections' shared state, from ``start``
        self._config = config
        self._kube_routes: KubeRoutes | None = None
        self.resolve = resolve
        self.max_body_bytes = max_body_bytes
        self.pools = Pools()
        self.server: asyncio.Server | None = None
        self.port = 0
        self._requests = 0
        self.conns: set[_ClientConn | Client] = set()
        self._kube_cache: dict[tuple[str, str], tuple[float, str | None]] = {}
        self.native = native and _gwfast is not None

    @property
    def config(self) -> GatewayConfig:
        return self._config

    @config.setter
    def config(self, cfg: GatewayConfig) -> None:
        """Swapped whole on reload; the C router's plan with it, in the same step."""
        self._config = cfg
        self._replan()

    @property
    def kube_routes(self) -> KubeRoutes | None:
        return self._kube_routes

    @kube_routes.setter
    def kube_routes(self, routes: KubeRoutes | None) -> None:
        """Swapped whole, as ``config`` is."""
        self._kube_routes = routes
        self._replan()

    def _replan(self) -> None:
        if self.engine is None:
            return
        from pitwall.traffic.gateway.native import compile_plan

        try:
            plan = compile_plan(self.engine, self._config, self._kube_routes)
        except Exception:  # the C path steps aside: every request is served by the Python path
            log.exception("gateway: the native plan could not be built; requests go through Python")
            plan = None
        self.engine.set_plan(plan)

    @property
    def requests_total(self) -> int:
        """Requests served: by ``begin`` and by the C connections' own fast path."""
        return self._requests + (self.engine.requests if self.engine is not None else 0)

    async def start(self, host: str, port: int, ssl: SSLContext | None = None) -> None:
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.Protocol]
        if self.native and ssl is None:  # TLS connections stay Python: the C path is plain HTTP only
            from pitwall.traffic.gateway import native as native_mod

            engine = self.engine = native_mod.make_engine(self, loop)
            factory = native_mod.connection_factory(engine)
        else:
            factory = lambda: _ClientConn(self)  # noqa: E731
        self.server = await loop.create_server(factory, host, port, reuse_address=True, backlog=1024, ssl=ssl)
        self.port = self.server.sockets[0].getsockname()[1]
        if self.engine is not None:
            self.engine.set_port(self.port)
            self._replan()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for c in list(self.conns):
                c.close()
            await self.server.wait_closed()
            self.server = None
        self.pools.close()
        if self.engine is not None:
            self.engine.close()

    # one request

    def begin(self, req: Request, client: Client) -> None:
        """Serve ``req``: its answer goes to ``client.respond``, now or when the upstream has answered."""
        cfg = self.config  # one snapshot for the whole request
        self._requests += 1
        ex = _Exchange(self, cfg, client, req, time.perf_counter())
        try:
            route = ex.route = self._route(cfg, req, ex)
            ex.service = route.service
            if route.https_only:
                raise _https_redirect(route, req)
            if route.plugins:
                self._access(cfg, route, ex)
            if route.service is None:
                raise kong_error(503, "no Service found with those values")
            self._proxy(route, route.service, ex)
        except Reply as r:
            ex.finish(ResponseHead(r.status, list(r.headers), r.body))
        except Exception:
            log.exception("gateway request failed")
            client.respond(req, _internal_error())

    def complete(self, ctx: _Exchange, head: ResponseHead) -> ResponseHead:
        """The response phase: Kong's latency headers, the plugins' response and log phases."""
        if ctx.resp_headers:
            head.extra.extend(ctx.resp_headers)
        if ctx.on_response is not None:
            ctx.on_response(head)
        total_ms = int((time.perf_counter() - ctx.start) * 1000)
        if ctx.upstream_ms >= 0:  # Kong's latency headers: upstream's time, and the gateway's own
            up_ms = int(ctx.upstream_ms)
            head.extra += (("Via", "1.1 pitwall"), ("X-Kong-Upstream-Latency", str(up_ms)),
                           ("X-Kong-Proxy-Latency", str(total_ms - up_ms if total_ms > up_ms else 0)))
        else:
            head.extra += (("Server", "pitwall"), ("X-Kong-Response-Latency", str(total_ms)))
        route = ctx.route
        if route is None:
            return head
        on_response: Sequence[Plugin]
        on_log: Sequence[Plugin]
        if route.consumer_scoped and ctx.consumer is not None:
            chain = ctx.cfg.consumer_chain(route, ctx.consumer["id"])
            on_response, on_log = [p for p in chain if p.has_response], [p for p in chain if p.has_log]
        else:
            on_response, on_log = route.response_plugins, route.log_plugins
        for p in on_response:
            p.response(ctx, head)
        if on_log:
            bytes_in = len(ctx.req.body)
            for p in on_log:
                try:
                    p.log(ctx, head, bytes_in)
                except Exception:
                    log.exception("gateway plugin log phase failed", extra={"plugin": p.name})
        return head

    def _route(self, cfg: GatewayConfig, req: Request, ctx: Ctx) -> RouteRT:
        """HTTPRoutes, then Ingress rules, then Kong's routes, then an Ingress default backend (documented)."""
        kube = self.kube_routes
        if kube is not None:
            got = kube.find(req, ctx)
            if got is not None:
                return got
        m = cfg.router.find(req.method, req.host, req.path, req.headers)
        if m is not None:
            ctx.matched_path = m.matched_path
            return cast(RouteRT, m.route)
        if kube is not None and kube.default is not None:
            return kube.default
        raise kong_error(404, "no Route matched with those values")

    def _access(self, cfg: GatewayConfig, route: RouteRT, ctx: Ctx) -> None:
        """Run the access phase; once an auth plugin names a consumer, the consumer's own chain continues."""
        chain = route.plugins
        if not route.consumer_scoped:  # no plugin names a consumer: the route's chain is the whole chain
            for p in chain:
                p.access(ctx)
            return
        i = 0
        swapped = False
        while i < len(chain):
            p = chain[i]
            if not p.is_auth and not swapped and route.consumer_scoped and ctx.consumer is not None:
                swapped = True
                chain = cfg.consumer_chain(route, ctx.consumer["id"])
                i = next((j for j, q in enumerate(chain) if not q.is_auth), len(chain))
                continue
            p.access(ctx)
            i += 1

    async def _peer(self, svc: ServiceRT) -> tuple[str, int]:
        if svc.targets is not None:
            peer = svc.targets.next()
            if peer is None:
                raise kong_error(503, "failure to get a peer from the ring-balancer")
            return peer
        if svc.kube is not None:
            ip = await self._cluster_ip(*svc.kube)
            if ip is None:
                raise kong_error(503, "name resolution failed")
            return ip, svc.port
        return svc.host, svc.port

    async def _cluster_ip(self, namespace: str, name: str) -> str | None:
        now = time.monotonic()
        got = self._kube_cache.get((namespace, name))
        if got is not None and got[0] > now:
            return got[1]
        ip = await self.resolve(namespace, name) if self.resolve is not None else None
        if len(self._kube_cache) > 10_000:
            self._kube_cache.clear()
        self._kube_cache[(namespace, name)] = (now + 5.0, ip)
        return ip

    def _serialize(self, route: RouteRT, svc: ServiceRT, ctx: Ctx) -> bytes:
        """The upstream request as one bytes: a few large f-strings rather than a string per line."""
        req = ctx.req
        path = ctx.upstream_path or upstream_path(svc.path, req.path, ctx.matched_path, route.strip_path,
                                                  route.path_handling)
        target = f"{path}?{req.query}" if req.query else path
        h = req.headers
        host = req.host
        host_only = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        lines = [f"{req.method} {target} HTTP/1.1\r\nhost: "
                 f"{host if route.preserve_host and host else svc.host_header}\r\n"]
        for k, v in h.items():
            if k not in _HOP and not k.startswith("x-forwarded-"):
                lines.append(f"{k}: {v}\r\n")
        xff = h.get("x-forwarded-for")
        ip = ctx.client_ip
        lines.append(f"x-forwarded-for: {xff + ', ' if xff else ''}{ip}\r\nx-forwarded-proto: http\r\n"
                     f"x-forwarded-host: {host_only}\r\nx-forwarded-port: {self.port}\r\n"
                     f"x-forwarded-path: {req.path}\r\nx-real-ip: {ip}\r\n")
        if route.strip_path and ctx.matched_path and ctx.matched_path != "/":
            lines.append(f"x-forwarded-prefix: {ctx.matched_path}\r\n")
        body = req.body
        if body or req.method in ("POST", "PUT", "PATCH"):
            lines.append(f"content-length: {len(body)}\r\n")
        lines.append("\r\n")
        data = "".join(lines).encode("latin-1")
        return data + body if body else data

    def _proxy(self, route: RouteRT, svc: ServiceRT, ex: _Exchange) -> None:
        """Send the request upstream: at once on an idle pooled connection to a fixed host (the usual
        case), else through ``_proxy_wait``."""
        ex.data = self._serialize(route, svc, ex)
        if svc.targets is None and svc.kube is None:
            conn = self.pools.take(svc.key)
            if conn is not None:
                ex.t0 = time.perf_counter()
                conn.start(ex.data, svc.read_timeout_s, ex.req.method == "HEAD", svc.write_timeout_s, ex)
                return
        ex.wait(self._proxy_wait(svc, ex, 0, None))

    async def _proxy_wait(self, svc: ServiceRT, ex: _Exchange, first: int, failure: Exception | None) -> ResponseHead:
        """Attempts ``first`` to ``svc.retries`` that may wait: a peer to resolve, a connection to open."""
        method = ex.req.method
        for _attempt in range(first, svc.retries + 1):
            if svc.targets is None and svc.kube is None:
                host, port = svc.host, svc.port
            else:
                host, port = await self._peer(svc)
            t0 = time.perf_counter()
            try:
                resp = await self.pools.send(host, port, ex.data, connect_timeout_s=svc.connect_timeout_s,
                                             read_timeout_s=svc.read_timeout_s, write_timeout_s=svc.write_timeout_s,
                                             head_only=method == "HEAD")
            except NameResolutionFailed:
                raise kong_error(503, "name resolution failed") from None
            except (ConnectFailed, ReadTimeout, BadResponse) as e:
                failure = e
                if _retryable(method, e):
                    continue
                break
            ex.upstream_ms = (time.perf_counter() - t0) * 1000.0
            return ResponseHead(resp.status, [], resp.body, raw=resp.headers)  # hop-by-hop already left out
        raise _upstream_error(failure)


def _retryable(method: str, failure: Exception) -> bool:
    """Kong retries a failed connection always, a timeout or a bad response only for an idempotent method."""
    return isinstance(failure, ConnectFailed) or method in _IDEMPOTENT


def _upstream_error(failure: Exception | None) -> Reply:
    if isinstance(failure, ReadTimeout):
        return kong_error(504, "The upstream server is timing out")
    return kong_error(502, "An invalid response was received from the upstream server")


def _internal_error() -> ResponseHead:
    err = kong_error(500)
    return ResponseHead(500, err.headers, err.body)


class _Exchange(Ctx):
    """One request in flight: the plugins' ``Ctx``, plus what the callbacks need to finish it."""

    __slots__ = ("cfg", "client", "data", "gw", "t0")

    def __init__(self, gw: GatewayServer, cfg: GatewayConfig, client: Client, req: Request,
                 start: float) -> None:
        Ctx.__init__(self, req, client.client_ip, start)  # not super(): one object fewer per request
        self.gw = gw
        self.cfg = cfg
        self.client = client
        self.data = b""
        self.t0 = 0.0

    def upstream_done(self, conn: _Conn, result: UpstreamResponse | Exception) -> None:
        """The pooled connection's outcome (a ``Waiter``): answer, or go on with the retries."""
        gw = self.gw
        gw.pools.release(conn, result)
        if isinstance(result, UpstreamResponse):
            self.upstream_ms = (time.perf_counter() - self.t0) * 1000.0
            self.finish(ResponseHead(result.status, [], result.body, raw=result.headers))
            return
        svc = self.service
        if svc.retries > 0 and _retryable(self.req.method, result):
            self.wait(gw._proxy_wait(svc, self, 1, result))
        else:
            r = _upstream_error(result)
            self.finish(ResponseHead(r.status, list(r.headers), r.body))

    def wait(self, coro: Awaitable[ResponseHead]) -> None:
        self.client.loop.create_task(self._waited(coro))

    async def _waited(self, coro: Awaitable[ResponseHead]) -> None:
        try:
            head = await coro
        except Reply as r:
            head = ResponseHead(r.status, list(r.headers), r.body)
        except Exception:
            log.exception("gateway request failed")
            self.client.respond(self.req, _internal_error())
            return
        self.finish(head)

    def finish(self, head: ResponseHead) -> None:
        try:
            head = self.gw.complete(self, head)
        except Exception:
            log.exception("gateway request failed")
            head = _internal_error()
        self.client.respond(self.req, head)


def _https_redirect(route: RouteRT, req: Request) -> Reply:
    """Kong's answer to plain HTTP on an https-only route: 426, or a redirect to the https URL."""
    status = route.https_redirect_status
    if status == 426:
        return kong_error(426, "Please use HTTPS protocol", [("Connection", "Upgrade"),
                                                             ("Upgrade", "TLS/1.2, HTTP/1.1")])
    host = req.host.rsplit(":", 1)[0] if req.host and not req.host.endswith("]") else req.host
    return kong_error(status, "Moved Permanently" if status == 301 else "Found" if status == 302 else
                      "Temporary Redirect" if status == 307 else "Permanent Redirect",
                      [("Location", f"https://{host}{req.target}")])


def encode_response(head: ResponseHead, keep_alive: bool, head_request: bool) -> bytes:
    """Status line, headers (an upstream's still as bytes when no plugin decoded them), framing, body:
    one bytes, so the client gets one write."""
    status = head.status
    line = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode("latin-1")
    text = [f"{k}: {v}\r\n" for k, v in head._headers]
    for k, v in head.extra:
        text.append(f"{k}: {v}\r\n")
    if status >= 200 and status != 204 and status != 304:
        text.append(f"Content-Length: {len(head.body)}\r\n")
    text.append("Connection: keep-alive\r\n\r\n" if keep_alive else "Connection: close\r\n\r\n")
    tail = "".join(text).encode("latin-1")
    body = b"" if head_request else head.body
    if head.raw:
        return b"".join((line, *head.raw, tail, body))
    return line + tail + body


class _ClientConn(asyncio.Protocol):
    """One client connection: parse requests, answer them in order."""

    def __init__(self, gw: GatewayServer) -> None:
        self.gw = gw
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request] = deque()
        self.busy = False  # a request is being served: the queue waits for its answer
        self.serving = False  # inside ``_next``: an answer made there need not start the next request
        self.loop = asyncio.get_running_loop()  # kept: on Python 3.11 each lookup is a getpid() system call
        self.paused = False
        self.client_ip = ""
        self.too_big = 0
        self.discarding = False
        self._new()

    def _new(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_size = 0
        self._name = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0] if peer else ""
        self.gw.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.gw.conns.discard(self)
        self.transport = None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.discarding:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._next()  # what came before in the pipeline is answered first
            self._refuse(400)
        except httptools.HttpParserError:  # a callback's _TooBig arrives wrapped in this
            self._next()
            self._refuse(self.too_big or 400)
        else:
            if self.queue and not self.busy:
                self._next()

    def _refuse(self, status: int) -> None:
        """Answer a request we will not read further; what the client still sends is read and dropped for
        ``LINGER_S`` (so it sees the answer rather than a reset), then the connection closes."""
        if self.transport is None:
            return
        err = kong_error(status)
        head = ResponseHead(status, err.headers, err.body)
        head.add("Server", "pitwall")
        self.transport.write(encode_response(head, False, False))
        self.discarding = True
        self.loop.call_later(LINGER_S, self.close)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._new()

    def _too_big(self, status: int) -> _TooBig:
        self.too_big = status
        return _TooBig(status)

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_URL:
            raise self._too_big(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > MAX_HEADER_BYTES:
            raise self._too_big(431)
        k = name.decode("latin-1").lower()
        v = value.decode("latin-1")
        cur = self.headers.get(k)
        self.headers[k] = v if cur is None else (f"{cur}; {v}" if k == "cookie" else f"{cur}, {v}")

    def on_headers_complete(self) -> None:
        cl = self.headers.get("content-length")
        if cl is not None and cl.isdigit() and int(cl) > self.gw.max_body_bytes:
            raise self._too_big(413)

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.gw.max_body_bytes:
            raise self._too_big(413)
        self.body.append(body)

    def on_message_complete(self) -> None:
        p = self.parser
        m = p.get_method()
        req = Request(_METHODS.get(m) or m.decode("latin-1"), self.url.decode("latin-1"), self.headers,
                      b"".join(self.body), p.get_http_version(), p.should_keep_alive())
        self.queue.append(req)
        if len(self.queue) >= MAX_PIPELINE and self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def _next(self) -> None:
        """Serve the queued requests in order, one at a time: each either answered at once or left to
        its upstream's callback, which answers it and comes back here."""
        self.serving = True
        while self.queue and not self.busy and self.transport is not None:
            self.busy = True
            self.gw.begin(self.queue.popleft(), self)
        self.serving = False

    def respond(self, req: Request, head: ResponseHead) -> None:
        """Write the answer to ``req`` (the request being served), then start the next one."""
        self.busy = False
        t = self.transport
        if t is None:
            return
        try:
            data = encode_response(head, req.keep_alive, req.method == "HEAD")
        except Exception:  # e.g. a plugin's header value that is not latin-1: still an answer, not a hang
            log.exception("gateway response could not be encoded")
            data = encode_response(_internal_error(), req.keep_alive, False)
        t.write(data)
        if not req.keep_alive:
            t.close()
            self.transport = None
            return
        if self.paused and len(self.queue) < MAX_PIPELINE // 2:
            self.paused = False
            t.resume_reading()
        if self.queue and not self.serving:
            self._next()


class _TooBig(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status
