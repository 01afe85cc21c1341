"""The Python side of the gateway's C connections (``_native/gwfast.c``).

``make_engine`` builds the C state one ``GatewayServer`` shares across its
plain-HTTP connections; ``connection_factory`` makes each connection's
protocol. ``compile_plan`` turns a configuration into the C router's
``Plan`` (the router's candidates in ``Router.candidates`` order, each
marked evaluable in C or not, and per route whether C serves it itself);
``GatewayServer`` swaps it in with the configuration, in the same step.

A request the C code does not serve itself is handed to
``GatewayServer.begin`` as the same ``Request`` ``_ClientConn`` builds, and
its answer comes back through ``NativeConn.respond`` (``encode_response``,
as ``_ClientConn.respond``). A connection whose bytes the C parser will not
frame (chunked bodies, ``Upgrade``, anything over a limit or malformed) is
handed whole to a ``_ClientConn`` (``handoff``), which answers exactly as
without the C code. A new upstream connection for the C path is opened
here (``connect``), under the service's connect timeout, and handed back.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

from pitwall.traffic.gateway import _gwfast
from pitwall.traffic.gateway.context import Request, ResponseHead, kong_error
from pitwall.traffic.gateway.kuberoutes import KubeRoutes
from pitwall.traffic.gateway.plugins import ratelimit
from pitwall.traffic.gateway.plugins.auth import KeyAuth
from pitwall.traffic.gateway.plugins.ratelimit import PERIODS, RateLimiting
from pitwall.traffic.gateway.proxy import (
    _STATUS_LINES,
    GatewayServer,
    _ClientConn,
    _internal_error,
    encode_response,
)
from pitwall.traffic.gateway.runtime import GatewayConfig, RouteRT, ServiceRT

__all__ = ["NativeConn", "compile_plan", "connection_factory", "make_engine"]

log = logging.getLogger(__name__)

# Outcomes of a connection attempt, as gwfast.c's K_* codes.
K_OK, K_CONNECT, K_DNS, K_INTERNAL = 0, 1, 2, 5
# rate-limiting's limit_by values served in C (gwfast.c's BY_*); header and path are left to Python.
_LIMIT_BY = {"consumer": 0, "credential": 1, "ip": 2, "service": 3}


class NativeConn(_gwfast.Client):
    """One plain-HTTP client connection, parsed and served in C; ``respond`` answers a delegated request."""

    __slots__ = ()

    def respond(self, req: Request, head: ResponseHead) -> None:
        try:
            data = encode_response(head, req.keep_alive, req.method == "HEAD")
        except Exception:  # e.g. a plugin's header value that is not latin-1: still an answer, not a hang
            log.exception("gateway response could not be encoded")
            data = encode_response(_internal_error(), req.keep_alive, False)
        self._answered(data, req.keep_alive)


class _HandedOff(_ClientConn):
    """A connection the C parser handed over; ``busy`` until the requests the C code took are answered."""

    def _native_release(self) -> None:
        self.busy = False
        if self.queue and self.transport is not None:
            self._next()


def handoff(gw: GatewayServer, conn: NativeConn, transport: asyncio.Transport, data: bytes, paused: bool,
            busy: bool) -> _ClientConn:
    """A ``_ClientConn`` takes the connection over, fed every byte the C parser did not take. While
    ``busy`` (requests parsed in C not answered yet) it queues what it parses, as ``_ClientConn`` does
    behind a request in flight, and refuses at once what it refuses."""
    py = _HandedOff(gw)
    py.connection_made(transport)
    gw.conns.discard(conn)
    py.busy = busy
    if paused:
        transport.resume_reading()
    if data:
        py.data_received(data)
    return py


def make_engine(gw: GatewayServer, loop: asyncio.AbstractEventLoop) -> _gwfast.Engine:
    def connect(client: NativeConn, serial: int, pool: _gwfast.Pool, host: str, port: int,
                timeout_s: float) -> None:
        loop.create_task(_connect(engine, client, serial, pool, host, port, timeout_s))

    errors = {status: kong_error(status, message).body for status, message in (
        (502, "An invalid response was received from the upstream server"),
        (503, "name resolution failed"), (504, "The upstream server is timing out"))}
    internal = (encode_response(_internal_error(), True, False), encode_response(_internal_error(), False, False))
    engine = _gwfast.Engine(gw, Request, lambda conn, t, data, paused, busy: handoff(gw, conn, t, data, paused, busy),
                            gw.max_body_bytes, connect, _STATUS_LINES, errors, internal)
    engine.start(loop)
    return engine


async def _connect(engine: _gwfast.Engine, client: NativeConn, serial: int, pool: _gwfast.Pool, host: str,
                   port: int, timeout_s: float) -> None:
    """``Pools._connect`` for the C path: the outcome goes to ``client._connected``."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            _t, proto = await loop.create_connection(lambda: cast(asyncio.Protocol, _gwfast.Upstream(engine, pool)),
                                                     host, port)
            conn = cast(_gwfast.Upstream, proto)
    except socket.gaierror:
        client._connected(serial, None, K_DNS)
    except (OSError, TimeoutError):
        client._connected(serial, None, K_CONNECT)
    except Exception:
        log.exception("gateway request failed")
        client._connected(serial, None, K_INTERNAL)
    else:
        client._connected(serial, conn, K_OK)


