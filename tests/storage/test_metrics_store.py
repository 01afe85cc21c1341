from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pitwall.core.labels import Labels, Matcher, labels_from_dict
from pitwall.metrics.errors import DuplicateSample, OutOfOrderSample, SeriesLimitExceeded
from pitwall.metrics.model import STALE_NAN, SampleBatch, stale_mask
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore, StoreLimits
from pitwall.storage.metrics import blocks as metric_blocks

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
    assert len(st.blocks.by_start) == 2
    await st.stop()


async def test_retention_drops_whole_blocks(tmp_path: Path) -> None:
    st = _store(tmp_path, block_ms=10_000, retention_ms=20_000)
    await st.start()
    await st.append("default", SampleBatch.from_rows([(UP_A, t, 1.0) for t in range(0, 40_000, 5000)]))
    await st.flush()
    st.retention_ms = 0  # storage.retention: 0 keeps everything, as in the logs and traces stores
    assert st.apply_retention(now_ms=10**12) == []
    st.retention_ms = 20_000
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
    # Equal appends merge like a binary counter: 100 = 0b1100100, three chunks.
    assert [len(c) for c in st.head.chunks] == [128, 64, 8]
    vals = _select(st, "up")[UP_B]
    assert np.allclose([v for _, v in vals], [-t for t in range(100)])
    await st.stop()


def _block_fixture() -> tuple[list[Labels], list[tuple[int, int, float]]]:
    """12 metrics x 15 series, registered interleaved so one metric's sids are spread out;
    rows (series index, ts, value) over 3 s, some series missing some steps."""
    series = [labels_from_dict({"__name__": f"m{m}", "i": str(i), "odd": str(i % 2)})
              for i in range(15) for m in range(12)]
    rng = np.random.default_rng(11)
    rows = [(k, t, float(rng.normal())) for t in range(0, 3000, 50) for k in range(len(series))
            if rng.random() > 0.2]
    return series, rows


async def _load_in_runs(st: MetricStore, series: list[Labels], rows: list[tuple[int, int, float]],
                        flush_every_ms: int) -> None:
    """Append step by step, flushing every ``flush_every_ms``: each block gets several runs."""
    by_t: dict[int, list[tuple[int, int, float]]] = {}
    for r in rows:
        by_t.setdefault(r[1], []).append(r)
    for t in sorted(by_t):
        step = by_t[t]
        await st.append("default", SampleBatch(
            series, np.array([k for k, _, _ in step]), np.array([t] * len(step)), np.array([v for _, _, v in step])))
        if t % flush_every_ms == flush_every_ms - 50:
            await st.flush()


def _expect(series: list[Labels], rows: list[tuple[int, int, float]], keep: Callable[[Labels], bool],
            start: int, end: int) -> dict[Labels, list[tuple[int, float]]]:
    out: dict[Labels, list[tuple[int, float]]] = {}
    for k, t, v in rows:
        if keep(series[k]) and start <= t <= end:
            out.setdefault(series[k], []).append((t, v))
    return out


_SELECTIONS: list[tuple[list[Matcher], Callable[[Labels], bool]]] = [
    ([Matcher.of("=", "__name__", "m3")], lambda lb: dict(lb)["__name__"] == "m3"),
    ([Matcher.of("=", "__name__", "m5"), Matcher.of("=", "odd", "1")],
     lambda lb: dict(lb)["__name__"] == "m5" and dict(lb)["odd"] == "1"),
    ([Matcher.of("=~", "__name__", "m1|m7"), Matcher.of("=", "i", "4")],
     lambda lb: dict(lb)["__name__"] in ("m1", "m7") and dict(lb)["i"] == "4"),
    ([Matcher.of("=~", "__name__", "m.*")], lambda lb: True),
]


@pytest.mark.parametrize("cache_samples", [0, 1_000_000])  # small selections read through the block cache
@pytest.mark.parametrize(("join_gap", "max_spans"), [(0, 1000), (0, 2), (1 << 16, 16)])
async def test_block_reads_by_row_ranges_return_exactly_the_selected_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, join_gap: int, max_spans: int, cache_samples: int
) -> None:
    monkeypatch.setattr(metric_blocks, "_JOIN_GAP", join_gap)
    monkeypatch.setattr(metric_blocks, "_MAX_SPANS", max_spans)
    series, rows = _block_fixture()
    st = _store(tmp_path, block_ms=1000, read_cache_samples=cache_samples)
    await st.start()
    await _load_in_runs(st, series, rows, flush_every_ms=400)
    await st.flush()
    assert all(b.index.fragmented() for b in st.blocks.by_start.values())
    # Each flush wrote a metric's series next to each other: one range per run.
    m3 = np.sort(st.candidate_sids("default", _SELECTIONS[0][0], 0, 999))
    runs = st.blocks.by_start[0].index.spans(m3, max_spans=1000, join_gap=0)[0]
    assert len(runs) == 3
    for matchers, keep in _SELECTIONS:
        for start, end in [(0, 10**6), (420, 2210), (1000, 1999), (999, 1000)]:
            got = st.querier().select(matchers, start, end)
            assert {s.labels: list(zip(s.ts.tolist(), s.values.tolist(), strict=True)) for s in got} == \
                _expect(series, rows, keep, start, end)
    await st.stop()


