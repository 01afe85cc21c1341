"""The little framework the demo services share: routes, spans, metrics, calls.

Each service is a ``ThreadingHTTPServer`` with JSON routes. Around every
request the framework does what a team's own middleware would: extract the
W3C trace context (and baggage) from the headers, open a SERVER span named
after the route, count and time the request in ``prometheus_client``
metrics, and mark 5xx answers as span errors. :meth:`Service.call` is the
matching client: a CLIENT span, ``traceparent``/``baggage`` injected into the
outgoing headers, client metrics. ``/metrics`` (Prometheus text format) and
``/healthz`` are served without spans.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

from pitwall.demo.scenario import Scenario, epoch_arg, request_rng
from pitwall.instrument import DEFAULT_ENDPOINT, Instrumentation, instrument

__all__ = ["Reply", "Request", "Route", "Service", "main", "parse_args"]

log = logging.getLogger("pitwall.demo")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
CALL_TIMEOUT_S = 5.0
MAX_BODY_BYTES = 1 << 20

SERVER_REQUESTS = Counter("http_server_requests", "Requests served, by route and status.",
                          ["method", "route", "status"])
SERVER_DURATION = Histogram("http_server_request_duration_seconds", "Time to answer a request.",
                            ["method", "route"], buckets=LATENCY_BUCKETS)
SERVER_IN_FLIGHT = Gauge("http_server_in_flight_requests", "Requests being served right now.")
CLIENT_REQUESTS = Counter("http_client_requests", "Calls to other services, by peer and status.",
                          ["peer", "method", "status"])
CLIENT_DURATION = Histogram("http_client_request_duration_seconds", "Time other services took to answer.",
                            ["peer"], buckets=LATENCY_BUCKETS)


@dataclass
class Request:
    """One incoming request, as a handler sees it."""

    method: str
    path: str
    route: str
    params: dict[str, str]
    body: dict[str, Any]
    request_id: str
    rng: random.Random  # seeded by (seed, service, request id, route, path)


@dataclass
class Reply:
    status: int
    body: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[Request], Reply]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: str  # e.g. "/products/{sku}"
    handler: Handler

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method:
            return None
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.pattern) + "$"
        m = re.match(regex, path)
        return m.groupdict() if m else None


class Service:
    """One demo service: its routes, its peers, its telemetry."""

    def __init__(self, name: str, scenario: Scenario, peers: dict[str, str], otel: Instrumentation) -> None:
        self.name = name
        self.scenario = scenario
        self.peers = peers
        self.otel = otel
        self.tracer = otel.tracer
        self.routes: list[Route] = []
        self.log = logging.getLogger(name)

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator registering a handler for ``method pattern``."""

        def register(fn: Handler) -> Handler:
            self.routes.append(Route(method, pattern, fn))
            return fn

        return register

    def work(self, rng: random.Random, median_s: float, spread: float = 0.35) -> None:
        """Spend a log-normally distributed time around ``median_s`` (the service's own work)."""
        time.sleep(min(10.0, rng.lognormvariate(0.0, spread) * median_s))

    # -- serving ---------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        """Route one request inside a SERVER span continuing the caller's trace."""
        for r in self.routes:
            params = r.match(method, path)
            if params is not None:
                break
        else:
            return Reply(404, {"error": f"no route for {method} {path}"})
        token = context.attach(propagate.extract(headers))
        start = time.perf_counter()
        SERVER_IN_FLIGHT.inc()
        try:
            with self.tracer.start_as_current_span(
                f"{method} {r.pattern}", kind=SpanKind.SERVER,
                attributes={"http.request.method": method, "url.path": path, "http.route": r.pattern},
            ) as span:
                reply = self._run(r, method, path, params, raw, span)
                span.set_attribute("http.response.status_code", reply.status)
                if reply.status >= 500:
                    span.set_status(Status(StatusCode.ERROR, str(reply.body.get("error", ""))))
            return reply
        finally:
            SERVER_IN_FLIGHT.dec()
            elapsed = time.perf_counter() - start
            SERVER_DURATION.labels(method, r.pattern).observe(elapsed)
            context.detach(token)

    def _run(self, r: Route, method: str, path: str, params: dict[str, str], raw: bytes,
             span: trace.Span) -> Reply:
        request_id = str(baggage.get_baggage("request.id") or f"{time.time_ns()}")
        span.set_attribute("request.id", request_id)
        try:
            body = json.loads(raw) if raw else {}
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except ValueError as e:
            reply = Reply(400, {"error": f"bad request body: {e}"})
        else:
            req = Request(method, path, r.pattern, params, body, request_id,
                          request_rng(self.scenario.seed, self.name, request_id, r.pattern, path))
            try:
                reply = r.handler(req)
            except Exception as e:
                span.record_exception(e)
                self.log.exception("unhandled error in %s %s", method, r.pattern)
                reply = Reply(500, {"error": f"internal error: {type(e).__name__}"})
        SERVER_REQUESTS.labels(method, r.pattern, str(reply.status)).inc()
        return reply

    # -- calling other services -----------------------------------------

    def call(self, peer: str, method: str, path: str, body: dict[str, Any] | None = None) -> Reply:
        """Call ``peer`` inside a CLIENT span; network failures come back as 503 replies."""
        base = self.peers[peer]
        start = time.perf_counter()
        with self.tracer.start_as_current_span(
            f"{method} {path.split('?')[0]}", kind=SpanKind.CLIENT,
            attributes={"peer.service": peer, "http.request.method": method, "url.full": base + path,
                        "server.address": base.split("//")[-1].rsplit(":", 1)[0],
                        "server.port": int(base.rsplit(":", 1)[-1])},
        ) as span:
            headers = {"Content-Type": "application/json"}
            propagate.inject(headers)  # traceparent + baggage
            data = json.dumps(body).encode() if body is not None else None
            reply = _http(method, base + path, headers, data)
            span.set_attribute("http.response.status_code", reply.status)
            if reply.status >= 500:
                span.set_status(Status(StatusCode.ERROR, f"{peer} answered {reply.status}"))
        CLIENT_REQUESTS.labels(peer, method, str(reply.status)).inc()
        CLIENT_DURATION.labels(peer).observe(time.perf_counter() - start)
        return reply


