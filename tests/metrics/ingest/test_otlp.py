"""OTLP metrics ingest: real OpenTelemetry SDK requests translated as Prometheus 3.x does."""

from __future__ import annotations

import base64
import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from pitwall.core.errors import BadData, TooLarge
from pitwall.core.labels import Labels, format_labels
from pitwall.metrics.ingest.otlp import (
    OtlpMetricsResult,
    OtlpMetricsTranslator,
    UnsupportedContentType,
    encode_response,
)
from pitwall.metrics.ingest.otlp_naming import (
    InvalidNameError,
    MetricKind,
    any_value_to_str,
    build_label_name,
    build_metric_name,
    build_unit,
    format_float_f,
)
from pitwall.metrics.model import STALE_NAN, is_stale

PROTO = "application/x-protobuf"
JSON = "application/json"
EXAMPLE = (
    Path(__file__).resolve().parents[3].parent
    / "shared/conformance/opentelemetry-proto/examples/metrics.json"
)
SEC = 1_000_000_000


# -- helpers -------------------------------------------------------------------


def rows(result: OtlpMetricsResult) -> dict[str, list[tuple[int, float]]]:
    """Series text -> [(ts, value)] in emission order (staleness shown as 'stale')."""
    out: dict[str, list[tuple[int, float]]] = {}
    b = result.batch
    for i, ts, v in zip(b.series_idx.tolist(), b.ts.tolist(), b.values.tolist(), strict=True):
        out.setdefault(format_labels(b.series[i]), []).append((ts, v))
    return out


def values(result: OtlpMetricsResult) -> dict[str, float]:
    """Series text -> its single value (fails if a series has several samples)."""
    out = {}
    for series, samples in rows(result).items():
        assert len(samples) == 1, series
        out[series] = samples[0][1]
    return out


def kv(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"key": key, "value": {"bool_value": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"int_value": value}}
    if isinstance(value, float):
        return {"key": key, "value": {"double_value": value}}
    return {"key": key, "value": {"string_value": value}}


def request(*metrics: dict[str, Any], resource: dict[str, Any] | None = None) -> ExportMetricsServiceRequest:
    """A one-resource, one-scope request built from snake_case dicts."""
    res = resource if resource is not None else {"service.name": "svc", "service.instance.id": "i-1"}
    doc = {
        "resource_metrics": [
            {
                "resource": {"attributes": [kv(k, v) for k, v in res.items()]},
                "scope_metrics": [{"scope": {"name": "lib", "version": "1"}, "metrics": list(metrics)}],
            }
        ]
    }
    return json_format.ParseDict(doc, ExportMetricsServiceRequest())


def sum_metric(
    name: str, points: list[dict[str, Any]], *, delta: bool = False, monotonic: bool = True, unit: str = ""
) -> dict[str, Any]:
    return {
        "name": name,
        "unit": unit,
        "sum": {
            "aggregation_temporality": 1 if delta else 2,
            "is_monotonic": monotonic,
            "data_points": points,
        },
    }


def point(value: float, t: int, **attrs: Any) -> dict[str, Any]:
    return {"as_double": value, "time_unix_nano": t, "attributes": [kv(k, v) for k, v in attrs.items()]}


@pytest.fixture
def translator() -> OtlpMetricsTranslator:
    return OtlpMetricsTranslator()


# -- real SDK ------------------------------------------------------------------


@pytest.fixture
def sdk_request() -> Iterator[tuple[ExportMetricsServiceRequest, int]]:
    """Counters, up-down counters, a histogram and an observable gauge, with an exemplar."""
    reader = InMemoryMetricReader()
    resource = Resource.create(
        {"service.name": "svc", "service.instance.id": "i-1", "deployment.environment": "prod"}
    )
    provider = MeterProvider(metric_readers=[reader], resource=resource, shutdown_on_exit=False)
    tracer = TracerProvider().get_tracer("test")
    meter = provider.get_meter("shop.lib", "1.2.3")
    requests = meter.create_counter("http.server.requests", unit="{request}", description="Requests served")
    requests.add(3, {"http.method": "GET", "http.status_code": 200})
    requests.add(1, {"http.method": "POST", "http.status_code": 500})
    queue = meter.create_up_down_counter("queue.size", unit="{item}")
    queue.add(5)
    queue.add(-2)
    duration = meter.create_histogram("http.server.duration", unit="ms", description="Latency")
    with tracer.start_as_current_span("handler") as span:
        duration.record(3, {"http.route": "/a"})
        trace_id = span.get_span_context().trace_id
    duration.record(7, {"http.route": "/a"})

    def cpu(_: CallbackOptions) -> list[Observation]:
        return [Observation(0.25, {"cpu": "0"}), Observation(0.75, {"cpu": "1"})]

    meter.create_observable_gauge("system.cpu.utilization", callbacks=[cpu], unit="1")
    req = encode_metrics(reader.get_metrics_data())
    yield req, trace_id
    provider.shutdown()


