"""The metrics store's DuckDB time blocks: open, write, read, retention, compaction.

Contract: samples older than the head live in per-block tables
``metrics_samples_<block start ms>`` (``n<ms>`` for negative starts) of
(sid, ts, val). Within each flushed run, rows are ordered by (tenant and
metric name, series, time); each block keeps a ``RowRanges`` index (series ->
row stretches, rebuilt from the table on open), so a read fetches only a few
``rowid`` ranges per block. ``BlockTables`` owns the tables and their
indexes and nothing else: series, metadata and the head stay with the store,
which passes in what a write or a compaction needs (rows in order, a per-sid
rank). Writes happen inside the caller's transaction under the database's
write lock; reads take the read lock in the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics.merge import sorted_by_sid_ts
from pitwall.storage.retention import expired_blocks
from pitwall.storage.row_ranges import RowRanges

__all__ = ["Block", "BlockTables", "Columns"]

Columns = tuple[np.ndarray, np.ndarray, np.ndarray]  # (sid, ts, val)

# Reading a block by row ranges: ranges closer than this many rows are read as
# one, and at most this many go in one query (a range costs more than 10^5 rows).
_JOIN_GAP = 1 << 16
_MAX_SPANS = 16


@dataclass
class Block:
    table: str
    index: RowRanges = field(default_factory=RowRanges)


def _suffix(block: int) -> str:
    return str(block) if block >= 0 else f"n{-block}"


class BlockTables:
    """The block tables of one metrics store, by block start (ms)."""

    def __init__(self, db: TelemetryDB, block_ms: int) -> None:
        self.db = db
        self.block_ms = block_ms
        self.by_start: dict[int, Block] = {}
        self.compact_lock = threading.Lock()
        self.closing = False  # set by the store's stop(): a compaction pass ends early

    # -- opening -------------------------------------------------------------

    def open(self) -> Iterator[tuple[Block, Columns]]:
        """Drop leftovers of cut-short compactions, then index every block table.

        Yields each block with its rows in table (rowid) order, so the store
        can fold the series' time bounds and newest samples into its registry.
        """
        db = self.db
        for (tname,) in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'metrics_compact_%'"
        ).fetchall():
            db.execute(f"DROP TABLE {tname}")  # a compaction cut short before its swap
        for (tname,) in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'metrics_samples_%'"
        ).fetchall():
            suffix = tname.rsplit("_", 1)[1]
            start = -int(suffix[1:]) if suffix.startswith("n") else int(suffix)
            # Without ORDER BY, DuckDB returns a table's rows in insertion (rowid) order.
            res = db.cursor().sql(f"SELECT sid, ts, val FROM {tname}").to_arrow_table()
            sid = np.asarray(res.column("sid").to_numpy(), dtype=np.int64)
            ts = np.asarray(res.column("ts").to_numpy(), dtype=np.int64)
            val = np.asarray(res.column("val").to_numpy(), dtype=np.float64)
            block = self.by_start[start] = Block(tname, RowRanges.of_table(sid))
            yield block, (sid, ts, val)

    # -- writing -------------------------------------------------------------

    def write(self, cur: Any, sid: np.ndarray, ts: np.ndarray, val: np.ndarray) -> dict[int, tuple[str, np.ndarray]]:
        """Insert rows (already in flush order) into their block tables, in the caller's transaction.

        Returns the runs written, per block start; pass them to ``commit_runs``
        once the transaction commits.
        """
        runs: dict[int, tuple[str, np.ndarray]] = {}
        block = ts // self.block_ms * self.block_ms
        for b in np.unique(block).tolist():
            sel = block == b
            table = self._table_for(b)
            tbl = pa.table({"sid": sid[sel], "ts": ts[sel], "val": val[sel]})
            cur.register("_flush_rows", tbl)
            cur.execute(f"INSERT INTO {table} SELECT sid, ts, val FROM _flush_rows")
            cur.unregister("_flush_rows")
            runs[b] = (table, sid[sel])
        return runs

    def commit_runs(self, runs: dict[int, tuple[str, np.ndarray]]) -> None:
        for b, (table, run) in runs.items():
            self.by_start.setdefault(b, Block(table)).index.add_run(run)

    def _table_for(self, block: int) -> str:
        known = self.by_start.get(block)
        if known is not None:
            return known.table
        table = f"metrics_samples_{_suffix(block)}"
        # Registered in by_start only once the flush commits (the CREATE rolls back with it).
        self.db.cursor().execute(f"CREATE TABLE IF NOT EXISTS {table} (sid BIGINT, ts BIGINT, val DOUBLE)")
        return table

    # -- retention and compaction ----------------------------------------------

    def apply_retention(self, retention_ms: int, now_ms: int) -> list[str]:
        """Drop block tables wholly older than the retention window (0: keep everything)."""
        dropped = []
        for block in expired_blocks(self.by_start, self.block_ms, retention_ms, now_ms):
            b = self.by_start[block]
            self.db.lock.acquire_write()
            try:
                self.db.cursor().execute(f"DROP TABLE IF EXISTS {b.table}")
                del self.by_start[block]
            finally:
                self.db.lock.release_write()
            dropped.append(b.table)
        return dropped

    def compact(self, sealed_before: int, rank: Callable[[], np.ndarray]) -> list[str]:
        """Rewrite each block ending by ``sealed_before`` and flushed in several runs as one run.

        ``rank()`` gives, per sid, its position in (tenant and metric name,
        sid) order. Returns the tables rewritten.
        """
        done = []
        for block, b in sorted(self.by_start.items()):
            if self.closing:
                break
            if block + self.block_ms > sealed_before or not b.index.fragmented():
                continue
            with self.compact_lock:
                if self._compact_block(block, b, rank()):
                    done.append(b.table)
        return done

    def _compact_block(self, block: int, b: Block, rank: np.ndarray) -> bool:
        """One block rewritten in (metric, series, time) order, then swapped in under the write lock."""
        rows = b.index.rows
        tmp = f"metrics_compact_{_suffix(block)}"
        cur = self.db.cursor()
        # DuckDB sorts within its memory limit (spilling if it must); the rank is per sid.
        cur.register("_rank", pa.table({"sid": np.arange(len(rank), dtype=np.int64), "rank": rank}))
        try:
            cur.execute(f"CREATE OR REPLACE TABLE {tmp} (sid BIGINT, ts BIGINT, val DOUBLE)")
            cur.execute(
                f"INSERT INTO {tmp} SELECT s.sid, s.ts, s.val FROM {b.table} s "
                "JOIN _rank r ON s.sid = r.sid ORDER BY r.rank, s.ts"
            )
        finally:
            cur.unregister("_rank")
        sid = np.asarray(cur.sql(f"SELECT sid FROM {tmp}").fetchnumpy()["sid"], dtype=np.int64)
        self.db.lock.acquire_write()
        try:
            if b.index.rows != rows or len(sid) != rows or self.by_start.get(block) is not b:
                cur.execute(f"DROP TABLE {tmp}")  # a flush added rows meanwhile: next pass
                return False
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute(f"DROP TABLE {b.table}")
                cur.execute(f"ALTER TABLE {tmp} RENAME TO {b.table}")
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            b.index = RowRanges.of_table(sid)
        finally:
            self.db.lock.release_write()
        return True

    # -- reading ---------------------------------------------------------------

    def overlapping(self, start: int, end: int) -> list[Block]:
        """Blocks whose time range meets [start, end], oldest first."""
        return [bl for b, bl in sorted(self.by_start.items()) if b <= end and b + self.block_ms > start]

    def read(
        self,
        blocks: list[Block],
        sids: np.ndarray,
        start: int,
        end: int,
        parts: list[Columns],
        account: Callable[[int], None] | None = None,
    ) -> None:
        """Append the block rows of ``sids`` in [start, end] to ``parts``, one per block.

        Each block's index gives the row ranges holding the series; a few
        ranges are read by ``rowid`` (zone maps skip the rest), while a
        selection covering most of a block is cheaper to scan whole. Rows of
        unwanted series inside a joined range are dropped in numpy. The
        caller holds the database's read lock.
        """
        cur = self.db.cursor()
        wanted = np.sort(sids)
        lo, hi = int(wanted[0]), int(wanted[-1])
        want = np.zeros(hi - lo + 1, dtype=bool)
        want[wanted - lo] = True
        every = bool(want.all())
        # Joined row ranges also cover other series' rows: the sid bound drops
        # those outside [lo, hi] in every plan, the numpy mask the rest.
        when = f"ts BETWEEN {int(start)} AND {int(end)} AND sid BETWEEN {lo} AND {hi}"
        for b in blocks:
            first, last = b.index.spans(wanted, max_spans=_MAX_SPANS, join_gap=_JOIN_GAP)
            if not len(first):
                continue
            if int((last - first + 1).sum()) * 2 > b.index.rows:
                sql = f"SELECT sid, ts, val FROM {b.table} WHERE {when}"
            else:
                sql = " UNION ALL ".join(
                    f"SELECT sid, ts, val FROM {b.table} WHERE rowid BETWEEN {x} AND {y} AND {when}"
                    for x, y in zip(first.tolist(), last.tolist(), strict=True))
            # Arrow is the cheapest way out of DuckDB for large results.
            res = cur.sql(sql).to_arrow_table()
            if not res.num_rows:
                continue
            s = np.asarray(res.column("sid").to_numpy(), dtype=np.int64)
            t = np.asarray(res.column("ts").to_numpy(), dtype=np.int64)
            v = np.asarray(res.column("val").to_numpy(), dtype=np.float64)
            if not every:
                m = want[s - lo]
                if not m.all():
                    s, t, v = s[m], t[m], v[m]
            if account is not None:
                account(len(s))
            parts.append(sorted_by_sid_ts(s, t, v, lo, hi, start, end))
