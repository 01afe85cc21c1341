from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pitwall.metrics.errors import DuplicateSample, OutOfOrderSample, SeriesLimitExceeded
from pitwall.metrics.model import STALE_NAN, Labels, Matcher, SampleBatch, stale_mask
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics_store import MetricStore, StoreLimits

UP_A: Labels = (("__name__", "up"), ("instance", "a"))
UP_B: Labels = (("__name__", "up"), ("instance", "b"))


def _store(path: Path, **kw: object) -> MetricStore:
    return MetricStore(TelemetryDB(path / "t.duckdb"), path / "wal", fsync=False, **kw)  # type: ignore[arg-type]


def _select(store: MetricStore, name: str, start: int = 0, end: int = 10**12) -> dict[Labels, list[tuple[int, float]]]:
    res = store.querier().select([Matcher.of("=", "__name__", name)], start, end)
    return {s.labels: list(zip(s.ts.tolist(), s.values.tolist(), strict=True)) for s in res}


async def test_append_and_select(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    await st.append("default", SampleBatch.from_rows([(UP_A, 1000, 1.0), (UP_B, 1000, 0.0), (UP_A, 2000, 2.0)]))
    assert _select(st, "up") == {UP_A: [(1000, 1.0), (2000, 2.0)], UP_B: [(1000, 0.0)]}
    assert _select(st, "up", 1500, 3000) == {UP_A: [(2000, 2.0)]}
    await st.stop()


async def test_out_of_order_rejects_whole_batch(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    await st.append("default", SampleBatch.from_rows([(UP_A, 2000, 1.0)]))
    with pytest.raises(OutOfOrderSample, match=r'up\{instance="a"\} at timestamp 1000'):
        await st.append("default", SampleBatch.from_rows([(UP_B, 5000, 1.0), (UP_A, 1000, 1.0)]))
    # Nothing of the rejected batch is visible, not even the new series.
    assert _select(st, "up") == {UP_A: [(2000, 1.0)]}
    assert st.num_series() == 1
    await st.stop()


async def test_out_of_order_within_request(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    with pytest.raises(OutOfOrderSample):
        await st.append("default", SampleBatch.from_rows([(UP_A, 2000, 1.0), (UP_A, 1000, 1.0)]))
    await st.stop()


async def test_duplicates(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    await st.append("default", SampleBatch.from_rows([(UP_A, 1000, 1.0)]))
    # Same timestamp, same value: accepted and ignored, as Prometheus does.
    await st.append("default", SampleBatch.from_rows([(UP_A, 1000, 1.0)]))
    with pytest.raises(DuplicateSample, match="duplicate sample for timestamp"):
        await st.append("default", SampleBatch.from_rows([(UP_A, 1000, 2.0)]))
    assert _select(st, "up") == {UP_A: [(1000, 1.0)]}
    await st.stop()


async def test_stale_markers_roundtrip(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    await st.append("default", SampleBatch.from_rows([(UP_A, 1000, 1.0), (UP_A, 2000, STALE_NAN)]))
    await st.flush()
    res = st.querier().select([Matcher.of("=", "__name__", "up")], 0, 5000)
    assert stale_mask(res[0].values).tolist() == [False, True]
    await st.stop()


async def test_replay_after_unclean_stop(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    await st.append("default", SampleBatch.from_rows([(UP_A, 1000, 1.0), (UP_B, 1000, 5.0)]))
    await st.flush()
    await st.append("default", SampleBatch.from_rows([(UP_A, 2000, 2.0)]))
    # Simulate a crash: no stop(), no flush; only the WAL has the last batch.
    await st.wal.close()
    st.db.close()
    st2 = _store(tmp_path)
    await st2.start()
    assert _select(st2, "up") == {UP_A: [(1000, 1.0), (2000, 2.0)], UP_B: [(1000, 5.0)]}
    # Order checks survive the restart.
    with pytest.raises(OutOfOrderSample):
        await st2.append("default", SampleBatch.from_rows([(UP_A, 1500, 1.0)]))
    await st2.stop()


async def test_flush_then_query_merges_blocks_and_head(tmp_path: Path) -> None:
    st = _store(tmp_path, block_ms=10_000)
    await st.start()
    rows = [(UP_A, t, float(t)) for t in range(0, 30_000, 1000)]
    await st.append("default", SampleBatch.from_rows(rows[:20]))
    await st.flush()
    await st.append("default", SampleBatch.from_rows(rows[20:]))
    got = _select(st, "up")[UP_A]
    assert got == [(t, float(t)) for t in range(0, 30_000, 1000)]
    assert len(st._blocks) == 2
    await st.stop()


async def test_retention_drops_whole_blocks(tmp_path: Path) -> None:
    st = _store(tmp_path, block_ms=10_000, retention_ms=20_000)
    await st.start()
    await st.append("default", SampleBatch.from_rows([(UP_A, t, 1.0) for t in range(0, 40_000, 5000)]))
    await st.flush()
    dropped = st.apply_retention(now_ms=45_000)
    assert len(dropped) == 2
    assert [t for t, _ in _select(st, "up")[UP_A]] == [20_000, 25_000, 30_000, 35_000]
    await st.stop()


async def test_tenants_are_isolated(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    await st.append("team-a", SampleBatch.from_rows([(UP_A, 1000, 1.0)]))
    assert st.querier("default").select([Matcher.of("=", "__name__", "up")], 0, 10**6) == []
    assert len(st.querier("team-a").select([Matcher.of("=", "__name__", "up")], 0, 10**6)) == 1
    await st.stop()


async def test_series_limit(tmp_path: Path) -> None:
    st = _store(tmp_path, limits=StoreLimits(max_series_per_tenant=1))
    await st.start()
    await st.append("default", SampleBatch.from_rows([(UP_A, 1000, 1.0)]))
    with pytest.raises(SeriesLimitExceeded, match="series limit of 1"):
        await st.append("default", SampleBatch.from_rows([(UP_B, 1000, 1.0)]))
    await st.stop()


async def test_label_queries_respect_time_range(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    await st.append("default", SampleBatch.from_rows([(UP_A, 1000, 1.0), (UP_B, 9000, 1.0)]))
    q = st.querier()
    assert q.label_values("instance", [], 0, 5000) == ["a"]
    assert q.label_names([Matcher.of("=", "instance", "b")], 0, 10_000) == ["__name__", "instance"]
    assert q.series([Matcher.of("=~", "__name__", ".+")], 8000, 10_000) == [UP_B]
    await st.stop()


async def test_many_series_compaction(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    for t in range(100):
        await st.append("default", SampleBatch.from_rows([(UP_A, t * 1000, float(t)), (UP_B, t * 1000, -t)]))
    assert len(st._chunks) < 64
    vals = _select(st, "up")[UP_B]
    assert np.allclose([v for _, v in vals], [-t for t in range(100)])
    await st.stop()
