"""Hypothesis strategies for the fuzzers: valid payloads of every ingest format, and ways to break them.

Each ``*_doc`` / ``*_msg`` strategy builds a payload the decoder accepts;
``mutated_json`` and ``mutated_bytes`` then swap types, drop keys, truncate
or flip bytes, so most examples reach deep into a decoder instead of dying
on the first byte.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from typing import Any

import cramjam
from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pitwall.logs.ingest import logproto
from pitwall.metrics.ingest import prompb
from pitwall.traces.ingest import zipkin_pb

# PITWALL_FUZZ_SCALE=20 multiplies every fuzzer's example count, for a longer hunt than the suite's.
SCALE = int(os.environ.get("PITWALL_FUZZ_SCALE", "1"))


def examples(n: int) -> int:
    return n * SCALE


NOW_NS = time.time_ns() // 10**9 * 10**9  # recent enough not to be refused as too old

# Short, odd texts: label names and values, lines, span names.
texts = st.one_of(
    st.sampled_from(["", "a", "job", "__name__", "x y", "ü", "\x00", "{}", '"', "\\", "le", "0", "-"]),
    st.text(max_size=12),
)
names = st.from_regex(r"\A[a-zA-Z_][a-zA-Z0-9_]{0,8}\Z")
ints = st.one_of(st.integers(-(2**63), 2**64), st.sampled_from([0, 1, -1, 2**63 - 1, 2**64 - 1, NOW_NS]))
floats = st.floats(allow_nan=True, allow_infinity=True)
json_scalars = st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=False, allow_infinity=False), texts)
json_values = st.recursive(json_scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                            st.dictionaries(texts, c, max_size=3)), max_leaves=6)


# ---------------------------------------------------------------- mutations

def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _mutate_doc(data: st.DataObject, doc: Any) -> Any:
    """Replace, drop or duplicate one node of a JSON document (the root included)."""
    path = data.draw(st.sampled_from(_paths(doc)), label="path")
    op = data.draw(st.sampled_from(["replace", "drop", "wrap", "huge"]), label="op")
    new: Any = data.draw(json_values, label="value") if op == "replace" else None
    if not path:
        return {"replace": new, "drop": None, "wrap": [doc], "huge": "x" * 70_000}[op]
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    key = path[-1]
    if op == "drop":
        del parent[key]
    elif op == "wrap":
        parent[key] = [parent[key]] if data.draw(st.booleans()) else {"v": parent[key]}
    elif op == "huge":
        parent[key] = data.draw(st.sampled_from(["x" * 70_000, 10**400, -(2**64), 1e308, [[[[[[[[]]]]]]]]]))
    else:
        parent[key] = new
    return doc


def mutated_json(data: st.DataObject, doc: Any) -> bytes:
    """``doc`` with up to three node mutations, serialised; sometimes then cut or byte-flipped."""
    for _ in range(data.draw(st.integers(0, 3), label="json mutations")):
        doc = _mutate_doc(data, doc)
    try:
        body = json.dumps(doc).encode()
    except ValueError:  # an integer past Python's str limit
        body = b"{}"
    if data.draw(st.booleans(), label="byte-level too"):
        body = mutated_bytes(data, body)
    return body


def mutated_bytes(data: st.DataObject, body: bytes) -> bytes:
    """Truncate, flip, insert or duplicate bytes."""
    b = bytearray(body)
    for _ in range(data.draw(st.integers(1, 4), label="byte mutations")):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "dup", "none"]), label="byte op")
        pos = data.draw(st.integers(0, max(len(b), 1) - 1), label="pos") if b else 0
        if op == "flip" and b:
            b[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del b[pos:]
        elif op == "insert":
            b[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "dup":
            b[pos:pos] = b[pos : pos + data.draw(st.integers(1, 64))]
    return bytes(b)


def compressed(data: st.DataObject, body: bytes, codecs: tuple[str, ...]) -> tuple[bytes, str]:
    """``body`` under one of ``codecs`` ('', 'gzip', 'snappy' block, 'snappy-frame'), sometimes corrupted after."""
    codec = data.draw(st.sampled_from(codecs), label="codec")
    if codec == "gzip":
        body = gzip.compress(body, compresslevel=1)
    elif codec == "snappy":
        body = bytes(cramjam.snappy.compress_raw(body))
    elif codec == "snappy-frame":
        body = bytes(cramjam.snappy.compress(body))
    if codec and data.draw(st.integers(0, 3), label="corrupt compressed") == 0:
        body = mutated_bytes(data, body)
    return body, codec.split("-")[0]


# ---------------------------------------------------------------- valid payloads

@st.composite
def write_request(draw: st.DrawFn) -> prompb.WriteRequest:
    w = prompb.WriteRequest()
    for _ in range(draw(st.integers(0, 3))):
        ts = w.timeseries.add()
        for k, v in draw(st.lists(st.tuples(st.one_of(names, texts), texts), max_size=4)):
            lb = ts.labels.add()
            lb.name, lb.value = k, v
        if draw(st.booleans()):
            lb = ts.labels.add()
            lb.name, lb.value = "__name__", draw(names)
        for t, f in draw(st.lists(st.tuples(st.integers(-(2**63), 2**63 - 1), floats), max_size=3)):
            s = ts.samples.add()
            s.timestamp, s.value = t, f
    if draw(st.booleans()):
        m = w.metadata.add()
        m.type, m.metric_family_name, m.help = draw(st.integers(0, 7)), draw(names), draw(texts)
    return w


def _kv(draw: st.DrawFn, target: Any) -> None:
    for k in draw(st.lists(st.one_of(names, texts), max_size=3)):
        a = target.add()
        a.key = k
        kind = draw(st.sampled_from(["s", "i", "d", "b", "arr", "kv", "bytes", "none"]))
        if kind == "s":
            a.value.string_value = draw(texts)
        elif kind == "i":
            a.value.int_value = draw(st.integers(-(2**63), 2**63 - 1))
        elif kind == "d":
            a.value.double_value = draw(floats)
        elif kind == "b":
            a.value.bool_value = draw(st.booleans())
        elif kind == "arr":
            a.value.array_value.values.add().string_value = draw(texts)
        elif kind == "kv":
            kv = a.value.kvlist_value.values.add()
            kv.key, kv.value.int_value = draw(texts), 1
        elif kind == "bytes":
            a.value.bytes_value = draw(st.binary(max_size=8))


def _resource(draw: st.DrawFn, rs: Any) -> None:
    if draw(st.booleans()):
        a = rs.resource.attributes.add()
        a.key, a.value.string_value = "service.name", draw(texts)
    _kv(draw, rs.resource.attributes)


@st.composite
def otlp_metrics(draw: st.DrawFn) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        rm = req.resource_metrics.add()
        _resource(draw, rm)
        sm = rm.scope_metrics.add()
        sm.scope.name = draw(texts)
        for _ in range(draw(st.integers(0, 3))):
            m = sm.metrics.add()
            m.name, m.unit, m.description = draw(st.one_of(names, texts)), draw(texts), draw(texts)
            kind = draw(st.sampled_from(["gauge", "sum", "histogram", "exp", "summary", "none"]))
            t = draw(st.sampled_from([0, NOW_NS, 2**64 - 1]))
            if kind in ("gauge", "sum"):
                container = m.gauge if kind == "gauge" else m.sum
                if kind == "sum":
                    m.sum.aggregation_temporality = draw(st.integers(0, 3))
                    m.sum.is_monotonic = draw(st.booleans())
                p = container.data_points.add()
                p.time_unix_nano, p.start_time_unix_nano = t, draw(st.sampled_from([0, t, min(t + 1, 2**64 - 1)]))
                if draw(st.booleans()):
                    p.as_double = draw(floats)
                else:
                    p.as_int = draw(st.integers(-(2**63), 2**63 - 1))
                p.flags = draw(st.integers(0, 3))
                _kv(draw, p.attributes)
                if draw(st.booleans()):
                    e = p.exemplars.add()
                    e.as_double, e.time_unix_nano = draw(floats), t
                    e.trace_id, e.span_id = draw(st.binary(max_size=17)), draw(st.binary(max_size=9))
            elif kind == "histogram":
                m.histogram.aggregation_temporality = draw(st.integers(0, 3))
                hp = m.histogram.data_points.add()
                hp.time_unix_nano = t
                hp.count, hp.sum = draw(st.integers(0, 2**64 - 1)), draw(floats)
                hp.explicit_bounds.extend(draw(st.lists(floats, max_size=3)))
                hp.bucket_counts.extend(draw(st.lists(st.integers(0, 2**64 - 1), max_size=4)))
            elif kind == "exp":
                m.exponential_histogram.aggregation_temporality = draw(st.integers(0, 3))
                ep = m.exponential_histogram.data_points.add()
                ep.time_unix_nano, ep.scale = t, draw(st.integers(-(2**31), 2**31 - 1))
                ep.count, ep.zero_count = draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**64 - 1))
                ep.positive.offset = draw(st.integers(-(2**31), 2**31 - 1))
                ep.positive.bucket_counts.extend(draw(st.lists(st.integers(0, 2**64 - 1), max_size=3)))
            elif kind == "summary":
                sp = m.summary.data_points.add()
                sp.time_unix_nano, sp.count, sp.sum = t, draw(st.integers(0, 2**64 - 1)), draw(floats)
                q = sp.quantile_values.add()
                q.quantile, q.value = draw(floats), draw(floats)
    return req


@st.composite
def otlp_logs(draw: st.DrawFn) -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        rl = req.resource_logs.add()
        _resource(draw, rl)
        sl = rl.scope_logs.add()
        sl.scope.name = draw(texts)
        for _ in range(draw(st.integers(0, 3))):
            lr = sl.log_records.add()
            lr.time_unix_nano = draw(st.sampled_from([0, NOW_NS, 2**64 - 1]))
            lr.observed_time_unix_nano = draw(st.sampled_from([0, NOW_NS]))
            lr.severity_number = draw(st.integers(0, 24))
            lr.severity_text = draw(texts)
            if draw(st.booleans()):
                lr.body.string_value = draw(texts)
            else:
                lr.body.kvlist_value.values.add().key = draw(texts)
            lr.trace_id, lr.span_id = draw(st.binary(max_size=17)), draw(st.binary(max_size=9))
            _kv(draw, lr.attributes)
    return req


@st.composite
def otlp_traces(draw: st.DrawFn) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        rs = req.resource_spans.add()
        _resource(draw, rs)
        ss = rs.scope_spans.add()
        ss.scope.name = draw(texts)
        for _ in range(draw(st.integers(0, 3))):
            sp = ss.spans.add()
            sp.trace_id = draw(st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=17)))
            sp.span_id = draw(st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=9)))
            sp.parent_span_id = draw(st.binary(max_size=8))
            sp.name, sp.kind = draw(texts), draw(st.integers(0, 6))
            sp.start_time_unix_nano = draw(st.sampled_from([0, NOW_NS, 2**64 - 1]))
            sp.end_time_unix_nano = draw(st.sampled_from([0, NOW_NS, NOW_NS + 10**6, 2**64 - 1]))
            sp.status.code, sp.status.message = draw(st.integers(0, 3)), draw(texts)
            _kv(draw, sp.attributes)
            if draw(st.booleans()):
                ev = sp.events.add()
                ev.name, ev.time_unix_nano = draw(texts), NOW_NS
                _kv(draw, ev.attributes)
            if draw(st.booleans()):
                ln = sp.links.add()
                ln.trace_id, ln.span_id = draw(st.binary(max_size=16)), draw(st.binary(max_size=8))
    return req


def otlp_json(msg: Message) -> Any:
    """The OTLP/JSON form of ``msg``: camelCase, ids as hex (as the spec says), not protobuf's base64."""
    doc = json_format.MessageToDict(msg)

    def fix(o: Any) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                    try:
                        import base64

                        o[k] = base64.b64decode(v).hex()
                    except ValueError:
                        pass
                else:
                    fix(v)
        elif isinstance(o, list):
            for v in o:
                fix(v)

    fix(doc)
    return doc


