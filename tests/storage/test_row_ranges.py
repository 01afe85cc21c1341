from __future__ import annotations

import numpy as np

from pitwall.storage.row_ranges import RowRanges, stretches


def _a(*xs: int) -> np.ndarray:
    return np.array(xs, dtype=np.int64)


def test_stretches_of_equal_keys() -> None:
    k, lo, hi = stretches(_a(5, 5, 2, 7, 7, 7, 5), base=10)
    assert k.tolist() == [5, 2, 7, 5]
    assert lo.tolist() == [10, 12, 13, 16]
    assert hi.tolist() == [11, 12, 15, 16]
    assert [len(x) for x in stretches(_a())] == [0, 0, 0]


def test_runs_append_after_the_rows_already_indexed() -> None:
    idx = RowRanges.of_table(_a(3, 3, 1, 2))
    assert not idx.fragmented()
    idx.add_run(_a(2, 3, 3, 9))
    assert idx.rows == 8
    assert idx.fragmented()
    # Entries sorted by key; a key's entries in row order.
    assert idx.keys.tolist() == [1, 2, 2, 3, 3, 9]
    assert list(zip(idx.lo.tolist(), idx.hi.tolist(), strict=True)) == [(2, 2), (3, 3), (4, 4), (0, 1), (5, 6), (7, 7)]
    k, lo, hi = idx.entries(_a(0, 3, 9))
    assert (k.tolist(), lo.tolist(), hi.tolist()) == ([3, 3, 9], [0, 5, 7], [1, 6, 7])
    assert [len(x) for x in idx.entries(_a(4))] == [0, 0, 0]


def test_spans_join_near_ranges_and_respect_the_cap() -> None:
    # Keys 0..9, each in one stretch of 10 rows: key k holds rows [10k, 10k+9].
    idx = RowRanges.of_table(np.repeat(np.arange(10, dtype=np.int64), 10))
    lo, hi = idx.spans(_a(1, 2, 5, 9), max_spans=10, join_gap=0)
    assert list(zip(lo.tolist(), hi.tolist(), strict=True)) == [(10, 29), (50, 59), (90, 99)]
    lo, hi = idx.spans(_a(1, 2, 5, 9), max_spans=10, join_gap=25)
    assert list(zip(lo.tolist(), hi.tolist(), strict=True)) == [(10, 59), (90, 99)]
    # At most two: the widest gap (between 5 and 9) is the one kept.
    lo, hi = idx.spans(_a(1, 3, 5, 9), max_spans=2, join_gap=0)
    assert list(zip(lo.tolist(), hi.tolist(), strict=True)) == [(10, 59), (90, 99)]
    lo, hi = idx.spans(_a(1, 3, 5, 9), max_spans=1, join_gap=0)
    assert list(zip(lo.tolist(), hi.tolist(), strict=True)) == [(10, 99)]
    assert [len(x) for x in idx.spans(_a(42), max_spans=4, join_gap=0)] == [0, 0]


def test_spans_cover_exactly_the_rows_of_the_keys() -> None:
    rng = np.random.default_rng(7)
    idx = RowRanges()
    table: list[int] = []
    for _ in range(5):
        run = np.repeat(rng.permutation(40).astype(np.int64), rng.integers(1, 4, size=40))
        idx.add_run(run)
        table += run.tolist()
    col = np.array(table)
    for _ in range(30):
        keys = np.unique(rng.integers(0, 45, size=int(rng.integers(1, 12))))
        lo, hi = idx.spans(keys, max_spans=1000, join_gap=0)
        rows = np.concatenate([np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)])
        assert sorted(rows.tolist()) == np.flatnonzero(np.isin(col, keys)).tolist()
        capped_lo, capped_hi = idx.spans(keys, max_spans=3, join_gap=5)
        assert len(capped_lo) <= 3
        covered = np.zeros(len(col), dtype=bool)
        for a, b in zip(capped_lo, capped_hi, strict=True):
            covered[a : b + 1] = True
        assert covered[np.isin(col, keys)].all()
