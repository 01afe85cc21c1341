"""Prometheus remote-write 1.0 protobuf messages, built at import time.

Two schemas over the same wire format: ``WriteRequest`` is the full one
(tests, clients); ``FastWriteRequest`` declares ``TimeSeries.labels`` as
``repeated bytes`` so the ingest hot path never builds a Python object per
label: the raw bytes of a series' labels are its cache key.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto


def _field(msg: Any, name: str, number: int, ftype: int, label: int = _F.LABEL_OPTIONAL,
           type_name: str = "") -> None:
    f = msg.field.add()
    f.name, f.number, f.type, f.label = name, number, ftype, label
    if type_name:
        f.type_name = type_name


def _build() -> descriptor_pool.DescriptorPool:
    fd = descriptor_pb2.FileDescriptorProto(name="pitwall_prompb.proto", package="pitwall.prompb",
                                            syntax="proto3")
    label = fd.message_type.add(name="Label")
    _field(label, "name", 1, _F.TYPE_STRING)
    _field(label, "value", 2, _F.TYPE_STRING)
    sample = fd.message_type.add(name="Sample")
    _field(sample, "value", 1, _F.TYPE_DOUBLE)
    _field(sample, "timestamp", 2, _F.TYPE_INT64)
    ex = fd.message_type.add(name="Exemplar")
    _field(ex, "labels", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".pitwall.prompb.Label")
    _field(ex, "value", 2, _F.TYPE_DOUBLE)
    _field(ex, "timestamp", 3, _F.TYPE_INT64)
    ts = fd.message_type.add(name="TimeSeries")
    _field(ts, "labels", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".pitwall.prompb.Label")
    _field(ts, "samples", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".pitwall.prompb.Sample")
    _field(ts, "exemplars", 3, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".pitwall.prompb.Exemplar")
    md = fd.message_type.add(name="MetricMetadata")
    _field(md, "type", 1, _F.TYPE_INT32)
    _field(md, "metric_family_name", 2, _F.TYPE_STRING)
    _field(md, "help", 4, _F.TYPE_STRING)
    _field(md, "unit", 5, _F.TYPE_STRING)
    wr = fd.message_type.add(name="WriteRequest")
    _field(wr, "timeseries", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".pitwall.prompb.TimeSeries")
    _field(wr, "metadata", 3, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".pitwall.prompb.MetricMetadata")
    fts = fd.message_type.add(name="FastTimeSeries")
    _field(fts, "labels", 1, _F.TYPE_BYTES, _F.LABEL_REPEATED)
    _field(fts, "samples", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".pitwall.prompb.Sample")
    _field(fts, "exemplars", 3, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".pitwall.prompb.Exemplar")
    fwr = fd.message_type.add(name="FastWriteRequest")
    _field(fwr, "timeseries", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".pitwall.prompb.FastTimeSeries")
    _field(fwr, "metadata", 3, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, ".pitwall.prompb.MetricMetadata")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return pool


_POOL = _build()


def _cls(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"pitwall.prompb.{name}"))


Label = _cls("Label")
Sample = _cls("Sample")
TimeSeries = _cls("TimeSeries")
WriteRequest = _cls("WriteRequest")
MetricMetadataPB = _cls("MetricMetadata")
FastWriteRequest = _cls("FastWriteRequest")

# prompb.MetricMetadata.MetricType enum values.
METRIC_TYPES = {0: "unknown", 1: "counter", 2: "gauge", 3: "histogram", 4: "gaugehistogram",
                5: "summary", 6: "info", 7: "stateset"}
