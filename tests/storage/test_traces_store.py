"""The span store: head + WAL replay, flush to blocks, index lookups, compaction, retention."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from pitwall.metrics.model import Exemplar, MetricMetadata, SampleBatch
from pitwall.storage import traces_store
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.traces_store import TraceStore
from pitwall.traces.model import SpanColumns, tkey_of
from pitwall.traces.spanmetrics import CALLS, SpanMetrics

HOUR = 3600 * 10**9
T0 = 1_700_000_000 * 10**9 // HOUR * HOUR


def _batch(traces: list[tuple[str, int]], tenant: str = "default") -> object:
    c = SpanColumns()
    for i, (tid, start) in enumerate(traces):
        c.tkey.append(tkey_of(tid))
        c.trace_id.append(tid)
        c.span_id.append(f"{i + 1:016x}")
        c.parent_id.append("")
        c.service.append("svc")
        c.name.append("op")
        c.kind.append(2)
        c.start_ns.append(start)
        c.duration_ns.append(1000)
        c.status_code.append(0)
        c.status_message.append("")
        c.remote_service.append("")
        c.flags.append(0)
        c.attributes.append("{}")
        c.resource.append("{}")
        c.scope.append("")
        c.events.append("")
        c.links.append("")
    return c.to_table(tenant)


def _store(path: Path, db: TelemetryDB) -> TraceStore:
    return TraceStore(db, path / "wal", block_ns=HOUR, retention_ns=0, fsync=False)


async def test_replay_flush_restart_and_index_lookups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = TelemetryDB(tmp_path / "t.duckdb")
    st = _store(tmp_path, db)
    await st.start()
    ids = [f"{i:032x}" for i in range(1, 41)]
    await st.append("default", _batch([(t, T0 + i * HOUR // 10) for i, t in enumerate(ids)]))
    await st.append("other", _batch([(ids[0], T0)], tenant="other"))
    await st.flush()
    await st.append("default", _batch([(ids[0], T0 + 3 * HOUR)]))  # stays in the head / WAL
    # a crash: no stop(), the WAL holds the unflushed batch
    db.close()
    db = TelemetryDB(tmp_path / "t.duckdb")
    st = _store(tmp_path, db)
    await st.start()
    assert st.block_count() == 4 and st.head_spans == 1
    touched: list[str] = []
    real = traces_store._select_ranges

    def spy(cur: object, table: str, tenant: str, ranges: list[tuple[int, int, int]]) -> object:
        touched.append(table)
        return real(cur, table, tenant, ranges)  # type: ignore[arg-type]

    monkeypatch.setattr(traces_store, "_select_ranges", spy)
    got = st.traces("default", [tkey_of(ids[0])])
    assert got.num_rows == 2 and touched == [f"traces_spans_{T0 // 10**6}"]
    touched.clear()
    assert st.traces("default", [tkey_of(ids[39])]).num_rows == 1 and len(touched) == 1
    assert st.traces("other", [tkey_of(ids[0])]).num_rows == 1
    assert st.traces("default", [tkey_of("f" * 32)]).num_rows == 0
    await st.flush()
    # a trace reaching a block in two runs, around other traces' rows: two exact ranges, one query
    await st.append("default", _batch([(t, T0 + 5) for t in ids[10:20]] + [(ids[1], T0 + HOUR // 10 + 5)]
                                      + [(t, T0 + 6) for t in ids[20:30]]))
    await st.flush()
    touched.clear()
    got = st.traces("default", [tkey_of(ids[1]), tkey_of(ids[12])])
    assert sorted(got.column("trace_id").to_pylist()) == [ids[1], ids[1], ids[12], ids[12]]
    assert sorted(touched) == [f"traces_spans_{T0 // 10**6}", f"traces_spans_{(T0 + HOUR) // 10**6}"]
    db.close()  # a crash again: the index is rebuilt from the block tables alone
    db = TelemetryDB(tmp_path / "t.duckdb")
    st = _store(tmp_path, db)
    await st.start()
    assert st.traces("default", [tkey_of(ids[1])]).num_rows == 2
    assert sorted(st.traces("default", [tkey_of(ids[25])]).column("start_ns").to_pylist()) == [
        T0 + 6, T0 + 25 * HOUR // 10]
    assert st.services("default") == ["svc"] and st.span_names("default", "svc") == ["op"]
    assert st.apply_retention(T0 + 10**6 * HOUR) == []  # retention 0 keeps everything
    st.retention_ns = 2 * HOUR
    dropped = st.apply_retention(T0 + 5 * HOUR)
    assert len(dropped) == 3 and st.block_count() == 1
    await st.stop()
    db.close()


class _Appender:
    """Collects what span metrics append: the latest calls_total per tenant."""

    def __init__(self) -> None:
        self.calls: dict[str, float] = {}

    async def append(self, tenant: str, batch: SampleBatch) -> None:
        for i, v in zip(batch.series_idx.tolist(), batch.values.tolist(), strict=True):
            if dict(batch.series[i])["__name__"] == CALLS:
                self.calls[tenant] = v

    async def append_metadata(self, tenant: str, metadata: Sequence[MetricMetadata]) -> None:
        return None

    async def append_exemplars(self, tenant: str, exemplars: Sequence[Exemplar]) -> None:
        return None


def _metrics_store(path: Path) -> tuple[TraceStore, SpanMetrics, _Appender, TelemetryDB]:
    db = TelemetryDB(path / "t.duckdb")
    st = _store(path, db)
    app = _Appender()
    sm = SpanMetrics(app, buckets_ms=[1.0, 10.0])
    st.derived = sm
    return st, sm, app, db


@pytest.mark.parametrize("flush_between", [False, True])
async def test_span_metrics_count_each_span_once_across_a_crash(tmp_path: Path, flush_between: bool) -> None:
    st, sm, app, db = _metrics_store(tmp_path)
    await st.start()
    ids = [f"{i:032x}" for i in range(1, 10)]
    await st.append("default", _batch([(t, T0) for t in ids[:3]]))
    await sm.flush()
    assert app.calls == {"default": 3.0}
    if flush_between:
        await st.flush()  # the snapshot (3 spans) opens the new WAL segment; the old one is dropped
    await st.append("default", _batch([(t, T0) for t in ids[3:5]]))
    await sm.flush()
    assert app.calls == {"default": 5.0}
    await st.append("default", _batch([(t, T0) for t in ids[5:9]]))  # counted, never appended: then a crash
    db.close()

    st, sm, app, db = _metrics_store(tmp_path)
    await st.start()
    await sm.flush()
    assert app.calls == {"default": 9.0}  # every span once: none lost, none counted twice
    await st.stop()  # a clean stop flushes and snapshots again
    db.close()
    st, sm, app, db = _metrics_store(tmp_path)
    await st.start()
    await sm.flush()
    assert app.calls == {"default": 9.0}
    await st.stop()
    db.close()
