"""The embedded log store: WAL + in-memory Arrow head + DuckDB time blocks.

Writes: ``commit`` resolves streams, applies Loki's out-of-order policy,
appends one Arrow record batch to the head and queues one WAL record, all
without yielding to the event loop, then the caller awaits the group fsync.
Reads: one SQL statement over the head (registered as an Arrow table) and
the block tables (``logs_entries_<block start ns>``) overlapping the range,
with stream ids, time bounds and line filters pushed into DuckDB
(``contains`` / RE2 ``regexp_matches``, the same engine family as Go's
regexp). Retention drops whole block tables.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from pitwall.core.arrow_compute import pc
from pitwall.core.errors import BadData, Overloaded
from pitwall.core.labels import format_labels
from pitwall.core.tasks import Supervisor
from pitwall.core.wal import Wal
from pitwall.logs.errors import StreamLimitExceeded
from pitwall.logs.model import (
    LEVEL_LABEL,
    ArrowLines,
    CommitResult,
    Direction,
    EntryColumns,
    Labels,
    LineFilter,
    LineFilterOp,
    LogBatch,
    LogStream,
    Matcher,
    Metadata,
    PushStream,
    decode_metadata,
    encode_metadata,
    next_window_width,
    ns_to_rfc3339,
)
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.retention import expired_blocks
from pitwall.storage.series_index import SeriesIndex

log = logging.getLogger(__name__)

REC_ENTRIES = 1
_SMALL_BATCH_ROWS = 8192  # head batches below this are merged 64 at a time
_FIRST_WINDOW_DIV = 64  # limited selects read 1/64 of the range first, then wider windows

_I64_MIN = int(np.iinfo(np.int64).min)
_I64_MAX = int(np.iinfo(np.int64).max)

SCHEMA = pa.schema([
    ("sid", pa.int64()),
    ("ts", pa.int64()),
    ("line", pa.string()),
    ("metadata", pa.string()),  # JSON [[k, v], ...] or null
    ("trace_id", pa.string()),  # copied out of the metadata so trace lookups are a column scan
    # Loki's detected_level: structured metadata, kept as its own column because every entry has one
    # and few values exist (dictionary-compressed; queries split streams by it instead of decoding JSON).
    ("detected_level", pa.string()),
])
# WAL records written before detected_level existed.
_SCHEMA_V1 = pa.schema(list(SCHEMA)[:5])


@dataclass
class OutOfOrderPolicy:
    """Loki's ordering rules: ``window`` (unordered writes within a window) or ``strict``."""

    mode: str = "window"
    window_ns: int = 3_600 * 10**9


@dataclass
class _Tenant:
    index: SeriesIndex = field(default_factory=SeriesIndex)
    by_labels: dict[Labels, int] = field(default_factory=dict)


def _encode_labels(labels: Labels) -> str:
    return json.dumps(labels, separators=(",", ":"))


def _decode_labels(raw: str) -> Labels:
    return tuple((k, v) for k, v in json.loads(raw))


def _trace_id(md: Metadata) -> str | None:
    for k, v in md:
        if k == "trace_id":
            return v
    return None


