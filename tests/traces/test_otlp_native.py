"""The C OTLP decoder agrees with the upb decoder, byte for byte, or hands the request back."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from pitwall.traces.errors import InvalidSpan, SpanLimitExceeded
from pitwall.traces.ingest import otlp
from pitwall.traces.ingest.common import IngestLimits
from pitwall.traces.model import SpanArrays

native = pytest.mark.skipif(otlp._otlp_traces is None, reason="C decoder not built")
LIMITS = IngestLimits(max_spans_per_request=40, max_attributes_per_span=6, max_attribute_value_length=40,
                      max_events_per_span=3)

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", "service.name", "peer.service", "db.name", "a\"b\\c\n\x01\x7f\u2028", "é中😀"])
ids8 = st.binary(min_size=8, max_size=8) | st.sampled_from([b"", b"\0" * 8, b"\x01" * 7])
ids16 = st.binary(min_size=16, max_size=16) | st.sampled_from([b"\0" * 16, b"\x02" * 8])


def _scalar() -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(
        st.tuples(st.just("s"), text), st.tuples(st.just("b"), st.booleans()),
        st.tuples(st.just("i"), st.integers(-(2**63), 2**63 - 1)),
        st.tuples(st.just("d"), st.floats(allow_nan=True, allow_infinity=True)),
        st.tuples(st.just("x"), st.binary(max_size=50)), st.tuples(st.just("n"), st.none()),
    )


values = st.recursive(
    _scalar(),
    lambda inner: st.tuples(st.just("a"), st.lists(inner, max_size=3))
    | st.tuples(st.just("k"), st.lists(st.tuples(text, inner), max_size=3)),
    max_leaves=6,
)
attrs = st.lists(st.tuples(text, values), max_size=8)


def _set(av: Any, v: tuple[str, Any]) -> None:
    kind, x = v
    if kind == "s":
        av.string_value = x
    elif kind == "b":
        av.bool_value = x
    elif kind == "i":
        av.int_value = x
    elif kind == "d":
        av.double_value = x
    elif kind == "x":
        av.bytes_value = x
    elif kind == "a":
        av.array_value.SetInParent()
        for item in x:
            _set(av.array_value.values.add(), item)
    elif kind == "k":
        av.kvlist_value.SetInParent()
        for k, item in x:
            kv = av.kvlist_value.values.add()
            kv.key = k
            _set(kv.value, item)


def _fill(target: Any, kvs: list[tuple[str, Any]]) -> None:
    for k, v in kvs:
        kv = target.add()
        kv.key = k
        _set(kv.value, v)


span_st = st.fixed_dictionaries({
    "trace": ids16, "span": ids8, "parent": ids8, "name": text, "kind": st.integers(-1, 6),
    "start": st.integers(0, 2**64 - 1) | st.integers(10**18, 2 * 10**18), "dur": st.integers(-(10**9), 10**12),
    "attrs": attrs, "status": st.integers(-1, 4), "msg": text,
    "events": st.lists(st.tuples(st.integers(0, 2**63), text, attrs), max_size=4),
    "links": st.lists(st.tuples(ids16, ids8, text, attrs), max_size=2),
})
request_st = st.lists(st.tuples(attrs, text, text, st.lists(span_st, max_size=6)), min_size=1, max_size=3)


def _request(groups: list[Any]) -> bytes:
    req = ExportTraceServiceRequest()
    for res_attrs, scope_name, scope_version, spans in groups:
        rs = req.resource_spans.add()
        _fill(rs.resource.attributes, res_attrs)
        ss = rs.scope_spans.add()
        ss.scope.name, ss.scope.version = scope_name, scope_version
        for d in spans:
            sp = ss.spans.add()
            sp.trace_id, sp.span_id, sp.parent_span_id, sp.name = d["trace"], d["span"], d["parent"], d["name"]
            sp.kind = d["kind"]
            sp.start_time_unix_nano = d["start"]
            sp.end_time_unix_nano = max(0, min(2**64 - 1, d["start"] + d["dur"]))
            _fill(sp.attributes, d["attrs"])
            sp.status.code, sp.status.message = d["status"], d["msg"]
            for t, name, ev_attrs in d["events"]:
                ev = sp.events.add()
                ev.time_unix_nano, ev.name = t, name
                _fill(ev.attributes, ev_attrs)
            for tid, sid, state, ln_attrs in d["links"]:
                ln = sp.links.add()
                ln.trace_id, ln.span_id, ln.trace_state = tid, sid, state
                _fill(ln.attributes, ln_attrs)
    return bytes(req.SerializeToString())


def _check(body: bytes) -> bool:
    """True when the C decoder took the request; asserts it matches upb exactly."""
    got = otlp._otlp_traces.decode(body, LIMITS.max_spans_per_request, LIMITS.max_attributes_per_span,
                                   LIMITS.max_attribute_value_length, LIMITS.max_events_per_span)
    try:
        want = otlp.decode_upb(body, otlp.PROTOBUF, LIMITS).to_table("t")
    except (InvalidSpan, SpanLimitExceeded):
        assert got is None, "C decoder accepted a request upb rejects"
        return False
    if got is None:
        return False
    have = otlp._arrays(got).to_table("t")
    for name in want.column_names:
        assert have.column(name).to_pylist() == want.column(name).to_pylist(), name
    return True


@native
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_st)
def test_native_decoder_matches_upb(groups: list[Any]) -> None:
    _check(_request(groups))


@native
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_st, st.integers(0, 10**6), st.integers(0, 255))
def test_native_decoder_on_corrupted_bodies(groups: list[Any], pos: int, byte: int) -> None:
    body = bytearray(_request(groups))
    if body:
        body[pos % len(body)] = byte
    _check(bytes(body))


@native
def test_native_decoder_takes_ordinary_requests() -> None:
    groups = [([("service.name", ("s", "checkout")), ("host.name", ("s", "h1"))], "lib", "1.0", [{
        "trace": b"\x01" * 16, "span": b"\x02" * 8, "parent": b"", "name": "GET /", "kind": 3, "start": 10**18,
        "dur": 5000, "attrs": [("http.method", ("s", "GET")), ("peer.service", ("s", "db")),
                               ("n", ("i", -5)), ("f", ("d", 0.1)), ("ok", ("b", True))],
        "status": 2, "msg": "boom", "events": [(10**18 + 1, "exception", [("exception.type", ("s", "E"))])],
        "links": [(b"\x03" * 16, b"\x04" * 8, "k=v", [])]}])]
    body = _request(groups)
    assert _check(body)
    batch = otlp.decode(body, otlp.PROTOBUF, LIMITS)
    assert isinstance(batch, SpanArrays)
    row = batch.to_table("t").to_pylist()[0]
    assert row["service"] == "checkout" and row["remote_service"] == "db" and row["status_code"] == 2
    assert row["attributes"] == '{"http.method":"GET","peer.service":"db","n":-5,"f":0.1,"ok":true}'


@native
@pytest.mark.parametrize("field", ["schema_url", "scope_attribute"])
def test_native_decoder_leaves_unchecked_strings_to_upb(field: str) -> None:
    """Found by the fuzzer: bad UTF-8 in a ScopeSpans schema_url or a scope attribute was accepted by the
    C decoder (which does not store them) while upb, like the SDKs' protobuf, refuses the request."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    req = trace_service_pb2.ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    ss.schema_url, ss.scope.name = "ZZZZ", "lib"
    kv = ss.scope.attributes.add()
    kv.key, kv.value.string_value = "YYYY", "x"
    body = bytearray(req.SerializeToString())
    body[body.index(b"ZZZZ" if field == "schema_url" else b"YYYY")] = 0xFF
    assert _check(bytes(body)) is False


@native
def test_native_decoder_checks_every_occurrence_of_a_string() -> None:
    """Found by the fuzzer: an AnyValue holding two string_value members, the first not UTF-8. Protobuf
    keeps the last, but upb (and so the SDKs' decoders) refuse the request; the C decoder must too."""
    body = bytes.fromhex(
        "0a470a380a070a013012022a000a11120f2a0d0a092100000000000000000a000a1a0a0730303030303030120f2a000a"
        "0921000000000000f03f0a00120b0a09120730303030303030")
    assert _check(body) is False
