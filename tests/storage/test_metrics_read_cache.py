"""The block series cache (``storage.metrics.readcache``): answers as without it, and never stale."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pitwall.core.labels import Labels, Matcher, labels_from_dict
from pitwall.metrics.model import SampleBatch
from pitwall.metrics.store import WouldBlock
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore
from pitwall.storage.metrics.readcache import BlockSeriesCache

pytestmark = pytest.mark.timeout(120)

UP_A: Labels = (("__name__", "up"), ("instance", "a"))
UP: list[Matcher] = [Matcher.of("=", "__name__", "up")]


def _store(path: Path, **kw: object) -> MetricStore:
    path.mkdir(parents=True, exist_ok=True)
    return MetricStore(TelemetryDB(path / "t.duckdb"), path / "wal", fsync=False, **kw)  # type: ignore[arg-type]


def _points(st: MetricStore, matchers: list[Matcher], start: int = 0, end: int = 10**12,
            tenant: str = "default") -> dict[Labels, list[tuple[int, float]]]:
    return {s.labels: list(zip(s.ts.tolist(), s.values.tolist(), strict=True))
            for s in st.querier(tenant).select(matchers, start, end)}


async def test_cached_reads_answer_as_uncached_ones(tmp_path: Path) -> None:
    series = [labels_from_dict({"__name__": f"m{i % 3}", "i": str(i)}) for i in range(100)]
    rng = np.random.default_rng(5)
    stores = [_store(tmp_path / "plain", block_ms=1000, read_cache_samples=0),
              _store(tmp_path / "cached", block_ms=1000)]
    for st in stores:
        await st.start()
    for t in range(0, 3000, 50):  # three blocks, several flushed runs each, some series skipping steps
        keep = [k for k in range(len(series)) if rng.random() > 0.3]
        batch = SampleBatch(series, np.array(keep), np.full(len(keep), t), rng.normal(size=len(keep)))
        for st in stores:
            await st.append("default", batch)
            if t % 400 == 350:
                await st.flush()
    for st in stores:
        await st.flush()
    selections = [[Matcher.of("=", "i", str(i))] for i in range(5)] + [
        [Matcher.of("=", "__name__", "m1")], [Matcher.of("=~", "i", "1.")], [Matcher.of("=~", "i", ".*")]]
    for _ in range(2):  # the second round answers the small selections from the cache
        for ms in selections:
            for start, end in [(0, 10**6), (420, 2210), (1000, 1999), (999, 1000), (2990, 5000)]:
                assert _points(stores[1], ms, start, end) == _points(stores[0], ms, start, end), (ms, start, end)
    assert stores[1].blocks.cache.hits and not stores[0].blocks.cache.hits
    for st in stores:
        await st.stop()


async def test_a_flush_into_a_cached_block_is_seen(tmp_path: Path) -> None:
    st = _store(tmp_path, block_ms=10_000)
    await st.start()
    await st.append("default", SampleBatch.from_rows([(UP_A, t, 1.0) for t in range(0, 3000, 1000)]))
    await st.flush()
    assert len(_points(st, UP)[UP_A]) == 3  # now cached
    await st.append("default", SampleBatch.from_rows([(UP_A, t, 2.0) for t in range(3000, 6000, 1000)]))
    await st.flush()  # a second run into the same block
    assert _points(st, UP)[UP_A] == [(t, 1.0 if t < 3000 else 2.0) for t in range(0, 6000, 1000)]
    await st.stop()


async def test_retention_and_compaction_free_the_entries_of_their_tables(tmp_path: Path) -> None:
    st = _store(tmp_path, block_ms=1000, retention_ms=2000)
    await st.start()
    for blk in range(3):
        await st.append("default", SampleBatch.from_rows([(UP_A, blk * 1000 + t, float(blk)) for t in (0, 500)]))
        await st.flush()
    _points(st, UP)
    assert st.blocks.cache.samples == 6
    assert st.apply_retention(now_ms=3500) == ["metrics_samples_0"]
    assert st.blocks.cache.samples == 4
    assert _points(st, UP)[UP_A] == [(1000, 1.0), (1500, 1.0), (2000, 2.0), (2500, 2.0)]
    await st.stop()


async def test_compaction_replaces_a_cached_block(tmp_path: Path) -> None:
    st = _store(tmp_path, block_ms=1000)
    await st.start()
    for t in (0, 300, 600):  # three runs into one block
        await st.append("default", SampleBatch.from_rows([(UP_A, t, float(t))]))
        await st.flush()
    before = _points(st, UP)
    assert st.blocks.cache.samples == 3
    assert st.compact(now_ms=10**6) == ["metrics_samples_0"]
    assert st.blocks.cache.samples == 0  # the old generation's entries went with it
    assert _points(st, UP) == before
    await st.stop()


async def test_tenants_with_the_same_labels_read_their_own_samples(tmp_path: Path) -> None:
    st = _store(tmp_path, block_ms=10_000)
    await st.start()
    await st.append("a", SampleBatch.from_rows([(UP_A, 1000, 1.0)]))
    await st.append("b", SampleBatch.from_rows([(UP_A, 1000, 2.0)]))
    await st.flush()
    for _ in range(2):
        assert _points(st, UP, tenant="a") == {UP_A: [(1000, 1.0)]}
        assert _points(st, UP, tenant="b") == {UP_A: [(1000, 2.0)]}
    await st.stop()


async def test_a_nonblocking_read_of_blocks_answers_only_from_the_cache(tmp_path: Path) -> None:
    st = _store(tmp_path, block_ms=10_000)
    await st.start()
    await st.append("default", SampleBatch.from_rows([(UP_A, t, 1.0) for t in range(0, 3000, 1000)]))
    await st.flush()
    await st.append("default", SampleBatch.from_rows([(UP_A, 3000, 2.0)]))  # and one in the head
    q = st.nonblocking_querier("default", 10, 1000)
    with pytest.raises(WouldBlock):
        q.select(UP, 0, 10**6)
    _points(st, UP)  # a blocking read fills the cache
    got = st.nonblocking_querier("default", 10, 1000).select(UP, 0, 10**6)
    assert [(lb, s.ts.tolist()) for lb, s in [(s.labels, s) for s in got]] == [(UP_A, [0, 1000, 2000, 3000])]
    await st.stop()


def test_the_cache_keeps_at_most_its_samples_dropping_the_least_recently_used() -> None:
    c = BlockSeriesCache(max_samples=10)
    c.put(("t", 0, 1, 1), np.arange(4), np.zeros(4))
    c.put(("t", 0, 1, 2), np.arange(4), np.zeros(4))
    assert c.get(("t", 0, 1, 1)) is not None  # 1 is now the most recent
    c.put(("u", 0, 1, 3), np.arange(4), np.zeros(4))
    assert c.get(("t", 0, 1, 2)) is None and c.get(("t", 0, 1, 1)) is not None and c.samples == 8
    c.put(("big", 0, 1, 4), np.arange(11), np.zeros(11))  # more than the whole cache: not kept
    assert c.get(("big", 0, 1, 4)) is None and c.samples == 8
    c.drop_table("t")
    assert c.samples == 4 and len(c) == 1
    ts, _ = c.get(("u", 0, 1, 3)) or (None, None)
    assert ts is not None and not ts.flags.writeable
