"""pitwall.instrument: one call wires traces, logs (with trace ids) and metrics to an OTLP receiver."""

from __future__ import annotations

import logging

from opentelemetry import trace

from pitwall.instrument import TraceContextFormatter, instrument
from tests.demo.conftest import OtlpSink


def test_spans_logs_and_metrics_reach_the_receiver(otlp_sink: OtlpSink) -> None:
    logger = logging.getLogger("test.instrument.all")
    otel = instrument("svc-a", otlp_sink.url, service_version="2.0", resource_attributes={"team": "x"},
                      logger=logger, set_global=False)
    try:
        with otel.tracer.start_as_current_span("work") as span:
            logger.info("inside %s", "the span")
            ctx = span.get_span_context()
        logger.info("outside")
        otel.meter.create_counter("jobs.done").add(3)
        otel.force_flush()
    finally:
        otel.shutdown()
    spans = otlp_sink.spans()
    assert [(svc, s.name) for svc, s in spans] == [("svc-a", "work")]
    assert spans[0][1].trace_id == ctx.trace_id.to_bytes(16, "big")
    logs = {r.body.string_value: (svc, r) for svc, r in otlp_sink.logs()}
    assert set(logs) == {"inside the span", "outside"}
    svc, inside = logs["inside the span"]
    assert svc == "svc-a"
    assert inside.trace_id == ctx.trace_id.to_bytes(16, "big")
    assert inside.span_id == ctx.span_id.to_bytes(8, "big")
    assert inside.severity_text == "INFO"
    assert logs["outside"][1].trace_id == b""
    assert "jobs.done" in otlp_sink.metric_names()


def test_shutdown_detaches_handlers_and_is_idempotent(otlp_sink: OtlpSink) -> None:
    logger = logging.getLogger("test.instrument.detach")
    before = list(logger.handlers)
    otel = instrument("svc-b", otlp_sink.url, logger=logger, console=True, set_global=False, metrics=False)
    assert len(logger.handlers) == len(before) + 2
    otel.shutdown()
    otel.shutdown()
    assert logger.handlers == before


def test_signals_can_be_switched_off(otlp_sink: OtlpSink) -> None:
    logger = logging.getLogger("test.instrument.off")
    otel = instrument("svc-c", otlp_sink.url, traces=False, logs=False, metrics=False, logger=logger,
                      set_global=False)
    with otel.tracer.start_as_current_span("nothing"):
        logger.warning("not exported")
    otel.force_flush()
    otel.shutdown()
    assert otel.tracer_provider is None and otel.logger_provider is None and otel.meter_provider is None
    assert otlp_sink.spans() == [] and otlp_sink.logs() == []


def test_console_formatter_shows_the_trace_id_without_touching_the_record(otlp_sink: OtlpSink) -> None:
    otel = instrument("svc-d", otlp_sink.url, logs=False, metrics=False, logger=logging.getLogger("t.fmt"),
                      set_global=False)
    fmt = TraceContextFormatter("%(trace_id)s %(span_id)s %(message)s")
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    try:
        assert fmt.format(record) == "- - hello"
        with otel.tracer.start_as_current_span("s") as span:
            ctx = span.get_span_context()
            line = fmt.format(record)
    finally:
        otel.shutdown()
    assert line == f"{trace.format_trace_id(ctx.trace_id)} {trace.format_span_id(ctx.span_id)} hello"
    assert not hasattr(record, "trace_id")


def test_package_level_call_is_the_same_function() -> None:
    import pitwall

    assert callable(pitwall.instrument)
    assert pitwall.instrument.instrument is instrument  # type: ignore[attr-defined]
