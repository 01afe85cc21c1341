"""OTLP over gRPC: the collector services' ``Export`` methods on their own listener (default ``127.0.0.1:4317``).

The server knows no signal: it is handed one export function per service
(``Export``: tenant, request body, content type -> encoded response), the
same functions the pillars' OTLP/HTTP handlers call, so decoding, limits,
WAL and ``partial_success`` are shared. This module adds only what gRPC
carries differently from HTTP:

- the request arrives whole as raw protobuf bytes (gRPC undoes ``gzip``);
  ``grpc.max_receive_message_length`` is the body limit (``limits.max_request_bytes``),
  which gRPC applies to the message as sent and once decompressed;
- its bytes are reserved in the in-flight budget before decoding; when
  others hold the budget the answer is ``RESOURCE_EXHAUSTED`` with a
  ``RetryInfo`` (the OTLP specification's signal that a retry may succeed);
- the bearer token and tenant come from the ``authorization`` and
  ``x-scope-orgid`` metadata, checked with the HTTP listener's token table
  (``core.auth.TokenTable``; the ``write`` scope);
- errors are gRPC status codes (``GRPC_CODES``), as the OTLP specification
  names them; once the server is stopping, new calls get ``UNAVAILABLE``;
- TLS from the same ``tls_cert_file``/``tls_key_file`` as the HTTP listener,
  read again on reload for new connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import Counter

from pitwall.core.audit import AuditEntry, AuditLog
from pitwall.core.auth import TokenTable
from pitwall.core.body import Body, BodyLimits
from pitwall.core.errors import ConfigError, Overloaded, PitwallError
from pitwall.core.http_errors import status_of
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.limits import InflightBudget
from pitwall.core.listen import split_listen
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.core.settings import OtlpGrpcSettings
from pitwall.core.tenancy import resolve_tenant

__all__ = ["GRPC_CODES", "SERVICES", "Export", "OtlpGrpcServer", "OtlpGrpcSettings"]

log = logging.getLogger(__name__)

# tenant, request body (protobuf), content type -> the encoded Export*ServiceResponse
Export = Callable[[str, Body, str], Awaitable[bytes]]

PROTOBUF = "application/x-protobuf"
SERVICES = {
    "traces": "opentelemetry.proto.collector.trace.v1.TraceService",
    "metrics": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "logs": "opentelemetry.proto.collector.logs.v1.LogsService",
}

# Error kind (core.errors) -> gRPC status, as the OTLP specification uses them: INVALID_ARGUMENT is
# not retried; RESOURCE_EXHAUSTED is retried only with RetryInfo (``overloaded`` carries one).
GRPC_CODES: dict[str, grpc.StatusCode] = {
    "bad_data": grpc.StatusCode.INVALID_ARGUMENT,
    "too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unauthorized": grpc.StatusCode.UNAUTHENTICATED,
    "forbidden": grpc.StatusCode.PERMISSION_DENIED,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
    "canceled": grpc.StatusCode.CANCELLED,
}
_RETRYINFO_KEY = "google.rpc.retryinfo-bin"  # what the OpenTelemetry Python exporter reads
_STATUS_DETAILS_KEY = "grpc-status-details-bin"  # google.rpc.Status with details (Go exporters)
_STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    def load(self) -> tuple[bytes, bytes]:
        try:
            return self.key.read_bytes(), self.cert.read_bytes()
        except OSError as e:
            raise ConfigError(f"tls_cert_file, tls_key_file: cannot read {self.cert} and {self.key}: {e}") from e


class OtlpGrpcServer:
    """A ``core.lifecycle.Part`` and its one component: the gRPC server (started after the stores)."""

    name = "otlp-grpc"

    def __init__(self, settings: OtlpGrpcSettings, exports: Mapping[str, Export], *, tokens: TokenTable,
                 inflight: InflightBudget, body_limits: BodyLimits, tls: TlsFiles | None = None,
                 audit: AuditLog | None = None) -> None:
        self.settings = settings
        self.audit = audit  # every export is a write: recorded as the HTTP ones are
        self.exports = dict(exports)
        self.tokens = tokens
        self.inflight = inflight
        self.body_limits = body_limits
        self.tls = tls
        self.port: int | None = None  # the bound port, once started
        self._server: Any = None
        self._stopping = False
        self._tls_pending: tuple[bytes, bytes] | None = None
        self._requests: Counter | None = None

    # -- Part --------------------------------------------------------------
    def components(self) -> Sequence[Component]:
        return [self]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return []

    async def reload(self, settings: Any) -> None:
        """New connections use the certificate files as they are now; the listen address needs a restart."""
        if self.tls is not None and self._server is not None:
            self._tls_pending = self.tls.load()

    def register_metrics(self, metrics: SelfMetrics) -> None:
        """``pitwall_grpc_requests_total{method, code}``, beside the HTTP listener's request counter."""
        self._requests = Counter("pitwall_grpc_requests", "OTLP/gRPC requests by method and status code.",
                                 ["method", "code"], registry=metrics.registry)

    # -- Component ---------------------------------------------------------
    async def start(self) -> None:
        host, port = split_listen(self.settings.listen)
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", self.body_limits.max_bytes),
            ("grpc.max_send_message_length", 1 << 20),
            ("grpc.so_reuseport", 0),
        ])
        handlers = [
            grpc.method_handlers_generic_handler(SERVICES[signal], {"Export": grpc.unary_unary_rpc_method_handler(
                self._handler(signal, export))})
            for signal, export in self.exports.items()
        ]
        server.add_generic_rpc_handlers(handlers)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if self.tls is not None:
                self.port = server.add_secure_port(address, self._credentials())
            else:
                self.port = server.add_insecure_port(address)
        except RuntimeError as e:
            raise ConfigError(f"otlp_grpc.listen: cannot listen on {self.settings.listen}: {e}; "
                              "set otlp_grpc.listen or otlp_grpc.enabled: false") from e
        await server.start()
        self._server = server
        log.info("OTLP/gRPC listening", extra={"listen": f"{host}:{self.port}", "tls": self.tls is not None})

    async def stop(self) -> None:
        self._stopping = True
        if self._server is not None:
            await self._server.stop(_STOP_GRACE_S)
            self._server = None

    # -- calls ---------------------------------------------------------------
    def _credentials(self) -> Any:
        assert self.tls is not None
        key, cert = self.tls.load()
        initial = grpc.ssl_server_certificate_configuration([(key, cert)])

        def fetch() -> Any:  # asked at each handshake: None keeps the current certificate
            pending, self._tls_pending = self._tls_pending, None
            return grpc.ssl_server_certificate_configuration([pending]) if pending else None

        return grpc.dynamic_ssl_server_credentials(initial, fetch)

    def _handler(self, signal: str, export: Export) -> Callable[[bytes, Any], Awaitable[bytes]]:
        method = f"/{SERVICES[signal]}/Export"

        async def handle(request: bytes, context: Any) -> bytes:
            code = grpc.StatusCode.OK
            status, who = 200, {"name": "", "tenant": ""}  # for the audit log, as HTTP writes are
            started = time.monotonic()
            try:
                return await self._call(export, request, context, f"/v1/{signal}", who)
            except PitwallError as err:
                code = GRPC_CODES.get(err.kind, grpc.StatusCode.INTERNAL)
                status = status_of(err)
                await _abort(context, err)
            except grpc.aio.AbortError:  # _call's own abort (UNAVAILABLE while stopping)
                code = grpc.StatusCode.UNAVAILABLE
                raise
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("OTLP/gRPC export failed", extra={"signal": signal})
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            finally:
                if self._requests is not None:
                    self._requests.labels(method, code.name).inc()
                if self.audit is not None:
                    status = 500 if code == grpc.StatusCode.INTERNAL else 503 if code in (
                        grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) else status
                    self.audit.offer(AuditEntry(time.time_ns(), who["name"], who["tenant"], "POST", method, (),
                                                status, str(context.peer() or ""), _user_agent(context),
                                                time.monotonic() - started))
            raise AssertionError("unreachable: abort raises")

        return handle

    async def _call(self, export: Export, request: bytes, context: Any, http_path: str,
                    who: dict[str, str]) -> bytes:
        if self._stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        md = {k: v for k, v in reversed(tuple(context.invocation_metadata() or ()))}  # the first of each
        named = str(md.get("x-scope-orgid", ""))
        if self.tokens:
            auth = md.get("authorization", "")
            principal, tenant = self.tokens.authorize(auth.encode("latin-1") if isinstance(auth, str) else auth,
                                                      "write", named, http_path)  # roles see OTLP/HTTP's path
            who["name"] = principal.name
        else:
            tenant = resolve_tenant(None, named)
        who["tenant"] = tenant
        reservation = self.inflight.reservation()
        try:
            reservation.grow(len(request))  # before decoding, as read_body does
            return await export(tenant, Body(request, "", self.body_limits, reservation), PROTOBUF)
        finally:
            reservation.release()


def _user_agent(context: Any) -> str:
    for k, v in context.invocation_metadata() or ():
        if k == "user-agent":
            return str(v)
    return ""


async def _abort(context: Any, err: PitwallError) -> None:
    code = GRPC_CODES.get(err.kind, grpc.StatusCode.INTERNAL)
    trailers: tuple[tuple[str, bytes], ...] = ()
    if isinstance(err, Overloaded):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(err.retry_after * 1e9))
        info = error_details_pb2.RetryInfo(retry_delay=delay)
        detail = any_pb2.Any()
        detail.Pack(info)
        status = status_pb2.Status(code=code.value[0], message=err.message, details=[detail])
        trailers = ((_RETRYINFO_KEY, info.SerializeToString()), (_STATUS_DETAILS_KEY, status.SerializeToString()))
    await context.abort(code, err.message, trailing_metadata=trailers)
