"""Zipkin's proto3 messages (``zipkin.proto3``), built at import time.

Field numbers follow openzipkin/zipkin-api's ``zipkin.proto``; declaring them
here keeps generated ``_pb2`` files out of the repository.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_PKG = "zipkin.proto3"


def _field(msg: Any, name: str, number: int, ftype: int, label: int = _F.LABEL_OPTIONAL,
           type_name: str = "") -> None:
    f = msg.field.add()
    f.name, f.number, f.type, f.label = name, number, ftype, label
    if type_name:
        f.type_name = type_name


def _build() -> descriptor_pool.DescriptorPool:
    fd = descriptor_pb2.FileDescriptorProto(name="pitwall_zipkin.proto", package=_PKG, syntax="proto3")
    ep = fd.message_type.add(name="Endpoint")
    _field(ep, "service_name", 1, _F.TYPE_STRING)
    _field(ep, "ipv4", 2, _F.TYPE_BYTES)
    _field(ep, "ipv6", 3, _F.TYPE_BYTES)
    _field(ep, "port", 4, _F.TYPE_INT32)
    an = fd.message_type.add(name="Annotation")
    _field(an, "timestamp", 1, _F.TYPE_FIXED64)
    _field(an, "value", 2, _F.TYPE_STRING)
    span = fd.message_type.add(name="Span")
    kind = span.enum_type.add(name="Kind")
    for i, n in enumerate(["SPAN_KIND_UNSPECIFIED", "CLIENT", "SERVER", "PRODUCER", "CONSUMER"]):
        kind.value.add(name=n, number=i)
    entry = span.nested_type.add(name="TagsEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_STRING)
    _field(span, "trace_id", 1, _F.TYPE_BYTES)
    _field(span, "parent_id", 2, _F.TYPE_BYTES)
    _field(span, "id", 3, _F.TYPE_BYTES)
    _field(span, "kind", 4, _F.TYPE_ENUM, type_name=f".{_PKG}.Span.Kind")
    _field(span, "name", 5, _F.TYPE_STRING)
    _field(span, "timestamp", 6, _F.TYPE_FIXED64)
    _field(span, "duration", 7, _F.TYPE_UINT64)
    _field(span, "local_endpoint", 8, _F.TYPE_MESSAGE, type_name=f".{_PKG}.Endpoint")
    _field(span, "remote_endpoint", 9, _F.TYPE_MESSAGE, type_name=f".{_PKG}.Endpoint")
    _field(span, "annotations", 10, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, f".{_PKG}.Annotation")
    _field(span, "tags", 11, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, f".{_PKG}.Span.TagsEntry")
    _field(span, "debug", 12, _F.TYPE_BOOL)
    _field(span, "shared", 13, _F.TYPE_BOOL)
    lst = fd.message_type.add(name="ListOfSpans")
    _field(lst, "spans", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, f".{_PKG}.Span")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return pool


_POOL = _build()


def _cls(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PKG}.{name}"))


Endpoint = _cls("Endpoint")
Annotation = _cls("Annotation")
Span = _cls("Span")
ListOfSpans = _cls("ListOfSpans")

# zipkin.proto3.Span.Kind numbers -> Zipkin JSON kind names
KIND_NAMES = {1: "CLIENT", 2: "SERVER", 3: "PRODUCER", 4: "CONSUMER"}