def sdk_time_ms(req: ExportMetricsServiceRequest) -> int:
    point = req.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]
    return int(point.time_unix_nano // 1_000_000)


def test_sdk_protobuf_translates_like_prometheus(
    translator: OtlpMetricsTranslator, sdk_request: tuple[ExportMetricsServiceRequest, int]
) -> None:
    req, _ = sdk_request
    body = req.SerializeToString()
    result = translator.translate(translator.decode(body, PROTO), now_ms=0)
    got = values(result)
    base = 'instance="i-1", job="svc"'
    expected = {
        f'http_server_requests_total{{http_method="GET", http_status_code="200", {base}}}': 3.0,
        f'http_server_requests_total{{http_method="POST", http_status_code="500", {base}}}': 1.0,
        f"queue_size{{{base}}}": 3.0,
        f'http_server_duration_milliseconds_sum{{http_route="/a", {base}}}': 10.0,
        f'http_server_duration_milliseconds_count{{http_route="/a", {base}}}': 2.0,
        f'system_cpu_utilization_ratio{{cpu="0", {base}}}': 0.25,
        f'system_cpu_utilization_ratio{{cpu="1", {base}}}': 0.75,
        'target_info{deployment_environment="prod", instance="i-1", job="svc", '
        'telemetry_sdk_language="python", telemetry_sdk_name="opentelemetry", '
        f'telemetry_sdk_version="{_sdk_version(req)}"}}': 1.0,
    }
    # The SDK's default explicit buckets, cumulative, then +Inf = count.
    cumulative = {
        "0": 0,
        "5": 1,
        "10": 2,
        "25": 2,
        "50": 2,
        "75": 2,
        "100": 2,
        "250": 2,
        "500": 2,
        "750": 2,
        "1000": 2,
        "2500": 2,
        "5000": 2,
        "7500": 2,
        "10000": 2,
        "+Inf": 2,
    }
    for le, n in cumulative.items():
        expected[f'http_server_duration_milliseconds_bucket{{http_route="/a", {base}, le="{le}"}}'] = float(n)
    assert got == expected
    ts = sdk_time_ms(req)
    assert set(result.batch.ts.tolist()) == {ts}
    assert result.rejected_points == 0 and result.error_message == ""
    meta = {m.metric: (m.type, m.help, m.unit) for m in result.metadata}
    assert meta == {
        "http_server_requests_total": ("counter", "Requests served", ""),
        "queue_size": ("gauge", "", ""),
        "http_server_duration_milliseconds": ("histogram", "Latency", "milliseconds"),
        "system_cpu_utilization_ratio": ("gauge", "", ""),
        "target_info": ("gauge", "Target metadata", ""),
    }


def _sdk_version(req: ExportMetricsServiceRequest) -> str:
    for attr in req.resource_metrics[0].resource.attributes:
        if attr.key == "telemetry.sdk.version":
            return str(attr.value.string_value)
    raise AssertionError("no telemetry.sdk.version")


def test_sdk_exemplar_lands_on_its_bucket(
    translator: OtlpMetricsTranslator, sdk_request: tuple[ExportMetricsServiceRequest, int]
) -> None:
    req, trace_id = sdk_request
    result = translator.translate(req, now_ms=0)
    assert len(result.exemplars) == 1
    ex = result.exemplars[0]
    assert format_labels(ex.labels) == (
        'http_server_duration_milliseconds_bucket{http_route="/a", instance="i-1", job="svc", le="5"}'
    )
    names = dict(ex.exemplar_labels)
    assert names["trace_id"] == f"{trace_id:032x}"
    assert len(names["span_id"]) == 16
    assert ex.value == 3.0


def _hex_ids(doc: Any) -> None:
    """OTLP/JSON spells trace/span ids in hex where protobuf JSON uses base64."""
    if isinstance(doc, dict):
        for key in ("traceId", "spanId"):
            if key in doc:
                doc[key] = base64.b64decode(doc[key]).hex()
        for value in doc.values():
            _hex_ids(value)
    elif isinstance(doc, list):
        for value in doc:
            _hex_ids(value)


def test_sdk_json_form_decodes_to_the_same_result(
    sdk_request: tuple[ExportMetricsServiceRequest, int],
) -> None:
    req, _ = sdk_request
    doc = json.loads(json_format.MessageToJson(req))
    _hex_ids(doc)
    body = json.dumps(doc).encode()
    assert b"traceId" in body
    from_proto = OtlpMetricsTranslator().translate(req, now_ms=0)
    t = OtlpMetricsTranslator()
    from_json = t.translate(t.decode(body, "application/json; charset=utf-8"), now_ms=0)
    assert rows(from_json) == rows(from_proto)
    assert from_json.exemplars == from_proto.exemplars
    assert from_json.metadata == from_proto.metadata


def test_sdk_delta_counter_becomes_cumulative() -> None:
    reader = InMemoryMetricReader(preferred_temporality={Counter: AggregationTemporality.DELTA})
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "d", "service.instance.id": "x"}),
        shutdown_on_exit=False,
    )
    counter = provider.get_meter("m").create_counter("jobs", unit="1")
    translator = OtlpMetricsTranslator()
    seen = []
    for add in (2, 5, 1):
        counter.add(add)
        req = encode_metrics(reader.get_metrics_data())
        assert req.resource_metrics[0].scope_metrics[0].metrics[0].sum.aggregation_temporality == 1
        result = translator.translate(req, now_ms=0)
        seen.append(values(result)['jobs_total{instance="x", job="d"}'])
    provider.shutdown()
    assert seen == [2.0, 7.0, 8.0]


