"""Wire a Python service's OpenTelemetry SDK to pitwall in one call.

::

    import logging
    import pitwall

    otel = pitwall.instrument("checkout")          # traces, logs and metrics
    tracer = otel.tracer
    log = logging.getLogger("checkout")

    with tracer.start_as_current_span("charge card"):
        log.info("charging")                        # carries the span's trace id
    ...
    otel.shutdown()                                 # flushes what is still buffered

Everything goes over OTLP/HTTP (protobuf) to ``endpoint``: spans to
``/v1/traces``, Python ``logging`` records to ``/v1/logs`` (each carrying the
trace and span id of the span current when it was logged), and OpenTelemetry
metrics to ``/v1/metrics``. The same code works against any OTLP receiver
(an OpenTelemetry Collector, Tempo, ...); pitwall is just the default.
"""

from __future__ import annotations

import logging
import sys
import types
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

__all__ = ["DEFAULT_ENDPOINT", "Instrumentation", "TraceContextFormatter", "instrument"]

DEFAULT_ENDPOINT = "http://127.0.0.1:9900"
CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s trace_id=%(trace_id)s span_id=%(span_id)s %(message)s"


class TraceContextFormatter(logging.Formatter):
    """A formatter that can print ``%(trace_id)s`` and ``%(span_id)s`` of the current span.

    It formats a copy of the record, so the ids never become attributes of
    the record other handlers (the OTLP one) export: the OTLP record already
    carries them in its own fields.
    """

    def format(self, record: logging.LogRecord) -> str:
        ctx = otel_trace.get_current_span().get_span_context()
        copy = logging.makeLogRecord(record.__dict__)
        copy.trace_id = otel_trace.format_trace_id(ctx.trace_id) if ctx.is_valid else "-"
        copy.span_id = otel_trace.format_span_id(ctx.span_id) if ctx.is_valid else "-"
        return super().format(copy)


@dataclass
class Instrumentation:
    """Handles on what :func:`instrument` set up; ``shutdown()`` flushes and detaches all of it."""

    resource: Resource
    tracer_provider: TracerProvider | None
    logger_provider: LoggerProvider | None
    meter_provider: MeterProvider | None
    handlers: list[logging.Handler] = field(default_factory=list)
    logger: logging.Logger = field(default_factory=logging.getLogger)
    _closed: bool = False

    @property
    def service_name(self) -> str:
        return str(self.resource.attributes.get("service.name", ""))

    @property
    def tracer(self) -> otel_trace.Tracer:
        """A tracer named after the service (a no-op tracer when traces are off)."""
        if self.tracer_provider is None:
            return otel_trace.NoOpTracer()
        return self.tracer_provider.get_tracer(self.service_name)

    @property
    def meter(self) -> otel_metrics.Meter:
        """A meter named after the service (a no-op meter when metrics are off)."""
        if self.meter_provider is None:
            return otel_metrics.NoOpMeter(self.service_name)
        return self.meter_provider.get_meter(self.service_name)

    def force_flush(self, timeout_s: float = 10.0) -> None:
        """Export everything buffered now (e.g. before a test reads it back)."""
        ms = int(timeout_s * 1000)
        if self.tracer_provider is not None:
            self.tracer_provider.force_flush(ms)
        if self.logger_provider is not None:
            self.logger_provider.force_flush(ms)
        if self.meter_provider is not None:
            self.meter_provider.force_flush(ms)

    def shutdown(self) -> None:
        """Detach the logging handlers, then flush and stop every provider. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for h in self.handlers:
            self.logger.removeHandler(h)
            h.close()
        # Spans first: log records and metrics of the last requests refer to them.
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.logger_provider is not None:
            self.logger_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def instrument(
    service_name: str,
    endpoint: str = DEFAULT_ENDPOINT,
    *,
    service_version: str | None = None,
    resource_attributes: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    traces: bool = True,
    logs: bool = True,
    metrics: bool = True,
    log_level: int = logging.INFO,
    logger: logging.Logger | None = None,
    console: bool = False,
    export_delay_s: float = 2.0,
    metrics_interval_s: float = 15.0,
    timeout_s: float = 5.0,
    set_global: bool = True,
) -> Instrumentation:
    """Send ``service_name``'s traces, logs and metrics to pitwall (or any OTLP/HTTP receiver).

    ``endpoint`` is the base URL; the signal paths are appended. ``headers``
    go with every export (e.g. ``{"Authorization": "Bearer ..."}`` or
    ``{"X-Scope-OrgID": "team-a"}``). With ``set_global`` the providers become
    OpenTelemetry's global ones, so ``trace.get_tracer(...)`` in library code
    uses them; a process can do that once. ``logger`` (default: the root
    logger) gets the OTLP handler and, with ``console``, a stderr handler
    whose lines show the trace id. ``export_delay_s`` bounds how long a span
    or log record waits in the batch before it is sent.
    """
    attrs: dict[str, Any] = {"service.name": service_name, **(resource_attributes or {})}
    if service_version:
        attrs["service.version"] = service_version
    resource = Resource.create(attrs)
    base = endpoint.rstrip("/")
    delay_ms = max(1, int(export_delay_s * 1000))
    target = logger if logger is not None else logging.getLogger()
    inst = Instrumentation(resource=resource, tracer_provider=None, logger_provider=None,
                           meter_provider=None, logger=target)
    if traces:
        inst.tracer_provider = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers=headers, timeout=timeout_s)
        inst.tracer_provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay_ms))
        if set_global:
            otel_trace.set_tracer_provider(inst.tracer_provider)
    if metrics:
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{base}/v1/metrics", headers=headers, timeout=timeout_s),
            export_interval_millis=metrics_interval_s * 1000,
        )
        inst.meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
        if set_global:
            otel_metrics.set_meter_provider(inst.meter_provider)
    if logs:
        inst.logger_provider = LoggerProvider(resource=resource)
        log_exporter = OTLPLogExporter(endpoint=f"{base}/v1/logs", headers=headers, timeout=timeout_s)
        inst.logger_provider.add_log_record_processor(
            BatchLogRecordProcessor(log_exporter, schedule_delay_millis=delay_ms))
        inst.handlers.append(LoggingHandler(level=log_level, logger_provider=inst.logger_provider))
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(TraceContextFormatter(CONSOLE_FORMAT))
        stream.setLevel(log_level)
        inst.handlers.append(stream)
    for h in inst.handlers:
        target.addHandler(h)
    if inst.handlers and (target.level == logging.NOTSET or target.level > log_level):
        target.setLevel(log_level)
    return inst


class _CallableModule(types.ModuleType):
    """Lets ``import pitwall; pitwall.instrument("svc")`` call ``instrument``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Instrumentation:
        return instrument(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
