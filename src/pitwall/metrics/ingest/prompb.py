"""Prometheus remote-write 1.0 protobuf messages, built at import time.

Two schemas over the same wire format: ``WriteRequest`` is the full one
(tests, clients); ``FastWriteRequest`` declares ``TimeSeries.labels`` as
``repeated bytes`` so the ingest hot path never builds a Python object per
label: the raw bytes of a series' labels are its cache key.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from pitwall.core.protodesc import F, Messages, add_field


def _declare() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="pitwall_prompb.proto", package="pitwall.prompb",
                                            syntax="proto3")
    label = fd.message_type.add(name="Label")
    add_field(label, "name", 1, F.TYPE_STRING)
    add_field(label, "value", 2, F.TYPE_STRING)
    sample = fd.message_type.add(name="Sample")
    add_field(sample, "value", 1, F.TYPE_DOUBLE)
    add_field(sample, "timestamp", 2, F.TYPE_INT64)
    ex = fd.message_type.add(name="Exemplar")
    add_field(ex, "labels", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".pitwall.prompb.Label")
    add_field(ex, "value", 2, F.TYPE_DOUBLE)
    add_field(ex, "timestamp", 3, F.TYPE_INT64)
    ts = fd.message_type.add(name="TimeSeries")
    add_field(ts, "labels", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".pitwall.prompb.Label")
    add_field(ts, "samples", 2, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".pitwall.prompb.Sample")
    add_field(ts, "exemplars", 3, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".pitwall.prompb.Exemplar")
    md = fd.message_type.add(name="MetricMetadata")
    add_field(md, "type", 1, F.TYPE_INT32)
    add_field(md, "metric_family_name", 2, F.TYPE_STRING)
    add_field(md, "help", 4, F.TYPE_STRING)
    add_field(md, "unit", 5, F.TYPE_STRING)
    wr = fd.message_type.add(name="WriteRequest")
    add_field(wr, "timeseries", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".pitwall.prompb.TimeSeries")
    add_field(wr, "metadata", 3, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".pitwall.prompb.MetricMetadata")
    fts = fd.message_type.add(name="FastTimeSeries")
    add_field(fts, "labels", 1, F.TYPE_BYTES, F.LABEL_REPEATED)
    add_field(fts, "samples", 2, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".pitwall.prompb.Sample")
    add_field(fts, "exemplars", 3, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".pitwall.prompb.Exemplar")
    fwr = fd.message_type.add(name="FastWriteRequest")
    add_field(fwr, "timeseries", 1, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".pitwall.prompb.FastTimeSeries")
    add_field(fwr, "metadata", 3, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".pitwall.prompb.MetricMetadata")
    return fd


_cls = Messages(_declare()).cls


Label = _cls("Label")
Sample = _cls("Sample")
TimeSeries = _cls("TimeSeries")
WriteRequest = _cls("WriteRequest")
MetricMetadataPB = _cls("MetricMetadata")
FastWriteRequest = _cls("FastWriteRequest")

# prompb.MetricMetadata.MetricType enum values.
METRIC_TYPES = {0: "unknown", 1: "counter", 2: "gauge", 3: "histogram", 4: "gaugehistogram",
                5: "summary", 6: "info", 7: "stateset"}
