"""Loki's push protobuf (``logproto.PushRequest``), built at import time.

The same messages as Loki's ``pkg/push/push.proto`` (field names, numbers
and types), without the gogoproto options, which change only Go code
generation, not the wire format. ``tests/logs/ingest/test_logproto.py``
checks this against the official definition compiled with protoc.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

_F = descriptor_pb2.FieldDescriptorProto


def _field(msg: Any, name: str, number: int, ftype: int, label: int = _F.LABEL_OPTIONAL,
           type_name: str = "") -> None:
    f = msg.field.add()
    f.name, f.number, f.type, f.label = name, number, ftype, label
    if type_name:
        f.type_name = type_name


def _build() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    ts_fd = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(ts_fd)
    pool.Add(ts_fd)
    fd = descriptor_pb2.FileDescriptorProto(name="pitwall_logproto.proto", package="logproto", syntax="proto3")
    fd.dependency.append("google/protobuf/timestamp.proto")
    req = fd.message_type.add(name="PushRequest")
    _field(req, "streams", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".logproto.StreamAdapter")
    _field(req, "format", 2, _F.TYPE_STRING)
    fd.message_type.add(name="PushResponse")
    st = fd.message_type.add(name="StreamAdapter")
    _field(st, "labels", 1, _F.TYPE_STRING)
    _field(st, "entries", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".logproto.EntryAdapter")
    _field(st, "hash", 3, _F.TYPE_UINT64)
    lp = fd.message_type.add(name="LabelPairAdapter")
    _field(lp, "name", 1, _F.TYPE_STRING)
    _field(lp, "value", 2, _F.TYPE_STRING)
    en = fd.message_type.add(name="EntryAdapter")
    _field(en, "timestamp", 1, _F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp")
    _field(en, "line", 2, _F.TYPE_STRING)
    _field(en, "structuredMetadata", 3, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".logproto.LabelPairAdapter")
    _field(en, "parsed", 4, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".logproto.LabelPairAdapter")
    pool.Add(fd)
    return pool


_POOL = _build()


def _cls(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"logproto.{name}"))


PushRequest = _cls("PushRequest")
PushResponse = _cls("PushResponse")
StreamAdapter = _cls("StreamAdapter")
EntryAdapter = _cls("EntryAdapter")
LabelPairAdapter = _cls("LabelPairAdapter")
