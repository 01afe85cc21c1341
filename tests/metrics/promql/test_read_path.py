"""The vectorised read path: store -> flat samples -> window bounds.

Every fast path is checked against a brute-force answer: the store's flat
read over head chunks and DuckDB blocks (several flushes into one block), the
window bounds on regular, irregular and constant step grids, and the
behaviour fixes made alongside (mad_over_time with NaN, limit_ratio's hash).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pitwall.core.labels import Labels, Matcher, labels_from_dict
from pitwall.metrics.model import STALE_NAN, SampleBatch
from pitwall.metrics.promql import selectors
from pitwall.metrics.promql.aggregations import _ratio_of, xxh64
from pitwall.metrics.promql.range_functions import RANGE_FUNCTIONS
from pitwall.metrics.promql.selectors import Flat, instant_from_flat, range_from_flat
from pitwall.metrics.promql.values import RangeSamples
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore


def _random_flat(rng: np.random.Generator, n_series: int, t_max: int) -> Flat:
    labels: list[Labels] = []
    ts_parts, val_parts = [], []
    for i in range(n_series):
        n = int(rng.integers(0, 40))
        ts = np.unique(rng.integers(0, t_max, n)).astype(np.int64)
        labels.append(labels_from_dict({"__name__": "m", "i": f"{i:03d}"}))
        ts_parts.append(ts)
        val_parts.append(rng.normal(size=len(ts)))
    offsets = np.zeros(n_series + 1, dtype=np.int64)
    np.cumsum([len(t) for t in ts_parts], out=offsets[1:])
    return Flat(labels, np.concatenate(ts_parts), np.concatenate(val_parts), offsets)


def _brute_ends(flat: Flat, times: np.ndarray) -> np.ndarray:
    out = np.zeros((len(flat.labels), len(times)), dtype=np.int64)
    for s in range(len(flat.labels)):
        a, b = int(flat.offsets[s]), int(flat.offsets[s + 1])
        for j, t in enumerate(times.tolist()):
            out[s, j] = a + int(np.count_nonzero(flat.ts[a:b] <= t))
    return out


@pytest.mark.parametrize(
    "times",
    [
        np.arange(0, 3000, 100, dtype=np.int64),  # regular grid, range a multiple of the step
        np.arange(37, 3000, 70, dtype=np.int64),  # regular grid, range not a multiple
        np.array([5, 90, 91, 400, 2999], dtype=np.int64),  # irregular
        np.full(4, 1500, dtype=np.int64),  # constant (@ modifier)
        np.array([1200], dtype=np.int64),  # instant query
    ],
)
def test_window_bounds_match_brute_force(times: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    flat = _random_flat(rng, 25, 3000)
    for range_ms in (300, 1000):
        rs = range_from_flat(flat, times, range_ms, 0, 3000)
        assert np.array_equal(rs.hi, _brute_ends(flat, times))
        assert np.array_equal(rs.lo, _brute_ends(flat, times - range_ms))
    vec, sample_ts = instant_from_flat(flat, times, 500, 0, 3000)
    last = _brute_ends(flat, times) - 1
    for s in range(len(flat.labels)):
        for j, t in enumerate(times.tolist()):
            has = last[s, j] >= flat.offsets[s] and flat.ts[last[s, j]] > t - 500
            assert vec.present[s, j] == has
            if has:
                assert vec.values[s, j] == flat.values[last[s, j]]
                assert sample_ts[s, j] == flat.ts[last[s, j]]


@pytest.mark.skipif(selectors._metricsc is None, reason="C helper not built")
@pytest.mark.parametrize("seed", range(20))
def test_instant_and_range_selectors_in_c_are_the_numpy_answers(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cell, absent ones included (they hold the sample before the series' window); every window bound."""
    rng = np.random.default_rng(seed)
    flat = _random_flat(rng, int(rng.integers(1, 30)), 3000)
    flat.values[rng.random(len(flat.values)) < 0.1] = STALE_NAN
    flat.values[rng.random(len(flat.values)) < 0.05] = np.nan
    times = [np.arange(int(rng.integers(-500, 500)), 3500, int(rng.integers(1, 400)), dtype=np.int64),
             np.sort(rng.integers(-100, 3100, size=int(rng.integers(1, 50)))).astype(np.int64),
             np.array([int(rng.integers(0, 3000))], dtype=np.int64)]
    for eff in times:
        lookback = int(rng.integers(1, 1000))
        got_vec, got_ts = instant_from_flat(flat, eff, lookback, 0, 3000)
        with monkeypatch.context() as m:
            m.setattr(selectors, "_metricsc", None)
            want_vec, want_ts = instant_from_flat(flat, eff, lookback, 0, 3000)
        assert np.array_equal(got_vec.present, want_vec.present)
        assert np.array_equal(got_vec.values.view(np.uint64), want_vec.values.view(np.uint64))
        assert np.array_equal(got_ts, want_ts)
        for range_ms in (1, lookback, 300, int(rng.integers(1, 4000))):
            got_rs = range_from_flat(flat, eff, range_ms, 0, 3000)
            with monkeypatch.context() as m:
                m.setattr(selectors, "_metricsc", None)
                want_rs = range_from_flat(flat, eff, range_ms, 0, 3000)
            assert np.array_equal(got_rs.lo, want_rs.lo) and np.array_equal(got_rs.hi, want_rs.hi)
            assert np.array_equal(got_rs.offsets, want_rs.offsets) and np.array_equal(got_rs.ts, want_rs.ts)


