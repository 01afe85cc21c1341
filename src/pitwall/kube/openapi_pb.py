"""``/openapi/v2`` as protobuf: the gnostic ``openapi_v2.Document`` kubectl asks for before validating a List.

kubectl validates most objects on the server (``fieldValidation``), but the
items of a ``kind: List`` it checks itself against the OpenAPI v2 models,
which it fetches only as ``application/com.github.proto-openapi.spec.v2@v1.0
+protobuf`` (gnostic's ``OpenAPIv2.proto``). This module writes that wire
format from the JSON document :class:`~pitwall.kube.openapi.OpenAPI` builds:
``swagger``, ``info`` and every definition with its schema (what kubectl's
``proto.NewOpenAPIData`` reads; it finds a kind's model by the
``x-kubernetes-group-version-kind`` extension). Paths are left out: kubectl
reads none of them from this document. Field numbers are gnostic's.
"""

from __future__ import annotations

from typing import Any

import yaml

from pitwall.core.protowire import double_field, varint_field
from pitwall.core.protowire import length_delimited as _msg

__all__ = ["PROTOBUF_V2", "accepts_protobuf", "encode_document"]

# The answer's type is always the dotted spelling: Go's mime parser (kubectl's) rejects the "@" one clients send.
PROTOBUF_V2 = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
_ACCEPTED = (PROTOBUF_V2, "application/com.github.proto-openapi.spec.v2@v1.0+protobuf")

# Schema fields by JSON name: (field number, kind). Kinds: s string, d double, b bool, i int64.
_SCALARS: dict[str, tuple[int, str]] = {
    "$ref": (1, "s"), "format": (2, "s"), "title": (3, "s"), "description": (4, "s"), "multipleOf": (6, "d"),
    "maximum": (7, "d"), "exclusiveMaximum": (8, "b"), "minimum": (9, "d"), "exclusiveMinimum": (10, "b"),
    "maxLength": (11, "i"), "minLength": (12, "i"), "pattern": (13, "s"), "maxItems": (14, "i"),
    "minItems": (15, "i"), "uniqueItems": (16, "b"), "maxProperties": (17, "i"), "minProperties": (18, "i"),
    "discriminator": (26, "s"), "readOnly": (27, "b"),
}


def accepts_protobuf(accept: str) -> bool:
    """Whether an ``Accept`` header asks for the protobuf document (gnostic's two media type spellings)."""
    return any(t in accept for t in _ACCEPTED)


def encode_document(doc: dict[str, Any]) -> bytes:
    """The gnostic ``Document`` of an OpenAPI v2 JSON document (swagger, info, definitions)."""
    info = doc.get("info") or {}
    info_msg = _str(1, info.get("title", "")) + _str(2, info.get("version", ""))
    definitions = b"".join(_msg(1, _named_schema(name, schema))
                           for name, schema in (doc.get("definitions") or {}).items())
    return _str(1, doc.get("swagger", "2.0")) + _msg(2, info_msg) + _msg(9, definitions)


def _named_schema(name: str, schema: dict[str, Any]) -> bytes:
    return _str(1, name) + _msg(2, _schema(schema))


def _schema(s: dict[str, Any]) -> bytes:
    out = bytearray()
    for key, value in s.items():
        if key in _SCALARS:
            num, kind = _SCALARS[key]
            out += _scalar(num, kind, value)
        elif key == "default":
            out += _msg(5, _any(value))
        elif key == "required":
            out += b"".join(_str(19, r) for r in value)
        elif key == "enum":
            out += b"".join(_msg(20, _any(v)) for v in value)
        elif key == "additionalProperties":
            item = _msg(1, _schema(value)) if isinstance(value, dict) else varint_field(2, int(bool(value)))
            out += _msg(21, item)
        elif key == "type":
            out += _msg(22, b"".join(_str(1, t) for t in ([value] if isinstance(value, str) else value)))
        elif key == "items":
            out += _msg(23, b"".join(_msg(1, _schema(i)) for i in (value if isinstance(value, list) else [value])))
        elif key == "allOf":
            out += b"".join(_msg(24, _schema(x)) for x in value)
        elif key == "properties":
            out += _msg(25, b"".join(_msg(1, _named_schema(n, p)) for n, p in value.items()))
        elif key == "example":
            out += _msg(30, _any(value))
        elif key.startswith("x-"):
            out += _msg(31, _str(1, key) + _msg(2, _any(value)))
    return bytes(out)


def _any(value: Any) -> bytes:
    """gnostic's ``Any``: the value as YAML text (field 2), which is how kubectl reads extensions back."""
    return _str(2, yaml.safe_dump(value, default_flow_style=False, sort_keys=False))


def _scalar(num: int, kind: str, value: Any) -> bytes:
    if kind == "s":
        return _str(num, str(value))
    if kind == "d":
        return double_field(num, float(value))
    return varint_field(num, int(value))


def _str(num: int, text: str) -> bytes:
    return _msg(num, text.encode())
