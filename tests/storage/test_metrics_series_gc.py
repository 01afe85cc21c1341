"""Series whose samples retention dropped leave the store's index at once, not at the next restart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitwall.core.labels import Labels
from pitwall.metrics.model import SampleBatch
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore

pytestmark = pytest.mark.timeout(60)


def _up(instance: str) -> Labels:
    return (("__name__", "up"), ("instance", instance), ("zone", f"z-{instance}"))


A, B, C = _up("a"), _up("b"), _up("c")
ALL = (0, 10**12)


def _store(path: Path, **kw: Any) -> MetricStore:
    return MetricStore(TelemetryDB(path / "t.duckdb"), path / "wal", fsync=False, block_ms=10_000,
                       retention_ms=10_000, **kw)


async def _three_blocks(st: MetricStore) -> None:
    """A only in block 0, B in blocks 0 and 1, C in block 2 (flushed); then D in the head only."""
    rows = [(A, t, 1.0) for t in range(0, 10_000, 1000)] + [(B, t, 2.0) for t in range(5000, 15_000, 1000)]
    rows += [(C, t, 3.0) for t in range(20_000, 25_000, 1000)]
    await st.append("default", SampleBatch.from_rows(rows))
    await st.flush()


async def test_retention_forgets_series_left_without_samples(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    await _three_blocks(st)
    q = st.querier()
    sid_a = st.lookup("default", A)
    assert sid_a is not None
    assert q.label_values("instance", [], *ALL) == ["a", "b", "c"]
    assert st.apply_retention(now_ms=20_000) == ["metrics_samples_0"]
    assert await st.forget_expired_series() == 1
    # The series and label value endpoints' reads no longer see A, over any time range.
    assert q.label_values("instance", [], *ALL) == ["b", "c"]
    assert q.label_values("zone", [], *ALL) == ["z-b", "z-c"]
    assert sorted(q.series([], *ALL)) == [B, C]
    assert st.num_series("default") == 2 and st.num_series() == 2
    # ...and its memory is released: no label set, no postings, no label-map entry.
    index = st.tenant_index("default")
    assert index is not None and len(index) == 2
    assert index.values("instance") == ["b", "c"] and "z-a" not in index.values("zone")
    assert st.lookup("default", A) is None and st.series_labels([sid_a]) == [()]
    assert await st.forget_expired_series() == 0
    await st.stop()


async def test_a_forgotten_series_stays_gone_after_restart_and_its_id_is_not_reused(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    await _three_blocks(st)
    st.apply_retention(now_ms=20_000)
    await st.forget_expired_series()
    await st.append("default", SampleBatch.from_rows([(A, 30_000, 9.0)]))  # A again: a new series
    await st.flush()
    await st.stop()
    st.db.close()
    st = _store(tmp_path)
    await st.start()
    assert st.lookup("default", A) == 3  # ids 0-2 were A (gone), B, C
    assert sorted(st.querier().series([], *ALL)) == [A, B, C]
    await st.append("default", SampleBatch.from_rows([(_up("d"), 30_000, 1.0)]))
    assert st.lookup("default", _up("d")) == 4
    await st.stop()


async def test_series_left_over_by_a_restart_are_forgotten_by_the_next_pass(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    await _three_blocks(st)
    st.apply_retention(now_ms=20_000)  # the blocks go, the process stops before forgetting A
    await st.stop()
    st.db.close()
    st = _store(tmp_path)
    await st.start()
    assert st._gone_pending
    assert await st.forget_expired_series() == 1
    assert st.querier().label_values("instance", [], *ALL) == ["b", "c"]
    await st.stop()


async def test_series_with_samples_in_the_head_are_kept(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    await _three_blocks(st)
    # A late new series with old samples, still in the head: its samples are readable, it stays.
    await st.append("default", SampleBatch.from_rows([(_up("late"), 1000, 5.0)]))
    await st.flush()  # registers it in the catalog, writes block 0 again
    await st.append("default", SampleBatch.from_rows([(_up("late"), 2000, 6.0)]))
    st.apply_retention(now_ms=20_000)
    assert await st.forget_expired_series() == 1  # A only
    assert st.lookup("default", _up("late")) is not None
    await st.stop()


async def test_the_http_api_stops_listing_series_retention_dropped(client: httpx.AsyncClient) -> None:
    store = client.app.state.components.metrics.store  # type: ignore[attr-defined]
    now = int(time.time() * 1000)
    old = now - 3 * 86_400_000
    await store.append("default", SampleBatch.from_rows([(A, old, 1.0), (B, old, 1.0), (B, now, 2.0)]))
    await store.flush()
    every = {"start": (old - 60_000) / 1000, "end": (now + 60_000) / 1000}

    async def listed() -> tuple[list[str], list[str]]:
        values = (await client.get("/api/v1/label/instance/values", params=every)).json()["data"]
        series = (await client.get("/api/v1/series", params={"match[]": "up", **every})).json()["data"]
        return values, sorted(s["instance"] for s in series)

    assert await listed() == (["a", "b"], ["a", "b"])
    store.retention_ms = 86_400_000
    assert store.apply_retention(now) and await store.forget_expired_series() == 1
    assert await listed() == (["b"], ["b"])
