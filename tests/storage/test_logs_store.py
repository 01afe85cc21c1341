"""The log store: filters pushed into DuckDB, Loki's limit/direction semantics, ordering policy, durability."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from pitwall.core.errors import BadData
from pitwall.core.labels import Matcher
from pitwall.logs.model import Direction, EntryColumns, LineFilter, LineFilterOp, LogEntry, PushStream
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.logs_store import LogStore, OutOfOrderPolicy

S = 10**9
A = (("app", "a"), ("env", "prod"))
B = (("app", "b"), ("env", "prod"))
C = (("app", "c"), ("env", "dev"))


def _store(path: Path, **kw: object) -> LogStore:
    path.mkdir(parents=True, exist_ok=True)
    return LogStore(TelemetryDB(path / "t.duckdb"), path / "wal", fsync=False, block_ns=3600 * S,
                    retention_ns=0, **kw)  # type: ignore[arg-type]


async def _fill(store: LogStore) -> None:
    await store.push("default", [
        PushStream(A, [LogEntry(1 * S, "GET /a 200"), LogEntry(3 * S, "GET /a 500 error"),
                       LogEntry(5 * S, "Error: boom", (("trace_id", "t1"),))]),
        PushStream(B, [LogEntry(2 * S, "b error"), LogEntry(4 * S, "b fine")]),
        PushStream(C, [LogEntry(2 * S, "dev error")]),
    ])


@pytest.fixture
async def store(tmp_path: Path) -> LogStore:
    st = _store(tmp_path)
    await st.start()
    await _fill(st)
    yield st  # type: ignore[misc]
    await st.stop()
    st.db.close()


PROD = [Matcher.of("=", "env", "prod")]


def _flat(streams: list) -> list[tuple[int, str]]:  # type: ignore[type-arg]
    return sorted((int(t), ln) for s in streams for t, ln in zip(s.ts_ns.tolist(), s.lines, strict=True))


@pytest.mark.parametrize("flush", [False, True])
async def test_select_filters_limit_direction(store: LogStore, flush: bool) -> None:
    if flush:
        await store.flush()
        assert store.disk_blocks() and not store.head_bytes
    q = store.querier()
    got = q.select(PROD, 0, 10 * S, filters=[LineFilter(LineFilterOp.CONTAINS, "error")])
    assert _flat(got) == [(2 * S, "b error"), (3 * S, "GET /a 500 error")]
    # Go regexps are RE2: unanchored, (?i) flags.
    got = q.select(PROD, 0, 10 * S, filters=[LineFilter(LineFilterOp.REGEX, "(?i)^error")])
    assert _flat(got) == [(5 * S, "Error: boom")]
    got = q.select(PROD, 0, 10 * S, filters=[LineFilter(LineFilterOp.NOT_REGEX, "[0-9]{3}"),
                                             LineFilter(LineFilterOp.NOT_CONTAINS, "fine")])
    assert _flat(got) == [(2 * S, "b error"), (5 * S, "Error: boom")]
    newest = q.select(PROD, 0, 10 * S, limit=2, direction=Direction.BACKWARD)
    assert _flat(newest) == [(4 * S, "b fine"), (5 * S, "Error: boom")]
    oldest = q.select(PROD, 0, 10 * S, limit=2, direction=Direction.FORWARD)
    assert _flat(oldest) == [(1 * S, "GET /a 200"), (2 * S, "b error")]
    (a,) = [s for s in q.select(PROD, 0, 10 * S, direction=Direction.BACKWARD) if s.labels == A]
    assert a.ts_ns.tolist() == [5 * S, 3 * S, 1 * S]
    assert a.metadata[0] == (("trace_id", "t1"),)
    # start inclusive, end exclusive
    assert _flat(q.select(PROD, 2 * S, 4 * S)) == [(2 * S, "b error"), (3 * S, "GET /a 500 error")]


async def test_scan_is_columnar_and_sorted_by_stream_then_time(store: LogStore) -> None:
    batch = store.querier().scan(PROD, 0, 10 * S, with_metadata=True)
    assert [batch.streams[i] for i in batch.stream_idx.tolist()] == [A, A, A, B, B]
    assert batch.ts_ns.tolist() == [1 * S, 3 * S, 5 * S, 2 * S, 4 * S]
    assert batch.line_bytes.tolist() == [len(x.encode()) for x in batch.lines or []]
    assert batch.metadata is not None and batch.metadata[2] == (("trace_id", "t1"),)
    none = store.querier().scan(PROD, 0, 10 * S, filters=[LineFilter(LineFilterOp.CONTAINS, "zzz")],
                                with_lines=False)
    assert len(none) == 0 and none.lines is None


async def test_labels_series_stats_and_tenants(store: LogStore) -> None:
    q = store.querier()
    assert q.label_names(0, 10 * S) == ["app", "env"]
    assert q.label_values("app", PROD, 0, 10 * S) == ["a", "b"]
    assert sorted(q.series([Matcher.of("=~", "app", "a|c")], 0, 10 * S)) == [A, C]
    assert q.series([], 6 * S, 10 * S) == []  # no stream has entries then
    assert q.stats(PROD, 0, 10 * S) == {"streams": 2, "chunks": 2, "bytes": sum(
        len(x) for x in ["GET /a 200", "GET /a 500 error", "Error: boom", "b error", "b fine"]), "entries": 5}
    assert store.querier("other").select(PROD, 0, 10 * S) == []


async def test_invalid_regex_is_bad_data(store: LogStore) -> None:
    with pytest.raises(BadData, match="invalid line filter"):
        store.querier().select(PROD, 0, 10 * S, filters=[LineFilter(LineFilterOp.REGEX, "(")])


async def test_out_of_order_window_and_strict(tmp_path: Path) -> None:
    st = _store(tmp_path / "w", out_of_order=OutOfOrderPolicy("window", 10 * S))
    await st.start()
    await st.push("default", [PushStream(A, [LogEntry(100 * S, "new")])])
    res = st.commit("default", EntryColumns([A], np.zeros(3, dtype=np.int64),
                                            np.array([95 * S, 80 * S, 101 * S]), ["in", "behind", "newer"]))
    await res.fsynced  # type: ignore[misc]
    assert res.accepted == 2 and res.keep is not None and res.keep.tolist() == [True, False, True]
    assert "entry too far behind" in res.errors[0]
    await st.stop()
    strict = _store(tmp_path / "s", out_of_order=OutOfOrderPolicy("strict", 0))
    await strict.start()
    res = strict.commit("default", EntryColumns([A], np.zeros(3, dtype=np.int64),
                                                np.array([10 * S, 9 * S, 10 * S]), ["a", "b", "c"]))
    assert res.keep is not None and res.keep.tolist() == [True, False, True]
    assert "entry out of order" in res.errors[0]
    await strict.stop()


async def test_refused_new_streams_keep_ids_dense(tmp_path: Path) -> None:
    st = _store(tmp_path, out_of_order=OutOfOrderPolicy("strict", 0))
    await st.start()
    await st.push("default", [PushStream(A, [LogEntry(10 * S, "a")])])
    cols = EntryColumns([A, B, C], np.array([0, 1, 2]), np.array([5 * S, 5 * S, 5 * S]), ["old", "b", "c"])
    res = st.commit("default", cols)
    assert res.accepted == 2
    assert st.num_streams() == 3 and st.labels_of(1) == B and st.labels_of(2) == C
    await st.stop()


async def test_restart_replays_wal_and_reads_blocks(tmp_path: Path) -> None:
    st = _store(tmp_path)
    await st.start()
    await _fill(st)
    await st.flush()
    await st.push("default", [PushStream(A, [LogEntry(6 * S, "after flush")])])
    # no stop(): the second part lives only in the WAL, as after a crash
    await st.wal.close()
    st.db.close()
    again = _store(tmp_path)
    await again.start()
    got = _flat(again.querier().select([Matcher.of("=", "app", "a")], 0, 10 * S))
    assert got == [(1 * S, "GET /a 200"), (3 * S, "GET /a 500 error"), (5 * S, "Error: boom"), (6 * S, "after flush")]
    assert again.num_streams() == 3
    await again.push("default", [PushStream((("app", "z"),), [LogEntry(7 * S, "z")])])
    assert again.labels_of(3) == (("app", "z"),)
    await again.stop()
    again.db.close()


async def test_retention_drops_whole_blocks(tmp_path: Path) -> None:
    st = LogStore(TelemetryDB(tmp_path / "t.duckdb"), tmp_path / "wal", fsync=False, block_ns=3600 * S,
                  retention_ns=3600 * S)
    await st.start()
    await st.push("default", [PushStream(A, [LogEntry(10 * S, "old"), LogEntry(3 * 3600 * S, "new")])])
    await st.flush()
    assert len(st.disk_blocks()) == 2
    st.retention_ns = 0
    assert await asyncio.to_thread(st.apply_retention, 10**6 * 3600 * S) == []
    st.retention_ns = 3600 * S
    dropped = await asyncio.to_thread(st.apply_retention, 3 * 3600 * S + 10 * S)
    assert dropped == ["logs_entries_0"]
    assert _flat(st.querier().select([Matcher.of("=", "app", "a")], 0, 4 * 3600 * S)) == [(3 * 3600 * S, "new")]
    await st.stop()


async def test_listener_sees_committed_batches(store: LogStore) -> None:
    seen: list[int] = []
    unsubscribe = store.add_listener(lambda tenant, labels, batch: seen.append(batch.num_rows))
    await store.push("default", [PushStream(A, [LogEntry(9 * S, "x"), LogEntry(9 * S + 1, "y")])])
    unsubscribe()
    await store.push("default", [PushStream(A, [LogEntry(9 * S + 2, "z")])])
    assert seen == [2]


@pytest.mark.parametrize("flush", [False, True])
@pytest.mark.parametrize("direction", [Direction.BACKWARD, Direction.FORWARD])
async def test_limited_select_reads_from_the_wanted_end_first(
    tmp_path: Path, flush: bool, direction: Direction, monkeypatch: pytest.MonkeyPatch
) -> None:
    st = _store(tmp_path)
    await st.start()
    try:
        # 3 streams, 2000 entries each over 2000 s; every 7th line matches "needle"
        await st.push("default", [
            PushStream(lbl, [LogEntry(t * S + k, f"{lbl[0][1]} {t} {'needle' if t % 7 == 0 else 'hay'}")
                             for t in range(2000)])
            for k, lbl in enumerate((A, B, C))
        ])
        if flush:
            await st.flush()
        q = st.querier()
        ranges: list[tuple[int, int]] = []
        orig = LogStore.query

        def spy(self: LogStore, sids: np.ndarray, start: int, end: int, *a: object, **kw: object) -> object:
            ranges.append((start, end))
            return orig(self, sids, start, end, *a, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(LogStore, "query", spy)
        for filters in ([], [LineFilter(LineFilterOp.CONTAINS, "needle")]):
            for limit in (1, 50, 700, 5000):
                ranges.clear()
                got = q.select(PROD, 0, 2000 * S, filters=filters, direction=direction, limit=limit)
                scanned = sum(b - a for a, b in ranges)
                full = q.select(PROD, 0, 2000 * S, filters=filters, direction=direction)
                rows = sorted(((int(t), ln) for s in full for t, ln in zip(s.ts_ns.tolist(), s.lines, strict=True)),
                              reverse=direction is Direction.BACKWARD)
                assert sorted(_flat(got)) == sorted(rows[:limit])
                if limit <= 50:  # stopped early: read only part of the range
                    assert scanned < 2000 * S // 4
                # each stream's entries come in direction order
                for s in got:
                    ts = s.ts_ns.tolist()
                    assert ts == sorted(ts, reverse=direction is Direction.BACKWARD)
    finally:
        await st.stop()
        st.db.close()


def test_stream_order_of_flush_runs_and_of_any_rows() -> None:
    from pitwall.storage.logs_store import _stream_order

    def rows(sid: np.ndarray, ts: np.ndarray) -> list[tuple[int, int]]:
        return list(zip(sid.tolist(), ts.tolist(), strict=True))

    # two flushes, each sorted by (sid, ts), the second later in time: the stable sort by stream suffices
    sid = np.array([0, 0, 1, 2, 0, 1, 1, 2], dtype=np.int64)
    ts = np.array([1, 2, 1, 1, 5, 6, 7, 3], dtype=np.int64)
    order = _stream_order(sid, ts, None)
    assert order is not None and rows(sid[order], ts[order]) == sorted(rows(sid, ts))
    # rows of a stream out of time order (not what blocks hold, yet handled): the full sort
    ts2 = np.array([9, 2, 1, 1, 5, 6, 7, 3], dtype=np.int64)
    order = _stream_order(sid, ts2, None)
    assert order is not None and rows(sid[order], ts2[order]) == sorted(rows(sid, ts2))
    assert _stream_order(np.sort(sid), np.arange(8), None) is None
