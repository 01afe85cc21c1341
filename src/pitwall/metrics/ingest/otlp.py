"""OTLP/HTTP metrics ingest: decode a request, translate it as Prometheus' OTLP receiver does.

Pure and synchronous (no I/O); the HTTP route decodes the body with
``OtlpMetricsTranslator.decode``, appends ``translate``'s batch, metadata and
exemplars, and answers with ``encode_response`` in the request's encoding.

Naming and label rules live in ``otlp_naming``; the translation itself, with
its DELTA -> cumulative state, in ``otlp_translate``.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from pitwall.core.errors import BadData, UnsupportedMediaType
from pitwall.metrics.ingest.otlp_translate import (
    DeltaState,
    OtlpMetricsResult,
    OtlpTooLarge,
    TranslateSettings,
    translate_request,
)

__all__ = [
    "OtlpDecodeError",
    "OtlpMetricsResult",
    "OtlpMetricsTranslator",
    "OtlpTooLarge",
    "UnsupportedContentType",
    "decode_request",
    "encode_response",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# Where OTLP/JSON carries hex trace/span ids (the spec's exception to base64 bytes).
_METRIC_DATA_KEYS = ("gauge", "sum", "histogram", "exponentialHistogram", "exponential_histogram", "summary")
_ID_LENGTHS = {"traceId": 16, "trace_id": 16, "spanId": 8, "span_id": 8}


class OtlpDecodeError(BadData):
    """The body is not a valid OTLP ExportMetricsServiceRequest."""


class UnsupportedContentType(UnsupportedMediaType):
    """Neither ``application/x-protobuf`` nor ``application/json`` (OTLP answers 415)."""


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _encoding(content_type: str) -> str:
    media = _media_type(content_type)
    if media not in (PROTOBUF, JSON):
        raise UnsupportedContentType(
            f"unsupported content type: {content_type or '(none)'}, supported: [{JSON}, {PROTOBUF}]"
        )
    return media


def _children(obj: Any, *keys: str) -> list[Any]:
    """The list under the first present key of a JSON object (both OTLP spellings)."""
    if not isinstance(obj, dict):
        return []
    for key in keys:
        value = obj.get(key)
        if isinstance(value, list):
            return value
    return []


def _fix_ids(exemplar: Any) -> None:
    """Turn hex ``traceId``/``spanId`` into the base64 that protobuf's JSON parser expects."""
    if not isinstance(exemplar, dict):
        return
    for key, size in _ID_LENGTHS.items():
        value = exemplar.get(key)
        if not isinstance(value, str):
            continue
        try:
            raw = bytes.fromhex(value)
        except ValueError as e:
            raise OtlpDecodeError(f"invalid OTLP/JSON: exemplar {key} {value!r} is not hex") from e
        if raw and len(raw) != size:
            raise OtlpDecodeError(f"invalid OTLP/JSON: exemplar {key} must be {size} bytes, got {len(raw)}")
        exemplar[key] = binascii.b2a_base64(raw, newline=False).decode("ascii")


def _hex_ids_to_base64(doc: Any) -> None:
    for rm in _children(doc, "resourceMetrics", "resource_metrics"):
        for sm in _children(rm, "scopeMetrics", "scope_metrics"):
            for metric in _children(sm, "metrics"):
                if not isinstance(metric, dict):
                    continue
                for data_key in _METRIC_DATA_KEYS:
                    for pt in _children(metric.get(data_key), "dataPoints", "data_points"):
                        for ex in _children(pt, "exemplars"):
                            _fix_ids(ex)


def _decode_json(body: bytes) -> ExportMetricsServiceRequest:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise OtlpDecodeError(f"invalid OTLP/JSON body: {e}") from e
    if not isinstance(doc, dict):
        raise OtlpDecodeError("invalid OTLP/JSON body: expected a JSON object")
    _hex_ids_to_base64(doc)
    req = ExportMetricsServiceRequest()
    try:
        # OTLP receivers must ignore unknown fields; ParseDict accepts
        # lowerCamelCase and snake_case names, int64 as strings, enums as ints.
        json_format.ParseDict(doc, req, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as e:
        raise OtlpDecodeError(f"invalid OTLP/JSON body: {e}") from e
    return req


def _decode_protobuf(body: bytes) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    try:
        req.ParseFromString(body)
    except (DecodeError, RecursionError, ValueError) as e:
        raise OtlpDecodeError(f"invalid OTLP protobuf body: {e}") from e
    return req


def decode_request(body: bytes, content_type: str) -> ExportMetricsServiceRequest:
    """Parse an OTLP/HTTP metrics body (protobuf or JSON); bad input raises a ``BadData``."""
    if _encoding(content_type) == JSON:
        return _decode_json(body)
    return _decode_protobuf(body)


def encode_response(result: OtlpMetricsResult, content_type: str) -> bytes:
    """ExportMetricsServiceResponse for ``result`` in the request's encoding.

    ``partial_success`` is set when points were rejected (or a warning is to be
    passed on); otherwise the response is empty, meaning full success.
    """
    resp = ExportMetricsServiceResponse()
    if result.rejected_points > 0 or result.error_message:
        resp.partial_success.rejected_data_points = result.rejected_points
        resp.partial_success.error_message = result.error_message
    if _media_type(content_type) == JSON:
        doc = json_format.MessageToDict(resp)
        return json.dumps(doc, separators=(",", ":")).encode()
    return bytes(resp.SerializeToString())


class OtlpMetricsTranslator:
    """Turns OTLP metrics requests into samples, metadata and exemplars.

    Holds the running totals that convert DELTA sums and histograms to
    cumulative series (at most ``max_delta_series`` series), so one instance
    should serve all requests of a tenant. Safe to call from several threads.
    ``promote_scope_metadata`` and ``lookback_delta_ms`` match the Prometheus
    settings of the same names (defaults: off, 5m).
    """

    def __init__(
        self,
        *,
        max_delta_series: int = 100_000,
        promote_resource_attributes: Sequence[str] = (),
        max_points: int = 1_000_000,
        max_label_value_length: int = 16_384,
        promote_scope_metadata: bool = False,
        lookback_delta_ms: int = 300_000,
        delta_max_stale_ms: int = 300_000,
    ) -> None:
        self._settings = TranslateSettings(
            promote_resource_attributes=frozenset(a.strip() for a in promote_resource_attributes),
            promote_scope_metadata=promote_scope_metadata,
            max_points=max_points,
            max_label_value_length=max_label_value_length,
            lookback_delta_ms=lookback_delta_ms,
        )
        self._delta = DeltaState(max_delta_series, delta_max_stale_ms)

    def decode(self, body: bytes, content_type: str) -> ExportMetricsServiceRequest:
        """Parse a protobuf or JSON body; raises ``OtlpDecodeError``/``UnsupportedContentType``."""
        return decode_request(body, content_type)

    def translate(self, req: ExportMetricsServiceRequest, now_ms: int) -> OtlpMetricsResult:
        """Translate a request; raises ``OtlpTooLarge`` when a limit is exceeded.

        ``now_ms`` only ages the DELTA state; samples keep their own timestamps.
        """
        return translate_request(req, now_ms, self._settings, self._delta)
