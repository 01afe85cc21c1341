"""Exposition parsing against prometheus_client's real output, plus edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as om_generate_latest

from pitwall.metrics.ingest.exposition import ExpositionError, negotiate_format, parse, parse_series
from pitwall.metrics.model import MetricMetadata

TEXT_CT = "text/plain; version=0.0.4; charset=utf-8"
OM_CT = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def registry() -> CollectorRegistry:
    r = CollectorRegistry()
    c = Counter("http_requests", 'Requests "quoted" \\ back\nnewline', ["path"], registry=r)
    c.labels('/a"b\\c\nd').inc(3)
    h = Histogram("latency", "Latency", registry=r, unit="seconds", buckets=(0.1, 1.0))
    h.observe(0.5, exemplar={"trace_id": "abc123"})
    Gauge("temp", "T", registry=r).set(float("-inf"))
    Summary("sz", "S", registry=r).observe(2)
    return r


def as_map(rows: list[tuple[tuple[tuple[str, str], ...], float, int | None]]) -> dict[str, float]:
    return {",".join(f"{k}={v}" for k, v in lbl): val for lbl, val, _ in rows}


@pytest.mark.parametrize(("gen", "ct"), [(generate_latest, TEXT_CT), (om_generate_latest, OM_CT)])
def test_prometheus_client_output(gen: object, ct: str) -> None:
    body = gen(registry())  # type: ignore[operator]
    exp = parse(body, ct)
    m = as_map(exp.rows())
    assert m['__name__=http_requests_total,path=/a"b\\c\nd'] == 3.0
    assert m["__name__=latency_seconds_bucket,le=+Inf"] == 1.0
    assert m["__name__=latency_seconds_bucket,le=0.1"] == 0.0
    assert m["__name__=latency_seconds_sum"] == 0.5
    assert m["__name__=temp"] == -math.inf
    assert m["__name__=sz_count"] == 1.0
    assert "__name__=sz_created" in m  # _created samples are ingested as series (Prometheus 3 default)
    assert not exp.has_ts.any()


def test_text_metadata() -> None:
    exp = parse(generate_latest(registry()), TEXT_CT)
    md = {m.metric: m for m in exp.metadata}
    assert md["http_requests_total"] == MetricMetadata("http_requests_total", "counter", 'Requests "quoted" \\ back\nnewline', "")
    assert md["latency_seconds"].type == "histogram"


def test_openmetrics_metadata_and_exemplars() -> None:
    exp = parse(om_generate_latest(registry()), OM_CT)
    md = {m.metric: m for m in exp.metadata}
    assert md["http_requests"] == MetricMetadata("http_requests", "counter", 'Requests "quoted" \\ back\nnewline', "")
    assert md["latency_seconds"] == MetricMetadata("latency_seconds", "histogram", "Latency", "seconds")
    [ex] = exp.exemplars
    assert exp.series[ex.index] == 'latency_seconds_bucket{le="1.0"}'
    assert ex.labels == (("trace_id", "abc123"),) and ex.value == 0.5
    assert ex.ts is not None and ex.ts > 1_600_000_000_000


def test_text_timestamps_and_special_values() -> None:
    body = b"""# TYPE a untyped
a{x="1"} +Inf 1700000000123
a{x="2"} NaN
a{x="3",} -1.5e3 -5
  b   42
c{ y = "v" , z="w" } 0x1p3
"""
    exp = parse(body, "text/plain")
    assert exp.metadata == [MetricMetadata("a", "unknown", "", "")]
    assert exp.values[0] == math.inf and math.isnan(exp.values[1]) and exp.values[2] == -1500.0
    assert exp.values[4] == 8.0
    assert list(exp.has_ts) == [True, False, True, False, False]
    assert exp.timestamps[0] == 1700000000123 and exp.timestamps[2] == -5
    assert exp.series[3] == "b"
    assert parse_series(exp.series[4]) == [("__name__", "c"), ("y", "v"), ("z", "w")]


def test_openmetrics_timestamps_are_seconds() -> None:
    exp = parse(b"a 1 1700000000.5\nb_total 2 1.0009\n# EOF\n", OM_CT)
    assert list(exp.timestamps) == [1700000000500, 1000]


@pytest.mark.parametrize(
    ("body", "ct", "message"),
    [
        (b"a 1\n", OM_CT, "does not end with # EOF"),
        (b"a 1\n# EOF\nb 2\n", OM_CT, "unexpected data after # EOF"),
        (b"a{x=\"1\" 1\n", "text/plain", "invalid sample line"),
        (b"a 1_0\n", "text/plain", "invalid syntax"),
        (b"a one\n", "text/plain", "invalid syntax"),
        (b"a 1 1.5\n", "text/plain", "invalid timestamp"),
        (b"# TYPE a bogus\na 1\n", "text/plain", 'invalid metric type "bogus"'),
        (b'a{x="1",x="2"} 1\n', "text/plain", "duplicate label name"),
        (b"\xff 1\n", "text/plain", "invalid UTF-8"),
        (b"a 1\n", "", "blank Content-Type"),
        (b"a 1\n", "application/json", 'received unsupported Content-Type "application/json"'),
    ],
)
def test_errors(body: bytes, ct: str, message: str) -> None:
    with pytest.raises(ExpositionError, match=message):
        exp = parse(body, ct)
        for raw in exp.series:
            parse_series(raw)


def test_negotiation_and_fallback() -> None:
    assert negotiate_format("application/openmetrics-text; version=0.0.1") == "openmetrics"
    assert negotiate_format("Text/Plain") == "text"
    assert negotiate_format("", "PrometheusText0.0.4") == "text"
    assert negotiate_format("application/json", "OpenMetricsText1.0.0") == "openmetrics"


def test_label_escapes_are_prometheus_ones() -> None:
    # Only \\, \" and \n are escapes; \t stays a backslash and a t.
    assert parse_series('m{a="x\\ty\\\\n\\"q\\n"}') == [("__name__", "m"), ("a", 'x\\ty\\n"q\n')]


def test_values_column_is_float64() -> None:
    exp = parse(b"a 1\nb 2\n", "text/plain")
    assert exp.values.dtype == np.float64 and len(exp) == 2