# -- the official example ------------------------------------------------------


def test_official_json_example(translator: OtlpMetricsTranslator) -> None:
    result = translator.translate(translator.decode(EXAMPLE.read_bytes(), JSON), now_ms=0)
    assert values(result) == {
        'my_counter_total{job="my.service", my_counter_attr="some value"}': 5.0,
        'my_gauge_ratio{job="my.service", my_gauge_attr="some value"}': 10.0,
        'my_histogram_sum{job="my.service", my_histogram_attr="some value"}': 2.0,
        'my_histogram_count{job="my.service", my_histogram_attr="some value"}': 2.0,
        'my_histogram_bucket{job="my.service", le="1", my_histogram_attr="some value"}': 1.0,
        'my_histogram_bucket{job="my.service", le="+Inf", my_histogram_attr="some value"}': 2.0,
    }
    assert set(result.batch.ts.tolist()) == {1544712660300}
    # Only service.name on the resource: no target_info. The exponential
    # histogram needs native histograms: rejected, reported as partial success.
    assert result.rejected_points == 1
    assert "my.exponential.histogram" in result.error_message
    assert "native histograms are not supported" in result.error_message


def test_partial_success_response_in_both_encodings(translator: OtlpMetricsTranslator) -> None:
    result = translator.translate(translator.decode(EXAMPLE.read_bytes(), JSON), now_ms=0)
    resp = ExportMetricsServiceResponse.FromString(encode_response(result, PROTO))
    assert resp.partial_success.rejected_data_points == 1
    assert "my.exponential.histogram" in resp.partial_success.error_message
    doc = json.loads(encode_response(result, JSON))
    assert doc["partialSuccess"]["rejectedDataPoints"] == "1"
    parsed = json_format.ParseDict(doc, ExportMetricsServiceResponse())
    assert parsed == resp


