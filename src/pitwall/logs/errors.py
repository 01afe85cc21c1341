"""Errors of the logs pillar (ingest, storage and API side), as Loki words them."""

from __future__ import annotations

from pitwall.core.errors import BadData, Overloaded, TooLarge


class InvalidLabels(BadData):
    """A stream's label set Loki would reject (syntax, names, length, count)."""


class LineTooLong(BadData):
    """An entry longer than ``max_line_size``."""


class EntryRejected(BadData):
    """Entries rejected by validation (too old, too new, out of order); the rest were stored."""


class StreamLimitExceeded(BadData):
    """The tenant already holds ``max_streams_per_tenant`` streams."""

    status = 429


class RateLimited(Overloaded):
    """The tenant's ingestion rate limit (Loki answers 429)."""


class RequestTooLarge(TooLarge):
    """A body or request over a per-request limit."""


class InvalidPush(BadData):
    """A push body that cannot be decoded."""
