"""The metrics backend's pieces against a scripted engine: JSON parsing, headers, errors, the queue."""

from __future__ import annotations

import json
from pathlib import Path

import cramjam
import httpx
import numpy as np
import pytest

from pitwall.core.errors import BadData, Unavailable
from pitwall.core.wal import Wal
from pitwall.metrics.ingest import prompb
from pitwall.metrics.remote_backend import RemoteEngine, WalForwarder, parse_query_data
from pitwall.storage.metrics.walrec import REC_METADATA, REC_SAMPLES, encode_samples

pytestmark = pytest.mark.timeout(30)


def test_parse_every_result_type() -> None:
    vec = parse_query_data({"resultType": "vector", "result": [
        {"metric": {"job": "a", "__name__": "up"}, "value": [1700000000.5, "NaN"]},
        {"metric": {}, "value": [1700000000, "+Inf"]}]})
    assert vec.series == [(("__name__", "up"), ("job", "a")), ()]
    assert vec.timestamps[0].tolist() == [1700000000500] and np.isnan(vec.values[0][0])
    assert vec.values[1][0] == float("inf")
    mat = parse_query_data({"resultType": "matrix", "result": [
        {"metric": {"a": "1"}, "values": [[10, "1"], [20.25, "-2.5"]]}]})
    assert mat.timestamps[0].tolist() == [10000, 20250] and mat.values[0].tolist() == [1.0, -2.5]
    sc = parse_query_data({"resultType": "scalar", "result": [5, "3"]})
    assert (sc.result_type, sc.series, float(sc.values[0][0])) == ("scalar", [()], 3.0)
    st = parse_query_data({"resultType": "string", "result": [5, "hi"]})
    assert (st.string_value, int(st.timestamps[0][0])) == ("hi", 5000)


def test_queries_carry_headers_and_tenant() -> None:
    seen: list[httpx.Request] = []

    def engine(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": []},
                                         "warnings": ["w"]})

    e = RemoteEngine("http://engine:1/prom", {"Authorization": "Bearer x"}, 5, transport=httpx.MockTransport(engine))
    res = e.instant("up", 1_500, "team-a")
    assert res.result_type == "vector" and res.warnings == ["w"]
    e.range("up", 0, 60_000, 15_000)
    a, b = seen
    assert a.url.path == "/prom/api/v1/query" and a.headers["X-Scope-OrgID"] == "team-a"
    assert a.headers["Authorization"] == "Bearer x"
    assert dict(x.split("=") for x in a.content.decode().split("&")) == {"query": "up", "time": "1.500"}
    assert b.url.path == "/prom/api/v1/query_range" and "X-Scope-OrgID" not in b.headers
    assert b"step=15.000" in b.content


def test_engine_errors() -> None:
    def bad(req: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": "parse error"})

    with pytest.raises(BadData, match="parse error"):
        RemoteEngine("http://e:1", {}, 5, transport=httpx.MockTransport(bad)).instant("(", 0)

    def down(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    e = RemoteEngine("http://e:1", {}, 5, transport=httpx.MockTransport(down))
    with pytest.raises(Unavailable, match="metrics backend prometheus-api at http://e:1 is down"):
        e.instant("up", 0)
    assert e.health.problem is not None and "connection refused" in e.health.problem


def _decode(body: bytes) -> dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]:
    w = prompb.WriteRequest()
    w.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
    return {tuple((lb.name, lb.value) for lb in ts.labels): [(s.timestamp, s.value) for s in ts.samples]
            for ts in w.timeseries}


async def test_queue_retries_5xx_drops_4xx_and_persists_its_position(tmp_path: Path) -> None:
    wal = Wal(tmp_path / "wal", fsync=False)
    wal.open_for_append()
    labels = [(("__name__", "a"),), (("__name__", "b"), ("x", "1"))]
    i64 = np.int64
    await wal.append(REC_SAMPLES, encode_samples("default", [(0, labels[0]), (1, labels[1])],
                                                 np.array([0, 1, 0], i64), np.array([10, 10, 20], i64),
                                                 np.array([1.0, 2.0, 3.0])))
    await wal.append(REC_METADATA, b"[]")
    await wal.append(REC_SAMPLES, encode_samples("team-a", [], np.array([1], i64), np.array([30], i64),
                                                 np.array([4.0])))
    answers = [503, 204, 204]
    got: list[tuple[str | None, dict]] = []

    def engine(req: httpx.Request) -> httpx.Response:
        status = answers.pop(0)
        got.append((req.headers.get("X-Scope-OrgID"), _decode(req.content)))
        assert req.headers["Content-Encoding"] == "snappy"
        return httpx.Response(status)

    fw = WalForwarder(wal, lambda sid: labels[sid], "http://e:1/api/v1/write", {}, 5, 1000,
                      transport=httpx.MockTransport(engine))
    await fw.start()
    await fw.tasks.stop()  # drive it step by step instead of the loop
    with pytest.raises(httpx.HTTPStatusError):
        await fw.step()
    assert fw.pos == (1, 0) and not fw.pos_file.exists()  # nothing acked: nothing moves
    assert await fw.step()
    assert got[1] == (None, {labels[0]: [(10, 1.0), (20, 3.0)], labels[1]: [(10, 2.0)]})
    assert got[2] == ("team-a", {labels[1]: [(30, 4.0)]})
    assert json.loads(fw.pos_file.read_text()) == list(fw.pos) and fw.pos[1] > 0
    assert fw.sent_samples == 4 and not await fw.step()
    # A refused batch (4xx other than 429) is dropped, the position moves past it.
    answers.append(400)
    await wal.append(REC_SAMPLES, encode_samples("default", [], np.array([0], i64), np.array([5], i64),
                                                 np.array([9.0])))
    before = fw.pos
    assert await fw.step()
    assert fw.dropped_samples == 1 and fw.pos > before
    # A restarted forwarder resumes from the persisted position.
    again = WalForwarder(wal, lambda sid: labels[sid], "http://e:1/api/v1/write", {}, 5, 1000)
    assert again.pos == fw.pos and again.keep_from() == 1
    await fw.stop()
    await wal.close()


async def test_wal_read_from_follows_a_live_log_and_never_truncates(tmp_path: Path) -> None:
    wal = Wal(tmp_path / "wal", fsync=False)
    wal.open_for_append()
    for i in range(3):
        await wal.append(REC_METADATA, f"record {i}".encode() * 100)
    got = list(wal.read_from(1, 0, max_bytes=1))  # a tiny budget still yields the first record whole
    assert [r.payload[:8] for _, r in got] == [b"record 0"]
    end0 = got[0][0]
    rest = list(wal.read_from(1, end0, max_bytes=1 << 20))
    assert [r.payload[:8] for _, r in rest] == [b"record 1", b"record 2"]
    seg = tmp_path / "wal" / "00000001.wal"
    size = seg.stat().st_size
    assert rest[-1][0] == size
    with open(seg, "ab") as f:  # a record being written: header and half its payload
        f.write(b"\xff\x00\x00\x00\x00\x00\x00\x00\x02" + b"x" * 100)
    assert list(wal.read_from(1, size, max_bytes=1 << 20)) == []
    assert seg.stat().st_size == size + 109  # left alone for the writer
    assert list(wal.read_from(7, 0, max_bytes=10)) == []  # a segment already removed
    await wal.close()