def test_full_success_response_is_empty(translator: OtlpMetricsTranslator) -> None:
    result = translator.translate(request(sum_metric("x", [point(1, SEC)])), now_ms=0)
    assert encode_response(result, PROTO) == b""
    assert json.loads(encode_response(result, JSON)) == {}


# -- types, staleness, exemplars -------------------------------------------------


def test_summary(translator: OtlpMetricsTranslator) -> None:
    summary = {
        "name": "rpc.latency",
        "unit": "s",
        "summary": {
            "data_points": [
                {
                    "time_unix_nano": 5 * SEC,
                    "count": 10,
                    "sum": 4.5,
                    "quantile_values": [{"quantile": 0.5, "value": 0.3}, {"quantile": 0.99, "value": 1.2}],
                    "attributes": [kv("method", "get")],
                }
            ]
        },
    }
    result = translator.translate(request(summary), now_ms=0)
    base = 'instance="i-1", job="svc", method="get"'
    assert values(result) == {
        f"rpc_latency_seconds_sum{{{base}}}": 4.5,
        f"rpc_latency_seconds_count{{{base}}}": 10.0,
        f'rpc_latency_seconds{{{base}, quantile="0.5"}}': 0.3,
        f'rpc_latency_seconds{{{base}, quantile="0.99"}}': 1.2,
    }
    assert set(result.batch.ts.tolist()) == {5000}
    assert [(m.metric, m.type, m.unit) for m in result.metadata] == [
        ("rpc_latency_seconds", "summary", "seconds")
    ]


def test_no_recorded_value_becomes_staleness_marker(translator: OtlpMetricsTranslator) -> None:
    gauge = {"name": "temp", "gauge": {"data_points": [{"time_unix_nano": SEC, "flags": 1, "as_double": 3}]}}
    hist = {
        "name": "lat",
        "histogram": {
            "aggregation_temporality": 2,
            "data_points": [
                {
                    "time_unix_nano": SEC,
                    "flags": 1,
                    "count": 1,
                    "sum": 1,
                    "bucket_counts": [1, 0],
                    "explicit_bounds": [1],
                }
            ],
        },
    }
    result = translator.translate(request(gauge, hist), now_ms=0)
    assert len(result.batch) == 5
    assert all(is_stale(v) for v in result.batch.values.tolist())
    assert result.batch.values.view(np.uint64).tolist() == [np.float64(STALE_NAN).view(np.uint64)] * 5


def test_histogram_without_sum_and_le_formatting(translator: OtlpMetricsTranslator) -> None:
    hist = {
        "name": "size",
        "unit": "By",
        "histogram": {
            "aggregation_temporality": 2,
            "data_points": [
                {
                    "time_unix_nano": SEC,
                    "count": 6,
                    "bucket_counts": [1, 2, 3, 0],
                    "explicit_bounds": [0.005, 1e-7, 1e21],
                }
            ],
        },
    }
    got = values(translator.translate(request(hist), now_ms=0))
    assert got == {
        'size_bytes_count{instance="i-1", job="svc"}': 6.0,
        'size_bytes_bucket{instance="i-1", job="svc", le="0.005"}': 1.0,
        'size_bytes_bucket{instance="i-1", job="svc", le="0.0000001"}': 3.0,
        'size_bytes_bucket{instance="i-1", job="svc", le="1000000000000000000000"}': 6.0,
        'size_bytes_bucket{instance="i-1", job="svc", le="+Inf"}': 6.0,
    }


def test_sum_exemplar_labels(translator: OtlpMetricsTranslator) -> None:
    trace = bytes(range(16))
    span = bytes(range(8))
    pt = point(4, 2 * SEC)
    pt["exemplars"] = [
        {
            "as_int": 1,
            "time_unix_nano": 1_500_000_000,
            "trace_id": base64.b64encode(trace).decode(),
            "span_id": base64.b64encode(span).decode(),
            "filtered_attributes": [kv("user.id", "u1")],
        },
        {"as_double": 2.5, "time_unix_nano": SEC, "filtered_attributes": [kv("big", "x" * 200)]},
    ]
    result = translator.translate(request(sum_metric("orders", [pt])), now_ms=0)
    series: Labels = (("__name__", "orders_total"), ("instance", "i-1"), ("job", "svc"))
    assert [(e.labels, e.exemplar_labels, e.ts, e.value) for e in result.exemplars] == [
        (series, (("span_id", span.hex()), ("trace_id", trace.hex()), ("user.id", "u1")), 1500, 1.0),
        # Attributes that would push the exemplar past 128 runes are left out.
        (series, (), 1000, 2.5),
    ]


