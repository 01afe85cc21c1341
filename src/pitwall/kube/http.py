"""Request plumbing for the HTTP API: bodies, content types, query flags, responses."""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from starlette.requests import Request
from starlette.responses import Response

from pitwall.kube.errors import BadRequest, KubeError, UnsupportedMedia

__all__ = ["MAX_BODY", "json_response", "read_body", "read_raw", "truthy", "wants_table"]

MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's limit on a request body


class RequestTooLarge(KubeError):
    code = 413
    reason = "RequestEntityTooLarge"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_raw(request: Request) -> bytes:
    """The body's bytes, refused past ``MAX_BODY`` (413) before or while it streams in."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY:
        raise RequestTooLarge("the request body is too large", details={})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise RequestTooLarge("the request body is too large", details={})
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body(request: Request, *, allow_yaml: bool = True, protobuf_kind: tuple[str, str] | None = None) -> Any:
    """The request body as JSON data (JSON, YAML, or for ``protobuf_kind`` (group, kind) Kubernetes protobuf)."""
    raw = await read_raw(request)
    ct = media_type(request)
    if not raw.strip():
        raise BadRequest("the body of the request was in an unknown format - accepted media types include: "
                         "application/json, application/yaml")
    if ct in ("application/yaml", "application/apply-patch+yaml", "text/yaml") and allow_yaml:
        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise BadRequest(f"error converting YAML to JSON: {e}") from None
    if ct and ct not in ("application/json", "application/json-patch+json", "application/merge-patch+json",
                         "application/strategic-merge-patch+json", "*/*"):
        if ct == "application/vnd.kubernetes.protobuf" and protobuf_kind is not None:
            from pitwall.kube.protobuf import decode

            return decode(raw, *protobuf_kind)
        if ct == "application/vnd.kubernetes.protobuf":
            raise UnsupportedMedia("the body of the request was in an unknown format - accepted media types "
                                   "include: application/json, application/yaml")
        raise UnsupportedMedia(f"the body of the request was in an unknown format - accepted media types include: "
                               f"application/json, application/yaml (got {ct})")
    try:
        return orjson.loads(raw)
    except ValueError as e:
        raise BadRequest(f"couldn't get version/kind; json parse error: {e}") from None


def truthy(v: str | None) -> bool:
    return v is not None and v.lower() in ("1", "true", "t", "yes", "")


def wants_table(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    for part in accept.split(","):
        params = [p.strip() for p in part.split(";")[1:]]
        if "as=Table" in params and ("g=meta.k8s.io" in params):
            return True
    return False


def encoded_list_response(head: dict[str, Any], items: list[bytes]) -> Response:
    """A list whose items are already JSON: ``head`` plus ``"items": [...]`` spliced in, nothing re-encoded."""
    body = orjson.dumps(head, option=orjson.OPT_NON_STR_KEYS)
    return Response(b"".join((body[:-1], b',"items":[', b",".join(items), b"]}")), 200,
                    media_type="application/json")


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None,
                  media: str = "application/json") -> Response:
    return Response(orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS), status, headers, media_type=media)
