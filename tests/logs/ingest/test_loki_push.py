"""Loki push: JSON and snappy protobuf (built with the official logproto), errors in Loki's plain text."""

from __future__ import annotations

import gzip
import json
from types import ModuleType

import cramjam
import httpx
import pytest

from pitwall.core import jsonchunks
from pitwall.core.errors import BadData
from pitwall.logs.ingest.loki_push import LabelCache, decode_json, decode_protobuf
from pitwall.logs.labels import parse_labels
from tests.logs.conftest import now_ns, push_body


def _proto_body(mod: ModuleType, labels: str, entries: list[tuple[int, str, dict[str, str]]]) -> bytes:
    req = mod.PushRequest()
    st = req.streams.add(labels=labels)
    for ts, line, md in entries:
        e = st.entries.add(line=line)
        e.timestamp.seconds, e.timestamp.nanos = divmod(ts, 10**9)
        for k, v in md.items():
            e.structuredMetadata.add(name=k, value=v)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


async def _query_all(client: httpx.AsyncClient, app: str) -> list[tuple[int, str]]:
    store = client.app.state.components.logs.store  # type: ignore[attr-defined]
    from pitwall.core.labels import Matcher

    streams = store.querier("default").select([Matcher.of("=", "app", app)], 0, now_ns() + 10**12)
    return sorted((int(t), line) for s in streams for t, line in zip(s.ts_ns.tolist(), s.lines, strict=True))


def test_parse_labels_handles_go_escapes_and_sorts() -> None:
    assert parse_labels('{b="2", a="x\\"y\\n"}') == (("a", 'x"y\n'), ("b", "2"))
    with pytest.raises(BadData, match="at least one label pair"):
        parse_labels("{}")
    with pytest.raises(BadData, match="duplicate label name"):
        parse_labels('{a="1", a="2"}')
    with pytest.raises(BadData, match="error parsing labels"):
        parse_labels('{a=1}')


def test_decode_json_columns_and_metadata() -> None:
    body = json.dumps({"streams": [
        {"stream": {"app": "a"}, "values": [["1", "x"], ["2", "y", {"trace_id": "t1"}]]},
        {"stream": {"app": "b"}, "values": [["3", "z"]]},
    ]}).encode()
    cols = decode_json(body)
    assert cols.streams == [(("app", "a"),), (("app", "b"),)]
    assert cols.stream_idx.tolist() == [0, 0, 1]
    assert cols.ts.tolist() == [1, 2, 3]
    assert cols.lines == ["x", "y", "z"]
    assert cols.metadata == [(), (("trace_id", "t1"),), ()]


@pytest.mark.parametrize(("body", "message"), [
    (b"{", "loghttp.PushRequest"),
    (b'{"streams": [{"stream": {"a": "b"}, "values": [["abc", "x"]]}]}', "cannot parse timestamp 'abc'"),
    (b'{"streams": [{"stream": {"a": "b"}, "values": [[1, "x"]]}]}', "timestamps must be strings"),
    (b'{"streams": [{"stream": {"a": 1}, "values": []}]}', "string label values"),
    (b'{"streams": [{"stream": {"a": "b"}, "values": [["1", "x", {"k": 1}]]}]}', "structured metadata"),
])
def test_decode_json_rejects_bad_bodies(body: bytes, message: str) -> None:
    with pytest.raises(BadData, match=message):
        decode_json(body)


async def test_json_push_is_queryable(client: httpx.AsyncClient) -> None:
    t = now_ns()
    r = await client.post("/loki/api/v1/push", json=push_body({(("app", "j"),): [[t, "one"], [t + 1, "two"]]}))
    assert r.status_code == 204, r.text
    assert await _query_all(client, "j") == [(t, "one"), (t + 1, "two")]