def test_gauges_carry_no_exemplars(translator: OtlpMetricsTranslator) -> None:
    pt = point(1, SEC)
    pt["exemplars"] = [{"as_double": 1, "time_unix_nano": SEC}]
    result = translator.translate(request({"name": "g", "gauge": {"data_points": [pt]}}), now_ms=0)
    assert result.exemplars == []


# -- resource, attributes, labels ----------------------------------------------


def test_job_instance_target_info_and_promotion() -> None:
    translator = OtlpMetricsTranslator(promote_resource_attributes=["k8s.namespace.name"])
    resource = {
        "service.name": "checkout",
        "service.namespace": "shop",
        "service.instance.id": "pod-7",
        "k8s.namespace.name": "prod",
        "cloud.region": "eu-1",
    }
    gauge = {
        "name": "up.ish",
        "gauge": {"data_points": [point(1, 10 * SEC, **{"k8s.namespace.name": "mine"}), point(2, 11 * SEC)]},
    }
    got = rows(translator.translate(request(gauge, resource=resource), now_ms=0))
    assert got == {
        # A data point attribute wins over the promoted resource attribute.
        'up_ish{instance="pod-7", job="shop/checkout", k8s_namespace_name="mine"}': [(10_000, 1.0)],
        'up_ish{instance="pod-7", job="shop/checkout", k8s_namespace_name="prod"}': [(11_000, 2.0)],
        # target_info keeps every non-identifying attribute (promotion does not remove them).
        'target_info{cloud_region="eu-1", instance="pod-7", job="shop/checkout", k8s_namespace_name="prod"}': [
            (10_000, 1.0),
            (11_000, 1.0),
        ],
    }


def test_target_info_samples_every_half_lookback() -> None:
    translator = OtlpMetricsTranslator()
    gauge = {"name": "g", "gauge": {"data_points": [point(1, 0 + SEC), point(2, 601 * SEC)]}}
    result = translator.translate(request(gauge, resource={"service.name": "a", "host": "h"}), now_ms=0)
    ts = rows(result)['target_info{host="h", job="a"}']
    assert [t for t, _ in ts] == [1_000, 151_000, 301_000, 451_000, 601_000]


def test_no_target_info_without_job_or_instance(translator: OtlpMetricsTranslator) -> None:
    gauge = {"name": "g", "gauge": {"data_points": [point(1, SEC)]}}
    result = translator.translate(request(gauge, resource={"host.name": "h"}), now_ms=0)
    assert list(rows(result)) == ["g"]


def test_attribute_sanitising_and_collisions(translator: OtlpMetricsTranslator) -> None:
    attrs = {
        "http.method": "GET",
        "http_method": "POST",
        "2xx": "y",
        "_private": "p",
        "__keep__": "k",
        "a..b": "c",
        "ok": True,
        "n": 7,
        "ratio": 0.5,
        "empty": "",
        "__name__": "evil",
    }
    gauge = {"name": "g", "gauge": {"data_points": [point(1, SEC, **attrs)]}}
    got = values(translator.translate(request(gauge), now_ms=0))
    assert got == {
        'g{__keep__="k", a__b="c", http_method="GET;POST", instance="i-1", job="svc", key_2xx="y", '
        'key_private="p", n="7", ok="true", ratio="0.5"}': 1.0
    }


def test_scope_labels_only_when_promoted() -> None:
    gauge = {"name": "g", "gauge": {"data_points": [point(1, SEC)]}}
    assert list(values(OtlpMetricsTranslator().translate(request(gauge), now_ms=0))) == [
        'g{instance="i-1", job="svc"}'
    ]
    promoted = OtlpMetricsTranslator(promote_scope_metadata=True).translate(request(gauge), now_ms=0)
    assert list(values(promoted)) == [
        'g{instance="i-1", job="svc", otel_scope_name="lib", otel_scope_version="1"}'
    ]


