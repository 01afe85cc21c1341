"""What a request carries through the gateway: the parsed request, its context, and short-circuit replies.

``Request.headers`` maps lower-case names to values (repeated headers
joined with ", " as RFC 9110 allows); plugins change it in place before the
request is sent upstream. ``Reply`` is an answer made by the gateway itself
(a plugin refusing, a route not found, an upstream failing), with Kong's
``{"message": ...}`` JSON body from ``kong_error``.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["HTTP_ERROR_MESSAGES", "Ctx", "Reply", "Request", "ResponseHead", "kong_error"]

# Kong's default messages per status (kong/pdk/response.lua), used when a plugin gives none.
HTTP_ERROR_MESSAGES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
    408: "Request timeout", 411: "Length required", 413: "Payload too large", 414: "URI too long",
    429: "Too many requests", 431: "Request header fields too large", 500: "An unexpected error occurred",
    501: "Not implemented", 502: "An invalid response was received from the upstream server",
    503: "The upstream server is currently unavailable", 504: "The upstream server is timing out",
    505: "HTTP version not supported",
}
JSON_TYPE = "application/json; charset=utf-8"


class Request:
    """One client request, as parsed; ``path`` and ``query`` split from the raw target."""

    __slots__ = ("body", "headers", "host", "http_version", "keep_alive", "method", "path", "query")

    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes, http_version: str,
                 keep_alive: bool) -> None:
        self.method = method
        path, _, self.query = target.partition("?")
        self.path = path
        self.headers = headers
        self.body = body
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.host = headers.get("host", "")

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


class Reply(Exception):
    """An answer from the gateway itself; raised by a plugin's ``access`` to stop the request."""

    def __init__(self, status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or []


def kong_error(status: int, message: str | None = None, headers: list[tuple[str, str]] | None = None,
               extra: dict[str, Any] | None = None) -> Reply:
    """Kong's ``kong.response.error``: ``{"message": ...}`` as JSON, the default message for the status."""
    body: dict[str, Any] = dict(extra) if extra else {"message": message or HTTP_ERROR_MESSAGES.get(status,
                                                                                                    "Error")}
    return Reply(status, orjson.dumps(body), [("Content-Type", JSON_TYPE), *(headers or [])])


class ResponseHead:
    """Status, headers and body of a response on its way to the client; plugins edit ``headers`` in place.

    An upstream's headers stay as the ``name: value\r\n`` lines it sent (``raw``) until a plugin reads
    ``headers``: a response no plugin looks at is passed through without decoding and re-encoding each
    header.
    ``add`` appends a header without decoding the others.
    """

    __slots__ = ("_headers", "body", "extra", "raw", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes,
                 raw: list[bytes] | None = None) -> None:
        self.status = status
        self._headers = headers
        self.body = body
        self.raw = raw
        self.extra: list[tuple[str, str]] = []

    @property
    def headers(self) -> list[tuple[str, str]]:
        if self.raw is not None or self.extra:
            decoded = [_header(line) for line in self.raw or ()]
            self._headers = decoded + self._headers + self.extra
            self.raw = None
            self.extra = []
        return self._headers

    @headers.setter
    def headers(self, value: list[tuple[str, str]]) -> None:
        self.raw = None
        self.extra = []
        self._headers = value

    def add(self, name: str, value: str) -> None:
        self.extra.append((name, value))

    def get(self, name: str) -> str | None:
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return None

    def set(self, name: str, value: str) -> None:
        self.remove(name)
        self.headers.append((name, value))

    def remove(self, name: str) -> None:
        n = name.lower()
        self.headers = [(k, v) for k, v in self.headers if k.lower() != n]


def _header(line: bytes) -> tuple[str, str]:
    name, _, value = line[:-2].decode("latin-1").partition(": ")
    return name, value


class Ctx:
    """Per-request state shared by the plugins: route, consumer, credential, headers to add to the response."""

    __slots__ = ("authenticated_groups", "client_ip", "consumer", "credential", "matched_path", "on_response",
                 "req", "resp_headers", "route", "service", "start", "upstream_ms", "upstream_path")

    def __init__(self, req: Request, client_ip: str, start: float) -> None:
        self.req = req
        self.client_ip = client_ip
        self.start = start
        self.route: Any = None
        self.service: Any = None
        self.matched_path = ""
        self.consumer: dict[str, Any] | None = None
        self.credential: dict[str, Any] | None = None
        self.authenticated_groups: list[str] | None = None
        self.resp_headers: list[tuple[str, str]] | None = None
        self.upstream_ms = -1.0
        self.upstream_path: str | None = None  # set by request-transformer's replace.uri, an HTTPRoute URLRewrite
        self.on_response: Any = None  # an HTTPRoute's ResponseHeaderModifier: called with the ResponseHead

    def add_response_header(self, name: str, value: str) -> None:
        if self.resp_headers is None:
            self.resp_headers = []
        self.resp_headers.append((name, value))