def connection_factory(engine: _gwfast.Engine) -> Callable[[], asyncio.Protocol]:
    return lambda: cast(asyncio.Protocol, NativeConn(engine))  # it has a Protocol's methods, in C


def _ascii(*texts: str | None) -> bool:
    return all(t is None or t.isascii() for t in texts)


def _keyauth(p: KeyAuth) -> tuple[Any, ...] | None:
    """key-auth as C runs it, or None (``anonymous``: left to Python)."""
    if p.conf.get("anonymous"):
        return None
    names = [low for _name, low in p.names]
    challenge = p.challenge[0][1]
    if len(names) > 16 or not _ascii(challenge, *names):
        return None
    return (names, p.hide_credentials, bool(p.conf.get("run_on_preflight", True)), p.in_header, p.in_query,
            p.in_body, challenge, p.consumers.keyauth, kong_error(401, "No API key found in request").body,
            kong_error(401, "Unauthorized").body, kong_error(401, "Duplicate API key found").body)


def _ratelimit(p: RateLimiting, svc: ServiceRT) -> tuple[Any, ...] | None:
    """rate-limiting (local policy) as C runs it, on the same counters, or None (limit_by header/path)."""
    if p.conf.get("policy", "local") != "local" or p.limit_by not in _LIMIT_BY or not p.rows:
        return None
    rows = [(period, limit, lh, lt, rh, window, PERIODS.index(period)) for period, limit, lh, lt, rh, window in p.rows]
    body = kong_error(int(p.conf["error_code"]), p.conf["error_message"]).body
    return (p.counters, p.scope, _LIMIT_BY[p.limit_by], svc.id, p.hide, int(p.conf["error_code"]), body,
            ratelimit.MAX_KEYS, rows)


def _plugins(rt: RouteRT, svc: ServiceRT) -> tuple[tuple[Any, ...] | None, tuple[Any, ...] | None] | None:
    """The route's key-auth and rate-limiting for C, or None when a plugin (or its options) is not served in C."""
    if rt.consumer_scoped or rt.response_plugins or rt.log_plugins:
        return None
    ka = rl = None
    for p in rt.plugins:  # the chain, by priority: key-auth before rate-limiting, as C runs them
        if type(p) is KeyAuth and ka is None:
            ka = _keyauth(p)
            if ka is None:
                return None
        elif type(p) is RateLimiting and rl is None:
            rl = _ratelimit(p, svc)
            if rl is None:
                return None
        else:
            return None
    return ka, rl


def _route(engine: _gwfast.Engine, rt: RouteRT) -> tuple[Any, ...]:
    """One route for the Plan: whether C serves it (a fixed upstream host, plain HTTP, no plugin but
    key-auth and rate-limiting as ``_plugins`` allows), and what ``_serialize`` and ``_proxy`` need."""
    svc = rt.service
    if svc is None:
        return (False, None, "", 0, 0.0, "", None, False, False, False, 0, 0.0, 0.0, None, None)
    plugins = _plugins(rt, svc)
    fast = (plugins is not None and svc.targets is None and svc.kube is None and not rt.https_only
            and _ascii(svc.host_header, svc.path))
    ka, rl = plugins if plugins is not None and fast else (None, None)
    pool = engine.pool(svc.host, svc.port) if fast else None
    return (fast, pool, svc.host, svc.port, svc.connect_timeout_s, svc.host_header, svc.path, rt.strip_path,
            rt.preserve_host, rt.path_handling == "v1", svc.retries, svc.read_timeout_s, svc.write_timeout_s, ka, rl)


def compile_plan(engine: _gwfast.Engine, cfg: GatewayConfig, kube: KubeRoutes | None) -> _gwfast.Plan | None:
    """The C router for ``cfg``: ``Router.candidates`` in order, each evaluable in C (methods, hosts,
    prefix paths) or not (headers, regex paths: the request is delegated when C reaches one first).
    None while Kubernetes routes are in force (they are tried first, in Python); a server with the
    Kubernetes API and no Ingress or HTTPRoute has an empty set, which changes nothing."""
    if kube is not None and not kube.empty:
        return None
    index: dict[int, int] = {}
    routes: list[tuple[Any, ...]] = []
    cands: list[tuple[Any, ...]] = []
    for c in cfg.router.candidates:
        rt = cast(RouteRT, c.route)
        i = index.get(id(rt))
        if i is None:
            i = index[id(rt)] = len(routes)
            routes.append(_route(engine, rt))
        hosts = [(h.exact, h.suffix, h.prefix, h.port) for h in c.hosts] if c.hosts is not None else None
        evaluable = (c.headers is None and c.regexes is None and _ascii(*(p for p in c.prefixes or ()))
                     and all(_ascii(*h) for h in hosts or ()))
        cands.append((evaluable, i, tuple(c.methods) if c.methods is not None else None, hosts, c.prefixes))
    return _gwfast.Plan(cands, routes)
