"""Remote write decoding: the C fast path and the upb path agree; limits hold."""

from __future__ import annotations

import contextlib
from pathlib import Path

import cramjam
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pitwall.core.errors import BadData
from pitwall.core.labels import Matcher
from pitwall.core.limits import LimitsSettings
from pitwall.metrics.errors import InvalidLabels, RequestTooLarge
from pitwall.metrics.ingest import prompb, remote_write
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore


def _request(series: list[tuple[dict[str, str], list[tuple[int, float]]]], metadata: bool = False) -> bytes:
    w = prompb.WriteRequest()
    for labels, samples in series:
        ts = w.timeseries.add()
        for k, v in labels.items():
            lb = ts.labels.add()
            lb.name, lb.value = k, v
        for t, v in samples:
            s = ts.samples.add()
            s.timestamp, s.value = t, v
    if metadata:
        m = w.metadata.add()
        m.type, m.metric_family_name, m.help = 1, "http_requests_total", "Requests."
    return bytes(cramjam.snappy.compress_raw(w.SerializeToString()))


@pytest.fixture(params=["native", "upb"])
async def ingester(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    if request.param == "upb":
        monkeypatch.setattr(remote_write, "_rwdecode", None)
    elif remote_write._rwdecode is None:
        pytest.skip("C decoder not built")
    store = MetricStore(TelemetryDB(tmp_path / "t.duckdb"), tmp_path / "wal", fsync=False)
    await store.start()
    ing = remote_write.RemoteWriteIngester(store, LimitsSettings(max_series_per_request=10, max_labels_per_series=5))
    yield ing
    await store.stop()


def _all(ing: remote_write.RemoteWriteIngester) -> dict[tuple[tuple[str, str], ...], list[tuple[int, float]]]:
    res = ing.store.querier().select([Matcher.of("=~", "__name__", ".+")], -(10**13), 10**13)
    return {s.labels: list(zip(s.ts.tolist(), s.values.tolist(), strict=True)) for s in res}


async def test_roundtrip_including_zero_values_and_negative_timestamps(ingester: remote_write.RemoteWriteIngester) -> None:
    body = _request([
        ({"__name__": "a", "job": "x"}, [(0, 0.0), (1000, -1.5), (2000, float("inf"))]),
        ({"job": "y", "__name__": "b", "empty": ""}, [(-5000, 3.0)]),
    ], metadata=True)
    n = await ingester.write("default", body)
    assert n == 4
    got = _all(ingester)
    assert got[(("__name__", "a"), ("job", "x"))] == [(0, 0.0), (1000, -1.5), (2000, float("inf"))]
    # Labels are sorted and empty values dropped, as Prometheus does.
    assert got[(("__name__", "b"), ("job", "y"))] == [(-5000, 3.0)]
    assert ingester.store.metadata("default")["http_requests_total"].type == "counter"


async def test_cached_series_second_request(ingester: remote_write.RemoteWriteIngester) -> None:
    await ingester.write("default", _request([({"__name__": "a"}, [(1000, 1.0)])]))
    await ingester.write("default", _request([({"__name__": "a"}, [(2000, 2.0)])]))
    assert _all(ingester) == {(("__name__", "a"),): [(1000, 1.0), (2000, 2.0)]}


async def test_series_forgotten_after_retention_come_back_under_a_new_id(
    ingester: remote_write.RemoteWriteIngester,
) -> None:
    store = ingester.store
    assert isinstance(store, MetricStore)
    await ingester.write("default", _request([({"__name__": "a"}, [(1000, 1.0)])]))
    await store.flush()
    store.retention_ms = 1
    assert store.apply_retention(now_ms=10**13) and await store.forget_expired_series() == 1
    assert _all(ingester) == {}
    # The ingester's cached id of "a" is stale: the next write registers the series afresh.
    await ingester.write("default", _request([({"__name__": "a"}, [(2000, 2.0)])]))
    assert _all(ingester) == {(("__name__", "a"),): [(2000, 2.0)]}
    assert store.lookup("default", (("__name__", "a"),)) == 1


async def test_limits(ingester: remote_write.RemoteWriteIngester) -> None:
    many = [({"__name__": "a", "i": str(i)}, [(1000, 1.0)]) for i in range(11)]
    with pytest.raises(RequestTooLarge, match="11 series"):
        await ingester.write("default", _request(many))
    wide = {"__name__": "a", **{f"l{i}": "v" for i in range(6)}}
    with pytest.raises(RequestTooLarge, match="7 labels"):
        await ingester.write("default", _request([(wide, [(1000, 1.0)])]))
    with pytest.raises(InvalidLabels, match="no metric name"):
        await ingester.write("default", _request([({"job": "x"}, [(1000, 1.0)])]))
    assert _all(ingester) == {}


async def test_corrupt_bodies(ingester: remote_write.RemoteWriteIngester) -> None:
    with pytest.raises(BadData, match="snappy"):
        await ingester.write("default", b"\x0a\xff\xff\xff\xff")
    with pytest.raises(BadData, match="proto"):
        await ingester.write("default", bytes(cramjam.snappy.compress_raw(b"\x0a\xff\xff\xff")))


def test_native_decoder_matches_protobuf() -> None:
    if remote_write._rwdecode is None:
        pytest.skip("C decoder not built")
    rng = np.random.default_rng(7)
    series = [({"__name__": f"m{i}", "k": "v" * int(rng.integers(0, 300))},
               [(int(t), float(rng.normal())) for t in rng.integers(-10**12, 10**12, size=int(rng.integers(0, 5)))])
              for i in range(50)]
    raw = bytes(cramjam.snappy.decompress_raw(_request(series)))
    spans, counts, ts, vals, flags = remote_write._rwdecode.decode(raw)
    assert flags == 0
    assert np.frombuffer(counts, dtype=np.int64).tolist() == [len(s) for _, s in series]
    assert np.frombuffer(ts, dtype=np.int64).tolist() == [t for _, s in series for t, _ in s]
    assert np.frombuffer(vals, dtype=np.float64).tolist() == [v for _, s in series for _, v in s]
    sp = np.frombuffer(spans, dtype=np.int64).reshape(-1, 2)
    labels = [remote_write._split_labels(raw[a:b]) for a, b in sp.tolist()]
    parsed = [dict((lb.name, lb.value) for lb in (prompb.Label.FromString(x) for x in ls)) for ls in labels]
    assert parsed == [{k: v for k, v in lbl.items()} for lbl, _ in series]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_native_decoder_never_crashes_on_garbage(data: bytes) -> None:
    if remote_write._rwdecode is None:
        return
    try:
        spans, counts, ts, vals, _ = remote_write._rwdecode.decode(data)
    except ValueError:
        return
    n = len(counts) // 8
    sp = np.frombuffer(spans, dtype=np.int64).reshape(-1, 2)
    assert sp.shape[0] == n
    assert ((sp[:, 0] <= sp[:, 1]) & (sp[:, 1] <= len(data))).all()
    assert len(ts) == len(vals) == 8 * int(np.frombuffer(counts, dtype=np.int64).sum())


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_native_decoder_on_mutated_requests(data: st.DataObject) -> None:
    if remote_write._rwdecode is None:
        return
    raw = bytearray(cramjam.snappy.decompress_raw(_request([({"__name__": "m", "a": "b"}, [(1, 2.0), (3, 4.0)])])))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(ValueError):
        remote_write._rwdecode.decode(bytes(raw))
