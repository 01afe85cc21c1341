"""Loki's push protobuf (``logproto.PushRequest``), built at import time.

The same messages as Loki's ``pkg/push/push.proto`` (field names, numbers
and types), without the gogoproto options, which change only Go code
generation, not the wire format. ``tests/logs/ingest/test_logproto.py``
checks this against the official definition compiled with protoc.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, timestamp_pb2

from pitwall.core.protodesc import F, Messages, add_field


def _declare() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="pitwall_logproto.proto", package="logproto", syntax="proto3")
    fd.dependency.append("google/protobuf/timestamp.proto")
    req = fd.message_type.add(name="PushRequest")
    add_field(req, "streams", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".logproto.StreamAdapter")
    add_field(req, "format", 2, F.TYPE_STRING)
    fd.message_type.add(name="PushResponse")
    st = fd.message_type.add(name="StreamAdapter")
    add_field(st, "labels", 1, F.TYPE_STRING)
    add_field(st, "entries", 2, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".logproto.EntryAdapter")
    add_field(st, "hash", 3, F.TYPE_UINT64)
    lp = fd.message_type.add(name="LabelPairAdapter")
    add_field(lp, "name", 1, F.TYPE_STRING)
    add_field(lp, "value", 2, F.TYPE_STRING)
    en = fd.message_type.add(name="EntryAdapter")
    add_field(en, "timestamp", 1, F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp")
    add_field(en, "line", 2, F.TYPE_STRING)
    add_field(en, "structuredMetadata", 3, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".logproto.LabelPairAdapter")
    add_field(en, "parsed", 4, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".logproto.LabelPairAdapter")
    return fd


_cls = Messages(_declare(), timestamp_pb2.DESCRIPTOR).cls


PushRequest = _cls("PushRequest")
PushResponse = _cls("PushResponse")
StreamAdapter = _cls("StreamAdapter")
EntryAdapter = _cls("EntryAdapter")
LabelPairAdapter = _cls("LabelPairAdapter")