class LogStore:
    """Durable, queryable log storage for all tenants of one server."""

    name = "logs-store"

    def __init__(
        self,
        db: TelemetryDB,
        wal_dir: Path,
        *,
        block_ns: int = 2 * 3600 * 10**9,
        retention_ns: int = 15 * 86400 * 10**9,
        head_max_bytes: int = 64 << 20,
        head_max_age_s: float = 300.0,
        max_streams_per_tenant: int = 100_000,
        out_of_order: OutOfOrderPolicy | None = None,
        fsync: bool = True,
    ) -> None:
        self.db = db
        self.wal = Wal(wal_dir, fsync=fsync)
        self.wal_keep: Callable[[], int] | None = None  # the oldest WAL segment a reader (forwarder) still needs
        self.block_ns = block_ns
        self.retention_ns = retention_ns
        self.head_max_bytes = head_max_bytes
        self.head_max_age_s = head_max_age_s
        self.max_streams_per_tenant = max_streams_per_tenant
        self.policy = out_of_order or OutOfOrderPolicy()
        self._tenants: dict[str, _Tenant] = {}
        self._labels: list[Labels] = []
        self._tenant_of: list[str] = []
        cap = 1024
        self._min_ts = np.full(cap, _I64_MAX, dtype=np.int64)
        self._max_ts = np.full(cap, _I64_MIN, dtype=np.int64)
        self._head: list[pa.RecordBatch] = []
        self._frozen = 0  # head[:frozen] is being flushed
        self._head_lock = threading.Lock()
        self._head_bytes = 0
        self._head_since = time.monotonic()
        self._flushed_sids = 0
        self._blocks: dict[int, str] = {}
        self._flush_task: asyncio.Task[None] | None = None
        self.tasks = Supervisor("logs-store")
        self._listeners: list[Callable[[str, list[Labels], pa.RecordBatch], None]] = []
        self.entries_appended = 0
        self.bytes_appended = 0

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._open)
        self.wal.open_for_append()
        self.tasks.spawn(self._maintenance_loop(), name="maintenance")

    async def stop(self) -> None:
        await self.tasks.stop()
        if self._flush_task is not None:
            await self._flush_task
        await self.flush()
        await self.wal.close()

    def _open(self) -> None:
        db = self.db
        db.execute("CREATE TABLE IF NOT EXISTS logs_streams (sid BIGINT PRIMARY KEY, tenant VARCHAR, labels VARCHAR)")
        db.execute("CREATE TABLE IF NOT EXISTS logs_meta (key VARCHAR PRIMARY KEY, value BIGINT)")
        db.execute("CREATE TABLE IF NOT EXISTS logs_stream_bounds (sid BIGINT, min_ts BIGINT, max_ts BIGINT)")
        for sid, tenant, raw in db.execute("SELECT sid, tenant, labels FROM logs_streams ORDER BY sid").fetchall():
            self._register(int(sid), tenant, _decode_labels(raw))
        self._flushed_sids = len(self._labels)
        res = db.execute("SELECT sid, min_ts, max_ts FROM logs_stream_bounds").fetchnumpy()
        if len(res["sid"]):
            sid = res["sid"].astype(np.int64)
            self._min_ts[sid] = res["min_ts"].astype(np.int64)
            self._max_ts[sid] = res["max_ts"].astype(np.int64)
        for (tname,) in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'logs_entries_%'"
        ).fetchall():
            self._blocks[int(tname.rsplit("_", 1)[1])] = tname
            # Blocks written before detected_level existed get the column (null: no level).
            db.execute(f"ALTER TABLE {tname} ADD COLUMN IF NOT EXISTS detected_level VARCHAR")
        got = db.scalar("SELECT value FROM logs_meta WHERE key = 'wal_replay_from'")
        n = 0
        for rec in self.wal.replay(int(got or 0)):
            if rec.type == REC_ENTRIES:
                self._apply_record(rec.payload)
                n += 1
        log.info("logs store opened", extra={"streams": len(self._labels), "wal_records": n})

    # -- stream registry -------------------------------------------------------

    def _tenant(self, tenant: str) -> _Tenant:
        t = self._tenants.get(tenant)
        if t is None:
            t = self._tenants[tenant] = _Tenant()
        return t

    def _grow(self, n: int) -> None:
        cap = len(self._min_ts)
        if n <= cap:
            return
        new = max(n, cap * 2)
        self._min_ts = np.concatenate([self._min_ts, np.full(new - cap, _I64_MAX, dtype=np.int64)])
        self._max_ts = np.concatenate([self._max_ts, np.full(new - cap, _I64_MIN, dtype=np.int64)])

    def _register(self, sid: int, tenant: str, labels: Labels) -> None:
        assert sid == len(self._labels), "stream ids must be dense"
        self._labels.append(labels)
        self._tenant_of.append(tenant)
        t = self._tenant(tenant)
        t.by_labels[labels] = sid
        t.index.add(sid, labels)
        self._grow(sid + 1)

    def _resolve(self, tenant: str, streams: Sequence[Labels]) -> tuple[np.ndarray, list[tuple[int, Labels]]]:
        t = self._tenant(tenant)
        sids = np.empty(len(streams), dtype=np.int64)
        new: list[tuple[int, Labels]] = []
        new_ids: dict[Labels, int] = {}
        nxt = len(self._labels)
        for i, lbl in enumerate(streams):
            sid = t.by_labels.get(lbl)
            if sid is None:
                sid = new_ids.get(lbl)
                if sid is None:
                    sid = new_ids[lbl] = nxt + len(new)
                    new.append((sid, lbl))
            sids[i] = sid
        if new and len(t.by_labels) + len(new) > self.max_streams_per_tenant:
            raise StreamLimitExceeded(
                "Maximum active stream limit exceeded, reduce the number of active streams (reduce labels or "
                "reduce label values), or contact your Loki administrator to see if the limit can be "
                f"increased, user: '{tenant}'"
            )
        return sids, new

    def add_listener(self, fn: Callable[[str, list[Labels], pa.RecordBatch], None]) -> Callable[[], None]:
        """Call ``fn(tenant, labels_by_sid, batch)`` for every committed batch; returns an unsubscribe."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    # -- writing -------------------------------------------------------------

    async def push(self, tenant: str, streams: Sequence[PushStream]) -> None:
        """``LogAppender``: store entries durably (raises on the first refusal)."""
        res = self.commit(tenant, EntryColumns.from_push(streams))
        if res.fsynced is not None:
            await res.fsynced
        if res.errors:
            raise BadData(res.errors[0])

    def commit(self, tenant: str, cols: EntryColumns) -> CommitResult:
        """Apply the ordering policy, append to head and WAL; ``fsynced`` resolves at fsync.

        Runs without yielding, so head and WAL agree on order. Entries the
        policy refuses are dropped and described in ``errors`` (Loki keeps the
        rest of the request).
        """
        if self._head_bytes > 4 * self.head_max_bytes:
            raise Overloaded("log store head is full while a flush is running; retry later",
                             retry_after=2.0, status=503)
        n = len(cols)
        if not n:
            return CommitResult(0, 0, [], None)
        stream_sids, new = self._resolve(tenant, cols.streams)
        if new:
            self._grow(new[-1][0] + 1)
        sid = stream_sids[cols.stream_idx]
        keep, errors = self._order_check(sid, cols, new)
        n_keep = int(keep.sum())
        if not n_keep:
            return CommitResult(0, n, errors, None, keep)
        if new:
            sid, new = _drop_unused_streams(sid, keep, new, len(self._labels))
        batch = self._record_batch(sid, cols, keep)
        for s, lbl in new:
            self._register(s, tenant, lbl)
        fut = self.wal.enqueue(REC_ENTRIES, _encode_record(tenant, new, batch))
        self._apply_batch(batch)
        for fn in list(self._listeners):
            try:
                fn(tenant, self._labels, batch)
            except Exception:
                log.exception("log listener failed")
        return CommitResult(n_keep, n - n_keep, errors, fut, None if n_keep == n else keep)

    def _order_check(
        self, sid: np.ndarray, cols: EntryColumns, new: list[tuple[int, Labels]]
    ) -> tuple[np.ndarray, list[str]]:
        """Mask of entries the out-of-order policy accepts, plus Loki's messages for the refused ones
        (in entry order, at most 1000)."""
        ts = cols.ts
        n = len(ts)
        order = np.argsort(sid, kind="stable")
        s, t = sid[order], ts[order]
        cuts = np.flatnonzero(s[1:] != s[:-1]) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [n]])
        newest_before = np.empty(n, dtype=np.int64)
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            prev = int(self._max_ts[s[a]])
            run = np.maximum.accumulate(t[a:b])
            newest_before[a] = prev
            if b - a > 1:
                newest_before[a + 1 : b] = np.maximum(run[:-1], prev)
        if self.policy.mode == "strict":
            bad_sorted = t < newest_before
        else:
            bad_sorted = (newest_before != _I64_MIN) & (t < newest_before - self.policy.window_ns)
        keep = np.ones(n, dtype=bool)
        if not bad_sorted.any():
            return keep, []
        keep[order[bad_sorted]] = False
        newest = np.empty(n, dtype=np.int64)
        newest[order] = newest_before
        errors = []
        new_labels = dict(new)
        for i in np.flatnonzero(~keep)[:1000].tolist():
            sid_i = int(sid[i])
            lbl = self._labels[sid_i] if sid_i < len(self._labels) else new_labels[sid_i]
            if self.policy.mode == "strict":
                why = "entry out of order"
            else:
                oldest = int(newest[i]) - self.policy.window_ns
                why = (f"entry too far behind, entry timestamp is: {ns_to_rfc3339(int(ts[i]))}, "
                       f"oldest acceptable timestamp is: {ns_to_rfc3339(oldest)}")
            errors.append(f"entry with timestamp {ns_to_rfc3339(int(ts[i]))} ignored, reason: '{why}' "
                          f"for stream: {format_labels(lbl)}")
        return keep, errors

    def _record_batch(self, sid: np.ndarray, cols: EntryColumns, keep: np.ndarray) -> pa.RecordBatch:
        all_kept = bool(keep.all())
        lines = cols.line_array if cols.line_array is not None else pa.array(cols.lines, pa.string())
        if not all_kept:
            lines = lines.filter(pa.array(keep))
        md_col: pa.Array
        tr_col: pa.Array
        if cols.metadata is None:
            m = int(keep.sum())
            md_col = pa.nulls(m, pa.string())
            tr_col = pa.nulls(m, pa.string())
        else:
            mds = cols.metadata if all_kept else [x for x, k in zip(cols.metadata, keep.tolist(), strict=True) if k]
            md_col = pa.array([encode_metadata(x) for x in mds], pa.string())
            tr_col = pa.array([_trace_id(x) for x in mds], pa.string())
        lv_col: pa.Array
        if cols.levels is None:
            lv_col = pa.nulls(len(lines), pa.string())
        else:
            lv_col = cols.levels if all_kept else cols.levels.filter(pa.array(keep))
        batch = pa.RecordBatch.from_arrays(
            [pa.array(sid[keep] if not all_kept else sid, pa.int64()),
             pa.array(cols.ts[keep] if not all_kept else cols.ts, pa.int64()),
             lines, md_col, tr_col, lv_col],
            schema=SCHEMA,
        )
        return batch

    def _apply_batch(self, batch: pa.RecordBatch) -> None:
        sid = batch.column(0).to_numpy()
        ts = batch.column(1).to_numpy()
        np.minimum.at(self._min_ts, sid, ts)
        np.maximum.at(self._max_ts, sid, ts)
        nbytes = int(pc.sum(pc.binary_length(batch.column(2))).as_py() or 0)
        with self._head_lock:
            if not self._head:
                self._head_since = time.monotonic()
            self._head.append(batch)
            self._head_bytes += nbytes
            if batch.num_rows < _SMALL_BATCH_ROWS:
                # Merge runs of 64 small batches (fewer chunks to scan) without ever copying the big ones.
                k = len(self._head)
                while k > self._frozen and self._head[k - 1].num_rows < _SMALL_BATCH_ROWS:
                    k -= 1
                if len(self._head) - k >= 64:
                    tail = pa.Table.from_batches(self._head[k:]).combine_chunks()
                    self._head[k:] = tail.to_batches()
        self.entries_appended += batch.num_rows
        self.bytes_appended += nbytes
        if self._head_bytes >= self.head_max_bytes:
            self._start_flush()

    def _apply_record(self, payload: bytes) -> None:
        tenant, new, batch = _decode_record(payload)
        for sid, lbl in new:
            if sid == len(self._labels):
                self._register(sid, tenant, lbl)
        self._apply_batch(batch)

    # -- flushing --------------------------------------------------------------

    def _start_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # during replay; the maintenance loop flushes later
            self._flush_task = loop.create_task(self._flush_logged())

    async def _flush_logged(self) -> None:
        try:
            await self.flush()
        except Exception:
            log.exception("logs store flush failed")

    async def flush(self) -> None:
        """Move the head into DuckDB blocks and drop the WAL segments it covered."""
        with self._head_lock:
            if self._frozen:
                return
            self._frozen = len(self._head)
            frozen = self._head[: self._frozen]
        n_sids = len(self._labels)
        if not frozen and n_sids == self._flushed_sids:
            with self._head_lock:
                self._frozen = 0
            return
        segment = await self.wal.rotate()
        try:
            await asyncio.to_thread(self._write_blocks, frozen, n_sids, segment)
        except BaseException:
            with self._head_lock:
                self._frozen = 0
            raise
        self.wal.remove_before(segment if self.wal_keep is None else min(segment, self.wal_keep()))

    def _write_blocks(self, frozen: list[pa.RecordBatch], n_sids: int, segment: int) -> None:
        cur = self.db.cursor()
        tbl = pa.Table.from_batches(frozen, schema=SCHEMA) if frozen else None
        blocks: list[int] = []
        if tbl is not None and tbl.num_rows:
            ts = tbl.column(1).to_numpy()
            blocks = np.unique(ts // self.block_ns * self.block_ns).tolist()
        self.db.lock.acquire_write()
        try:
            cur.execute("BEGIN TRANSACTION")
            self._write_new_streams(cur, n_sids)
            if tbl is not None and blocks:
                cur.register("_flush_rows", tbl)
                for b in blocks:
                    table = self._block_table(cur, int(b))
                    cur.execute(
                        f"INSERT INTO {table} SELECT sid, ts, line, metadata, trace_id, detected_level FROM _flush_rows "
                        "WHERE ts >= ? AND ts < ? ORDER BY sid, ts",
                        [int(b), int(b) + self.block_ns],
                    )
                cur.unregister("_flush_rows")
            self._write_bounds(cur, n_sids)
            cur.execute("INSERT OR REPLACE INTO logs_meta VALUES ('wal_replay_from', ?)", [segment])
            cur.execute("COMMIT")
            with self._head_lock:
                del self._head[: len(frozen)]
                self._frozen = 0
                self._head_bytes = sum(
                    int(pc.sum(pc.binary_length(b.column(2))).as_py() or 0) for b in self._head
                )
                self._head_since = time.monotonic()
            self._flushed_sids = n_sids
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        finally:
            self.db.lock.release_write()

    def _write_new_streams(self, cur: duckdb.DuckDBPyConnection, n_sids: int) -> None:
        if n_sids <= self._flushed_sids:
            return
        rng = range(self._flushed_sids, n_sids)
        tbl = pa.table({
            "sid": pa.array(list(rng), pa.int64()),
            "tenant": [self._tenant_of[i] for i in rng],
            "labels": [_encode_labels(self._labels[i]) for i in rng],
        })
        cur.register("_new_streams", tbl)
        cur.execute("INSERT INTO logs_streams SELECT sid, tenant, labels FROM _new_streams")
        cur.unregister("_new_streams")

    def _write_bounds(self, cur: duckdb.DuckDBPyConnection, n_sids: int) -> None:
        tbl = pa.table({
            "sid": pa.array(np.arange(n_sids, dtype=np.int64)),
            "min_ts": pa.array(self._min_ts[:n_sids]),
            "max_ts": pa.array(self._max_ts[:n_sids]),
        })
        cur.execute("DELETE FROM logs_stream_bounds")
        cur.register("_bounds", tbl)
        cur.execute("INSERT INTO logs_stream_bounds SELECT * FROM _bounds")
        cur.unregister("_bounds")

    def _block_table(self, cur: duckdb.DuckDBPyConnection, block: int) -> str:
        table = self._blocks.get(block)
        if table is None:
            table = f"logs_entries_{block}"
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (sid BIGINT, ts BIGINT, line VARCHAR, metadata VARCHAR, "
                "trace_id VARCHAR, detected_level VARCHAR)"
            )
            self._blocks[block] = table
        return table

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            try:
                if self._head and time.monotonic() - self._head_since > self.head_max_age_s:
                    self._start_flush()
                await asyncio.to_thread(self.apply_retention, time.time_ns())
            except Exception:
                log.exception("logs store maintenance failed")

    def apply_retention(self, now_ns: int) -> list[str]:
        """Drop block tables wholly older than the retention window (0: keep everything)."""
        dropped = []
        for block in expired_blocks(self._blocks, self.block_ns, self.retention_ns, now_ns):
            table = self._blocks[block]
            self.db.lock.acquire_write()
            try:
                self.db.cursor().execute(f"DROP TABLE IF EXISTS {table}")
                del self._blocks[block]
            finally:
                self.db.lock.release_write()
            dropped.append(table)
        return dropped

    # -- reading ---------------------------------------------------------------

    def querier(self, tenant: str = "default") -> TenantLogQuerier:
        return TenantLogQuerier(self, tenant)

    def candidate_sids(self, tenant: str, matchers: Sequence[Matcher], start: int, end: int) -> np.ndarray:
        """Streams of ``tenant`` matching ``matchers`` with entries possibly in [start, end)."""
        t = self._tenants.get(tenant)
        if t is None:
            return np.empty(0, dtype=np.int64)
        sids = t.index.select(matchers)
        if len(sids):
            sids = sids[(self._min_ts[sids] < end) & (self._max_ts[sids] >= start)]
        return sids

    def matching_sids(self, tenant: str, matchers: Sequence[Matcher]) -> np.ndarray:
        """Every stream of ``tenant`` whose labels match, whatever its time bounds."""
        t = self._tenants.get(tenant)
        return t.index.select(matchers) if t is not None else np.empty(0, dtype=np.int64)

    def labels_of(self, sid: int) -> Labels:
        return self._labels[sid]

    @contextmanager
    def _source(self, cur: duckdb.DuckDBPyConnection, sids: np.ndarray, start: int, end: int) -> Iterator[str]:
        """A SQL relation (sub-select) of every entry of ``sids`` in [start, end): head plus blocks."""
        self.db.lock.acquire_read()
        try:
            with self._head_lock:
                head = list(self._head)
            blocks = [tb for b, tb in sorted(self._blocks.items()) if b < end and b + self.block_ns > start]
            parts = []
            if head:
                cur.register("_head", pa.Table.from_batches(head, schema=SCHEMA))
                parts.append("SELECT * FROM _head")
            parts.extend(f"SELECT * FROM {tb}" for tb in blocks)
            if len(sids) <= 2000:
                sid_sql = "sid IN (" + ",".join(str(int(s)) for s in sids.tolist()) + ")"
            else:
                cur.register("_want", pa.table({"sid": sids}))
                sid_sql = "sid IN (SELECT sid FROM _want)"
            where = f"WHERE {sid_sql} AND ts >= {int(start)} AND ts < {int(end)}"
            if not parts:
                yield "(SELECT * FROM (SELECT NULL::BIGINT sid, NULL::BIGINT ts, NULL::VARCHAR line, " \
                      "NULL::VARCHAR metadata, NULL::VARCHAR trace_id, NULL::VARCHAR detected_level) WHERE false)"
            else:
                yield "(" + " UNION ALL ".join(f"{p} {where}" for p in parts) + ")"
        finally:
            for name in ("_head", "_want"):
                with suppress(Exception):
                    cur.unregister(name)
            self.db.lock.release_read()

    def query(self, sids: np.ndarray, start: int, end: int, sql_tail: str, params: list[Any],
              columns: str = "sid, ts, line, metadata, detected_level") -> pa.Table:
        """``SELECT columns FROM <entries> <sql_tail>``: the one place queries touch DuckDB."""
        cur = self.db.cursor()
        with self._source(cur, sids, start, end) as src:
            try:
                return cur.sql(f"SELECT {columns} FROM {src} AS e {sql_tail}", params=params or None).to_arrow_table()
            except duckdb.InvalidInputException as e:
                raise BadData(f"invalid line filter: {e}") from e

    def num_streams(self, tenant: str | None = None) -> int:
        if tenant is None:
            return len(self._labels)
        t = self._tenants.get(tenant)
        return len(t.by_labels) if t else 0

    @property
    def head_bytes(self) -> int:
        return self._head_bytes

    def disk_blocks(self) -> list[str]:
        return [tb for _, tb in sorted(self._blocks.items())]


def filters_sql(filters: Sequence[LineFilter]) -> tuple[str, list[Any]]:
    """Line filters as SQL conditions on ``line`` (RE2 regexps, unanchored as Go's MatchString)."""
    conds: list[str] = []
    params: list[Any] = []
    for f in filters:
        if f.op is LineFilterOp.CONTAINS:
            if f.pattern:
                conds.append("contains(line, ?)")
                params.append(f.pattern)
        elif f.op is LineFilterOp.NOT_CONTAINS:
            conds.append("NOT contains(line, ?)" if f.pattern else "false")
            if f.pattern:
                params.append(f.pattern)
        elif f.op is LineFilterOp.REGEX:
            conds.append("regexp_matches(line, ?)")
            params.append(f.pattern)
        else:
            conds.append("NOT regexp_matches(line, ?)")
            params.append(f.pattern)
    return " AND ".join(conds), params


class TenantLogQuerier:
    """The ``LogQuerier`` protocol over one tenant of a ``LogStore``."""

    def __init__(self, store: LogStore, tenant: str) -> None:
        self.store = store
        self.tenant = tenant

    def select(
        self,
        matchers: Sequence[Matcher],
        start_ns: int,
        end_ns: int,
        *,
        filters: Sequence[LineFilter] = (),
        direction: Direction = Direction.BACKWARD,
        limit: int | None = None,
    ) -> list[LogStream]:
        st = self.store
        sids = st.candidate_sids(self.tenant, matchers, start_ns, end_ns)
        if not len(sids) or (limit is not None and limit <= 0):
            return []
        cond, params = filters_sql(filters)
        order = "DESC" if direction is Direction.BACKWARD else "ASC"
        tail = (f"WHERE {cond} " if cond else "") + f"ORDER BY ts {order}, sid"
        if limit is None:
            # Sorting in numpy beats DuckDB's ORDER BY over the line payload.
            tbl = st.query(sids, start_ns, end_ns, f"WHERE {cond}" if cond else "", params)
            ts = tbl.column("ts").to_numpy()
            # By result stream (stream and level) at once, so grouping moves no line twice.
            key, _ = _stream_keys(tbl)
            return _to_streams(st, _take_sorted(tbl, key, -ts if direction is Direction.BACKWARD else ts))
        return _to_streams(st, self._select_newest_first(sids, start_ns, end_ns, tail, params, direction, limit))

    def _select_newest_first(self, sids: np.ndarray, start: int, end: int, tail: str, params: list[Any],
                             direction: Direction, limit: int) -> pa.Table:
        """The first ``limit`` rows in direction order, reading time windows from that end first.

        Every window holds only rows newer (backward) or older (forward) than
        the next, so stopping once ``limit`` rows are found gives the same rows
        as one query over the whole range while scanning a fraction of it.
        """
        st = self.store
        backward = direction is Direction.BACKWARD
        width = max((end - start) // _FIRST_WINDOW_DIV, 1)
        cursor = end if backward else start
        parts: list[pa.Table] = []
        need = limit
        scanned = 0
        while need > 0:
            lo, hi = (max(start, cursor - width), cursor) if backward else (cursor, min(end, cursor + width))
            if hi <= lo:
                break
            got = st.query(sids, lo, hi, f"{tail} LIMIT {int(need)}", params)
            parts.append(got)
            need -= got.num_rows
            scanned += hi - lo
            cursor = lo if backward else hi
            width = next_window_width(width, need, scanned, limit - need)
        if len(parts) == 1:
            return parts[0]
        return pa.concat_tables(parts) if parts else st.query(sids, start, start, tail, params)

    def scan(
        self,
        matchers: Sequence[Matcher],
        start_ns: int,
        end_ns: int,
        *,
        filters: Sequence[LineFilter] = (),
        with_lines: bool = True,
        with_metadata: bool = False,
    ) -> LogBatch:
        st = self.store
        sids = st.candidate_sids(self.tenant, matchers, start_ns, end_ns)
        if not len(sids):
            e = np.empty(0, dtype=np.int64)
            return LogBatch([], e, e, e.copy(), [] if with_lines else None, [] if with_metadata else None)
        cond, params = filters_sql(filters)
        cols = "sid, ts, strlen(line) AS nbytes, detected_level" + (", line" if with_lines else "") + (
            ", metadata" if with_metadata else "")
        tbl = st.query(sids, start_ns, end_ns, f"WHERE {cond}" if cond else "", params, columns=cols)
        key, vocab = _stream_keys(tbl)
        ts = tbl.column("ts").to_numpy()
        idx, uniq = _dense(key)
        # With lines, keep (sid, ts) order: regrouping by level would copy every line, and the
        # per-entry paths key their samples themselves (LogBatch's contract).
        order = _stream_order(tbl.column("sid").to_numpy(), ts, None if with_lines else idx)
        if order is not None:
            tbl = tbl.take(pa.array(order))
            idx = idx[order]
        width = len(vocab) + 1
        return LogBatch(
            streams=[st.labels_of(int(k) // width) for k in uniq.tolist()],
            stream_md=[_level_md(vocab, int(k) % width) for k in uniq.tolist()],
            stream_idx=idx.astype(np.int64).reshape(-1),
            ts_ns=tbl.column("ts").to_numpy().astype(np.int64),
            line_bytes=tbl.column("nbytes").to_numpy().astype(np.int64),
            lines=ArrowLines(tbl.column("line").combine_chunks()) if with_lines else None,
            metadata=_metadata_list(tbl.column("metadata")) if with_metadata else None,
        )

    def series(self, matchers: Sequence[Matcher], start_ns: int, end_ns: int) -> list[Labels]:
        sids = self.store.candidate_sids(self.tenant, matchers, start_ns, end_ns)
        return [self.store.labels_of(s) for s in sids.tolist()]

    def label_names(self, start_ns: int, end_ns: int) -> list[str]:
        names: set[str] = set()
        for lbl in self.series([], start_ns, end_ns):
            names.update(k for k, _ in lbl)
        return sorted(names)

    def label_values(self, name: str, matchers: Sequence[Matcher], start_ns: int, end_ns: int) -> list[str]:
        values: set[str] = set()
        for lbl in self.series(matchers, start_ns, end_ns):
            for k, v in lbl:
                if k == name:
                    values.add(v)
                    break
        return sorted(values)

    def stats(self, matchers: Sequence[Matcher], start_ns: int, end_ns: int) -> dict[str, int]:
        """Loki's index stats: streams, chunks (stream x block pairs here), bytes and entries in range."""
        st = self.store
        sids = st.candidate_sids(self.tenant, matchers, start_ns, end_ns)
        if not len(sids):
            return {"streams": 0, "chunks": 0, "bytes": 0, "entries": 0}
        tbl = st.query(
            sids, start_ns, end_ns, "", [],
            columns=f"count(DISTINCT sid) AS streams, count(DISTINCT (sid, ts // {st.block_ns})) AS chunks, "
                    "coalesce(sum(strlen(line)), 0) AS bytes, count(*) AS entries",
        )
        row = tbl.to_pylist()[0]
        return {k: int(row[k] or 0) for k in ("streams", "chunks", "bytes", "entries")}

    def volume(self, matchers: Sequence[Matcher], start_ns: int, end_ns: int,
               target: Sequence[str] | None = None) -> list[tuple[Labels, int]]:
        """Bytes of lines in range, summed by ``target`` labels (default: the matchers' label names)."""
        st = self.store
        sids = st.candidate_sids(self.tenant, matchers, start_ns, end_ns)
        if not len(sids):
            return []
        names = set(target) if target else {m.name for m in matchers}
        tbl = st.query(sids, start_ns, end_ns, "GROUP BY sid", [], columns="sid, sum(strlen(line)) AS bytes")
        out: dict[Labels, int] = {}
        for sid, nbytes in zip(tbl.column("sid").to_pylist(), tbl.column("bytes").to_pylist(), strict=True):
            key = tuple((k, v) for k, v in st.labels_of(sid) if k in names)
            out[key] = out.get(key, 0) + int(nbytes or 0)
        return sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))

    def by_trace_id(self, trace_id: str, start_ns: int, end_ns: int, limit: int) -> list[LogStream]:
        """Entries whose structured metadata ``trace_id`` equals ``trace_id``, oldest first."""
        st = self.store
        sids = st.candidate_sids(self.tenant, [], start_ns, end_ns)
        if not len(sids):
            return []
        tbl = st.query(sids, start_ns, end_ns, f"WHERE trace_id = ? ORDER BY ts, sid LIMIT {int(limit)}",
                       [trace_id])
        return _to_streams(st, tbl)


def _to_streams(st: LogStore, tbl: pa.Table) -> list[LogStream]:
    """Group result rows (already in the wanted order) into one LogStream per stream."""
    if not tbl.num_rows:
        return []
    sid, vocab = _stream_keys(tbl)
    order = np.argsort(sid, kind="stable")
    s = sid[order]
    if not np.array_equal(order, np.arange(len(order))):
        tbl = tbl.take(pa.array(order))
    ts = tbl.column("ts").to_numpy().astype(np.int64)
    lines = tbl.column("line").combine_chunks()  # each stream's a zero-copy slice, Python strings on demand
    mds = _metadata_list(tbl.column("metadata"))
    cuts = [0, *(np.flatnonzero(s[1:] != s[:-1]) + 1).tolist(), len(s)]
    out = []
    width = len(vocab) + 1
    for a, b in itertools.pairwise(cuts):
        k = int(s[a])
        out.append(LogStream(labels=st.labels_of(k // width), ts_ns=ts[a:b], lines=ArrowLines(lines.slice(a, b - a)), metadata=mds[a:b],
                             stream_md=_level_md(vocab, k % width)))
    out.sort(key=lambda x: (x.labels, x.stream_md))
    return out


def _stream_keys(tbl: pa.Table, vocab: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Per row ``sid * (len(vocab) + 1) + level code`` (0: no level): entries of one stream with one
    detected_level form one result stream, as Loki splits streams by structured metadata."""
    sid = tbl.column("sid").to_numpy().astype(np.int64)
    col = tbl.column(LEVEL_LABEL)
    if col.null_count == len(col):
        return sid * (len(vocab or []) + 1), vocab or []
    if vocab is None:
        vocab = sorted(v for v in pc.unique(col).to_pylist() if v is not None)
    codes = pc.fill_null(pc.index_in(col, value_set=pa.array(vocab, pa.string())), -1)
    return sid * (len(vocab) + 1) + codes.to_numpy().astype(np.int64) + 1, vocab


def _dense(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per row the rank of its key among the distinct keys, the distinct keys ascending)."""
    if not len(key):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    top = int(key.max())
    if top <= 8 * len(key) + 1_000_000:  # a presence table beats sorting every row
        seen = np.zeros(top + 1, dtype=bool)
        seen[key] = True
        uniq = np.flatnonzero(seen)
        rank = np.cumsum(seen) - 1
        return rank[key].astype(np.int64), uniq.astype(np.int64)
    uniq, inv = np.unique(key, return_inverse=True)
    return inv.astype(np.int64).reshape(-1), uniq.astype(np.int64)


def _stream_order(sid: np.ndarray, ts: np.ndarray, idx: np.ndarray | None) -> np.ndarray | None:
    """Row order by (result stream ``idx``, ts), or by (sid, ts) when ``idx`` is None; None when
    the rows already are in it.

    Blocks hold rows sorted by (sid, ts), and ``idx`` only splits a stream by level, so
    a stable sort by ``idx`` (a radix sort on small codes) usually finishes the job.
    """
    n = len(sid)
    if n < 2:
        return None
    base = None if _sorted_by_stream(sid, ts) else _by_stream(sid, ts)
    if idx is None:
        return base
    k = idx if base is None else idx[base]
    if bool((np.diff(k) >= 0).all()):
        return base
    small = k.astype(np.uint16) if int(k.max()) < 65536 else k
    o = np.argsort(small, kind="stable")
    return o if base is None else base[o]


def _sorted_by_stream(sid: np.ndarray, ts: np.ndarray) -> bool:
    ds = np.diff(sid)
    return bool(((ds > 0) | ((ds == 0) & (np.diff(ts) >= 0))).all())


def _by_stream(sid: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Row order by (sid, ts).

    A block is a run of flushes, each sorted by (sid, ts) and later in time than the one
    before, so a stable sort by stream alone (a radix sort on small ids) usually leaves each
    stream's rows in time order already; checked, with the full sort when it does not.
    """
    small = sid.astype(np.uint16) if int(sid.min()) >= 0 and int(sid.max()) < 65536 else sid
    order = np.argsort(small, kind="stable")
    if _sorted_by_stream(sid[order], ts[order]):
        return order
    return np.lexsort((ts, sid))


def _level_md(vocab: list[str], code: int) -> Metadata:
    return ((LEVEL_LABEL, vocab[code - 1]),) if code else ()


def _take_sorted(tbl: pa.Table, sid: np.ndarray, key: np.ndarray) -> pa.Table:
    """Rows ordered by (sid, key); no copy when they already are."""
    if not tbl.num_rows:
        return tbl
    order = np.lexsort((key, sid))
    if np.array_equal(order, np.arange(len(order))):
        return tbl
    return tbl.take(pa.array(order))


def _metadata_list(col: pa.ChunkedArray) -> list[Metadata]:
    """Decoded metadata per row; the common all-null column without a per-row decode."""
    if col.null_count == len(col):
        return [()] * len(col)
    return [decode_metadata(m) for m in col.to_pylist()]


def _drop_unused_streams(
    sid: np.ndarray, keep: np.ndarray, new: list[tuple[int, Labels]], base: int
) -> tuple[np.ndarray, list[tuple[int, Labels]]]:
    """Renumber provisional streams so ids stay dense when some had every entry refused."""
    kept = sid[keep]
    used = np.zeros(len(new), dtype=bool)
    used[np.unique(kept[kept >= base]) - base] = True
    if used.all():
        return sid, new
    remap = np.cumsum(used) - 1 + base
    sid = sid.copy()
    m = (sid >= base) & keep
    sid[m] = remap[sid[m] - base]
    return sid, [(int(remap[i]), lbl) for i, (_, lbl) in enumerate(new) if used[i]]


_HDR = struct.Struct("<HI")


def _encode_record(tenant: str, new: list[tuple[int, Labels]], batch: pa.RecordBatch) -> bytes:
    tb = tenant.encode()
    streams = json.dumps([[sid, lbl] for sid, lbl in new], separators=(",", ":")).encode() if new else b""
    return b"".join([_HDR.pack(len(tb), len(streams)), tb, streams, batch.serialize().to_pybytes()])


def decode_wal_record(payload: bytes) -> tuple[str, list[tuple[int, Labels]], pa.RecordBatch]:
    """A logs WAL record: (tenant, streams it registered, entries batch in ``SCHEMA``)."""
    return _decode_record(payload)


def _decode_record(payload: bytes) -> tuple[str, list[tuple[int, Labels]], pa.RecordBatch]:
    tl, sl = _HDR.unpack_from(payload, 0)
    pos = _HDR.size
    tenant = payload[pos : pos + tl].decode()
    pos += tl
    new: list[tuple[int, Labels]] = []
    if sl:
        new = [(int(sid), tuple((k, v) for k, v in lbl)) for sid, lbl in json.loads(payload[pos : pos + sl])]
    pos += sl
    buf = pa.py_buffer(payload[pos:])
    try:
        batch = pa.ipc.read_record_batch(buf, SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowIndexError):
        old = pa.ipc.read_record_batch(buf, _SCHEMA_V1)
        batch = pa.RecordBatch.from_arrays([*old.columns, pa.nulls(old.num_rows, pa.string())], schema=SCHEMA)
    return tenant, new, batch
