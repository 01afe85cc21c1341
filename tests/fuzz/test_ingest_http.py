"""Every ingest endpoint, in-process, fed garbage and broken-but-plausible payloads: never a 5xx.

Each test draws either random bytes or a valid payload (strategies.py) that
is then mutated (nodes replaced, dropped or wrapped; bytes flipped, cut,
duplicated; compression applied, sometimes corrupted after) under a random
choice of Content-Type and Content-Encoding. Properties:

- the answer is below 500 (an exception escaping a decoder is a 500, or
  raises out of the ASGI transport, and fails the test);
- when the request is refused (4xx), what was stored before (a series, a
  log stream, a trace: ``conftest.Seeded``) reads back unchanged.
"""

from __future__ import annotations

from typing import Any

import cramjam
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitwall.metrics.ingest import prompb
from tests.fuzz import strategies as fz
from tests.fuzz.conftest import Seeded

FUZZ = settings(max_examples=fz.examples(150), deadline=2000, suppress_health_check=list(HealthCheck), database=None)
pytestmark = pytest.mark.timeout(120)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
odd_content_types = st.sampled_from(["", "text/plain", "application/x-protobuf; charset=utf-8",
                                     "application/json;x=1", "APPLICATION/JSON", "multipart/form-data; boundary=x",
                                     "application/octet-stream", "\x7f"])
encodings = {"": None, "gzip": "gzip", "snappy": "snappy"}


def _send(app: Seeded, data: st.DataObject, path: str, body: bytes, ctype: str, encoding: str = "") -> None:
    if data.draw(st.integers(0, 9), label="odd content type") == 0:
        ctype = data.draw(odd_content_types)
    if data.draw(st.integers(0, 9), label="odd encoding") == 0:
        encoding = data.draw(st.sampled_from(["", "gzip", "snappy", "deflate", "zstd", "br", "identity", "gzip, gzip"]))
    headers = {"content-type": ctype}
    if encoding:
        headers["content-encoding"] = encoding
    if data.draw(st.integers(0, 9), label="tenant header") == 0:
        headers["x-scope-orgid"] = data.draw(st.sampled_from(["", "a|b", "..", "t" * 200, "tenant-2"]))
    r = app.request("POST", path, content=body, headers=headers)
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        assert app.snapshot() == app.baseline, f"{path} refused with {r.status_code} but stored data changed"


@pytest.fixture(scope="module")
def app(seeded: Seeded) -> Seeded:
    return seeded


def _proto_or_bytes(data: st.DataObject, valid: st.SearchStrategy[Any]) -> bytes:
    if data.draw(st.integers(0, 3), label="random bytes") == 0:
        return data.draw(st.binary(max_size=300))
    raw = bytes(data.draw(valid).SerializeToString())
    return fz.mutated_bytes(data, raw) if data.draw(st.booleans(), label="mutate") else raw


def _json_or_bytes(data: st.DataObject, doc: Any) -> bytes:
    if data.draw(st.integers(0, 3), label="random bytes") == 0:
        return data.draw(st.binary(max_size=300))
    return fz.mutated_json(data, doc)


@FUZZ
@given(st.data())
def test_remote_write(app: Seeded, data: st.DataObject) -> None:
    raw = _proto_or_bytes(data, fz.write_request())
    body, codec = fz.compressed(data, raw, ("snappy", "snappy", "snappy-frame", "", "gzip"))
    _send(app, data, "/api/v1/write", body, PROTOBUF, "snappy" if codec == "snappy" else "")


@FUZZ
@given(st.data(), st.sampled_from(["/v1/metrics", "/v1/logs", "/v1/traces"]), st.booleans())
def test_otlp(app: Seeded, data: st.DataObject, path: str, as_json: bool) -> None:
    valid = {"/v1/metrics": fz.otlp_metrics(), "/v1/logs": fz.otlp_logs(), "/v1/traces": fz.otlp_traces()}[path]
    if as_json:
        body = _json_or_bytes(data, fz.otlp_json(data.draw(valid)))
    else:
        body = _proto_or_bytes(data, valid)
    body, codec = fz.compressed(data, body, ("", "", "gzip"))
    _send(app, data, path, body, JSON if as_json else PROTOBUF, codec)


