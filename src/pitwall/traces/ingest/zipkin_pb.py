"""Zipkin's proto3 messages (``zipkin.proto3``), built at import time.

Field numbers follow openzipkin/zipkin-api's ``zipkin.proto``; declaring them
here keeps generated ``_pb2`` files out of the repository.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from pitwall.core.protodesc import F, Messages, add_field

_PKG = "zipkin.proto3"


def _declare() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="pitwall_zipkin.proto", package=_PKG, syntax="proto3")
    ep = fd.message_type.add(name="Endpoint")
    add_field(ep, "service_name", 1, F.TYPE_STRING)
    add_field(ep, "ipv4", 2, F.TYPE_BYTES)
    add_field(ep, "ipv6", 3, F.TYPE_BYTES)
    add_field(ep, "port", 4, F.TYPE_INT32)
    an = fd.message_type.add(name="Annotation")
    add_field(an, "timestamp", 1, F.TYPE_FIXED64)
    add_field(an, "value", 2, F.TYPE_STRING)
    span = fd.message_type.add(name="Span")
    kind = span.enum_type.add(name="Kind")
    for i, n in enumerate(["SPAN_KIND_UNSPECIFIED", "CLIENT", "SERVER", "PRODUCER", "CONSUMER"]):
        kind.value.add(name=n, number=i)
    entry = span.nested_type.add(name="TagsEntry")
    entry.options.map_entry = True
    add_field(entry, "key", 1, F.TYPE_STRING)
    add_field(entry, "value", 2, F.TYPE_STRING)
    add_field(span, "trace_id", 1, F.TYPE_BYTES)
    add_field(span, "parent_id", 2, F.TYPE_BYTES)
    add_field(span, "id", 3, F.TYPE_BYTES)
    add_field(span, "kind", 4, F.TYPE_ENUM, type_name=f".{_PKG}.Span.Kind")
    add_field(span, "name", 5, F.TYPE_STRING)
    add_field(span, "timestamp", 6, F.TYPE_FIXED64)
    add_field(span, "duration", 7, F.TYPE_UINT64)
    add_field(span, "local_endpoint", 8, F.TYPE_MESSAGE, type_name=f".{_PKG}.Endpoint")
    add_field(span, "remote_endpoint", 9, F.TYPE_MESSAGE, type_name=f".{_PKG}.Endpoint")
    add_field(span, "annotations", 10, F.TYPE_MESSAGE, F.LABEL_REPEATED, f".{_PKG}.Annotation")
    add_field(span, "tags", 11, F.TYPE_MESSAGE, F.LABEL_REPEATED, f".{_PKG}.Span.TagsEntry")
    add_field(span, "debug", 12, F.TYPE_BOOL)
    add_field(span, "shared", 13, F.TYPE_BOOL)
    lst = fd.message_type.add(name="ListOfSpans")
    add_field(lst, "spans", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, f".{_PKG}.Span")
    return fd


_cls = Messages(_declare()).cls


Endpoint = _cls("Endpoint")
Annotation = _cls("Annotation")
Span = _cls("Span")
ListOfSpans = _cls("ListOfSpans")

# zipkin.proto3.Span.Kind numbers -> Zipkin JSON kind names
KIND_NAMES = {1: "CLIENT", 2: "SERVER", 3: "PRODUCER", 4: "CONSUMER"}
