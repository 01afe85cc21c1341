"""The embedded metrics store: series registry, WAL-backed write path, head, reads.

Writes: ``commit`` validates a batch (order, duplicates, limits), applies it
to the head and queues one WAL record (``walrec``), all without yielding to
the event loop, then awaits the group fsync. The head is a few sorted chunks
(``merge.Chunk``); it is flushed into DuckDB time blocks (``blocks``) when it
grows or ages, in one transaction with the new series and metadata, and the
WAL segments it covered are dropped. Reads (``read_columns``) merge the
blocks overlapping the range and the head per series (``merge.place``);
``TenantQuerier`` (``querier``) answers PromQL's Querier protocol through the
store's public read methods only (``candidate_sids``, ``read_columns``,
``series_labels``). Retention drops whole blocks; a maintenance pass rewrites
sealed blocks flushed in several runs as one run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pitwall.core.labels import Labels, Matcher
from pitwall.core.tasks import Supervisor
from pitwall.core.wal import Wal
from pitwall.metrics.errors import (
    SeriesLimitExceeded,
)
from pitwall.metrics.model import Exemplar, MetricMetadata, SampleBatch
from pitwall.metrics.store import WouldBlock
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.memtrim import release_free_memory
from pitwall.storage.metrics import catalog
from pitwall.storage.metrics.blockindex import Summary
from pitwall.storage.metrics.blocks import BlockTables, Columns
from pitwall.storage.metrics.checks import I64_MIN, check_batch, check_label_names
from pitwall.storage.metrics.head import Head
from pitwall.storage.metrics.merge import Chunk, gather_few, gather_few_scales, gather_head, order_by, place
from pitwall.storage.metrics.querier import ReadBudget, TenantQuerier
from pitwall.storage.metrics.walrec import (
    REC_EXEMPLARS,
    REC_METADATA,
    REC_SAMPLES,
    as_labels,
    decode_samples,
    encode_samples,
)
from pitwall.storage.series_index import SeriesIndex

__all__ = ["MetricStore", "StoreLimits"]

log = logging.getLogger(__name__)

_I64_MAX = np.iinfo(np.int64).max
# Reads of at most this many series from the head alone take ``gather_few``'s per-series path
# (reads of any number when it is the C helper's, see ``merge.gather_few_scales``).
FEW_SERIES = 64


@dataclass
class StoreLimits:
    max_series_per_tenant: int = 1_000_000
    max_exemplars: int = 100_000



@dataclass
class _Tenant:
    index: SeriesIndex = field(default_factory=SeriesIndex)
    by_labels: dict[Labels, int] = field(default_factory=dict)
    metadata: dict[str, MetricMetadata] = field(default_factory=dict)
    exemplars: deque[Exemplar] = field(default_factory=lambda: deque(maxlen=100_000))



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
        read_cache_samples: int = 1_000_000,
    ) -> None:
        self.db = db
        self.wal = Wal(wal_dir, fsync=fsync)
        self.wal_keep: Callable[[], int] | None = None  # the oldest WAL segment a reader still needs
        self.block_ms = block_ms
        self.retention_ms = retention_ms
        self.head_max_samples = head_max_samples
        self.head_max_age_s = head_max_age_s
        self.limits = limits or StoreLimits()
        self._tenants: dict[str, _Tenant] = {}
        self._labels: list[Labels] = []
        self._tenant_of: list[str] = []
        cap = 1024
        self._last_ts = np.full(cap, I64_MIN, dtype=np.int64)
        self._cluster = np.zeros(cap, dtype=np.int64)  # per sid: its (tenant, metric name) id
        self._cluster_ids: dict[tuple[str, str], int] = {}
        self._last_bits = np.zeros(cap, dtype=np.uint64)
        self._min_ts = np.full(cap, _I64_MAX, dtype=np.int64)
        self._max_ts = np.full(cap, I64_MIN, dtype=np.int64)
        self._gone = np.zeros(cap, dtype=bool)  # per sid: forgotten after retention (labels freed)
        self._dropped_upto = int(I64_MIN)  # end of the newest block retention dropped
        self.series_epoch = 0  # bumped when series are forgotten: cached label -> sid maps are stale
        self.head = Head()
        self._flushed_sids = 0  # sids below this are in metrics_series
        index_dir = None if db.path is None else db.path.with_name(db.path.name + ".metrics-index")
        self.blocks = BlockTables(db, block_ms, index_dir, read_cache_samples)
        self._flush_task: asyncio.Task[None] | None = None
        self.tasks = Supervisor("metrics-store")
        self.samples_appended = 0

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self._open)
        self.wal.open_for_append()
        self.tasks.spawn(self._maintenance_loop(), name="maintenance")

    async def stop(self) -> None:
        self.blocks.closing = True
        await self.tasks.stop()
        # A compaction running in its thread finishes its block first.
        await asyncio.to_thread(self.blocks.compact_lock.acquire)
        self.blocks.compact_lock.release()
        if self._flush_task is not None:
            await self._flush_task
        await self.flush()
        await self.wal.close()

    def _open(self) -> None:
        db = self.db
        catalog.create(db)
        for sid, tenant, labels in catalog.load_series(db):
            self._pad_gone(sid)
            self._register(sid, tenant, labels)
        self._pad_gone(catalog.next_sid(db))
        self._flushed_sids = len(self._labels)
        for tenant, md in catalog.load_metadata(db):
            self._tenant(tenant).metadata[md.metric] = md
        for _block, summary in self.blocks.open():
            self._fold_block(summary)
        n = 0
        for rec in self.wal.replay(catalog.replay_from(db)):
            self._apply_record(rec.type, rec.payload)
            n += 1
        log.info("metrics store opened", extra={"series": len(self._labels), "wal_records": n})

    def _fold_block(self, s: Summary) -> None:
        """Fold an opened block's series time bounds and newest samples into the registry."""
        k = s.keys
        if len(k):
            np.minimum.at(self._min_ts, k, s.ts_lo)
            newest = s.ts_hi
            np.maximum.at(self._max_ts, k, newest)
            # Per sid, its stretch ending latest; keep it where it beats what other blocks gave.
            order = np.lexsort((newest, k))
            last = order[np.concatenate([k[order][1:] != k[order][:-1], [True]])]
            ls, lt = k[last], newest[last]
            newer = lt > self._last_ts[ls]
            self._last_ts[ls[newer]] = lt[newer]
            self._last_bits[ls[newer]] = s.val_hi[last][newer].view(np.uint64)

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
        self._last_ts = np.concatenate([self._last_ts, np.full(new - cap, I64_MIN, dtype=np.int64)])
        self._last_bits = np.concatenate([self._last_bits, np.zeros(new - cap, dtype=np.uint64)])
        self._min_ts = np.concatenate([self._min_ts, np.full(new - cap, _I64_MAX, dtype=np.int64)])
        self._max_ts = np.concatenate([self._max_ts, np.full(new - cap, I64_MIN, dtype=np.int64)])
        self._cluster = np.concatenate([self._cluster, np.zeros(new - cap, dtype=np.int64)])
        self._gone = np.concatenate([self._gone, np.zeros(new - cap, dtype=bool)])

    def _pad_gone(self, upto: int) -> None:
        """Fill the ids below ``upto`` not yet registered as forgotten series (gaps in the catalog)."""
        while len(self._labels) < upto:
            sid = len(self._labels)
            self._labels.append(())
            self._tenant_of.append("")
            self._grow(sid + 1)
            self._gone[sid] = True

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
                    check_label_names(lbl)
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
        known = len(self._labels)

        def labels_of(sid: int) -> Labels:  # only called to word an error
            return self._labels[sid] if sid < known else dict(new)[sid]

        s, tt, v = check_batch(sids, ts, vals, self._last_ts, self._last_bits, labels_of)
        for sid, lbl in new:
            self._register(sid, tenant, lbl)
        payload = encode_samples(tenant, new, s, tt, v)
        fut = self.wal.enqueue(REC_SAMPLES, payload)
        self._apply_samples(s, tt, v)
        return fut

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
        self.head.add(s, t, v)
        self.samples_appended += len(s)
        self._maybe_flush()

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
            tenant, new, s, t, v = decode_samples(payload)
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
                ex.append(Exemplar(as_labels(lbl), as_labels(elbl), int(ts), float(value)))

    # -- flushing --------------------------------------------------------------

    def _maybe_flush(self) -> None:
        if self.head.samples < self.head_max_samples:
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
        frozen = self.head.freeze()
        if frozen is None:
            return
        n_sids = len(self._labels)
        if not frozen and n_sids == self._flushed_sids:
            self.head.thaw()
            return
        segment = await self.wal.rotate()
        try:
            await asyncio.to_thread(self._write_blocks, frozen, n_sids, segment)
        except BaseException:
            self.head.thaw()
            raise
        # A forwarding queue (metrics.remote_backend) may still need older segments.
        self.wal.remove_before(segment if self.wal_keep is None else min(segment, self.wal_keep()))

    def _write_blocks(self, frozen: list[Chunk], n_sids: int, segment: int) -> None:
        db = self.db
        if frozen:
            sid = np.concatenate([c.sid for c in frozen])
            ts = np.concatenate([c.ts for c in frozen])
            val = np.concatenate([c.val for c in frozen])
            order = order_by(self._cluster_rank(n_sids)[sid], ts)
            sid, ts, val = sid[order], ts[order], val[order]
        cur = db.cursor()
        runs: dict[int, tuple[str, np.ndarray]] = {}
        db.lock.acquire_write()
        try:
            cur.execute("BEGIN TRANSACTION")
            if n_sids > self._flushed_sids:
                lo = self._flushed_sids
                catalog.insert_series(db, lo, self._tenant_of[lo:n_sids], self._labels[lo:n_sids])
            if frozen:
                runs = self.blocks.write(cur, sid, ts, val)
            catalog.replace_metadata(db, [(tn, m) for tn, t in self._tenants.items() for m in t.metadata.values()])
            catalog.set_replay_from(cur, segment)
            cur.execute("COMMIT")
            self.blocks.commit_runs(runs)
            self.head.drop_frozen(len(frozen))
            self._flushed_sids = n_sids
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        finally:
            db.lock.release_write()

    async def _maintenance_loop(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            try:
                if self.head.samples and time.monotonic() - self.head.since > self.head_max_age_s:
                    self._start_flush()
                now_ms = int(time.time() * 1000)
                if await asyncio.to_thread(self.apply_retention, now_ms) or self._gone_pending:
                    await self.forget_expired_series()
                await asyncio.to_thread(self.compact, now_ms)
                await asyncio.to_thread(release_free_memory)  # what flushes and merges freed
            except Exception:
                log.exception("metrics store maintenance failed")

    def apply_retention(self, now_ms: int) -> list[str]:
        """Drop block tables wholly older than the retention window (0: keep everything).

        ``forget_expired_series`` then forgets the series left with no samples.
        """
        before = set(self.blocks.by_start)
        dropped = self.blocks.apply_retention(self.retention_ms, now_ms)
        gone = before - set(self.blocks.by_start)
        if gone:
            self._dropped_upto = max(self._dropped_upto, max(gone) + self.block_ms)
        return dropped

    @property
    def _gone_pending(self) -> bool:
        """Whether some catalogued series may have no samples left (e.g. after a restart)."""
        n = self._flushed_sids
        return bool(n) and bool(np.any((self._max_ts[:n] < self._samples_floor()) & ~self._gone[:n]))

    def _samples_floor(self) -> int:
        """No sample older than this is stored in a block (oldest block start, else the dropped blocks' end)."""
        return min(self.blocks.by_start) if self.blocks.by_start else self._dropped_upto

    def _expired_sids(self) -> np.ndarray:
        n = self._flushed_sids
        dead = np.flatnonzero((self._max_ts[:n] < self._samples_floor()) & ~self._gone[:n])
        in_head = [c.sid for c in self.head.snapshot() if len(c)]
        if len(dead) and in_head:  # late samples of an old series not flushed yet: not gone
            dead = np.setdiff1d(dead, np.concatenate(in_head), assume_unique=False)
        return dead

    async def forget_expired_series(self) -> int:
        """Forget series whose samples were all in blocks retention dropped; returns how many.

        On the event loop, where series are registered, so no append sees half
        of it: their label sets leave the tenant's index and label map (freed),
        the ids stay as gaps. The catalog rows go after, in a thread; a crash
        in between leaves them to the next start's pass.
        """
        dead = self._expired_sids()
        if not len(dead):
            return 0
        by_tenant: dict[str, list[int]] = {}
        for sid in dead.tolist():
            tenant = self._tenant_of[sid]
            self._tenants[tenant].by_labels.pop(self._labels[sid], None)
            self._labels[sid] = ()
            by_tenant.setdefault(tenant, []).append(sid)
        self._gone[dead] = True
        for tenant, sids in by_tenant.items():
            t = self._tenants[tenant]
            t.index = t.index.without(np.asarray(sids, dtype=np.int64))
        self.series_epoch += 1
        await asyncio.to_thread(self._delete_series, dead.tolist())
        log.info("metrics series forgotten after retention", extra={"series": len(dead)})
        return len(dead)

    def _delete_series(self, sids: list[int]) -> None:
        self.db.lock.acquire_write()
        try:
            catalog.delete_series(self.db, sids, self._flushed_sids)  # ids past it are not catalogued yet
        finally:
            self.db.lock.release_write()

    def compact(self, now_ms: int) -> list[str]:
        """Rewrite each sealed block flushed in several runs as one run; returns their tables.

        A block is sealed once the head holds nothing older than its end and
        the clock has passed it: only a late new series can still add to it
        (that makes a new run, and a later pass rewrites the block again).
        """
        chunks = self.head.snapshot()
        sealed_before = min([now_ms, *(int(c.ts.min()) for c in chunks if len(c))])
        return self.blocks.compact(sealed_before, lambda: self._cluster_rank(len(self._labels)))

    # -- reading ---------------------------------------------------------------

    def querier(self, tenant: str = "default") -> TenantQuerier:
        return TenantQuerier(self, tenant)

    def nonblocking_querier(self, tenant: str, max_series: int, max_samples: int) -> TenantQuerier:
        """A querier for the event loop: the head and cached block series only, no waiting, within the budget.

        Anything else raises ``WouldBlock``.
        """
        return TenantQuerier(self, tenant, ReadBudget(max_series, max_samples))

    def candidate_sids(self, tenant: str, matchers: Sequence[Matcher], start: int, end: int) -> np.ndarray:
        """Sids of ``tenant``'s series matching ``matchers`` with samples possibly in [start, end]."""
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
        self, sids: np.ndarray, start: int, end: int, account: Callable[[int], None] | None = None,
        nowait: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Samples of ``sids`` (unique, in any order) in [start, end], flat.

        Returns ``(counts, ts, values)``: series ``sids[i]`` owns the next
        ``counts[i]`` samples, in time order, series in the order of ``sids``.
        ``account(n)`` is told of each block's and head chunk's ``n`` samples
        as they are read, and may raise to stop the read (a samples limit).
        With ``nowait`` it raises ``WouldBlock`` instead of waiting for a
        writer or reading a block (DuckDB): only the in-memory head and the
        block series cache (``readcache``) are read.
        """
        k = len(sids)
        if not k:
            e = np.empty(0, dtype=np.int64)
            return e, e, np.empty(0, dtype=np.float64)
        parts: list[Columns] = []
        if not nowait:
            self.db.lock.acquire_read()
        elif not self.db.lock.try_acquire_read():
            raise WouldBlock("a writer holds the store")
        try:
            chunks = self.head.snapshot()
            blocks = self.blocks.overlapping(start, end)
            if blocks:
                self.blocks.read(blocks, sids, start, end, parts, account, nowait=nowait)
        finally:
            self.db.lock.release_read()
        if not blocks and (k <= FEW_SERIES or gather_few_scales()):
            few = gather_few(chunks, sids, start, end, account)
            if few is not None:
                return few
        for c in chunks:
            part = gather_head(c, sids, start, end)
            if part is not None:
                if account is not None:
                    account(len(part[0]))
                parts.append(part)
        rank = np.empty(len(self._labels) + 1, dtype=np.int64)
        rank[sids] = np.arange(k, dtype=np.int64)
        return place(parts, rank, k)

    def labels_of(self, sid: int) -> Labels:
        return self._labels[sid]

    def series_labels(self, sids: Sequence[int]) -> list[Labels]:
        """The label sets of ``sids`` (as from ``candidate_sids``), in that order."""
        labels = self._labels
        return [labels[i] for i in sids]

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
        if tenant is None:  # forgotten series keep their ids, not their count
            n = len(self._labels)
            return n - int(np.count_nonzero(self._gone[:n]))
        t = self._tenants.get(tenant)
        return len(t.by_labels) if t else 0

    @property
    def head_samples(self) -> int:
        return self.head.samples