@FUZZ
@given(st.data(), fz.loki_streams(), st.sampled_from(["json", "json-gzip", "proto"]))
def test_loki_push(app: Seeded, data: st.DataObject, streams: Any, form: str) -> None:
    if form == "proto":
        raw = fz.loki_proto(streams)
        raw = fz.mutated_bytes(data, raw) if data.draw(st.booleans(), label="mutate") else raw
        body, codec = fz.compressed(data, raw, ("snappy", "snappy", "", "gzip"))
        _send(app, data, "/loki/api/v1/push", body, PROTOBUF, "" if codec == "snappy" else codec)
    else:
        body = _json_or_bytes(data, fz.loki_json(streams))
        body, codec = fz.compressed(data, body, ("gzip",) if form == "json-gzip" else ("",))
        _send(app, data, "/loki/api/v1/push", body, JSON, codec)


@FUZZ
@given(st.data(), fz.zipkin_spans(), st.booleans())
def test_zipkin(app: Seeded, data: st.DataObject, spans: Any, as_json: bool) -> None:
    if as_json:
        body = _json_or_bytes(data, spans)
    else:
        raw = fz.zipkin_proto(spans)
        body = fz.mutated_bytes(data, raw) if data.draw(st.booleans(), label="mutate") else raw
    body, codec = fz.compressed(data, body, ("", "", "gzip"))
    _send(app, data, "/api/v2/spans", body, JSON if as_json else PROTOBUF, codec)


@FUZZ
@given(st.data(), fz.bulk_lines(), st.sampled_from(["/_bulk", "/elasticsearch/_bulk", "/elasticsearch/idx/_bulk"]))
def test_elasticsearch_bulk(app: Seeded, data: st.DataObject, lines: list[Any], path: str) -> None:
    mutate_doc: bool = data.draw(st.booleans(), label="mutate a document")
    if data.draw(st.integers(0, 3), label="random bytes") == 0:
        body = data.draw(st.binary(max_size=300))
    elif lines and mutate_doc:
        i = data.draw(st.integers(0, len(lines) - 1))
        parts = [fz.ndjson([x]) for x in lines]
        parts[i] = fz.mutated_json(data, lines[i]) + b"\n"
        body = b"".join(parts)
    else:
        body = fz.ndjson(lines)
        if data.draw(st.booleans(), label="mutate bytes"):
            body = fz.mutated_bytes(data, body)
    body, codec = fz.compressed(data, body, ("", "", "gzip"))
    _send(app, data, path, body, "application/x-ndjson", codec)


def test_accepted_writes_were_seen(app: Seeded) -> None:
    """The seeded data still reads back after everything above (and the fuzzers did reach it)."""
    m, lg, tr = app.snapshot()
    assert len(m["result"]) == 1 and len(m["result"][0]["values"]) >= 5
    assert sum(len(s["values"]) for s in lg) == 5
    assert len(tr) == 1


@pytest.mark.parametrize("spoil", [b"up_not_utf8", b"HELP"])
def test_remote_write_string_not_utf8_is_400(app: Seeded, spoil: bytes) -> None:
    """The C decoder passes label and metadata bytes on unchecked; upb then refused them with DecodeError, a 500.

    Found by the fuzzer: a label value; then metadata help text, parsed only after the samples were
    committed. Now the whole request is refused and nothing of it is stored.
    """
    w = prompb.WriteRequest()
    ts = w.timeseries.add()
    lb = ts.labels.add()
    lb.name, lb.value = "__name__", "up_not_utf8"
    s = ts.samples.add()
    s.timestamp, s.value = int(app.t_s * 1000), 1.0
    m = w.metadata.add()
    m.type, m.metric_family_name, m.help = 1, "up_not_utf8", "HELP"
    raw = bytearray(w.SerializeToString())
    raw[raw.index(spoil)] = 0xFF
    r = app.request("POST", "/api/v1/write", content=bytes(cramjam.snappy.compress_raw(bytes(raw))),
                    headers={"content-type": PROTOBUF, "content-encoding": "snappy"})
    assert r.status_code == 400 and "cannot parse" in r.text, r.text
    r = app.request("GET", "/api/v1/series", params={"match[]": '{__name__=~"up_not_utf8|.p_not_utf8"}'})
    assert r.json()["data"] == []
    assert app.snapshot() == app.baseline