async def test_compaction_rewrites_sealed_blocks_as_one_run_and_survives_restart(tmp_path: Path) -> None:
    series, rows = _block_fixture()
    st = _store(tmp_path, block_ms=1000)
    await st.start()
    await _load_in_runs(st, series, rows, flush_every_ms=400)
    # The head still holds samples of the last block: that one is not sealed.
    assert st.head.chunks
    assert st.compact(now_ms=10**6) == ["metrics_samples_0", "metrics_samples_1000"]
    assert not st.blocks.by_start[0].index.fragmented() and st.blocks.by_start[2000].index.fragmented()
    await st.flush()
    assert st.compact(now_ms=2500) == []  # the clock has not passed the last block yet
    assert st.compact(now_ms=3000) == ["metrics_samples_2000"]
    # One stretch per series, a metric's series next to each other.
    m3 = np.sort(st.candidate_sids("default", _SELECTIONS[0][0], 0, 10**6))
    for b in st.blocks.by_start.values():
        assert len(b.index.spans(m3, max_spans=1000, join_gap=0)[0]) == 1
    for matchers, keep in _SELECTIONS:
        got = st.querier().select(matchers, 0, 10**6)
        assert {s.labels: list(zip(s.ts.tolist(), s.values.tolist(), strict=True)) for s in got} == \
            _expect(series, rows, keep, 0, 10**6)
    index = {k: (b.index.keys.tolist(), b.index.lo.tolist(), b.index.hi.tolist()) for k, b in st.blocks.by_start.items()}
    await st.stop()

    st = _store(tmp_path, block_ms=1000)
    await st.start()
    assert {k: (b.index.keys.tolist(), b.index.lo.tolist(), b.index.hi.tolist())
            for k, b in st.blocks.by_start.items()} == index
    got = st.querier().select(_SELECTIONS[3][0], 0, 10**6)
    assert sum(len(s.ts) for s in got) == len(rows)
    # The newest sample of every series came back from the blocks: a rewrite is a duplicate.
    last = rows[-1]
    with pytest.raises(DuplicateSample):
        await st.append("default", SampleBatch(series, np.array([last[0]]), np.array([last[1]]), np.array([1e9])))
    await st.stop()


async def test_open_drops_a_compaction_cut_short(tmp_path: Path) -> None:
    st = _store(tmp_path, block_ms=1000)
    await st.start()
    await st.append("default", SampleBatch.from_rows([(UP_A, 10, 1.0)]))
    await st.stop()
    st.db.execute("CREATE TABLE metrics_compact_0 (sid BIGINT, ts BIGINT, val DOUBLE)")
    st.db.close()
    st = _store(tmp_path, block_ms=1000)
    await st.start()
    tables = {r[0] for r in st.db.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert "metrics_compact_0" not in tables
    assert _select(st, "up") == {UP_A: [(10, 1.0)]}
    await st.stop()


async def test_joined_row_ranges_drop_other_series_when_the_selection_is_contiguous(tmp_path: Path) -> None:
    """A metric whose series have consecutive ids, flushed in two runs: joining its two
    row ranges reads the other metric's rows between them, which must not leak into the
    result (they once did, and the merge then indexed past its arrays)."""
    a = [labels_from_dict({"__name__": "a", "i": str(i)}) for i in range(10)]
    b = [labels_from_dict({"__name__": "b", "i": str(i)}) for i in range(10)]
    st = _store(tmp_path, block_ms=10**6)
    await st.start()
    for run in range(2):
        # Far more rows of b in the last run, so the joined range is under half the block.
        n_b = 5 if run == 0 else 200
        rows = [(lb, run * 1000 + t, 1.0) for lb in a for t in range(5)]
        rows += [(lb, run * 1000 + t, 2.0) for lb in b for t in range(n_b)]
        await st.append("default", SampleBatch.from_rows(rows))
        await st.flush()
    sids = np.sort(st.candidate_sids("default", [Matcher.of("=", "__name__", "a")], 0, 10**6))
    first, last = st.blocks.by_start[0].index.spans(sids, max_spans=16, join_gap=1 << 16)
    assert len(first) == 1 and int(last[0] - first[0] + 1) * 2 <= st.blocks.by_start[0].index.rows
    got = _select(st, "a")
    assert set(got) == set(a)
    assert all(len(pts) == 10 for pts in got.values())
    labels, ts, _vals, offsets = st.querier().select_flat([[Matcher.of("=", "__name__", "a")]], 0, 10**6)
    assert sorted(labels) == sorted(a) and len(ts) == 100 and offsets[-1] == 100
    await st.stop()


async def test_reads_account_each_part_and_stop_when_told(tmp_path: Path) -> None:
    """The samples limit is enforced as blocks are read, not after all of them are."""
    st = _store(tmp_path, block_ms=1000)
    await st.start()
    for blk in range(4):
        await st.append("default", SampleBatch.from_rows([(UP_A, blk * 1000 + t, 1.0) for t in range(0, 1000, 10)]))
        await st.flush()
    await st.append("default", SampleBatch.from_rows([(UP_A, 5000, 1.0)]))  # and one in the head
    seen: list[int] = []

    def account(n: int) -> None:
        seen.append(n)
        if sum(seen) > 150:
            raise OverflowError

    with pytest.raises(OverflowError):
        st.querier().select_flat([[Matcher.of("=", "__name__", "up")]], 0, 10**6, account)
    assert seen == [100, 100]
    seen.clear()
    _, ts, _, _ = st.querier().select_flat([[Matcher.of("=", "__name__", "up")]], 0, 10**6, seen.append)
    assert seen == [100, 100, 100, 100, 1] and len(ts) == 401
    await st.stop()