def test_invalid_attribute_name_rejects_rest_of_metric(translator: OtlpMetricsTranslator) -> None:
    gauge = {
        "name": "g",
        "gauge": {"data_points": [point(1, SEC), point(2, SEC, **{"..": "x"}), point(3, SEC)]},
    }
    result = translator.translate(request(gauge), now_ms=0)
    assert values(result) == {'g{instance="i-1", job="svc"}': 1.0}
    assert result.rejected_points == 2
    assert "invalid name" in result.error_message


def test_unspecified_temporality_is_rejected(translator: OtlpMetricsTranslator) -> None:
    metric = sum_metric("x", [point(1, SEC)])
    metric["sum"]["aggregation_temporality"] = 0
    result = translator.translate(request(metric), now_ms=0)
    assert len(result.batch) == 0
    assert result.rejected_points == 1
    assert "invalid temporality" in result.error_message


# -- delta -> cumulative --------------------------------------------------------


def test_delta_sums_accumulate_across_requests(translator: OtlpMetricsTranslator) -> None:
    first = translator.translate(
        request(
            sum_metric("hits", [point(5, 10 * SEC, path="/a"), point(1, 10 * SEC, path="/b")], delta=True)
        ),
        now_ms=0,
    )
    second = translator.translate(
        request(
            sum_metric("hits", [point(3, 20 * SEC, path="/a"), point(2, 15 * SEC, path="/a")], delta=True)
        ),
        now_ms=0,
    )
    base = 'instance="i-1", job="svc"'
    assert values(first) == {f'hits_total{{{base}, path="/a"}}': 5.0, f'hits_total{{{base}, path="/b"}}': 1.0}
    # The second /a point is older than the first one of this request: dropped.
    assert values(second) == {f'hits_total{{{base}, path="/a"}}': 8.0}
    assert second.rejected_points == 1
    assert "out of order" in second.error_message
    assert first.metadata[0].type == "counter"


def test_delta_histograms_accumulate(translator: OtlpMetricsTranslator) -> None:
    def hist(t: int, counts: list[int], total: float) -> ExportMetricsServiceRequest:
        dp = {
            "time_unix_nano": t,
            "count": sum(counts),
            "sum": total,
            "bucket_counts": counts,
            "explicit_bounds": [1, 2],
        }
        return request({"name": "lat", "histogram": {"aggregation_temporality": 1, "data_points": [dp]}})

    translator.translate(hist(SEC, [1, 0, 0], 0.5), now_ms=0)
    got = values(translator.translate(hist(2 * SEC, [0, 2, 1], 7.0), now_ms=0))
    base = 'instance="i-1", job="svc"'
    assert got == {
        f"lat_sum{{{base}}}": 7.5,
        f"lat_count{{{base}}}": 4.0,
        f'lat_bucket{{{base}, le="1"}}': 1.0,
        f'lat_bucket{{{base}, le="2"}}': 3.0,
        f'lat_bucket{{{base}, le="+Inf"}}': 4.0,
    }


def test_delta_series_limit_rejects_new_series() -> None:
    translator = OtlpMetricsTranslator(max_delta_series=1)
    req = request(sum_metric("c", [point(1, SEC, k="a"), point(1, SEC, k="b")], delta=True))
    result = translator.translate(req, now_ms=0)
    assert list(values(result)) == ['c_total{instance="i-1", job="svc", k="a"}']
    assert result.rejected_points == 1
    assert "delta series" in result.error_message
    # Once the tracked series is stale it is evicted and room is made.
    later = translator.translate(
        request(sum_metric("c", [point(1, 2 * SEC, k="b")], delta=True)), now_ms=3_600_000
    )
    assert later.rejected_points == 0


def test_failed_request_leaves_delta_state_untouched() -> None:
    translator = OtlpMetricsTranslator(max_label_value_length=5)
    ok = request(sum_metric("c", [point(2, SEC)], delta=True))
    bad = request(
        sum_metric("c", [point(2, 2 * SEC)], delta=True),
        {"name": "g", "gauge": {"data_points": [point(1, SEC, big="toolongvalue")]}},
    )
    translator.translate(ok, now_ms=0)
    with pytest.raises(TooLarge):
        translator.translate(bad, now_ms=0)
    again = translator.translate(request(sum_metric("c", [point(2, 3 * SEC)], delta=True)), now_ms=0)
    assert values(again) == {'c_total{instance="i-1", job="svc"}': 4.0}


