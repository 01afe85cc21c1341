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

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pitwall.metrics.store import WouldBlock
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import blockindex
from pitwall.storage.metrics.merge import sorted_by_sid_ts
from pitwall.storage.metrics.readcache import BlockSeriesCache
from pitwall.storage.retention import expired_blocks
from pitwall.storage.row_ranges import RowRanges

__all__ = ["Block", "BlockTables", "Columns"]

Columns = tuple[np.ndarray, np.ndarray, np.ndarray]  # (sid, ts, val)

# Reading a block by row ranges: ranges closer than this many rows are read as
# one, and at most this many go in one query (a range costs more than 10^5 rows).
_JOIN_GAP = 1 << 16
_MAX_SPANS = 16
# Reads of at most this many series go through the cache of block series (``readcache``).
CACHED_READ_SERIES = 64

log = logging.getLogger(__name__)


@dataclass
class Block:
    table: str
    index: RowRanges = field(default_factory=RowRanges)
    generation: int = 0  # bumped by each compaction (metrics_meta 'gen:<table>'); names the index file
    persisted_rows: int = 0  # rows its index file covers (0: none)


_GEN = "gen:"


def _columns(res: pa.Table) -> Columns:
    return (np.asarray(res.column("sid").to_numpy(), dtype=np.int64),
            np.asarray(res.column("ts").to_numpy(), dtype=np.int64),
            np.asarray(res.column("val").to_numpy(), dtype=np.float64))


def _spans_sql(b: Block, first: np.ndarray, last: np.ndarray, when: str) -> str:
    """The rows of ``b`` in the row ranges [first, last] meeting ``when``; a scan of the whole
    block when the ranges cover more than half of it."""
    if int((last - first + 1).sum()) * 2 > b.index.rows:
        return f"SELECT sid, ts, val FROM {b.table} WHERE {when}"
    return " UNION ALL ".join(
        f"SELECT sid, ts, val FROM {b.table} WHERE rowid BETWEEN {x} AND {y} AND {when}"
        for x, y in zip(first.tolist(), last.tolist(), strict=True))


def _suffix(block: int) -> str:
    return str(block) if block >= 0 else f"n{-block}"


