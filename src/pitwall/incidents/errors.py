"""Errors of the incidents capability, as kinds of ``core.errors`` (mapped to HTTP once)."""

from __future__ import annotations

from pitwall.core.errors import BadData, Forbidden, NotFound, Overloaded

__all__ = ["BadLink", "Conflict", "ExpiredLink", "IncidentNotFound", "InvalidEvent", "InvalidInput", "NotFoundError",
           "Throttled"]


class InvalidEvent(BadData):
    """An Events API v2 event PagerDuty would refuse; ``errors`` lists every problem found."""

    def __init__(self, errors: list[str], message: str = "Event object is invalid") -> None:
        super().__init__(message)
        self.errors = errors


class Throttled(Overloaded):
    """Events for one routing key arrive faster than its rate limit (429, as PagerDuty)."""


class InvalidInput(BadData):
    """A REST API v2 request with bad arguments; ``errors`` are PagerDuty's per-field messages."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [message]


class NotFoundError(NotFound):
    """A REST object that does not exist."""


class IncidentNotFound(NotFoundError):
    pass


class Conflict(BadData):
    """A write lost to a concurrent one, or a key already owned by another object (HTTP 409)."""

    status = 409


class BadLink(Forbidden):
    """An acknowledge/resolve link whose token is malformed, forged, or for another incident or action (403)."""


class ExpiredLink(BadLink):
    """An action link past its expiry (410 Gone: it was valid once and will never be again)."""

    status = 410
