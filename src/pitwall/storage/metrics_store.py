"""The embedded metrics store: WAL + in-memory head + DuckDB time blocks.

Writes: ``commit`` validates a batch (order, duplicates, limits), applies it
to the head and queues one WAL record, all without yielding to the event
loop, then awaits the group fsync. Reads: the head and the DuckDB blocks
that overlap the query range, merged per series. The head is flushed into
per-block DuckDB tables (``metrics_samples_<block start ms>``) when it grows
or ages; retention drops whole block tables.

Within each flushed run, rows are ordered by (tenant and metric name, series,
time), so the series one selector picks, which nearly always share a metric
name, are neighbours. Each block keeps a ``RowRanges`` index (series -> row
stretches, rebuilt from the table on open), and a read fetches only a few
``rowid`` ranges per block. Once the head has moved past a block, a
maintenance pass rewrites a block flushed in several runs as one run in that
order, so a metric's series are then one range per block.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from pitwall.core.labels import Labels, Matcher, format_labels
from pitwall.core.tasks import Supervisor
from pitwall.core.wal import Wal
from pitwall.metrics.errors import (
    DuplicateSample,
    InvalidLabels,
    OutOfOrderSample,
    SeriesLimitExceeded,
)
from pitwall.metrics.model import Exemplar, MetricMetadata, SampleBatch, SeriesSamples
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.retention import expired_blocks
from pitwall.storage.row_ranges import RowRanges
from pitwall.storage.series_index import SeriesIndex

log = logging.getLogger(__name__)

REC_SAMPLES = 1
REC_METADATA = 2
REC_EXEMPLARS = 3

# Reading a block by row ranges: ranges closer than this many rows are read as
# one, and at most this many go in one query (a range costs more than 10^5 rows).
_JOIN_GAP = 1 << 16
_MAX_SPANS = 16

_I64_MIN = np.iinfo(np.int64).min
_I64_MAX = np.iinfo(np.int64).max


@dataclass
class StoreLimits:
    max_series_per_tenant: int = 1_000_000
    max_exemplars: int = 100_000


@dataclass
class _Chunk:
    sid: np.ndarray  # int64, grouped by sid, time-ordered within a sid
    ts: np.ndarray
    val: np.ndarray

    def __len__(self) -> int:
        return int(self.sid.shape[0])


@dataclass
class _Block:
    table: str
    index: RowRanges = field(default_factory=RowRanges)


@dataclass
class _Tenant:
    index: SeriesIndex = field(default_factory=SeriesIndex)
    by_labels: dict[Labels, int] = field(default_factory=dict)
    metadata: dict[str, MetricMetadata] = field(default_factory=dict)
    exemplars: deque[Exemplar] = field(default_factory=lambda: deque(maxlen=100_000))


def _encode_labels(labels: Labels) -> bytes:
    return json.dumps(labels, separators=(",", ":")).encode()


def _decode_labels(raw: str | bytes) -> Labels:
    return tuple((k, v) for k, v in json.loads(raw))


class MetricStore:
    """Durable, queryable metric storage for all tenants of one server."""

    name = "metrics-store"

    def __init__(
        self,
        db: TelemetryDB,
        wal_dir: Path,
        *,
        block_ms: int = 2 * 3600 * 1000,
        retention_ms: int = 15 * 86400 * 1000,
        head_max_samples: int = 2_000_000,
        head_max_age_s: float = 900.0,
        limits: StoreLimits | None = None,
        fsync: bool = True,
    ) -> None:
        self.db = db
        self.wal = Wal(wal_dir, fsync=fsync)
        self.block_ms = block_ms
        self.retention_ms = retention_ms
        self.head_max_samples = head_max_samples
        self.head_max_age_s = head_max_age_s
        self.limits = limits or StoreLimits()
        self._tenants: dict[str, _Tenant] = {}
        self._labels: list[Labels] = []
        self._tenant_of: list[str] = []
        cap = 1024
        self._last_ts = np.full(cap, _I64_MIN, dtype=np.int64)
        self._cluster = np.zeros(cap, dtype=np.int64)  # per sid: its (tenant, metric name) id
        self._cluster_ids: dict[tuple[str, str], int] = {}
        self._last_bits = np.zeros(cap, dtype=np.uint64)
        self._min_ts = np.full(cap, _I64_MAX, dtype=np.int64)
        self._max_ts = np.full(cap, _I64_MIN, dtype=np.int64)
        self._chunks: list[_Chunk] = []
        self._frozen = 0  # chunks[:frozen] are being flushed
        self._head_lock = threading.Lock()
        self._head_samples = 0
        self._head_since = time.monotonic()
        self._flushed_sids = 0  # sids below this are in metrics_series
        self._blocks: dict[int, _Block] = {}
        self._compact_lock = threading.Lock()
        self._closing = False
        self._flush_task: asyncio.Task[None] | None = None
        self.tasks = Supervisor("metrics-store")
        self.samples_appended = 0

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._open)
        self.wal.open_for_append()
        self.tasks.spawn(self._maintenance_loop(), name="maintenance")

    async def stop(self) -> None:
        self._closing = True
        await self.tasks.stop()
        # A compaction running in its thread finishes its block first.
        await asyncio.to_thread(self._compact_lock.acquire)
        self._compact_lock.release()
        if self._flush_task is not None:
            await self._flush_task
        await self.flush()
        await self.wal.close()

    def _open(self) -> None:
        db = self.db
        db.execute(
            "CREATE TABLE IF NOT EXISTS metrics_series (sid BIGINT PRIMARY KEY, tenant VARCHAR, labels VARCHAR)"
        )
        db.execute("CREATE TABLE IF NOT EXISTS metrics_meta (key VARCHAR PRIMARY KEY, value BIGINT)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS metrics_metadata (tenant VARCHAR, metric VARCHAR, type VARCHAR, "
            "help VARCHAR, unit VARCHAR)"
        )
        rows = db.execute("SELECT sid, tenant, labels FROM metrics_series ORDER BY sid").fetchall()
        for sid, tenant, raw in rows:
            self._register(int(sid), tenant, _decode_labels(raw))
        self._flushed_sids = len(self._labels)
        for tenant, metric, typ, help_, unit in db.execute("SELECT * FROM metrics_metadata").fetchall():
            self._tenant(tenant).metadata[metric] = MetricMetadata(metric, typ, help_, unit)
        for (tname,) in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'metrics_compact_%'"
        ).fetchall():
            db.execute(f"DROP TABLE {tname}")  # a compaction cut short before its swap
        for (tname,) in db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'metrics_samples_%'"
        ).fetchall():
            suffix = tname.rsplit("_", 1)[1]
            self._blocks[-int(suffix[1:]) if suffix.startswith("n") else int(suffix)] = self._load_block(tname)
        got = db.scalar("SELECT value FROM metrics_meta WHERE key = 'wal_replay_from'")
        replay_from = int(got or 0)
        n = 0
        for rec in self.wal.replay(replay_from):
            self._apply_record(rec.type, rec.payload)
            n += 1
        log.info("metrics store opened", extra={"series": len(self._labels), "wal_records": n})

    def _load_block(self, table: str) -> _Block:
        """Index a block table and fold its series' time bounds and newest samples into the registry."""
        # Without ORDER BY, DuckDB returns a table's rows in insertion (rowid) order.
        res = self.db.cursor().sql(f"SELECT sid, ts, val FROM {table}").to_arrow_table()
        sid = np.asarray(res.column("sid").to_numpy(), dtype=np.int64)
        ts = np.asarray(res.column("ts").to_numpy(), dtype=np.int64)
        val = np.asarray(res.column("val").to_numpy(), dtype=np.float64)
        index = RowRanges.of_table(sid)
        if len(sid):
            k = index.keys
            np.minimum.at(self._min_ts, k, ts[index.lo])
            newest = ts[index.hi]
            np.maximum.at(self._max_ts, k, newest)
            # Per sid, its stretch ending latest; keep it where it beats what other blocks gave.
            order = np.lexsort((newest, k))
            last = order[np.concatenate([k[order][1:] != k[order][:-1], [True]])]
            ls, lt = k[last], newest[last]
            newer = lt > self._last_ts[ls]
            self._last_ts[ls[newer]] = lt[newer]
            self._last_bits[ls[newer]] = val[index.hi[last]][newer].view(np.uint64)
        return _Block(table, index)

    # -- series registry -----------------------------------------------------

    def _tenant(self, tenant: str) -> _Tenant:
        t = self._tenants.get(tenant)
        if t is None:
            t = self._tenants[tenant] = _Tenant()
            t.exemplars = deque(maxlen=self.limits.max_exemplars)
        return t

    def _grow(self, n: int) -> None:
        cap = len(self._last_ts)
        if n <= cap:
            return
        new = max(n, cap * 2)
        self._last_ts = np.concatenate([self._last_ts, np.full(new - cap, _I64_MIN, dtype=np.int64)])
        self._last_bits = np.concatenate([self._last_bits, np.zeros(new - cap, dtype=np.uint64)])
        self._min_ts = np.concatenate([self._min_ts, np.full(new - cap, _I64_MAX, dtype=np.int64)])
        self._max_ts = np.concatenate([self._max_ts, np.full(new - cap, _I64_MIN, dtype=np.int64)])
        self._cluster = np.concatenate([self._cluster, np.zeros(new - cap, dtype=np.int64)])

    def _register(self, sid: int, tenant: str, labels: Labels) -> None:
        assert sid == len(self._labels), "series ids must be dense"
        self._labels.append(labels)
        self._tenant_of.append(tenant)
        t = self._tenant(tenant)
        t.by_labels[labels] = sid
        t.index.add(sid, labels)
        self._grow(sid + 1)
        name = next((v for k, v in labels if k == "__name__"), "")
        self._cluster[sid] = self._cluster_ids.setdefault((tenant, name), len(self._cluster_ids))

    def _cluster_rank(self, n: int) -> np.ndarray:
        """Per sid below ``n``: its position in (tenant and metric name, sid) order."""
        order = np.argsort(self._cluster[:n], kind="stable")
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n, dtype=np.int64)
        return rank

    def lookup(self, tenant: str, labels: Labels) -> int | None:
        return self._tenant(tenant).by_labels.get(labels)

    def resolve(self, tenant: str, series: Sequence[Labels]) -> tuple[np.ndarray, list[tuple[int, Labels]]]:
        """Map label sets to sids; unknown ones get provisional ids past the end.

        Provisional series are registered only when ``commit`` accepts the batch.
        """
        t = self._tenant(tenant)
        sids = np.empty(len(series), dtype=np.int64)
        new: list[tuple[int, Labels]] = []
        new_ids: dict[Labels, int] = {}
        nxt = len(self._labels)
        get = t.by_labels.get
        for i, lbl in enumerate(series):
            sid = get(lbl)
            if sid is None:
                sid = new_ids.get(lbl)
                if sid is None:
                    _validate_labels(lbl)
                    sid = new_ids[lbl] = nxt + len(new)
                    new.append((sid, lbl))
            sids[i] = sid
        return sids, new

    # -- writing -------------------------------------------------------------

    async def append(self, tenant: str, batch: SampleBatch) -> None:
        """Appender protocol: validate, apply and make durable one batch."""
        sids, new = self.resolve(tenant, batch.series)
        await self.commit(tenant, sids[batch.series_idx], batch.ts, batch.values, new)

    def commit(
        self,
        tenant: str,
        sids: np.ndarray,
        ts: np.ndarray,
        vals: np.ndarray,
        new: list[tuple[int, Labels]],
    ) -> asyncio.Future[None]:
        """Validate and apply synchronously; the returned future resolves at fsync.

        The whole batch is rejected (nothing applied) on the first invalid
        sample, as Prometheus' remote-write handler rolls back its appender.
        """
        t = self._tenant(tenant)
        if new and len(t.by_labels) + len(new) > self.limits.max_series_per_tenant:
            raise SeriesLimitExceeded(
                f"per-tenant series limit of {self.limits.max_series_per_tenant} exceeded "
                f"(tenant {tenant!r} has {len(t.by_labels)}, request adds {len(new)})"
            )
        if new:
            self._grow(new[-1][0] + 1)
        s, tt, v = self._validate(sids, ts, vals, new)
        for sid, lbl in new:
            self._register(sid, tenant, lbl)
        payload = _encode_samples(tenant, new, s, tt, v)
        fut = self.wal.enqueue(REC_SAMPLES, payload)
        self._apply_samples(s, tt, v)
        return fut

    def _validate(
        self, sids: np.ndarray, ts: np.ndarray, vals: np.ndarray, new: list[tuple[int, Labels]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        order = np.argsort(sids, kind="stable")
        s, t, v = sids[order], ts[order].astype(np.int64, copy=False), vals[order].astype(np.float64, copy=False)
        if not len(s):
            return s, t, v
        bits = v.view(np.uint64)
        same = s[1:] == s[:-1]
        dt = t[1:] - t[:-1]
        back = np.flatnonzero(same & (dt < 0))
        if len(back):
            i = int(back[0]) + 1
            self._reject(OutOfOrderSample, "out of order sample", s[i], t[i], new)
        dup = same & (dt == 0)
        keep = np.ones(len(s), dtype=bool)
        if dup.any():
            clash = np.flatnonzero(dup & (bits[1:] != bits[:-1]))
            if len(clash):
                i = int(clash[0]) + 1
                self._reject(DuplicateSample, "duplicate sample for timestamp", s[i], t[i], new)
            keep[1:][dup] = False
        first = np.concatenate([[True], ~same])
        fi = np.flatnonzero(first)
        fs = s[fi]
        lt = self._last_ts[fs]
        older = np.flatnonzero(t[fi] < lt)
        if len(older):
            i = int(fi[older[0]])
            self._reject(OutOfOrderSample, "out of order sample", s[i], t[i], new)
        eq = np.flatnonzero(t[fi] == lt)
        if len(eq):
            idx = fi[eq]
            differ = bits[idx] != self._last_bits[s[idx]]
            if differ.any():
                i = int(idx[np.flatnonzero(differ)[0]])
                self._reject(DuplicateSample, "duplicate sample for timestamp", s[i], t[i], new)
            keep[idx] = False
        if not keep.all():
            s, t, v = s[keep], t[keep], v[keep]
        return s, t, v

    def _reject(
        self, exc: type[Exception], what: str, sid: np.integer, ts: np.integer, new: list[tuple[int, Labels]]
    ) -> None:
        sid_i = int(sid)
        labels = self._labels[sid_i] if sid_i < len(self._labels) else dict(new)[sid_i]
        latest = int(self._last_ts[sid_i])
        detail = f"; newest stored sample is at {latest}" if latest != _I64_MIN else ""
        raise exc(f"{what} for series {format_labels(labels)} at timestamp {int(ts)}{detail}")

    def _apply_samples(self, s: np.ndarray, t: np.ndarray, v: np.ndarray) -> None:
        if not len(s):
            return
        last = np.concatenate([s[1:] != s[:-1], [True]])
        ls = s[last]
        self._last_ts[ls] = t[last]
        self._last_bits[ls] = v[last].view(np.uint64)
        self._max_ts[ls] = np.maximum(self._max_ts[ls], t[last])
        first = np.concatenate([[True], s[1:] != s[:-1]])
        fs = s[first]
        self._min_ts[fs] = np.minimum(self._min_ts[fs], t[first])
        with self._head_lock:
            if not self._chunks or self._head_samples == 0:
                self._head_since = time.monotonic()
            self._chunks.append(_Chunk(s, t, v))
            self._head_samples += len(s)
            self._merge_tail_locked()
        self.samples_appended += len(s)
        self._maybe_flush()

    def _merge_tail_locked(self) -> None:
        """Merge the newest chunk into the one before while that one is no bigger.

        A binary counter: the head keeps O(log n) chunks (a read gathers from
        each) and every sample is merged O(log n) times. Merging keeps each
        sid's samples in time order: the newer chunk's come after.
        """
        ch = self._chunks
        while len(ch) - self._frozen >= 2 and len(ch[-2]) <= len(ch[-1]):
            a, b = ch[-2], ch[-1]
            sid = np.concatenate([a.sid, b.sid])
            order = np.argsort(sid, kind="stable")  # two sorted runs: a linear merge
            ch[-2:] = [_Chunk(sid[order], np.concatenate([a.ts, b.ts])[order],
                              np.concatenate([a.val, b.val])[order])]

    async def append_metadata(self, tenant: str, metadata: Sequence[MetricMetadata]) -> None:
        t = self._tenant(tenant)
        changed = [m for m in metadata if t.metadata.get(m.metric) != m]
        if not changed:
            return
        for m in changed:
            t.metadata[m.metric] = m
        payload = json.dumps([tenant, [[m.metric, m.type, m.help, m.unit] for m in changed]]).encode()
        await self.wal.enqueue(REC_METADATA, payload)

    async def append_exemplars(self, tenant: str, exemplars: Sequence[Exemplar]) -> None:
        if not exemplars:
            return
        self._tenant(tenant).exemplars.extend(exemplars)
        payload = json.dumps(
            [tenant, [[e.labels, e.exemplar_labels, e.ts, e.value] for e in exemplars]]
        ).encode()
        await self.wal.enqueue(REC_EXEMPLARS, payload)

    def _apply_record(self, rtype: int, payload: bytes) -> None:
        if rtype == REC_SAMPLES:
            tenant, new, s, t, v = _decode_samples(payload)
            for sid, lbl in new:
                if sid == len(self._labels):
                    self._register(sid, tenant, lbl)
            self._apply_samples(s, t, v)
        elif rtype == REC_METADATA:
            tenant, items = json.loads(payload)
            md = self._tenant(tenant).metadata
            for metric, typ, help_, unit in items:
                md[metric] = MetricMetadata(metric, typ, help_, unit)
        elif rtype == REC_EXEMPLARS:
            tenant, items = json.loads(payload)
            ex = self._tenant(tenant).exemplars
            for lbl, elbl, ts, value in items:
                ex.append(Exemplar(_as_labels(lbl), _as_labels(elbl), int(ts), float(value)))

    # -- flushing --------------------------------------------------------------

    def _maybe_flush(self) -> None:
        if self._head_samples < self.head_max_samples:
            return
        self._start_flush()

    def _start_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # during replay; start() flushes later if needed
            self._flush_task = loop.create_task(self.flush())

    async def flush(self) -> None:
        """Move the head into DuckDB blocks and drop the WAL segments it covered."""
        with self._head_lock:
            if self._frozen:
                return
            self._frozen = len(self._chunks)
            frozen = self._chunks[: self._frozen]
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
        self.wal.remove_before(segment)

    def _write_blocks(self, frozen: list[_Chunk], n_sids: int, segment: int) -> None:
        db = self.db
        if frozen:
            sid = np.concatenate([c.sid for c in frozen])
            ts = np.concatenate([c.ts for c in frozen])
            val = np.concatenate([c.val for c in frozen])
            order = _order_by(self._cluster_rank(n_sids)[sid], ts)
            sid, ts, val = sid[order], ts[order], val[order]
            block = ts // self.block_ms * self.block_ms
        cur = db.cursor()
        runs: dict[int, tuple[str, np.ndarray]] = {}
        db.lock.acquire_write()
        try:
            cur.execute("BEGIN TRANSACTION")
            self._write_new_series(cur, n_sids)
            if frozen:
                for b in np.unique(block).tolist():
                    sel = block == b
                    table = self._block_table(cur, b)
                    tbl = pa.table({"sid": sid[sel], "ts": ts[sel], "val": val[sel]})
                    cur.register("_flush_rows", tbl)
                    cur.execute(f"INSERT INTO {table} SELECT sid, ts, val FROM _flush_rows")
                    cur.unregister("_flush_rows")
                    runs[b] = (table, sid[sel])
            self._write_metadata(cur)
            cur.execute(
                "INSERT OR REPLACE INTO metrics_meta VALUES ('wal_replay_from', ?)", [segment]
            )
            cur.execute("COMMIT")
            for b, (table, run) in runs.items():
                self._blocks.setdefault(b, _Block(table)).index.add_run(run)
            with self._head_lock:
                del self._chunks[: len(frozen)]
                self._frozen = 0
                self._head_samples = sum(len(c) for c in self._chunks)
                self._head_since = time.monotonic()
            self._flushed_sids = n_sids
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        finally:
            db.lock.release_write()

    def _write_new_series(self, cur: object, n_sids: int) -> None:
        if n_sids <= self._flushed_sids:
            return
        rng = range(self._flushed_sids, n_sids)
        tbl = pa.table({
            "sid": pa.array(list(rng), pa.int64()),
            "tenant": [self._tenant_of[i] for i in rng],
            "labels": [_encode_labels(self._labels[i]).decode() for i in rng],
        })
        c = self.db.cursor()
        c.register("_new_series", tbl)
        c.execute("INSERT INTO metrics_series SELECT sid, tenant, labels FROM _new_series")
        c.unregister("_new_series")

    def _write_metadata(self, cur: object) -> None:
        rows = [(tn, m.metric, m.type, m.help, m.unit) for tn, t in self._tenants.items() for m in t.metadata.values()]
        c = self.db.cursor()
        c.execute("DELETE FROM metrics_metadata")
        if rows:
            c.executemany("INSERT INTO metrics_metadata VALUES (?, ?, ?, ?, ?)", rows)

    def _block_table(self, cur: object, block: int) -> str:
        known = self._blocks.get(block)
        if known is not None:
            return known.table
        table = f"metrics_samples_{block}" if block >= 0 else f"metrics_samples_n{-block}"
        # Registered in _blocks only once the flush commits (the CREATE rolls back with it).
        self.db.cursor().execute(f"CREATE TABLE IF NOT EXISTS {table} (sid BIGINT, ts BIGINT, val DOUBLE)")
        return table

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            try:
                if self._head_samples and time.monotonic() - self._head_since > self.head_max_age_s:
                    self._start_flush()
                now_ms = int(time.time() * 1000)
                await asyncio.to_thread(self.apply_retention, now_ms)
                await asyncio.to_thread(self.compact, now_ms)
            except Exception:
                log.exception("metrics store maintenance failed")

    def apply_retention(self, now_ms: int) -> list[str]:
        """Drop block tables wholly older than the retention window (0: keep everything)."""
        dropped = []
        for block in expired_blocks(self._blocks, self.block_ms, self.retention_ms, now_ms):
            b = self._blocks[block]
            self.db.lock.acquire_write()
            try:
                self.db.cursor().execute(f"DROP TABLE IF EXISTS {b.table}")
                del self._blocks[block]
            finally:
                self.db.lock.release_write()
            dropped.append(b.table)
        return dropped

    def compact(self, now_ms: int) -> list[str]:
        """Rewrite each sealed block flushed in several runs as one run; returns their tables.

        A block is sealed once the head holds nothing older than its end and
        the clock has passed it: only a late new series can still add to it
        (that makes a new run, and a later pass rewrites the block again).
        """
        with self._head_lock:
            chunks = list(self._chunks)
        sealed_before = min([now_ms, *(int(c.ts.min()) for c in chunks if len(c))])
        done = []
        for block, b in sorted(self._blocks.items()):
            if self._closing:
                break
            if block + self.block_ms > sealed_before or not b.index.fragmented():
                continue
            with self._compact_lock:
                if self._compact_block(block, b):
                    done.append(b.table)
        return done

    def _compact_block(self, block: int, b: _Block) -> bool:
        """One block rewritten in (metric, series, time) order, then swapped in under the write lock."""
        rows = b.index.rows
        tmp = f"metrics_compact_{block}" if block >= 0 else f"metrics_compact_n{-block}"
        n = len(self._labels)
        cur = self.db.cursor()
        # DuckDB sorts within its memory limit (spilling if it must); the rank is per sid.
        cur.register("_rank", pa.table({"sid": np.arange(n, dtype=np.int64), "rank": self._cluster_rank(n)}))
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
            if b.index.rows != rows or len(sid) != rows or self._blocks.get(block) is not b:
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

    def querier(self, tenant: str = "default") -> TenantQuerier:
        return TenantQuerier(self, tenant)

    def _candidate_sids(self, tenant: str, matchers: Sequence[Matcher], start: int, end: int) -> np.ndarray:
        t = self._tenants.get(tenant)
        if t is None:
            return np.empty(0, dtype=np.int64)
        sids = t.index.select(matchers)
        if len(sids):
            ok = (self._min_ts[sids] <= end) & (self._max_ts[sids] >= start)
            sids = sids[ok]
        return sids

    def read(self, sids: np.ndarray, start: int, end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples of ``sids`` (sorted, unique) in [start, end], sorted by (sid, ts)."""
        sids = np.asarray(sids, dtype=np.int64)
        counts, t, v = self.read_columns(sids, start, end)
        return np.repeat(sids, counts), t, v

    def read_columns(
        self, sids: np.ndarray, start: int, end: int, account: Callable[[int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples of ``sids`` (unique, in any order) in [start, end], flat.

        Returns ``(counts, ts, values)``: series ``sids[i]`` owns the next
        ``counts[i]`` samples, in time order, series in the order of ``sids``.
        ``account(n)`` is told of each block's and head chunk's ``n`` samples
        as they are read, and may raise to stop the read (a samples limit).
        """
        k = len(sids)
        if not k:
            e = np.empty(0, dtype=np.int64)
            return e, e, np.empty(0, dtype=np.float64)
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.db.lock.acquire_read()
        try:
            with self._head_lock:
                chunks = list(self._chunks)
            blocks = [bl for b, bl in sorted(self._blocks.items()) if b <= end and b + self.block_ms > start]
            if blocks:
                self._read_blocks(blocks, sids, start, end, parts, account)
        finally:
            self.db.lock.release_read()
        for c in chunks:
            part = _gather_head(c, sids, start, end)
            if part is not None:
                if account is not None:
                    account(len(part[0]))
                parts.append(part)
        rank = np.empty(len(self._labels) + 1, dtype=np.int64)
        rank[sids] = np.arange(k, dtype=np.int64)
        return _place(parts, rank, k)

    def _read_blocks(
        self,
        blocks: list[_Block],
        sids: np.ndarray,
        start: int,
        end: int,
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
        account: Callable[[int], None] | None = None,
    ) -> None:
        """Append the block rows of ``sids`` in [start, end] to ``parts``, one per block.

        Each block's index gives the row ranges holding the series; a few
        ranges are read by ``rowid`` (zone maps skip the rest), while a
        selection covering most of a block is cheaper to scan whole. Rows of
        unwanted series inside a joined range are dropped in numpy.
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
            parts.append(_sorted_by_sid_ts(s, t, v, lo, hi, start, end))

    def labels_of(self, sid: int) -> Labels:
        return self._labels[sid]

    def tenant_index(self, tenant: str) -> SeriesIndex | None:
        t = self._tenants.get(tenant)
        return t.index if t else None

    def metadata(self, tenant: str) -> dict[str, MetricMetadata]:
        t = self._tenants.get(tenant)
        return dict(t.metadata) if t else {}

    def exemplars(self, tenant: str) -> list[Exemplar]:
        t = self._tenants.get(tenant)
        return list(t.exemplars) if t else []

    def num_series(self, tenant: str | None = None) -> int:
        if tenant is None:
            return len(self._labels)
        t = self._tenants.get(tenant)
        return len(t.by_labels) if t else 0

    @property
    def head_samples(self) -> int:
        return self._head_samples


class TenantQuerier:
    """The ``Querier`` protocol over one tenant of a ``MetricStore``."""

    def __init__(self, store: MetricStore, tenant: str) -> None:
        self.store = store
        self.tenant = tenant

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesSamples]:
        st = self.store
        sids = st._candidate_sids(self.tenant, matchers, start_ms, end_ms)
        counts, t, v = st.read_columns(sids, start_ms, end_ms)
        ends = np.cumsum(counts)
        labels = st._labels
        return [
            SeriesSamples(labels[sid], t[b - n : b], v[b - n : b])
            for sid, n, b in zip(sids.tolist(), counts.tolist(), ends.tolist(), strict=True)
            if n
        ]

    def select_flat(
        self,
        matcher_sets: Sequence[Sequence[Matcher]],
        start_ms: int,
        end_ms: int,
        account: Callable[[int], None] | None = None,
    ) -> tuple[list[Labels], np.ndarray, np.ndarray, np.ndarray]:
        """Series matching any of ``matcher_sets``, sorted by labels, with samples flat.

        Returns ``(labels, ts, values, offsets)``: series ``i`` owns
        ``ts[offsets[i]:offsets[i+1]]``. Series without samples are left out.
        ``account`` is as for ``MetricStore.read_columns``.
        """
        st = self.store
        found = [st._candidate_sids(self.tenant, m, start_ms, end_ms) for m in matcher_sets]
        sids = found[0] if len(found) == 1 else np.unique(np.concatenate(found))
        all_labels = st._labels
        sid_list = sids.tolist()
        # Label sets are unique per tenant, so sorting (labels, sid) never compares sids.
        sid_list.sort(key=all_labels.__getitem__)
        ordered = np.array(sid_list, dtype=np.int64)
        counts, t, v = st.read_columns(ordered, start_ms, end_ms, account)
        keep = np.flatnonzero(counts)
        if len(keep) < len(counts):
            sid_list = ordered[keep].tolist()
            counts = counts[keep]
        offsets = np.zeros(len(sid_list) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return [all_labels[i] for i in sid_list], t, v, offsets

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]:
        sids = self.store._candidate_sids(self.tenant, matchers, start_ms, end_ms)
        return [self.store._labels[i] for i in sids.tolist()]

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        names: set[str] = set()
        for lbl in self.series(matchers, start_ms, end_ms):
            names.update(k for k, _ in lbl)
        return sorted(names)

    def label_values(self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        values: set[str] = set()
        for lbl in self.series(matchers, start_ms, end_ms):
            for k, v in lbl:
                if k == name:
                    values.add(v)
                    break
        return sorted(values)


def _sorted_by_sid_ts(
    s: np.ndarray, t: np.ndarray, v: np.ndarray, lo: int, hi: int, start: int, end: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by (sid, ts); cheap when they already are, or nearly are."""
    width = end - start + 1
    if (hi - lo + 1) * width >= 2**62:
        order = np.lexsort((t, s))
        return s[order], t[order], v[order]
    key = s - lo
    key *= width
    key += t - start
    if bool(np.all(key[1:] > key[:-1])):
        return s, t, v
    order = np.argsort(key, kind="stable")
    return s[order], t[order], v[order]


def _order_by(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """The permutation sorting rows by (major, minor), both int64 and major >= 0."""
    if not len(major):
        return np.empty(0, dtype=np.int64)
    base = int(minor.min())
    width = int(minor.max()) - base + 1
    if (int(major.max()) + 1) * width >= 2**62:
        return np.lexsort((minor, major))
    key = major * width
    key += minor - base
    return np.argsort(key, kind="stable")


def _gather_head(
    c: _Chunk, sids: np.ndarray, start: int, end: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Samples of ``sids`` in [start, end] from one head chunk, grouped by sid in ``sids`` order."""
    if not len(c.sid):
        return None
    a = np.searchsorted(c.sid, sids, side="left")
    b = np.searchsorted(c.sid, sids, side="right")
    n = b - a
    total = int(n.sum())
    if not total:
        return None
    has = np.flatnonzero(n)
    a, n = a[has], n[has]
    idx: np.ndarray | None = None
    if total < len(c.sid) or bool(np.any(a[1:] < a[:-1])):
        idx = np.arange(total, dtype=np.int64) + np.repeat(a - (np.cumsum(n) - n), n)
    s = c.sid if idx is None else c.sid[idx]
    t = c.ts if idx is None else c.ts[idx]
    v = c.val if idx is None else c.val[idx]
    if int(t.min()) < start or int(t.max()) > end:
        m = (t >= start) & (t <= end)
        s, t, v = s[m], t[m], v[m]
        if not len(s):
            return None
    return s, t, v


def _place(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], rank: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge parts into one flat layout ordered by ``rank[sid]``, then time.

    Each part holds (sid, ts, val) with every sid's samples contiguous and in
    time order, and parts come in time order per sid (blocks by start time in
    insertion order, then head chunks). Every sample's destination is computed
    directly, without sorting.
    """
    counts = np.zeros(k, dtype=np.int64)
    if not parts:
        e = np.empty(0, dtype=np.int64)
        return counts, e, np.empty(0, dtype=np.float64)
    runs = []
    for s, _t, _v in parts:
        n = len(s)
        new_run = np.empty(n, dtype=bool)
        new_run[0] = True
        np.not_equal(s[1:], s[:-1], out=new_run[1:])
        run_start = np.flatnonzero(new_run)
        run_len = np.diff(np.append(run_start, n))
        run_rank = rank[s[run_start]]
        if int(np.bincount(run_rank, minlength=k).max()) > 1:
            # A sid in two runs of one part: not grouped as promised; sort instead.
            return _place_sorted(parts, rank, k)
        runs.append((run_start, run_len, run_rank))
        counts[run_rank] += run_len
    if len(parts) == 1 and bool(np.all(runs[0][2][1:] > runs[0][2][:-1])):
        return counts, parts[0][1], parts[0][2]  # already in the wanted order
    total = int(counts.sum())
    start = np.zeros(k, dtype=np.int64)
    np.cumsum(counts[:-1], out=start[1:])
    ts = np.empty(total, dtype=np.int64)
    vals = np.empty(total, dtype=np.float64)
    for (s, t, v), (run_start, run_len, run_rank) in zip(parts, runs, strict=True):
        pos = np.repeat(start[run_rank] - run_start, run_len)
        pos += np.arange(len(s), dtype=np.int64)
        ts[pos] = t
        vals[pos] = v
        start[run_rank] += run_len
    # Each series must come out strictly increasing in time.
    bad = ts[1:] <= ts[:-1]
    if bad.any():
        ends = np.cumsum(counts)[:-1]
        bad[ends[(ends > 0) & (ends < total)] - 1] = False
        if bad.any():
            return _place_sorted(parts, rank, k)
    return counts, ts, vals


def _place_sorted(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], rank: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``_place`` for parts in no particular order: a full (rank, ts) sort."""
    s = np.concatenate([p[0] for p in parts])
    t = np.concatenate([p[1] for p in parts])
    v = np.concatenate([p[2] for p in parts])
    r = rank[s]
    order = np.lexsort((t, r))
    return np.bincount(r, minlength=k).astype(np.int64), t[order], v[order]


def _as_labels(raw: list[list[str]]) -> Labels:
    return tuple((k, v) for k, v in raw)


def _validate_labels(labels: Labels) -> None:
    prev = ""
    for i, (k, _v) in enumerate(labels):
        if not k:
            raise InvalidLabels(f"invalid label name \"\" in series {format_labels(labels)}")
        if i and k <= prev:
            raise InvalidLabels(f"duplicate label name {k!r} in series {format_labels(labels)}")
        prev = k


_HDR = struct.Struct("<HII")


def _encode_samples(
    tenant: str, new: list[tuple[int, Labels]], s: np.ndarray, t: np.ndarray, v: np.ndarray
) -> bytes:
    tb = tenant.encode()
    series = json.dumps([[sid, lbl] for sid, lbl in new], separators=(",", ":")).encode() if new else b""
    return b"".join([
        _HDR.pack(len(tb), len(series), len(s)),
        tb,
        series,
        s.astype(np.int64, copy=False).tobytes(),
        t.astype(np.int64, copy=False).tobytes(),
        v.astype(np.float64, copy=False).tobytes(),
    ])


def _decode_samples(
    payload: bytes,
) -> tuple[str, list[tuple[int, Labels]], np.ndarray, np.ndarray, np.ndarray]:
    tl, sl, n = _HDR.unpack_from(payload, 0)
    pos = _HDR.size
    tenant = payload[pos : pos + tl].decode()
    pos += tl
    new: list[tuple[int, Labels]] = []
    if sl:
        new = [(int(sid), _as_labels(lbl)) for sid, lbl in json.loads(payload[pos : pos + sl])]
    pos += sl
    s = np.frombuffer(payload, dtype=np.int64, count=n, offset=pos)
    pos += 8 * n
    t = np.frombuffer(payload, dtype=np.int64, count=n, offset=pos)
    pos += 8 * n
    v = np.frombuffer(payload, dtype=np.float64, count=n, offset=pos)
    return tenant, new, s, t, v
