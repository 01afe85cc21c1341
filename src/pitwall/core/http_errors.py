"""Errors mapped once: error kind -> HTTP status, rendered per wire format.

Formats: ``prometheus`` (``{"status":"error","errorType":...,"error":...}``),
``text`` (plain text: Prometheus remote write, Loki, Zipkin), ``otlp``
(google.rpc.Status as JSON), ``alertmanager`` (a JSON string, as API v2
declares), ``pagerduty`` (REST API v2: ``{"error": {"message", "code", "errors"}}``),
``pagerduty_events`` (Events API v2: ``{"status", "message", "errors"}``), ``jaeger`` (the Jaeger query
API's ``structuredResponse`` with ``errors: [{code, msg}]``), ``gitlab`` (``{"message": ...}``), ``native``
(pitwall's own ``{"error": {...}}``), ``html`` (a bare page
for the web UI's routes, whose pages show most errors themselves).

Routers declare their wire format when created (``error_router("prometheus")``);
a custom route class catches every ``PitwallError`` (and FastAPI's own
validation errors) raised while handling a request and renders it in that
format. Handlers never build error bodies themselves.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from pitwall.core.errors import BadData, Overloaded, PitwallError

log = logging.getLogger(__name__)

ErrorFormat = Literal["prometheus", "text", "otlp", "native", "alertmanager", "html", "pagerduty",
                      "pagerduty_events", "jaeger", "gitlab"]

STATUS: dict[str, int] = {
    "bad_data": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "too_large": 413,
    "misdirected": 421,
    "execution": 422,
    "overloaded": 429,
    "canceled": 499,
    "internal": 500,
    "unavailable": 503,
    "timeout": 503,
}

# Prometheus' API has its own closed set of errorType values.
_PROM_TYPES = {"too_large": "bad_data", "overloaded": "unavailable", "unauthorized": "bad_data",
               "forbidden": "bad_data", "misdirected": "bad_data"}


def status_of(err: PitwallError) -> int:
    """The HTTP status: an error's own ``status`` (e.g. 415, 503) or its kind's."""
    own = getattr(err, "status", None)
    if isinstance(own, int):
        return own
    return STATUS.get(err.kind, 500)


def render(err: PitwallError, fmt: ErrorFormat) -> Response:
    """The response for ``err`` in wire format ``fmt``."""
    status = status_of(err)
    headers: dict[str, str] = {}
    if isinstance(err, Overloaded):
        headers["Retry-After"] = str(max(1, round(err.retry_after)))
    if err.kind == "unauthorized":
        headers["WWW-Authenticate"] = "Bearer"
    if fmt == "prometheus":
        body: dict[str, Any] = {
            "status": "error",
            "errorType": _PROM_TYPES.get(err.kind, err.kind),
            "error": err.message,
        }
        return Response(json.dumps(body, separators=(",", ":")), status, headers, media_type="application/json")
    if fmt == "otlp":
        # OTLP/HTTP: a google.rpc.Status; JSON is accepted by every SDK's error logging.
        body = {"code": _grpc_code(status), "message": err.message}
        return Response(json.dumps(body, separators=(",", ":")), status, headers, media_type="application/json")
    if fmt == "alertmanager":
        # Alertmanager API v2 declares its error responses as a JSON string.
        return Response(json.dumps(err.message), status, headers, media_type="application/json")
    if fmt in ("pagerduty", "pagerduty_events"):
        return _pagerduty(err, fmt, status, headers)
    if fmt == "jaeger":
        body = {"data": None, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": status, "msg": err.message}]}
        return Response(json.dumps(body, separators=(",", ":")), status, headers, media_type="application/json")
    if fmt == "gitlab":  # GitLab's REST API: {"message": "404 Not found"}
        return Response(json.dumps({"message": err.message}, separators=(",", ":")), status, headers,
                        media_type="application/json")
    if fmt == "native":
        body = {"error": {"kind": err.kind, "message": err.message, "status": status}}
        return Response(json.dumps(body, separators=(",", ":")), status, headers, media_type="application/json")
    if fmt == "html":
        page = (f"<!doctype html><meta charset=utf-8><title>{status} · pitwall</title>"
                f"<h1>{status}</h1><p>{html.escape(err.message)}</p><p><a href=\"/\">pitwall</a></p>\n")
        return Response(page, status, headers, media_type="text/html; charset=utf-8")
    return Response(err.message + "\n", status, headers, media_type="text/plain; charset=utf-8")


# PagerDuty REST API v2 error codes and their fixed messages, per kind.
_PD_CODES = {"bad_data": (2001, "Invalid Input Provided"), "not_found": (2100, "Not Found"),
             "unauthorized": (2006, "Authentication failed"), "forbidden": (2010, "Access Denied"),
             "overloaded": (2020, "Rate Limit Exceeded"), "too_large": (2001, "Invalid Input Provided")}


def _pagerduty(err: PitwallError, fmt: ErrorFormat, status: int, headers: dict[str, str]) -> Response:
    errors = list(getattr(err, "errors", None) or [err.message])
    body: dict[str, Any]
    if fmt == "pagerduty_events":
        if err.kind == "overloaded":
            body = {"status": "throttle event",
                    "message": "Requests for this service are arriving too quickly.  Please retry later."}
        else:
            body = {"status": "invalid event" if status < 500 else "error", "message": err.message,
                    "errors": errors}
    else:
        code, message = _PD_CODES.get(err.kind, (2000, "Internal Error"))
        if err.kind == "bad_data" and getattr(err, "errors", None):  # a specific PagerDuty message, with details
            message = err.message
        body = {"error": {"message": message, "code": code, "errors": errors}}
    return Response(json.dumps(body, separators=(",", ":")), status, headers, media_type="application/json")


def _grpc_code(status: int) -> int:
    return {400: 3, 401: 16, 403: 7, 404: 5, 413: 8, 421: 7, 429: 8, 503: 14}.get(status, 13)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "body", "path"))
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "; ".join(parts) or "invalid request"


ErrorRenderer = Callable[[PitwallError], Response]


def _route_class(fmt: ErrorFormat, own: ErrorRenderer | None) -> type[APIRoute]:
    def show(err: PitwallError) -> Response:
        return own(err) if own is not None else render(err, fmt)

    class FormattedRoute(APIRoute):
        error_format: ErrorFormat = fmt

        @staticmethod
        def render_error(err: PitwallError) -> Response:
            """The route's answer to ``err`` (``core.fastlane`` renders with it too)."""
            return show(err)

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except PitwallError as err:
                    return show(err)
                except RequestValidationError as exc:
                    return show(BadData(_validation_message(exc)))

            return handle

    return FormattedRoute


def error_router(fmt: ErrorFormat, *, render_error: ErrorRenderer | None = None, **kwargs: Any) -> APIRouter:
    """An APIRouter whose routes render errors in wire format ``fmt``, or with ``render_error`` (a page of
    the router's own, e.g. for HTML pages people reach from a link)."""
    return APIRouter(route_class=_route_class(fmt, render_error), **kwargs)
