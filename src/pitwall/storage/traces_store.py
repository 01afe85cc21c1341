"""The embedded span store: WAL + in-memory head + DuckDB time blocks.

Writes: ``commit`` enforces the spans-per-trace limit, applies a batch (an
Arrow table of ``traces.model.SPAN_SCHEMA``) to the head and queues one WAL
record (the batch as Arrow IPC), all without yielding, then the caller
awaits the group fsync. The head is flushed into per-block DuckDB tables
(``traces_spans_<block start ms>``), each flush appended as one run sorted
by trace key, and a WAL checkpoint is recorded. Blocks are never rewritten
(no compaction: the index below does not need one); retention drops whole
blocks.

Attribute search: each block written since the index exists has a companion
table ``traces_attrs_<block start ms>`` (``k``, ``v``, ``lo``, ``cnt``): for
every attribute key, each stretch of consecutive spans (``seq`` ``lo`` ..
``lo + cnt - 1``) with one value, the span's effective value (its own
attribute, else its resource's: the precedence the search has always used).
A run is sorted by trace, so a trace's spans share resource values and a
constant attribute is one row a run. Each flush appends one run sorted by
(k, v, lo), so DuckDB's zone maps skip all but the row groups holding a key.
Search joins the matching ``seq`` back to the block; blocks written before the
index (no companion table) and the head are scanned as before.

Trace lookup by id never scans every span. Every block row carries ``seq``,
its position in the block's table (rows are only appended, each flush as a
run sorted by trace key, so a trace is contiguous within each run). Each
block keeps, in memory, the trace keys it holds, sorted, with the first and
last ``seq`` of the key in each run that holds it (rebuilt from the table on
start), so a lookup binary-searches every block's arrays and sends one
query per block that holds any of the keys, with one ``seq BETWEEN`` range
per (key, run): DuckDB's zone maps on the ever-increasing ``seq`` skip all
but the vectors holding the trace. The head is indexed
the same way, per chunk (its keys sorted once, when the chunk is added).

Derived state (span metrics) is kept exactly once across a crash: a
``Derived`` observer sees every committed batch and every batch replayed
from the WAL, and each flush writes its snapshot as the first record of the
new WAL segment, so replay restores the snapshot and re-observes only the
spans committed after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import duckdb
import numpy as np
import pyarrow as pa

from pitwall.core.arrow_compute import pc
from pitwall.core.tasks import Supervisor
from pitwall.core.wal import Wal
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.retention import expired_blocks
from pitwall.storage.row_ranges import RowRanges
from pitwall.traces.model import COLUMNS, SPAN_SCHEMA, AppendResult, empty_table

log = logging.getLogger(__name__)

REC_SPANS = 1
REC_DERIVED = 2
_COLS = ", ".join(COLUMNS)
_DDL = (
    "tenant VARCHAR, tkey BIGINT, trace_id VARCHAR, span_id VARCHAR, parent_id VARCHAR, service VARCHAR, "
    "name VARCHAR, kind TINYINT, start_ns BIGINT, duration_ns BIGINT, status_code TINYINT, "
    "status_message VARCHAR, remote_service VARCHAR, flags TINYINT, attributes VARCHAR USING COMPRESSION zstd, "
    "resource VARCHAR, scope VARCHAR, events VARCHAR USING COMPRESSION zstd, links VARCHAR, seq BIGINT"
)
# zstd on the JSON columns: 1M bench spans' attributes and events take 20 bytes a span instead of
# 103 with DuckDB's default (dictionary/FSST), which pays for the attribute index many times over.
# A database file written in an older storage format cannot hold zstd columns: blocks there use
# the default compression.
_DDL_PLAIN = _DDL.replace(" USING COMPRESSION zstd", "")
_ATTR_DDL = "k VARCHAR, v VARCHAR, lo BIGINT, cnt BIGINT"
_INDEX_CELLS = 4_000_000  # (span, key) cells extracted per pass over a flush run: bounds its memory


def _index_keys(cur: duckdb.DuckDBPyConnection) -> list[str]:
    """The distinct top-level keys of ``_index_src``'s attributes and resources a JSON path
    ``$."key"`` names (searches never ask the index about a key with a quote or backslash)."""
    shapes = cur.execute("SELECT DISTINCT json_keys(NULLIF(attributes, '')) FROM _index_src UNION "
                         "SELECT DISTINCT json_keys(NULLIF(resource, '')) FROM _index_src").fetchall()
    return sorted({k for (ks,) in shapes if ks for k in ks if '"' not in k and "\\" not in k})


def _index_rows(cur: duckdb.DuckDBPyConnection, keys: list[str], n: int) -> pa.Table:
    """Index rows (k, v, lo, cnt) of ``_index_src`` (``n`` spans, ``i`` their row number) for
    ``keys``: each stretch of consecutive spans with one value of a key is one row. A value is
    what the search reads: json_extract_string of the span's attribute, else of its resource's."""
    paths = "[" + ", ".join("'$.\"" + k.replace("'", "''") + "\"'" for k in keys) + "]"
    got = cur.sql(
        f"SELECT json_extract_string(coalesce(NULLIF(attributes, ''), '{{}}'), {paths}) AS a, "
        f"json_extract_string(coalesce(NULLIF(resource, ''), '{{}}'), {paths}) AS r, i FROM _index_src"
    ).to_arrow_table()
    width = len(keys)
    i = np.asarray(got.column("i").to_numpy(), dtype=np.int64)
    if not np.array_equal(i, np.arange(n)):  # stretches are runs of consecutive rows
        got = got.take(pa.array(np.argsort(i, kind="stable")))
    flat_a = pc.list_flatten(got.column("a"))
    flat_r = pc.list_flatten(got.column("r"))
    parts = [_EMPTY_INDEX]
    for j, key in enumerate(keys):
        pick = pa.array(np.arange(j, n * width, width))
        enc = pc.dictionary_encode(pc.coalesce(flat_a.take(pick), flat_r.take(pick))).combine_chunks()
        idx = np.asarray(enc.indices.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
        starts = np.concatenate([[0], np.flatnonzero(idx[1:] != idx[:-1]) + 1])
        counts = np.diff(np.concatenate([starts, [n]]))
        keep = idx[starts] >= 0
        starts, counts = starts[keep], counts[keep]
        parts.append(pa.table({
            "k": pa.array([key] * len(starts), pa.string()),
            "v": enc.dictionary.take(pa.array(idx[starts])).cast(pa.string()),
            "lo": pa.array(starts, pa.int64()),
            "cnt": pa.array(counts, pa.int64()),
        }))
    return pa.concat_tables(parts)


_EMPTY_INDEX = pa.table({"k": pa.array([], pa.string()), "v": pa.array([], pa.string()),
                         "lo": pa.array([], pa.int64()), "cnt": pa.array([], pa.int64())})


def _run_index(cur: duckdb.DuckDBPyConnection, run: pa.Table) -> pa.Table:
    """One flush run's index rows (``lo`` counted from the run's first span), sorted by (k, v, lo):
    zone maps then skip all but a key's row groups, and the sorted columns compress well.
    Reads only the Arrow table, so it runs before the flush takes the database's write lock."""
    n = run.num_rows
    cur.register("_index_src", run.select(["attributes", "resource"]).append_column(
        "i", pa.array(np.arange(n, dtype=np.int64))))
    try:
        keys = _index_keys(cur)
        per_pass = max(1, _INDEX_CELLS // max(n, 1))
        rows = pa.concat_tables([_index_rows(cur, keys[i : i + per_pass], n) for i in range(0, len(keys), per_pass)]
                                or [_EMPTY_INDEX])
    finally:
        cur.unregister("_index_src")
    return rows.sort_by([("k", "ascending"), ("v", "ascending"), ("lo", "ascending")])


def _insert_index(cur: duckdb.DuckDBPyConnection, attrs: str, rows: pa.Table, base: int) -> None:
    cur.register("_flush_index", rows)
    try:
        cur.execute(f"INSERT INTO {attrs} SELECT k, v, lo + {int(base)}, cnt FROM _flush_index")
    finally:
        cur.unregister("_flush_index")


class Derived(Protocol):
    """State derived from every committed span that must count each span exactly once across a crash."""

    def observe(self, tenant: str, table: pa.Table) -> None: ...

    def snapshot(self) -> bytes: ...

    def restore(self, payload: bytes) -> None: ...
_MAX_NAMES_PER_SERVICE = 10_000


@dataclass
class _Chunk:
    table: pa.Table
    tkey: np.ndarray
    order: np.ndarray = field(init=False)  # row numbers sorted by tkey
    sorted_keys: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.order = np.argsort(self.tkey, kind="stable")
        self.sorted_keys = self.tkey[self.order]

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        """Row numbers of the spans with any of the (sorted, unique) ``keys``."""
        lo = np.searchsorted(self.sorted_keys, keys, side="left")
        hi = np.searchsorted(self.sorted_keys, keys, side="right")
        hit = hi > lo
        if not hit.any():
            return np.empty(0, dtype=np.int64)
        return np.sort(np.concatenate([self.order[a:b] for a, b in zip(lo[hit], hi[hit], strict=True)]))


@dataclass
class _Block:
    """A block table and its in-memory index: the seq range of each (trace key, run) holding the key
    (each run is sorted by trace key, so a trace is contiguous in a run)."""

    table: str
    index: RowRanges
    runs: int = 1  # sorted runs written
    attrs: str | None = None  # the attribute index table; None for a block written before it existed

    def ranges(self, keys: np.ndarray) -> list[tuple[int, int, int]]:
        """(key, first seq, last seq) of every run's entry for any of ``keys``."""
        k, lo, hi = self.index.entries(keys)
        return list(zip(k.tolist(), lo.tolist(), hi.tolist(), strict=True))


@dataclass
class _Service:
    names: set[str] = field(default_factory=set)
    remotes: set[str] = field(default_factory=set)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def decode_wal_record(payload: bytes) -> pa.Table:
    """The spans of a ``REC_SPANS`` WAL record (``SPAN_SCHEMA``, ``tenant`` column included)."""
    return _from_ipc(payload)


def _from_ipc(payload: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(payload)).read_all()


class TraceStore:
    """Durable, queryable span storage for all tenants of one server."""

    name = "traces-store"

    def __init__(
        self,
        db: TelemetryDB,
        wal_dir: Path,
        *,
        block_ns: int = 2 * 3600 * 10**9,
        retention_ns: int = 7 * 86400 * 10**9,
        head_max_spans: int = 200_000,
        head_max_age_s: float = 300.0,
        max_spans_per_trace: int = 100_000,
        fsync: bool = True,
    ) -> None:
        self.db = db
        self.wal = Wal(wal_dir, fsync=fsync)
        self.wal_keep: Callable[[], int] | None = None  # the oldest WAL segment a reader (forwarder) still needs
        self.block_ns = block_ns
        self.retention_ns = retention_ns
        self.head_max_spans = head_max_spans
        self.head_max_age_s = head_max_age_s
        self.max_spans_per_trace = max_spans_per_trace
        self._chunks: list[_Chunk] = []
        self._frozen = 0
        self._head_lock = threading.Lock()
        self._compact_lock = threading.Lock()
        self._head_spans = 0
        self._head_since = time.monotonic()
        self._blocks: dict[int, _Block] = {}
        # spans per trace: this head window and the previous one (bounded memory)
        self._trace_counts: dict[tuple[str, int], int] = {}
        self._prev_counts: dict[tuple[str, int], int] = {}
        self._catalog: dict[str, dict[str, _Service]] = {}
        self._flush_task: asyncio.Task[None] | None = None
        self.tasks = Supervisor("traces-store")
        self.spans_appended = 0
        self.derived: Derived | None = None
        # Write the attribute index for new blocks / use it in searches (off: the scan, for tests and benches).
        self.attr_index = True
        self.use_attr_index = True
        self._ddl = _DDL

    # -- lifecycle -------------------------------------------------------------

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
        db.execute("CREATE TABLE IF NOT EXISTS traces_meta (key VARCHAR PRIMARY KEY, value BIGINT)")
        db.execute("CREATE TABLE IF NOT EXISTS traces_blocks (block BIGINT PRIMARY KEY, tbl VARCHAR, runs INTEGER)")
        self._ddl = _DDL if _zstd_available(db) else _DDL_PLAIN
        tables = {r[0] for r in db.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        for block, tbl, runs in db.execute("SELECT block, tbl, runs FROM traces_blocks").fetchall():
            attrs = _attrs_name(int(block))
            self._blocks[int(block)] = _load_block(db.cursor(), tbl, int(runs), attrs if attrs in tables else None)
            rows = db.execute(f"SELECT DISTINCT tenant, service, name, remote_service FROM {tbl}").fetchall()
            for tenant, service, name, remote in rows:
                self._catalog_add(tenant, service, name, remote)
        got = db.scalar("SELECT value FROM traces_meta WHERE key = 'wal_replay_from'")
        replay_from = int(got or 0)
        n = 0
        for rec in self.wal.replay(replay_from):
            if rec.type == REC_SPANS:
                table = _from_ipc(rec.payload)
                self._apply(table, np.asarray(table.column("tkey").to_numpy(), dtype=np.int64))
                if self.derived is not None and table.num_rows:
                    self.derived.observe(str(table.column("tenant")[0].as_py()), table)
                n += 1
            elif rec.type == REC_DERIVED and self.derived is not None:
                self.derived.restore(rec.payload)
        log.info("traces store opened", extra={"blocks": len(self._blocks), "wal_records": n})

    # -- writing ---------------------------------------------------------------

    def commit(self, tenant: str, table: pa.Table) -> tuple[asyncio.Future[None], AppendResult, pa.Table]:
        """Apply a batch synchronously; the future resolves once it is fsynced.

        Spans beyond ``max_spans_per_trace`` for their trace are dropped and
        counted in the result (OTLP reports them as a partial success); the
        returned table holds the spans kept.
        """
        tkey = np.asarray(table.column("tkey").to_numpy(), dtype=np.int64)
        table, tkey, rejected, message = self._limit_per_trace(tenant, table, tkey)
        fut = self.wal.enqueue(REC_SPANS, _ipc(table))
        self._apply(table, tkey)
        if self.derived is not None and table.num_rows:
            self.derived.observe(tenant, table)
        return fut, AppendResult(table.num_rows, rejected, message), table

    async def append(self, tenant: str, table: pa.Table) -> AppendResult:
        """Commit and await durability."""
        fut, result, _kept = self.commit(tenant, table)
        await fut
        return result

    def _limit_per_trace(
        self, tenant: str, table: pa.Table, tkey: np.ndarray
    ) -> tuple[pa.Table, np.ndarray, int, str]:
        uniq, counts = np.unique(tkey, return_counts=True)
        limit = self.max_spans_per_trace
        cur, prev = self._trace_counts, self._prev_counts
        keep: np.ndarray | None = None
        over_ids: list[int] = []
        for k, c in zip(uniq.tolist(), counts.tolist(), strict=True):
            key = (tenant, k)
            have = cur.get(key, 0) + prev.get(key, 0)
            allowed = max(0, limit - have)
            if c > allowed:
                if keep is None:
                    keep = np.ones(len(tkey), dtype=bool)
                idx = np.flatnonzero(tkey == k)
                keep[idx[allowed:]] = False
                over_ids.append(k)
                c = allowed
            cur[key] = cur.get(key, 0) + c
        if keep is None:
            return table, tkey, 0, ""
        rejected = int(len(keep) - keep.sum())
        sample = table.column("trace_id")[int(np.flatnonzero(tkey == over_ids[0])[0])].as_py()
        message = (f"{rejected} spans rejected: trace {sample} (and {len(over_ids) - 1} others) exceeds the "
                   f"limit of {limit} spans per trace")
        return table.filter(pa.array(keep)), tkey[keep], rejected, message

    def _apply(self, table: pa.Table, tkey: np.ndarray) -> None:
        n = table.num_rows
        if not n:
            return
        if table.schema != SPAN_SCHEMA:
            table = table.cast(SPAN_SCHEMA)
        groups = table.select(["tenant", "service", "name", "remote_service"]).group_by(
            ["tenant", "service", "name", "remote_service"]).aggregate([])
        for tenant, service, name, remote in zip(*(groups.column(i).to_pylist() for i in range(4)), strict=True):
            self._catalog_add(tenant, service, name, remote)
        with self._head_lock:
            if not self._head_spans:
                self._head_since = time.monotonic()
            self._chunks.append(_Chunk(table, tkey))
            self._head_spans += n
            if len(self._chunks) - self._frozen >= 256:
                self._compact_head_locked()
        self.spans_appended += n
        if self._head_spans >= self.head_max_spans:
            self._start_flush()

    def _compact_head_locked(self) -> None:
        # Fewer, larger chunks keep head lookups to a few vectorised scans.
        tail = self._chunks[self._frozen :]
        merged = _Chunk(pa.concat_tables([c.table for c in tail]).combine_chunks(),
                        np.concatenate([c.tkey for c in tail]))
        self._chunks[self._frozen :] = [merged]

    def _catalog_add(self, tenant: str, service: str, name: str, remote: str) -> None:
        svc = self._catalog.setdefault(tenant, {}).setdefault(service, _Service())
        if len(svc.names) < _MAX_NAMES_PER_SERVICE:
            svc.names.add(name)
        if remote and len(svc.remotes) < _MAX_NAMES_PER_SERVICE:
            svc.remotes.add(remote)

    # -- flushing --------------------------------------------------------------

    def _start_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # during replay; the maintenance loop flushes later
            self._flush_task = loop.create_task(self.flush())

    async def flush(self) -> None:
        """Move the head into DuckDB blocks and drop the WAL segments it covered."""
        with self._head_lock:
            if self._frozen or not self._chunks:
                return
            self._frozen = len(self._chunks)
            frozen = self._chunks[: self._frozen]
        rotated = self.wal.rotate()
        # The derived state as of the rotation opens the new segment (nothing can commit in between).
        snap = self.wal.enqueue(REC_DERIVED, self.derived.snapshot()) if self.derived is not None else None
        segment = await rotated
        try:
            await asyncio.to_thread(self._write_blocks, frozen, segment)
        except BaseException:
            with self._head_lock:
                self._frozen = 0
            raise
        if snap is not None:
            await snap
        self.wal.remove_before(segment if self.wal_keep is None else min(segment, self.wal_keep()))

    def _write_blocks(self, frozen: list[_Chunk], segment: int) -> None:
        table = pa.concat_tables([c.table for c in frozen])
        tkey = np.concatenate([c.tkey for c in frozen])
        start = np.asarray(table.column("start_ns").to_numpy(), dtype=np.int64)
        block = start // self.block_ns * self.block_ns
        order = np.lexsort((start, tkey, block))
        table, tkey, block = table.take(pa.array(order)), tkey[order], block[order]
        cuts = np.flatnonzero(block[1:] != block[:-1]) + 1
        bounds = list(zip(np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [len(block)]]).tolist(),
                          strict=True))
        cur = self.db.cursor()
        # The attribute index is computed before any lock: readers wait only for the inserts.
        index: dict[int, pa.Table] = {}
        for a, b in bounds:
            prev = self._blocks.get(int(block[a]))
            if (prev.attrs is not None) if prev is not None else self.attr_index:
                index[a] = _run_index(cur, table.slice(a, b - a))
        with self._compact_lock:
            self.db.lock.acquire_write()
            try:
                cur.execute("BEGIN TRANSACTION")
                new_runs: dict[int, np.ndarray] = {}
                for a, b in bounds:
                    blk = int(block[a])
                    tbl = self._block_table(cur, blk)
                    prev = self._blocks.get(blk)
                    base = prev.index.rows if prev is not None else 0
                    part = table.slice(a, b - a).append_column(
                        "seq", pa.array(np.arange(base, base + b - a, dtype=np.int64)))
                    cur.register("_flush_spans", part)
                    cur.execute(f"INSERT INTO {tbl} SELECT {_COLS}, seq FROM _flush_spans")
                    attrs = self._attrs_table(cur, blk)
                    if attrs is not None:  # (a block that retention dropped meanwhile is new again)
                        rows = index[a] if a in index else _run_index(cur, table.slice(a, b - a))
                        _insert_index(cur, attrs, rows, base)
                    cur.unregister("_flush_spans")
                    cur.execute(
                        "INSERT INTO traces_blocks VALUES (?, ?, 1) ON CONFLICT (block) DO UPDATE SET runs = runs + 1",
                        [blk, tbl],
                    )
                    new_runs[blk] = tkey[a:b]
                cur.execute("INSERT OR REPLACE INTO traces_meta VALUES ('wal_replay_from', ?)", [segment])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                for blk, run in new_runs.items():
                    b_ = self._blocks.get(blk)
                    if b_ is None:
                        self._blocks[blk] = _Block(_table_name(blk), RowRanges.of_table(run),
                                                   attrs=_attrs_name(blk) if self.attr_index else None)
                    else:
                        b_.index.add_run(run)
                        b_.runs += 1
                with self._head_lock:
                    del self._chunks[: len(frozen)]
                    self._frozen = 0
                    self._head_spans = sum(len(c) for c in self._chunks)
                    self._head_since = time.monotonic()
                    self._prev_counts, self._trace_counts = self._trace_counts, {}
            finally:
                self.db.lock.release_write()

    def _block_table(self, cur: duckdb.DuckDBPyConnection, block: int) -> str:
        tbl = _table_name(block)
        if block not in self._blocks:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {tbl} ({self._ddl})")
        return tbl

    def _attrs_table(self, cur: duckdb.DuckDBPyConnection, block: int) -> str | None:
        """The block's attribute index table (created with a new block), or None: a block written
        before the index existed stays without one (a partial index would miss its older spans)."""
        prev = self._blocks.get(block)
        if prev is not None:
            return prev.attrs
        if not self.attr_index:
            return None
        tbl = _attrs_name(block)
        cur.execute(f"CREATE TABLE IF NOT EXISTS {tbl} ({_ATTR_DDL})")
        return tbl

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            try:
                if self._head_spans and time.monotonic() - self._head_since > self.head_max_age_s:
                    self._start_flush()
                await asyncio.to_thread(self.apply_retention, time.time_ns())
            except Exception:
                log.exception("traces store maintenance failed")

    def apply_retention(self, now_ns: int) -> list[str]:
        """Drop block tables wholly older than the retention window (0: keep everything)."""
        dropped = []
        for blk in expired_blocks(self._blocks, self.block_ns, self.retention_ns, now_ns):
            b = self._blocks[blk]
            with self._compact_lock:
                self.db.lock.acquire_write()
                try:
                    self.db.cursor().execute(f"DROP TABLE IF EXISTS {b.table}")
                    if b.attrs is not None:
                        self.db.cursor().execute(f"DROP TABLE IF EXISTS {b.attrs}")
                    self.db.cursor().execute("DELETE FROM traces_blocks WHERE block = ?", [blk])
                    del self._blocks[blk]
                finally:
                    self.db.lock.release_write()
            dropped.append(b.table)
        return dropped

    # -- reading ---------------------------------------------------------------

    def traces(self, tenant: str, tkeys: Sequence[int]) -> pa.Table:
        """Every stored span of the traces with these keys (callers filter exact ids)."""
        keys = np.unique(np.asarray(tkeys, dtype=np.int64))
        if not len(keys):
            return empty_table()
        parts: list[pa.Table] = []
        self.db.lock.acquire_read()
        try:
            with self._head_lock:
                chunks = list(self._chunks)
            cur = self.db.cursor()
            for b in list(self._blocks.values()):
                ranges = b.ranges(keys)
                if ranges:
                    parts.append(_select_ranges(cur, b.table, tenant, ranges))
        finally:
            self.db.lock.release_read()
        for c in chunks:
            rows = c.rows_of(keys)
            if len(rows):
                t = c.table.take(pa.array(rows))
                parts.append(t.filter(pc.equal(t.column("tenant"), tenant)))
        if not parts:
            return empty_table()
        return pa.concat_tables([p.cast(SPAN_SCHEMA) for p in parts])

    @contextlib.contextmanager
    def relation(self, start_ns: int, end_ns: int) -> Iterator[tuple[duckdb.DuckDBPyConnection, str]]:
        """A cursor and a SQL relation of all spans that may start in [start_ns, end_ns].

        The relation is the union of the overlapping blocks and the head; it
        is valid inside the ``with`` (a read lock is held).
        """
        with self._parts(start_ns, end_ns, indexed=False) as (cur, rel, _):
            yield cur, rel

    @contextlib.contextmanager
    def search_relations(self, start_ns: int, end_ns: int) -> Iterator[
            tuple[duckdb.DuckDBPyConnection, str, list[tuple[str, str]]]]:
        """Like ``relation``, split for attribute search: a cursor, the relation of the spans to
        scan (the head and the blocks without an attribute index) and (block table, attribute
        index table) of every overlapping indexed block. Valid inside the ``with``."""
        with self._parts(start_ns, end_ns, indexed=self.use_attr_index) as got:
            yield got

    @contextlib.contextmanager
    def _parts(self, start_ns: int, end_ns: int, *, indexed: bool) -> Iterator[
            tuple[duckdb.DuckDBPyConnection, str, list[tuple[str, str]]]]:
        cur = self.db.cursor()
        self.db.lock.acquire_read()
        try:
            with self._head_lock:
                chunks = list(self._chunks)
            blocks = [b for blk, b in sorted(self._blocks.items()) if blk <= end_ns and blk + self.block_ns > start_ns]
            with_index = [(b.table, b.attrs) for b in blocks if indexed and b.attrs is not None]
            parts = [f"SELECT {_COLS} FROM {b.table}" for b in blocks if not (indexed and b.attrs is not None)]
            head = pa.concat_tables([c.table for c in chunks]) if chunks else empty_table()
            cur.register("_traces_head", head)
            parts.append(f"SELECT {_COLS} FROM _traces_head")
            try:
                yield cur, "(" + " UNION ALL ".join(parts) + ")", with_index
            finally:
                cur.unregister("_traces_head")
        finally:
            self.db.lock.release_read()

    def services(self, tenant: str) -> list[str]:
        return sorted(self._catalog.get(tenant, {}))

    def _services_named(self, tenant: str, service: str) -> list[_Service]:
        low = service.lower()
        return [svc for name, svc in self._catalog.get(tenant, {}).items() if name.lower() == low]

    def span_names(self, tenant: str, service: str) -> list[str]:
        """Span names of a service, the service's name matched case-insensitively (as Zipkin)."""
        return sorted({n for svc in self._services_named(tenant, service) for n in svc.names})

    def remote_services(self, tenant: str, service: str) -> list[str]:
        return sorted({n for svc in self._services_named(tenant, service) for n in svc.remotes})

    def spellings(self, tenant: str, column: str, value: str) -> list[str] | None:
        """Every stored spelling of ``value`` (case-insensitive) in ``column`` (service, name or
        remote_service), so name filters compare columns exactly; None when the catalog may be
        incomplete (a service reached its name limit) and the caller must compare lower-cased."""
        low = value.lower()
        cat = self._catalog.get(tenant, {})
        if column == "service":
            return [n for n in cat if n.lower() == low]
        names: set[str] = set()
        for svc in cat.values():
            pool = svc.names if column == "name" else svc.remotes
            if len(pool) >= _MAX_NAMES_PER_SERVICE:
                return None
            names.update(n for n in pool if n.lower() == low)
        return sorted(names)

    @property
    def head_spans(self) -> int:
        return self._head_spans

    def block_count(self) -> int:
        return len(self._blocks)


