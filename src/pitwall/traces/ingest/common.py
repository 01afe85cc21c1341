"""What both span decoders share: per-request limits and attribute conversion."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from pitwall.traces.errors import SpanLimitExceeded
from pitwall.traces.model import KIND_CLIENT, KIND_PRODUCER, REMOTE_SERVICE_KEYS


@dataclass(frozen=True)
class IngestLimits:
    """Per-request limits checked while decoding; each violation rejects the request."""

    max_spans_per_request: int = 50_000
    max_attributes_per_span: int = 128
    max_attribute_value_length: int = 16_384
    max_events_per_span: int = 1_000


def check_span_count(n: int, limits: IngestLimits) -> None:
    if n > limits.max_spans_per_request:
        raise SpanLimitExceeded(
            f"request holds {n} spans, more than the limit of {limits.max_spans_per_request} spans per request"
        )


def check_attribute_count(n: int, span_name: str, limits: IngestLimits) -> None:
    if n > limits.max_attributes_per_span:
        raise SpanLimitExceeded(
            f"span {span_name[:100]!r} has {n} attributes, more than the limit of "
            f"{limits.max_attributes_per_span} attributes per span"
        )


def check_value_length(key: str, n: int, limits: IngestLimits) -> None:
    if n > limits.max_attribute_value_length:
        raise SpanLimitExceeded(
            f"attribute {key[:100]!r} has a value of {n} characters, more than the limit of "
            f"{limits.max_attribute_value_length}"
        )


def bytes_value(raw: bytes) -> dict[str, str]:
    """How a bytes attribute value is kept in the JSON columns."""
    return {"$bytes": base64.b64encode(raw).decode("ascii")}


def remote_service_of(kind: int, attrs: dict[str, Any]) -> str:
    """The remote endpoint's service of a CLIENT/PRODUCER span, from its attributes."""
    if kind not in (KIND_CLIENT, KIND_PRODUCER):
        return ""
    for key in REMOTE_SERVICE_KEYS:
        v = attrs.get(key)
        if isinstance(v, str) and v:
            return v
    return ""