async def test_gzip_json_push(client: httpx.AsyncClient) -> None:
    t = now_ns()
    raw = json.dumps(push_body({(("app", "gz"),): [[t, "zipped"]]})).encode()
    r = await client.post("/loki/api/v1/push", content=gzip.compress(raw),
                          headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert r.status_code == 204, r.text
    assert await _query_all(client, "gz") == [(t, "zipped")]


async def test_protobuf_push_from_the_official_definition(client: httpx.AsyncClient,
                                                          official_logproto: ModuleType) -> None:
    t = now_ns()
    body = _proto_body(official_logproto, '{app="pb", env="dev"}',
                       [(t, "proto line", {"trace_id": "0af7651916cd43dd8448eb211c80319c"}), (t + 5, "second", {})])
    r = await client.post("/loki/api/v1/push", content=body, headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 204, r.text
    assert await _query_all(client, "pb") == [(t, "proto line"), (t + 5, "second")]
    r = await client.get("/api/logs/v1/trace/0af7651916cd43dd8448eb211c80319c")
    assert r.json()["streams"][0]["values"] == [[str(t), "proto line",
                                                {"trace_id": "0af7651916cd43dd8448eb211c80319c",
                                                 "detected_level": "unknown"}]]


def test_large_json_pushes_are_decoded_in_slices_to_the_same_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {"streams": [
        {"stream": {"app": "a"}, "values": [[str(i), f"line {i}"] for i in range(300)]},
        {"values": [[str(i), "m", {"trace_id": f"t{i}"}] if i % 3 else [str(i), "n"] for i in range(200)],
         "stream": {"app": "b"}},  # labels after values
        {"stream": {"app": "c"}, "values": []},
        {"stream": {"app": "d"}, "values": [["1", "x" * 500]]},
    ]}
    body = json.dumps(doc).encode()
    whole = decode_json(body)
    monkeypatch.setattr(jsonchunks, "CHUNK", 256)  # every stream and its values come in slices
    sliced = decode_json(body)
    assert sliced.streams == whole.streams == [(("app", "a"),), (("app", "b"),), (("app", "c"),), (("app", "d"),)]
    assert sliced.stream_idx.tolist() == whole.stream_idx.tolist()
    assert sliced.ts.tolist() == whole.ts.tolist()
    assert sliced.lines == whole.lines
    assert sliced.metadata == whole.metadata
    assert whole.metadata is not None and whole.metadata[301] == (("trace_id", "t1"),)


@pytest.mark.parametrize(("body", "message"), [
    (b'{"streams": [{"stream": {"a": "b"}, "values": [' + b'["1", "x"],' * 40 + b'["abc", "x"]]}]}',
     "cannot parse timestamp 'abc'"),
    (b'{"streams": [{"stream": {"a": 1}, "values": [' + b'["1", "x"],' * 40 + b'["2", "x"]]}]}', "string label values"),
    (b'{"streams": [{"stream": {"a": "b"}, "values": [' + b'["1", "x"],' * 40 + b'["2", "x"],]}]}',
     "loghttp.PushRequest: Expecting value"),
    (b'{"streams": [{"stream": {"a": "b"}, "values": {' + b'"k": 1,' * 40 + b'"k": 2}}]}', "expected an array"),
    (b'{"streamz": [' + b'1,' * 100 + b'1]}', 'expected an object with a "streams" array'),
])
def test_large_bad_json_pushes_are_refused_as_small_ones(monkeypatch: pytest.MonkeyPatch, body: bytes,
                                                         message: str) -> None:
    monkeypatch.setattr(jsonchunks, "CHUNK", 64)
    with pytest.raises(BadData, match=message):
        decode_json(body)


async def test_protobuf_push_with_snappy_content_encoding(client: httpx.AsyncClient,
                                                          official_logproto: ModuleType) -> None:
    # Loki reads "Content-Encoding: snappy" on a protobuf push as naming the block the body is (#3407).
    t = now_ns()
    body = _proto_body(official_logproto, '{app="se"}', [(t, "snappy named", {})])
    r = await client.post("/loki/api/v1/push", content=body,
                          headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"})
    assert r.status_code == 204, r.text
    assert await _query_all(client, "se") == [(t, "snappy named")]


def test_decode_protobuf_caches_label_strings(official_logproto: ModuleType) -> None:
    body = _proto_body(official_logproto, '{app="x"}', [(10**18, "l", {})])
    cache = LabelCache()
    raw = bytes(cramjam.snappy.decompress_raw(body))
    a = decode_protobuf(raw, cache)
    b = decode_protobuf(raw, cache)
    assert a.streams[0] is b.streams[0]
    assert a.ts.tolist() == [10**18]


async def test_bad_bodies_get_loki_plain_text_errors_and_store_nothing(client: httpx.AsyncClient) -> None:
    r = await client.post("/loki/api/v1/push", content=b"not snappy", headers={"Content-Type": "application/x-protobuf"})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text.startswith("snappy:")
    r = await client.post("/loki/api/v1/push", content=b"{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "loghttp.PushRequest" in r.text
    store = client.app.state.components.logs.store  # type: ignore[attr-defined]
    assert store.entries_appended == 0


async def test_limits_line_size_labels_and_age(client: httpx.AsyncClient) -> None:
    lim = client.app.state.components.logs.ingester.limits  # type: ignore[attr-defined]
    t = now_ns()
    big = "x" * (lim.max_line_size + 1)
    r = await client.post("/loki/api/v1/push", json=push_body({(("app", "lim"),): [[t, big], [t + 1, "ok"]]}))
    assert r.status_code == 400
    assert "max entry size" in r.text and "total ignored: 1 out of 2" in r.text
    assert await _query_all(client, "lim") == [(t + 1, "ok")]  # the valid entry was kept, as in Loki
    many = {f"l{i}": "v" for i in range(lim.max_label_names_per_series + 1)}
    r = await client.post("/loki/api/v1/push", json={"streams": [{"stream": many, "values": [[str(t), "x"]]}]})
    assert r.status_code == 400 and "label names; limit" in r.text
    r = await client.post("/loki/api/v1/push", json={"streams": [{"stream": {"bad-name": "v"},
                                                                  "values": [[str(t), "x"]]}]})
    assert r.status_code == 400 and "invalid label name" in r.text
    old = t - lim.reject_old_samples_max_age * 1_000_000 - 10**9
    r = await client.post("/loki/api/v1/push", json=push_body({(("app", "lim"),): [[old, "ancient"]]}))
    assert r.status_code == 400 and "timestamp too old" in r.text
    r = await client.post("/loki/api/v1/push", json=push_body({(("app", "lim"),): [[t + 3600 * 10**9, "future"]]}))
    assert r.status_code == 400 and "timestamp too new" in r.text


async def test_request_body_limit(client: httpx.AsyncClient) -> None:
    limit = client.app.state.components.settings.limits.max_request_bytes  # type: ignore[attr-defined]
    r = await client.post("/loki/api/v1/push", content=b"x" * (limit + 1), headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert "exceeds the limit" in r.text