def _table_name(block_ns: int) -> str:
    ms = block_ns // 1_000_000
    return f"traces_spans_{ms}" if ms >= 0 else f"traces_spans_n{-ms}"


def _zstd_available(db: TelemetryDB) -> bool:
    """Whether the database file's storage format can hold zstd-compressed columns."""
    try:
        db.execute("CREATE TABLE IF NOT EXISTS traces_zstd_probe (a VARCHAR USING COMPRESSION zstd)")
    except duckdb.Error:
        return False
    db.execute("DROP TABLE traces_zstd_probe")
    return True


def _attrs_name(block_ns: int) -> str:
    return _table_name(block_ns).replace("traces_spans_", "traces_attrs_", 1)


def _load_block(cur: duckdb.DuckDBPyConnection, tbl: str, runs: int, attrs: str | None) -> _Block:
    """A block's in-memory index, rebuilt from its table: one entry per stretch of equal keys in seq order."""
    tkey = np.asarray(cur.execute(f"SELECT tkey FROM {tbl} ORDER BY seq").fetchnumpy()["tkey"], dtype=np.int64)
    return _Block(tbl, RowRanges.of_table(tkey), runs, attrs)


def _select_ranges(cur: duckdb.DuckDBPyConnection, table: str, tenant: str,
                   ranges: list[tuple[int, int, int]]) -> pa.Table:
    # One query per block; each ``seq`` range is a literal so DuckDB's zone maps prune to it
    # (a range may span other traces' rows when the trace reached the block in several runs).
    # The tenant goes in as a quoted literal too: no prepare/bind round (a third of a lookup's time).
    lit = "'" + tenant.replace("'", "''") + "'"
    branches = " UNION ALL ".join(
        f"SELECT {_COLS} FROM {table} WHERE seq BETWEEN {int(a)} AND {int(b)} AND tkey = {int(k)} AND tenant = {lit}"
        for k, a, b in ranges)
    return cur.sql(branches).to_arrow_table()