class BlockTables:
    """The block tables of one metrics store, by block start (ms)."""

    def __init__(
        self, db: TelemetryDB, block_ms: int, index_dir: Path | None = None, cache_samples: int = 1_000_000
    ) -> None:
        self.db = db
        self.cache = BlockSeriesCache(cache_samples)  # 0: no cache
        self.index_dir = index_dir  # where sealed blocks' index files go; None: none are kept
        self.block_ms = block_ms
        self.by_start: dict[int, Block] = {}
        self.compact_lock = threading.Lock()
        self.closing = False  # set by the store's stop(): a compaction pass ends early

    # -- opening -------------------------------------------------------------

    def open(self) -> Iterator[tuple[Block, blockindex.Summary]]:
        """Drop leftovers of cut-short compactions, then index every block table.

        A block's index comes from its index file when one is valid (plus the
        rows of runs flushed after it was written), else from reading the
        whole table. Yields each block with its summary, so the store can fold
        the series' time bounds and newest samples into its registry.
        """
        db = self.db
        for (tname,) in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'metrics_compact_%'"
        ).fetchall():
            db.execute(f"DROP TABLE {tname}")  # a compaction cut short before its swap
        gens = {k[len(_GEN):]: int(v) for k, v in db.execute(
            "SELECT key, value FROM metrics_meta WHERE key LIKE 'gen:%'").fetchall()}
        tables = [t for (t,) in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'metrics_samples_%'"
        ).fetchall()]
        self._remove_stale_files(set(tables), gens)
        for tname in tables:
            suffix = tname.rsplit("_", 1)[1]
            start = -int(suffix[1:]) if suffix.startswith("n") else int(suffix)
            gen = gens.get(tname, 0)
            summary, persisted = self._load_summary(tname, gen)
            block = self.by_start[start] = Block(tname, summary.ranges(), gen, persisted)
            yield block, summary

    def _load_summary(self, table: str, gen: int) -> tuple[blockindex.Summary, int]:
        """The table's summary and how many of its rows its index file covers."""
        cur = self.db.cursor()
        rows = int(cur.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
        stored: blockindex.Summary | None = None
        if self.index_dir is not None:
            stored, why = blockindex.load(self.index_dir, table, gen, rows)
            if stored is None:  # a block not sealed yet has none; one that had a bad file is worth a warning
                level = logging.INFO if why == "no index file" else logging.WARNING
                log.log(level, "metrics block index rebuilt from its table", extra={"table": table, "reason": why})
        if stored is not None and stored.rows == rows:
            return stored, rows
        base = 0 if stored is None else stored.rows
        # Without ORDER BY, DuckDB returns a table's rows in insertion (rowid) order.
        sql = f"SELECT sid, ts, val FROM {table}" + (f" WHERE rowid >= {base}" if base else "")
        tail = blockindex.summarize(*_columns(cur.sql(sql).to_arrow_table()), base=base)
        if stored is None:
            return tail, 0
        return blockindex.concat(stored, tail), stored.rows

    def _remove_stale_files(self, tables: set[str], gens: dict[str, int]) -> None:
        """Index files of dropped tables or of generations a compaction replaced."""
        if self.index_dir is None or not self.index_dir.is_dir():
            return
        for p in self.index_dir.iterdir():
            table, _, rest = p.name.partition(".")
            if table not in tables or rest != f"{gens.get(table, 0)}.idx":
                p.unlink(missing_ok=True)

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
            # Files first: a crash between leaves a table without a file (rebuilt), never the reverse.
            blockindex.remove_all(self.index_dir, b.table)
            self.db.lock.acquire_write()
            try:
                cur = self.db.cursor()
                cur.execute(f"DROP TABLE IF EXISTS {b.table}")
                cur.execute("DELETE FROM metrics_meta WHERE key = ?", [_GEN + b.table])
                del self.by_start[block]
                self.cache.drop_table(b.table)
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
            if block + self.block_ms > sealed_before:
                continue
            with self.compact_lock:
                if b.index.fragmented():
                    if self._compact_block(block, b, rank()):
                        done.append(b.table)
                elif self.index_dir is not None and b.persisted_rows != b.index.rows:
                    self._persist_index(b)
        return done

    def _persist_index(self, b: Block) -> None:
        """Write a sealed, single-run block's index file from its rows."""
        assert self.index_dir is not None
        self.db.lock.acquire_read()  # no flush adds rows meanwhile
        try:
            if b.index.rows != b.persisted_rows:
                cols = _columns(self.db.cursor().sql(f"SELECT sid, ts, val FROM {b.table}").to_arrow_table())
                summary = blockindex.summarize(*cols)
                blockindex.write(self.index_dir, b.table, b.generation, summary)
                b.persisted_rows = summary.rows
        finally:
            self.db.lock.release_read()

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
        summary = blockindex.summarize(*_columns(cur.sql(f"SELECT sid, ts, val FROM {tmp}").to_arrow_table()))
        gen = b.generation + 1
        self.db.lock.acquire_write()
        try:
            if b.index.rows != rows or summary.rows != rows or self.by_start.get(block) is not b:
                cur.execute(f"DROP TABLE {tmp}")  # a flush added rows meanwhile: next pass
                return False
            if self.index_dir is not None:  # before the swap commits: a crash leaves an unused file
                blockindex.write(self.index_dir, b.table, gen, summary)
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute(f"DROP TABLE {b.table}")
                cur.execute(f"ALTER TABLE {tmp} RENAME TO {b.table}")
                cur.execute("INSERT OR REPLACE INTO metrics_meta VALUES (?, ?)", [_GEN + b.table, gen])
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                blockindex.remove_all(self.index_dir, b.table, keep=b.generation)
                raise
            b.index = summary.ranges()
            b.generation = gen
            self.cache.drop_table(b.table)  # the old generation's entries can no longer be asked for
            b.persisted_rows = rows if self.index_dir is not None else 0
            blockindex.remove_all(self.index_dir, b.table, keep=gen)
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
        nowait: bool = False,
    ) -> None:
        """Append the block rows of ``sids`` in [start, end] to ``parts``, one per block.

        Each block's index gives the row ranges holding the series; a few
        ranges are read by ``rowid`` (zone maps skip the rest), while a
        selection covering most of a block is cheaper to scan whole. Rows of
        unwanted series inside a joined range are dropped in numpy. The
        caller holds the database's read lock. At most ``CACHED_READ_SERIES``
        series are read through the cache; with ``nowait`` only cached ones
        are, and anything else raises ``WouldBlock``.
        """
        if len(sids) <= CACHED_READ_SERIES and self.cache.max_samples:
            for b in blocks:
                part = self._read_cached(b, sids, start, end, nowait)
                if len(part[0]):
                    if account is not None:
                        account(len(part[0]))
                    parts.append(part)
            return
        if nowait:
            raise WouldBlock("samples in blocks")
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
            # Arrow is the cheapest way out of DuckDB for large results.
            res = cur.sql(_spans_sql(b, first, last, when)).to_arrow_table()
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

    def _read_cached(self, b: Block, sids: np.ndarray, start: int, end: int, nowait: bool) -> Columns:
        """The rows of ``sids`` in [start, end] of one block, each series' stretch from the cache."""
        found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        missing = []
        sid_list = sids.tolist()
        for sid in sid_list:
            hit = self.cache.get((b.table, b.generation, b.index.rows, sid))
            if hit is None:
                missing.append(sid)
            else:
                found[sid] = hit
        if missing:
            if nowait:
                raise WouldBlock("series not in the block cache")
            found.update(self._load_series(b, np.array(sorted(missing), dtype=np.int64)))
        s_parts, t_parts, v_parts = [], [], []
        for sid in sid_list:
            ts, vals = found[sid]
            a, z = int(ts.searchsorted(start, "left")), int(ts.searchsorted(end, "right"))
            if z > a:
                s_parts.append(np.full(z - a, sid, dtype=np.int64))
                t_parts.append(ts[a:z])
                v_parts.append(vals[a:z])
        if not s_parts:
            e = np.empty(0, dtype=np.int64)
            return e, e, np.empty(0, dtype=np.float64)
        if len(s_parts) == 1:
            return s_parts[0], t_parts[0].copy(), v_parts[0].copy()  # readers get arrays they own
        return np.concatenate(s_parts), np.concatenate(t_parts), np.concatenate(v_parts)

    def _load_series(self, b: Block, wanted: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Every row of the sorted sids ``wanted`` in one block, per sid, put in the cache too."""
        first, last = b.index.spans(wanted, max_spans=_MAX_SPANS, join_gap=_JOIN_GAP)
        e = np.empty(0, dtype=np.int64)
        out = {sid: (e, np.empty(0, dtype=np.float64)) for sid in wanted.tolist()}
        if len(first):
            when = f"sid IN ({','.join(map(str, wanted.tolist()))})"
            s, t, v = _columns(self.db.cursor().sql(_spans_sql(b, first, last, when)).to_arrow_table())
            if len(s):
                s, t, v = sorted_by_sid_ts(s, t, v, int(wanted[0]), int(wanted[-1]), int(t.min()), int(t.max()))
                lo, hi = s.searchsorted(wanted, "left").tolist(), s.searchsorted(wanted, "right").tolist()
                for sid, a, z in zip(wanted.tolist(), lo, hi, strict=True):
                    out[sid] = (t[a:z], v[a:z])
        for sid, (t_, v_) in out.items():
            self.cache.put((b.table, b.generation, b.index.rows, sid), t_, v_)
        return out