def test_window_bounds_drop_stale_markers() -> None:
    flat = Flat(
        [labels_from_dict({"a": "1"}), labels_from_dict({"a": "2"})],
        np.array([10, 20, 30, 15], dtype=np.int64),
        np.array([1.0, STALE_NAN, 3.0, 4.0]),
        np.array([0, 3, 4], dtype=np.int64),
    )
    rs = range_from_flat(flat, np.array([25, 35], dtype=np.int64), 30, 0, 40)
    assert rs.ts.tolist() == [10, 30, 15]
    assert rs.offsets.tolist() == [0, 2, 3]
    assert rs.lo.tolist() == [[0, 0], [2, 2]]
    assert rs.hi.tolist() == [[1, 2], [3, 3]]


def _store(path: Path) -> MetricStore:
    return MetricStore(TelemetryDB(path / "t.duckdb"), path / "wal", fsync=False, block_ms=1000)


async def test_store_flat_read_matches_samples_across_blocks_and_head(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    rng = np.random.default_rng(3)
    # Series registered in an order unrelated to their label order.
    names = [f"s{int(k):02d}" for k in rng.permutation(30)]
    series: list[Labels] = [labels_from_dict({"__name__": "m", "k": n, "odd": str(i % 2)}) for i, n in enumerate(names)]
    expected: dict[Labels, list[tuple[int, float]]] = {lb: [] for lb in series}
    t = 0
    for rnd in range(12):
        idx, tss, vals = [], [], []
        for i, lb in enumerate(series):
            if rng.random() < 0.3:
                continue  # some series skip some rounds
            for _ in range(int(rng.integers(1, 4))):
                t_i = t + int(rng.integers(1, 100))
                if expected[lb] and t_i <= expected[lb][-1][0]:
                    continue
                v = float(rng.normal())
                expected[lb].append((t_i, v))
                idx.append(i)
                tss.append(t_i)
                vals.append(v)
        order = np.lexsort((np.array(tss), np.array(idx)))
        await st.append("default", SampleBatch(
            series, np.array(idx, dtype=np.int64)[order], np.array(tss, dtype=np.int64)[order], np.array(vals)[order]
        ))
        t += 130  # several rounds per 1 s block, so blocks get several flushes
        if rnd % 3 == 2 and rnd < 11:
            await st.flush()
    assert st.blocks.by_start and st.head.chunks  # data both in DuckDB blocks and in the head
    q = st.querier()
    for start, end in [(0, 10**6), (250, 900), (1000, 1000), (1, 3)]:
        for matchers in ([Matcher.of("=", "__name__", "m")], [Matcher.of("=", "odd", "1")]):
            want = {
                lb: [(ts, v) for ts, v in pts if start <= ts <= end]
                for lb, pts in expected.items()
                if all(m.matches(dict(lb).get(m.name, "")) for m in matchers)
            }
            want = {lb: pts for lb, pts in want.items() if pts}
            labels, ts, vals, offsets = q.select_flat([matchers], start, end)
            assert labels == sorted(want)
            got = {
                lb: list(zip(ts[a:b].tolist(), vals[a:b].tolist(), strict=True))
                for lb, a, b in zip(labels, offsets[:-1].tolist(), offsets[1:].tolist(), strict=True)
            }
            assert got == want
            by_select = {s.labels: list(zip(s.ts.tolist(), s.values.tolist(), strict=True))
                         for s in q.select(matchers, start, end)}
            assert by_select == want
    # Two matcher sets: the union, each series once.
    labels, _, _, _ = q.select_flat([[Matcher.of("=", "odd", "1")], [Matcher.of("=", "__name__", "m")]], 0, 10**6)
    assert labels == sorted(lb for lb, pts in expected.items() if pts)
    await st.stop()


def _rs(values: list[float], step_times: list[int], range_ms: int) -> RangeSamples:
    ts = np.arange(len(values), dtype=np.int64) * 10_000
    flat = Flat([labels_from_dict({"a": "b"})], ts, np.array(values), np.array([0, len(values)], dtype=np.int64))
    return range_from_flat(flat, np.array(step_times, dtype=np.int64), range_ms, 0, 10**6)


def test_mad_over_time_is_nan_when_the_window_holds_nan() -> None:
    # functions.test: metric_nan 1 2 NaN 4; mad_over_time(metric_nan[40s]) at 30s is NaN.
    rs = _rs([1, 2, float("nan"), 4, 5, 6, 7], [30_000, 50_000, 65_000], 40_000)
    out, present = RANGE_FUNCTIONS["mad_over_time"](rs, [], lambda _m: None, lambda _m: None)
    assert present.tolist() == [[True, True, True]]
    assert np.isnan(out[0, 0]) and np.isnan(out[0, 1])  # windows hold the NaN at 20s
    assert out[0, 2] == 1.0  # (25s, 65s]: 4 5 6 7 -> median 5.5, deviations 1.5 .5 .5 1.5


def test_xxh64_and_limit_ratio_offsets() -> None:
    assert xxh64(b"") == 0xEF46DB3751D8E999
    assert xxh64(b"a") == 0xD24EC4F1A98C6E5B
    assert xxh64(b"abc") == 0x44BC2CF5AD770999
    assert xxh64(b"Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1
    long = bytes(range(256)) * 3
    assert xxh64(long) == xxh64(long[:400] + long[400:])
    lb = labels_from_dict({"__name__": "up", "job": "a"})
    assert _ratio_of(lb) == xxh64(b"__name__\xffup\xffjob\xffa\xff") / 2.0**64
