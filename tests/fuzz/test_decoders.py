"""Decoders called directly: random and mutated input raises only the decoder's declared error type.

Those already fuzzed beside their pillar are not repeated here: the remote
write C decoder (tests/metrics/ingest/test_remote_write.py), OTLP metrics
decode + translate (tests/metrics/ingest/test_otlp.py), the OTLP traces C
decoder against upb (tests/traces/test_otlp_native.py), the LogQL parser on
random text (tests/logs/logql/test_parser.py), the PromQL engine on
grammar-built expressions (tests/metrics/promql/test_fuzz.py). Syslog has no
HTTP endpoint, so its parser and TCP framing are only fuzzed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitwall.core import body as body_mod
from pitwall.core.errors import BadData, TooLarge
from pitwall.core.limits import InflightBudget
from pitwall.logs.ingest.elasticsearch import BulkDecoder
from pitwall.logs.ingest.loki_push import LabelCache, decode_push
from pitwall.logs.ingest.otlp import OtlpLogsTranslator
from pitwall.logs.ingest.syslog import SyslogServer, parse_syslog
from pitwall.logs.settings import ElasticsearchSettings, SyslogSettings
from pitwall.metrics.promql.ast import parse as parse_promql
from pitwall.metrics.promql.errors import PromQLParseError
from pitwall.traces.errors import InvalidSpan, SpanLimitExceeded
from pitwall.traces.ingest import otlp as otlp_traces
from pitwall.traces.ingest import zipkin
from pitwall.traces.ingest.common import IngestLimits
from tests.fuzz import strategies as fz

FUZZ = settings(max_examples=fz.examples(200), deadline=1000, suppress_health_check=list(HealthCheck), database=None)
pytestmark = pytest.mark.timeout(60)
INT64 = range(-(1 << 63), 1 << 63)


BUDGET = InflightBudget(1 << 30)


def _decode_push(data: bytes, content_encoding: str, ctype: str) -> Any:
    with BUDGET.reserve(len(data)) as res:
        return decode_push(body_mod.Body(data, content_encoding, body_mod.BodyLimits(1 << 20, 4 << 20), res), ctype,
                           LabelCache())


# ---------------------------------------------------------------- bodies

@FUZZ
@given(st.data(), st.sampled_from(["gzip", "deflate", "snappy", "zstd", "identity", "", "br"]))
def test_content_decoding_raises_only_bad_data(data: st.DataObject, encoding: str) -> None:
    raw = data.draw(st.binary(max_size=200))
    if data.draw(st.booleans()):
        raw, _ = fz.compressed(data, raw, ("gzip", "snappy", "snappy-frame"))
    with contextlib.suppress(BadData, TooLarge):
        body_mod.decode(raw, encoding, 4096)
    with contextlib.suppress(BadData, TooLarge):
        body_mod.snappy_block(raw, 4096)


# ---------------------------------------------------------------- logs

@FUZZ
@given(st.data(), fz.loki_streams(), st.booleans())
def test_loki_push_decoder(data: st.DataObject, streams: Any, as_json: bool) -> None:
    if as_json:
        raw = fz.mutated_json(data, fz.loki_json(streams))
        ctype, enc = "application/json", ""
    else:
        raw, codec = fz.compressed(data, fz.mutated_bytes(data, fz.loki_proto(streams)), ("snappy", "gzip"))
        ctype, enc = "application/x-protobuf", "gzip" if codec == "gzip" else ""
    try:
        cols = _decode_push(raw, enc, ctype)
    except (BadData, TooLarge):
        return
    assert all(int(t) in INT64 for t in cols.ts)


@FUZZ
@given(st.data(), fz.otlp_logs(), st.booleans())
def test_otlp_logs_decoder(data: st.DataObject, req: Any, as_json: bool) -> None:
    tr = OtlpLogsTranslator()
    raw = fz.mutated_json(data, fz.otlp_json(req)) if as_json else fz.mutated_bytes(data, req.SerializeToString())
    with contextlib.suppress(BadData):
        tr.translate(tr.decode(raw, "application/json" if as_json else "application/x-protobuf"), time.time_ns())


def test_otlp_logs_time_past_int64_is_bad_data() -> None:
    """fixed64 nanoseconds from 2262 on did not fit the int64 column: OverflowError, a 500 (found by the fuzzer)."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    req = ExportLogsServiceRequest()
    req.resource_logs.add().scope_logs.add().log_records.add().time_unix_nano = 1 << 63
    with pytest.raises(BadData, match="2262"):
        OtlpLogsTranslator().translate(req)


