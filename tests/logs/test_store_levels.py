"""The store's detected_level column: data written before it existed still reads, levels split streams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pitwall.core.labels import Matcher
from pitwall.logs.model import Direction, EntryColumns
from pitwall.storage import logs_store
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.logs_store import LogStore

pytestmark = pytest.mark.timeout(30)

S = 10**9
APP = (("app", "a"),)


def _store(path: Path) -> LogStore:
    return LogStore(TelemetryDB(path / "t.duckdb"), path / "wal", fsync=False, block_ns=3600 * S, retention_ns=0)


def test_wal_records_from_before_the_column_replay_without_a_level() -> None:
    old = pa.RecordBatch.from_arrays(
        [pa.array([0], pa.int64()), pa.array([5], pa.int64()), pa.array(["x"]), pa.nulls(1, pa.string()),
         pa.nulls(1, pa.string())], schema=logs_store._SCHEMA_V1)
    tenant, new, batch = logs_store._decode_record(logs_store._encode_record("t", [(0, APP)], old))
    assert (tenant, new) == ("t", [(0, APP)])
    assert batch.schema == logs_store.SCHEMA
    assert batch.column(5).to_pylist() == [None]


async def test_old_blocks_gain_the_column_and_levels_split_streams(tmp_path: Path) -> None:
    db = TelemetryDB(tmp_path / "t.duckdb")
    db.execute("CREATE TABLE logs_entries_0 (sid BIGINT, ts BIGINT, line VARCHAR, metadata VARCHAR, "
               "trace_id VARCHAR)")
    db.execute("CREATE TABLE logs_streams (sid BIGINT PRIMARY KEY, tenant VARCHAR, labels VARCHAR)")
    db.execute("""INSERT INTO logs_streams VALUES (0, 'default', '[["app","a"]]')""")
    db.execute("CREATE TABLE logs_stream_bounds (sid BIGINT, min_ts BIGINT, max_ts BIGINT)")
    db.execute("INSERT INTO logs_stream_bounds VALUES (0, 1, 3)")
    db.execute("INSERT INTO logs_entries_0 VALUES (0, 1, 'old', NULL, NULL)")
    db.close()
    st = _store(tmp_path)
    await st.start()
    try:
        cols = EntryColumns([APP], np.zeros(2, dtype=np.int64), np.asarray([2, 3], dtype=np.int64), ["e", "w"],
                            levels=pa.array(["error", "warn"]))
        res = st.commit("default", cols)
        assert res.fsynced is not None
        await res.fsynced
        await st.flush()
        q = st.querier()
        sel = q.select([Matcher.of("=", "app", "a")], 0, 10, direction=Direction.FORWARD)
        assert [(s.stream_md, s.lines) for s in sel] == [
            ((), ["old"]), ((("detected_level", "error"),), ["e"]), ((("detected_level", "warn"),), ["w"])]
        batch = q.scan([Matcher.of("=", "app", "a")], 0, 10)
        assert batch.stream_md == [(), (("detected_level", "error"),), (("detected_level", "warn"),)]
        assert batch.ts_ns.tolist() == [1, 2, 3] and batch.stream_idx.tolist() == [0, 1, 2]
    finally:
        await st.stop()
