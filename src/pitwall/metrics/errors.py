"""Errors of the metrics pillar (ingest and storage side)."""

from __future__ import annotations

from pitwall.core.errors import BadData, TooLarge


class OutOfOrderSample(BadData):
    """A sample older than the series' newest stored sample."""


class DuplicateSample(BadData):
    """A second, different value for a timestamp the series already has."""


class InvalidLabels(BadData):
    """Label names or values that Prometheus would reject."""


class SeriesLimitExceeded(BadData):
    """The tenant already holds the configured maximum of series."""


class RequestTooLarge(TooLarge):
    """A request exceeds a per-request limit (body, series, labels)."""