def _http(method: str, url: str, headers: dict[str, str], data: bytes | None) -> Reply:
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=CALL_TIMEOUT_S) as resp:
            return Reply(resp.status, _json(resp.read()))
    except urllib.error.HTTPError as e:
        return Reply(e.code, _json(e.read()))
    except (OSError, TimeoutError) as e:  # URLError is an OSError
        return Reply(503, {"error": f"connection failed: {e}"})


def _json(raw: bytes) -> dict[str, Any]:
    try:
        v = json.loads(raw) if raw else {}
    except ValueError:
        return {"error": raw[:200].decode(errors="replace")}
    return v if isinstance(v, dict) else {"value": v}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        path = self.path.split("?")[0]
        if method == "GET" and path == "/metrics":
            self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
            return
        if method == "GET" and path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._send(413, b'{"error": "body too large"}', "application/json")
            return
        raw = self.rfile.read(length) if length else b""
        # Lower-case names: the propagators look up "traceparent" and "baggage" exactly.
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.service.handle(method, path, headers, raw)
        self._send(reply.status, json.dumps(reply.body).encode(), "application/json")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Access logs stay out of the way: spans and metrics already record every request."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], service: Service) -> None:
        self.service = service
        super().__init__(addr, _Handler)


def parse_args(name: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The command line every demo service takes."""
    p = argparse.ArgumentParser(prog=f"python -m pitwall.demo.services.{name}")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--pitwall", default=DEFAULT_ENDPOINT, help="OTLP/HTTP base URL")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epoch", type=epoch_arg, default=None, help="scenario start (Unix time) [default: now]")
    p.add_argument("--day", type=float, default=300.0, help="seconds per simulated day")
    p.add_argument("--peer", action="append", default=[], metavar="NAME=URL")
    return p.parse_args(argv)


def main(name: str, setup: Callable[[Service], None], argv: list[str] | None = None) -> None:
    """Run service ``name`` until SIGTERM/SIGINT; ``setup`` registers its routes."""
    args = parse_args(name, argv)
    scenario = Scenario(epoch=args.epoch or time.time(), seed=args.seed, day_s=args.day)
    peers = dict(p.split("=", 1) for p in args.peer)
    otel = instrument(name, args.pitwall, service_version="1.4.2",
                      resource_attributes={"deployment.environment": "demo", "service.namespace": "shop",
                                           "service.instance.id": f"{name}-{os.getpid()}"},
                      console=True, export_delay_s=1.0, metrics_interval_s=5.0)
    service = Service(name, scenario, peers, otel)
    setup(service)
    server = _Server((args.host, args.port), service)
    _stop_on_signals(server)
    log.info("%s listening on http://%s:%d", name, args.host, args.port)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        otel.shutdown()


def _stop_on_signals(server: ThreadingHTTPServer) -> None:
    """SIGTERM/SIGINT stop ``serve_forever`` (from another thread: shutdown() blocks until it returns)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