# -- bad input and limits -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\xff\xff\xff\xff garbage", PROTO),
        (b"\x0a\x05\x0a\x03", PROTO),  # truncated length-delimited field
        (b"{not json", JSON),
        (b"[]", JSON),
        (b'{"resourceMetrics": "nope"}', JSON),
        (
            b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"sum": {"dataPoints": [{"exemplars": '
            b'[{"traceId": "zz"}]}]}}]}]}]}',
            JSON,
        ),
    ],
)
def test_bad_bodies_are_bad_data(translator: OtlpMetricsTranslator, body: bytes, content_type: str) -> None:
    with pytest.raises(BadData, match="invalid OTLP"):
        translator.decode(body, content_type)


def test_unknown_content_type(translator: OtlpMetricsTranslator) -> None:
    with pytest.raises(UnsupportedContentType, match="unsupported content type"):
        translator.decode(b"", "text/plain")


def test_json_accepts_unknown_fields_string_ints_and_int_enums(translator: OtlpMetricsTranslator) -> None:
    doc = {
        "resourceMetrics": [
            {
                "futureField": {"x": 1},
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "j"}}]},
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "c",
                                "sum": {
                                    "aggregationTemporality": 2,
                                    "isMonotonic": True,
                                    "dataPoints": [
                                        {"asInt": "9007199254740993", "timeUnixNano": "1700000000123456789"}
                                    ],
                                },
                            }
                        ]
                    }
                ],
            }
        ]
    }
    result = translator.translate(translator.decode(json.dumps(doc).encode(), JSON), now_ms=0)
    assert rows(result) == {'c_total{job="j"}': [(1700000000123, float(9007199254740993))]}


def test_max_points_limit() -> None:
    translator = OtlpMetricsTranslator(max_points=2)
    hist = {
        "name": "lat",
        "histogram": {
            "aggregation_temporality": 2,
            "data_points": [
                {"time_unix_nano": SEC, "count": 1, "bucket_counts": [1, 0], "explicit_bounds": [1]}
            ],
        },
    }
    with pytest.raises(TooLarge, match="'lat'"):
        translator.translate(request(hist), now_ms=0)
    many = request(sum_metric("c", [point(1, SEC, i=i) for i in range(4)]))
    with pytest.raises(TooLarge, match="4 data points"):
        translator.translate(many, now_ms=0)


def test_label_value_length_limit() -> None:
    translator = OtlpMetricsTranslator(max_label_value_length=8)
    gauge = {"name": "g", "gauge": {"data_points": [point(1, SEC, path="/" + "x" * 20)]}}
    with pytest.raises(TooLarge, match="'path' of metric 'g'"):
        translator.translate(request(gauge), now_ms=0)