@st.composite
def loki_streams(draw: st.DrawFn) -> list[tuple[dict[str, str], list[tuple[int, str, dict[str, str]]]]]:
    return draw(st.lists(st.tuples(
        st.dictionaries(st.one_of(names, texts), texts, max_size=3),
        st.lists(st.tuples(st.one_of(st.just(NOW_NS), st.integers(-(2**63), 2**63 - 1)), texts,
                           st.dictionaries(names, texts, max_size=2)), max_size=3)), max_size=3))


def loki_json(streams: Any) -> Any:
    return {"streams": [{"stream": lb, "values": [[str(t), line, md] if md else [str(t), line]
                                                  for t, line, md in vals]} for lb, vals in streams]}


def loki_proto(streams: Any) -> bytes:
    req = logproto.PushRequest()
    for lb, vals in streams:
        st_ = req.streams.add()
        st_.labels = "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in lb.items()) + "}"
        for t, line, md in vals:
            e = st_.entries.add()
            e.line = line
            e.timestamp.seconds, e.timestamp.nanos = divmod(t, 10**9) if 0 <= t < 2**62 else (t, 0)
            for k, v in md.items():
                m = e.structuredMetadata.add()
                m.name, m.value = k, v
    return bytes(req.SerializeToString())


hex_ids = st.one_of(st.sampled_from(["463ac35c9f6413ad", "463ac35c9f6413ad463ac35c9f6413ad", "0" * 16, "", "zz"]),
                    st.from_regex(r"\A[0-9a-f]{1,32}\Z"))