@FUZZ
@given(st.data(), fz.bulk_lines())
def test_bulk_decoder(data: st.DataObject, lines: list[Any]) -> None:
    raw = fz.mutated_bytes(data, fz.ndjson(lines)) if data.draw(st.booleans()) else fz.ndjson(lines)
    try:
        req = BulkDecoder(ElasticsearchSettings()).decode(raw, data.draw(st.sampled_from([None, "idx"])))
    except BadData:
        return
    assert req.cols is not None and all(int(t) in INT64 for t in req.cols.ts)


@pytest.mark.parametrize("stamp", [1e300, 10**17, -(10**17), float("nan"), float("inf"), "9999-12-31T23:59:59Z",
                                   "0001-01-01T00:00:00+14:00"])
def test_bulk_timestamp_past_int64_falls_back_to_now(stamp: Any) -> None:
    """Epoch millis or dates past int64 nanoseconds were an OverflowError/ValueError, a 500 (found by the fuzzer)."""

    body = b'{"index":{}}\n' + json.dumps({"@timestamp": stamp, "message": "m"}).encode() + b"\n"
    req = BulkDecoder(ElasticsearchSettings()).decode(body, "idx", now_ns=123)
    assert req.cols is not None and req.cols.ts.tolist() == [123]


syslog_text = st.one_of(
    st.text(max_size=80),
    st.builds(lambda pri, ver, stamp, rest: f"<{pri}>{ver} {stamp} {rest}",
              st.one_of(st.integers(0, 999), st.text(max_size=3), st.sampled_from(["²", "1²", "١٣"])), st.sampled_from(["1", "2", "", "1 1"]),
              st.one_of(st.sampled_from(["-", "2024-02-29T12:00:00.123456+02:00", "9999-12-31T23:59:59Z",
                                         "0001-01-01T00:00:00+14:00", "2024-13-01T00:00:00Z", "x"]),
                        st.datetimes().map(lambda d: d.isoformat() + "Z")),
              st.text(alphabet='host app - [id k="v\\"]] \ufeff:[]1234', max_size=40)),
    st.builds(lambda pri, mon, day, hh, rest: f"<{pri}>{mon} {day:>2} {hh}:00:00 {rest}",
              st.integers(0, 200), st.sampled_from(["Jan", "Feb", "Xyz", "Dec"]), st.integers(0, 40),
              st.sampled_from(["00", "23", "24", "99"]), st.text(alphabet="host app[12]: msg", max_size=30)),
)


@FUZZ
@given(syslog_text, st.integers(0, 2**62))
def test_syslog_parser_never_raises(text: str, now_ns: int) -> None:
    msg = parse_syslog(text, now_ns, "peer")
    assert msg.ts_ns in INT64
    assert msg.line in text or not text.strip("\r\n\x00")


@pytest.mark.parametrize("stamp", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00"])
def test_syslog_timestamp_past_int64_takes_receive_time(stamp: str) -> None:
    """A year-9999 stamp made the batch's int64 column overflow, dropping every message of the batch."""
    msg = parse_syslog(f"<13>1 {stamp} host app - - - msg", 42)
    assert (msg.ts_ns, msg.host, msg.app, msg.line) == (42, "host", "app", "msg")


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=40), st.sampled_from([b"12 ", b"5 hello", b"\n", b"9" * 80, b"x\n",
                                                                    b"3 ab", b"00 ", b"1x "])), max_size=8))
def test_syslog_tcp_framing(chunks: list[bytes]) -> None:
    """The frame reader only raises what the connection handler catches (it then closes the connection)."""
    srv = SimpleNamespace(settings=SyslogSettings(max_message_bytes=64))

    async def run() -> None:
        reader = asyncio.StreamReader(limit=64 + 64)
        reader.feed_data(b"".join(chunks))
        reader.feed_eof()
        for _ in range(100):
            try:
                raw = await SyslogServer._read_frame(srv, reader)  # type: ignore[arg-type]
            except (ConnectionError, asyncio.IncompleteReadError, ValueError):  # what _serve catches
                return
            if raw is None:
                return
            assert len(raw) <= 64 + 64 + 1  # the first byte, then up to the reader limit

    asyncio.run(run())