# -- naming ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        ("http.server.duration", "ms", MetricKind.HISTOGRAM, "http_server_duration_milliseconds"),
        ("requests", "", MetricKind.MONOTONIC_COUNTER, "requests_total"),
        ("requests_total", "", MetricKind.MONOTONIC_COUNTER, "requests_total"),
        ("cpu_usage", "1", MetricKind.GAUGE, "cpu_usage_ratio"),
        ("cpu_usage_ratio", "1", MetricKind.GAUGE, "cpu_usage_ratio"),
        ("items", "1", MetricKind.MONOTONIC_COUNTER, "items_total"),
        ("active", "1", MetricKind.NON_MONOTONIC_COUNTER, "active"),
        ("memory_usage", "By", MetricKind.GAUGE, "memory_usage_bytes"),
        ("requests", "1/s", MetricKind.GAUGE, "requests_per_second"),
        ("throughput", "By/s", MetricKind.GAUGE, "throughput_bytes_per_second"),
        ("custom_metric", "custom_unit", MetricKind.GAUGE, "custom_metric_custom_unit"),
        ("custom_metric", "{custom}", MetricKind.GAUGE, "custom_metric"),
        ("custom_metric", "By/{custom}", MetricKind.GAUGE, "custom_metric_bytes"),
        ("response_time_seconds", "s", MetricKind.GAUGE, "response_time_seconds"),
        (
            "metric__with__multiple__underscores",
            "unit__multiple__underscores",
            MetricKind.GAUGE,
            "metric_with_multiple_underscores_unit_multiple_underscores",
        ),
        (
            "custom_metric",
            "unit@with#special/chars",
            MetricKind.GAUGE,
            "custom_metric_unit_with_special_per_chars",
        ),
        ("123_requests", "", MetricKind.MONOTONIC_COUNTER, "_123_requests_total"),
        ("disk.io", "KiBy", MetricKind.MONOTONIC_COUNTER, "disk_io_kibibytes_total"),
        ("temp", "Cel", MetricKind.GAUGE, "temp_celsius"),
        ("total.requests", "", MetricKind.MONOTONIC_COUNTER, "requests_total"),
        ("uptime", "d", MetricKind.GAUGE, "uptime_days"),
        ("a:b", "", MetricKind.GAUGE, "a:b"),
    ],
)
def test_metric_names(name: str, unit: str, kind: MetricKind, expected: str) -> None:
    assert build_metric_name(name, unit, kind) == expected


def test_metric_name_of_only_invalid_characters() -> None:
    with pytest.raises(InvalidNameError, match="empty name"):
        build_metric_name("@#$%", "", MetricKind.GAUGE)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("http.method", "http_method"),
        ("123invalid", "key_123invalid"),
        ("_private", "key_private"),
        ("__reserved__", "__reserved__"),
        ("label@with$symbols", "label_with_symbols"),
        ("a__b", "a__b"),
        ("ünïcode", "key_n_code"),
        (".", "key_"),
    ],
)
def test_label_names(key: str, expected: str) -> None:
    assert build_label_name(key) == expected


@pytest.mark.parametrize("key", ["", "__", "..."])
def test_label_names_that_are_rejected(key: str) -> None:
    with pytest.raises(InvalidNameError):
        build_label_name(key)


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("s", "seconds"),
        ("By/s", "bytes_per_second"),
        ("1", ""),
        ("{req}", ""),
        ("1/s", "per_second"),
        ("%", "percent"),
    ],
)
def test_units(unit: str, expected: str) -> None:
    assert build_unit(unit) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5.0, "5"),
        (0.25, "0.25"),
        (1e-7, "0.0000001"),
        (2.5e21, "2500000000000000000000"),
        (-0.0, "-0"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (0.1 + 0.2, "0.30000000000000004"),
        (123.456, "123.456"),
    ],
)
def test_go_float_formatting(value: float, expected: str) -> None:
    assert format_float_f(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"string_value": "x"}, "x"),
        ({"bool_value": False}, "false"),
        ({"int_value": -3}, "-3"),
        ({"double_value": 123456.0}, "123456"),
        ({"double_value": 1e-7}, "1e-7"),
        ({"double_value": 1e21}, "1e+21"),
        ({"bytes_value": base64.b64encode(b"\x01\x02").decode()}, "AQI="),
        (
            {"array_value": {"values": [{"int_value": 1}, {"double_value": 1.5}, {"bool_value": True}]}},
            "[1,1.5,true]",
        ),
        (
            {
                "kvlist_value": {
                    "values": [
                        {"key": "b", "value": {"int_value": 1}},
                        {"key": "a", "value": {"string_value": "<x>"}},
                    ]
                }
            },
            '{"a":"\\u003cx\\u003e","b":1}',
        ),
        ({}, ""),
    ],
)
def test_attribute_values_render_as_pdata_does(value: dict[str, Any], expected: str) -> None:
    assert any_value_to_str(json_format.ParseDict(value, AnyValue())) == expected


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([PROTO, JSON]))
def test_decoder_never_fails_with_anything_but_bad_data(body: bytes, content_type: str) -> None:
    translator = OtlpMetricsTranslator(max_points=10_000)
    try:
        req = translator.decode(body, content_type)
    except BadData:
        return
    with contextlib.suppress(TooLarge):
        translator.translate(req, now_ms=0)