@st.composite
def zipkin_spans(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for _ in range(draw(st.integers(0, 3))):
        sp: dict[str, Any] = {"traceId": draw(hex_ids), "id": draw(hex_ids), "name": draw(texts),
                              "timestamp": draw(st.sampled_from([NOW_NS // 1000, 0, 1, 2**53])),
                              "duration": draw(st.integers(0, 2**53))}
        if draw(st.booleans()):
            sp["parentId"] = draw(hex_ids)
        if draw(st.booleans()):
            sp["kind"] = draw(st.sampled_from(["CLIENT", "SERVER", "PRODUCER", "CONSUMER", "x"]))
        if draw(st.booleans()):
            sp["localEndpoint"] = {"serviceName": draw(texts), "ipv4": draw(st.sampled_from(["10.0.0.1", "x", ""])),
                                   "ipv6": draw(st.sampled_from(["::1", "", "zz"])), "port": draw(ints)}
        if draw(st.booleans()):
            sp["remoteEndpoint"] = {"serviceName": draw(texts)}
        if draw(st.booleans()):
            sp["annotations"] = [{"timestamp": draw(ints), "value": draw(texts)}]
        if draw(st.booleans()):
            sp["tags"] = draw(st.dictionaries(texts, texts, max_size=3))
        if draw(st.booleans()):
            sp["shared"], sp["debug"] = draw(st.booleans()), draw(st.booleans())
        out.append(sp)
    return out


def zipkin_proto(spans: list[dict[str, Any]]) -> bytes:
    """The JSON spans as zipkin.proto3 ListOfSpans, as far as their values fit."""
    msg = zipkin_pb.ListOfSpans()
    for d in spans:
        sp = msg.spans.add()
        for key, attr in (("traceId", "trace_id"), ("id", "id"), ("parentId", "parent_id")):
            v = d.get(key, "")
            try:
                setattr(sp, attr, bytes.fromhex(v if len(v) % 2 == 0 else "0" + v))
            except ValueError:
                setattr(sp, attr, v.encode())
        sp.name = d["name"]
        sp.timestamp, sp.duration = min(d["timestamp"], 2**64 - 1), min(d["duration"], 2**64 - 1)
        sp.kind = {"CLIENT": 1, "SERVER": 2, "PRODUCER": 3, "CONSUMER": 4}.get(d.get("kind", ""), 0)
        if "localEndpoint" in d:
            sp.local_endpoint.service_name = d["localEndpoint"]["serviceName"]
            sp.local_endpoint.ipv4 = b"\x0a\x00\x00\x01" if d["localEndpoint"]["ipv4"] == "10.0.0.1" else b"\x01"
            sp.local_endpoint.port = d["localEndpoint"]["port"] % 2**31
        for a in d.get("annotations", []):
            an = sp.annotations.add()
            an.timestamp, an.value = a["timestamp"] % 2**64, a["value"]
        for k, v in d.get("tags", {}).items():
            sp.tags[k] = v
    return bytes(msg.SerializeToString())


@st.composite
def bulk_lines(draw: st.DrawFn) -> list[Any]:
    """``_bulk`` as a list of JSON documents: action lines each followed by a source."""
    out: list[Any] = []
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["index", "create", "delete", "update", "bogus"]))
        meta: dict[str, Any] = {}
        if draw(st.booleans()):
            meta["_index"] = draw(st.sampled_from(["logs", "app-2024.01.01", "", "x y"]))
        if draw(st.booleans()):
            meta["_id"] = draw(texts)
        out.append({action: meta})
        if action != "delete":
            doc: dict[str, Any] = {"message": draw(texts)}
            if draw(st.booleans()):
                doc["@timestamp"] = draw(st.one_of(st.sampled_from(["2024-01-01T00:00:00Z", "x", "", "1700000000"]),
                                                   ints, floats.filter(lambda f: f == f and abs(f) != float("inf"))))
            doc.update(draw(st.dictionaries(names, json_values, max_size=2)))
            out.append(doc)
    return out


def ndjson(lines: list[Any]) -> bytes:
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)