# ---------------------------------------------------------------- traces

LIMITS = IngestLimits(max_spans_per_request=50, max_attributes_per_span=16, max_attribute_value_length=64,
                      max_events_per_span=4)


@FUZZ
@given(st.data(), fz.zipkin_spans(), st.booleans())
def test_zipkin_decoder(data: st.DataObject, spans: Any, as_json: bool) -> None:
    if data.draw(st.integers(0, 3)) == 0:
        raw = data.draw(st.binary(max_size=200))
    else:
        raw = fz.mutated_json(data, spans) if as_json else fz.mutated_bytes(data, fz.zipkin_proto(spans))
    with contextlib.suppress(InvalidSpan, SpanLimitExceeded):
        zipkin.decode(raw, zipkin.JSON if as_json else zipkin.PROTOBUF, LIMITS)


@FUZZ
@given(st.data(), fz.otlp_traces())
def test_otlp_traces_json_decoder(data: st.DataObject, req: Any) -> None:
    raw = fz.mutated_json(data, fz.otlp_json(req))
    with contextlib.suppress(InvalidSpan, SpanLimitExceeded):
        otlp_traces.decode(raw, otlp_traces.JSON, LIMITS)


# ---------------------------------------------------------------- PromQL

promql_alphabet = '{}[]()=!~"` abcz,.:5m0123456789@_+-*/^%<>#\n\\\'sumratebyoffsetonignoringgroup_leftbool'


@FUZZ
@given(st.one_of(st.text(alphabet=promql_alphabet, max_size=60), st.text(max_size=30)))
def test_promql_parser_only_raises_parse_errors(text: str) -> None:
    with contextlib.suppress(PromQLParseError):
        parse_promql(text)


def test_syslog_octet_count_without_space_is_a_value_error() -> None:
    """Digits past the reader's limit with no space: LimitOverrunError escaped the connection handler."""
    srv = SimpleNamespace(settings=SyslogSettings(max_message_bytes=64))

    async def run() -> None:
        reader = asyncio.StreamReader(limit=128)
        reader.feed_data(b"9" * 300)
        reader.feed_eof()
        with pytest.raises(ValueError, match="max_message_bytes"):
            await SyslogServer._read_frame(srv, reader)  # type: ignore[arg-type]

    asyncio.run(run())


@pytest.mark.parametrize("doc", [b'{"resourceLogs": ["x"]}', b'{"resourceLogs": {"scopeLogs": 1}}',
                                 b'{"resourceLogs": [{"scopeLogs": [[]]}]}', b'{"resourceLogs": [{"scopeLogs": "s"}]}'])
def test_otlp_logs_json_of_wrong_shape_raises_only_bad_data(doc: bytes) -> None:
    """Lists where objects belong made the hex-id pass raise AttributeError, a 500 (found by the fuzzer)."""
    with contextlib.suppress(BadData):
        OtlpLogsTranslator().decode(doc, "application/json")


@pytest.mark.parametrize("text", ["<²>hello", "<1²>1 - - - - - x", "<¹³>msg"])
def test_syslog_unicode_digit_priority_is_text(text: str) -> None:
    """str.isdigit passes "²", int() does not: a ValueError that closed the TCP connection (found by the fuzzer)."""
    msg = parse_syslog(text, 7)
    assert (msg.facility, msg.severity, msg.line) == ("user", "notice", text)


@pytest.mark.parametrize(("start", "end"), [(2**64 - 1, 0), (1, 2**63), (2**63, 2**64 - 1)])
def test_otlp_span_time_past_int64_is_invalid(start: int, end: int) -> None:
    """The C decoder hands these to upb, whose columns then overflowed int64: a 500 (found by the fuzzer)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    sp = req.resource_spans.add().scope_spans.add().spans.add()
    sp.trace_id, sp.span_id, sp.name = b"\x01" * 16, b"\x02" * 8, "s"
    sp.start_time_unix_nano, sp.end_time_unix_nano = start, end
    with pytest.raises(InvalidSpan, match="2262"):
        otlp_traces.decode(req.SerializeToString(), otlp_traces.PROTOBUF, LIMITS)
    with pytest.raises(InvalidSpan, match="2262"):
        otlp_traces.decode(json.dumps(fz.otlp_json(req)).encode(), otlp_traces.JSON, LIMITS)
