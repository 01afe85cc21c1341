"""The kinds of error every pillar raises; ``http_errors`` maps them to statuses.

Pillars subclass these (e.g. ``metrics.errors.OutOfOrderSample(BadData)``), so
one handler, matched along the exception's MRO, renders every error in the
wire format of the router that raised it.
"""

from __future__ import annotations


class PitwallError(Exception):
    """Base of all errors that reach a client."""

    kind = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadData(PitwallError):
    """The request is malformed or violates the data model (HTTP 400)."""

    kind = "bad_data"


class NotFound(PitwallError):
    kind = "not_found"


class TooLarge(PitwallError):
    """A body, batch or label exceeds a configured limit (HTTP 413 or 400)."""

    kind = "too_large"


class BodyTooLarge(TooLarge):
    """A request body, as sent or once decompressed, over its byte limit (HTTP 413)."""


class UnsupportedMediaType(BadData):
    """A Content-Type the endpoint does not accept (HTTP 415)."""

    status = 415


class Overloaded(PitwallError):
    """Back off and retry (HTTP 429 / 503 with Retry-After)."""

    kind = "overloaded"

    def __init__(self, message: str, retry_after: float = 1.0, status: int = 429) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class Timeout(PitwallError):
    kind = "timeout"


class Canceled(PitwallError):
    kind = "canceled"


class Unavailable(PitwallError):
    kind = "unavailable"


class ExecutionError(PitwallError):
    """A valid request that failed while running (PromQL's 422 ``execution``)."""

    kind = "execution"


class Unauthorized(PitwallError):
    kind = "unauthorized"


class Forbidden(PitwallError):
    """The caller is known but may not do this: a missing scope, a tenant outside its token, a cross-origin write."""

    kind = "forbidden"


class Misdirected(PitwallError):
    """The request names a host this server does not answer for (HTTP 421, RFC 9110 section 15.5.20)."""

    kind = "misdirected"


class ConfigError(PitwallError):
    """Invalid settings; each line names the key, e.g. ``metrics.retention: ...``."""

    kind = "bad_data"
