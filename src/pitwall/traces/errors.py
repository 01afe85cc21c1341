"""Errors of the traces pillar; each subclasses a kind from ``core.errors``."""

from __future__ import annotations

from pitwall.core import errors as core
from pitwall.core.errors import BadData, NotFound, TooLarge


class InvalidSpan(BadData):
    """A span violates the data model (bad ids, unknown kind, malformed body)."""


class SpanLimitExceeded(TooLarge):
    """A request exceeds a per-request limit (spans, attributes, value length).

    Answered with 400 as the OTLP and Zipkin receivers do for bad batches, so
    exporters do not retry a request that can never succeed.
    """

    status = 400


class UnsupportedMediaType(core.UnsupportedMediaType):
    """A content type the endpoint does not accept (415)."""


class TraceNotFound(NotFound):
    """No span of the requested trace is stored."""


class BadQuery(BadData):
    """A search or query parameter cannot be parsed."""
