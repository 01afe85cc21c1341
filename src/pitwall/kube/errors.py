"""Kubernetes API errors and their ``Status`` objects.

Every error the Kubernetes API answers is one of these exceptions; ``status_of``
renders any of them (and any other ``PitwallError``) as the ``Status`` object
kube-apiserver sends, with the same ``reason`` and ``code``. They subclass the
core kinds, so a caller outside kube/ sees ``NotFound``/``BadData`` as usual.

Tree::

    KubeError(PitwallError)
      NotFoundError(NotFound)            404 NotFound
      AlreadyExists                      409 AlreadyExists
      Conflict                           409 Conflict
      Invalid(BadData)                   422 Invalid (details.causes name field paths)
      BadRequest(BadData)                400 BadRequest
      Forbidden                          403 Forbidden (a terminating or undeletable namespace)
      MethodNotAllowed                   405 MethodNotAllowed
      NotAcceptable                      406 NotAcceptable
      UnsupportedMedia                   415 UnsupportedMediaType
      Gone                               410 Expired ("too old resource version")
      InternalError                      500 InternalError
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from pitwall.core.errors import BadData, NotFound, PitwallError

__all__ = [
    "AlreadyExists",
    "BadRequest",
    "Cause",
    "Conflict",
    "Forbidden",
    "Gone",
    "InternalError",
    "Invalid",
    "KubeError",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFoundError",
    "UnsupportedMedia",
    "status_object",
    "status_response",
]


@dataclass(frozen=True, slots=True)
class Cause:
    """One field error of a 422 (``details.causes[]``)."""

    field: str
    reason: str  # FieldValueRequired, FieldValueInvalid, FieldValueNotSupported, FieldValueDuplicate...
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


class KubeError(PitwallError):
    """An error the Kubernetes API answers with a ``Status`` object."""

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details

    @property
    def status(self) -> int:
        return self.code


def _details(resource: str, group: str, name: str) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name}
    if group:
        d["group"] = group
    d["kind"] = resource
    return d


def qualified(resource: str, group: str) -> str:
    """``deployments.apps`` or ``pods``: how the apiserver names a resource in messages."""
    return f"{resource}.{group}" if group else resource


class NotFoundError(KubeError, NotFound):
    code = 404
    reason = "NotFound"

    @classmethod
    def of(cls, resource: str, group: str, name: str) -> NotFoundError:
        return cls(f'{qualified(resource, group)} "{name}" not found', details=_details(resource, group, name))

    @classmethod
    def resource(cls) -> NotFoundError:
        return cls("the server could not find the requested resource", details={})


class AlreadyExists(KubeError):
    code = 409
    reason = "AlreadyExists"

    @classmethod
    def of(cls, resource: str, group: str, name: str) -> AlreadyExists:
        return cls(f'{qualified(resource, group)} "{name}" already exists', details=_details(resource, group, name))


class Conflict(KubeError):
    code = 409
    reason = "Conflict"

    @classmethod
    def modified(cls, resource: str, group: str, name: str) -> Conflict:
        return cls(
            f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again",
            details=_details(resource, group, name),
        )


class Invalid(KubeError, BadData):
    code = 422
    reason = "Invalid"

    def __init__(self, kind: str, group: str, name: str, causes: list[Cause]) -> None:
        qual = f"{kind}.{group}" if group else kind
        msgs = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
        summary = msgs[0] if len(msgs) == 1 else "[" + ", ".join(msgs) + "]"
        d: dict[str, Any] = {"name": name}
        if group:
            d["group"] = group
        d["kind"] = kind
        d["causes"] = [c.as_dict() for c in causes]
        super().__init__(f'{qual} "{name}" is invalid: {summary}', details=d)
        self.causes = causes


class Forbidden(KubeError):
    code = 403
    reason = "Forbidden"


class BadRequest(KubeError, BadData):
    code = 400
    reason = "BadRequest"


class MethodNotAllowed(KubeError):
    code = 405
    reason = "MethodNotAllowed"

    def __init__(self, message: str = "the server does not allow this method on the requested resource") -> None:
        super().__init__(message, details={})


class NotAcceptable(KubeError):
    code = 406
    reason = "NotAcceptable"


class UnsupportedMedia(KubeError, BadData):
    code = 415
    reason = "UnsupportedMediaType"


class Gone(KubeError):
    code = 410
    reason = "Expired"

    @classmethod
    def too_old(cls, requested: int, compacted: int) -> Gone:
        return cls(f"too old resource version: {requested} ({compacted})")


class InternalError(KubeError):
    code = 500
    reason = "InternalError"


_CORE_REASONS: dict[int, str] = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    409: "Conflict", 413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 422: "Invalid",
    429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}


def status_object(err: PitwallError) -> dict[str, Any]:
    """The ``Status`` (kind Status, apiVersion v1) kube-apiserver answers for ``err``."""
    if isinstance(err, KubeError):
        code, reason, details = err.code, err.reason, err.details
    else:
        from pitwall.core.http_errors import status_of

        code = status_of(err)
        reason, details = _CORE_REASONS.get(code, "InternalError"), None
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": err.message,
        "reason": reason,
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def status_response(err: PitwallError) -> Response:
    body = status_object(err)
    headers = {}
    retry = getattr(err, "retry_after", None)
    if isinstance(retry, (int, float)):
        headers["Retry-After"] = str(max(1, round(retry)))
    return Response(json.dumps(body), body["code"], headers, media_type="application/json")
