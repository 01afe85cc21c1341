"""One target's scrape loop: schedule, fetch, parse, relabel, append, staleness.

Contract: a ``ScrapeLoop`` scrapes its target at a deterministic per-target
offset inside the interval (missed ticks are skipped, as a Go ticker does)
and appends each scrape as one ``SampleBatch``: the samples (after
honor_labels / metric relabeling, cached per raw series text), staleness
markers for series of the previous scrape that are gone, and the synthetic
``up`` / ``scrape_*`` series. A failed scrape (HTTP error, timeout, parse
error, sample limit, appender error) writes staleness markers for all series
of the previous scrape plus ``up`` 0, as Prometheus does. The loop reads its
job's config, HTTP client and appender through its ``Pool``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from pitwall.core.gofmt import go_quote
from pitwall.core.labels import METRIC_NAME, Labels
from pitwall.metrics.ingest.exposition import Exposition, ExpositionError, parse, parse_series
from pitwall.metrics.model import STALE_NAN, Exemplar, MetricMetadata, SampleBatch
from pitwall.metrics.relabel import is_valid_label_name, relabel
from pitwall.metrics.scrape.targets import Health, Target, TargetStatus, global_url

if TYPE_CHECKING:
    from pitwall.metrics.scrape.manager import Pool

__all__ = ["ScrapeError", "ScrapeLoop"]

log = logging.getLogger(__name__)

_REPORT_NAMES = (
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
)
# Prometheus' timeLimitAppender rejects samples further than this in the future.
_MAX_FUTURE_MS = 10 * 60 * 1000
_MISS: Any = object()


class ScrapeError(Exception):
    """A failure that makes the scrape count as down (message as Prometheus words it).

    ``stats`` carries (samples scraped, samples kept, series added) when known.
    """

    def __init__(self, message: str, stats: tuple[int, int, int] | None = None) -> None:
        super().__init__(message)
        self.stats = stats


@dataclass
class _Prepared:
    """A scrape's samples, ready to append."""

    series: list[Labels]
    idx: np.ndarray
    ts: np.ndarray
    values: np.ndarray
    tracked: set[Labels]
    total: int
    added: int
    series_added: int
    exemplars: list[Exemplar] = field(default_factory=list)
    metadata: list[MetricMetadata] = field(default_factory=list)


class ScrapeLoop:
    """Scrapes one target of a pool until cancelled."""

    def __init__(self, pool: Pool, target: Target) -> None:
        self.pool = pool
        self.target = target
        self.cfg = pool.cfg
        self.cache: dict[str, Labels | None] = {}
        self.prev: set[Labels] = set()
        self.last_error = ""
        self.last_scrape: datetime | None = None
        self.last_duration = 0.0
        self.health: Health = "unknown"
        self.metadata: list[MetricMetadata] = []
        self._sent_metadata: list[MetricMetadata] = []
        self.forced_error: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.next_wall: float = 0.0  # wall-clock time of the next scheduled scrape
        self.scraped_once = False
        self._last_raws: list[str] = []
        self._report_series = [tuple(sorted((*target.public, (METRIC_NAME, n)))) for n in _REPORT_NAMES]

    # -- scheduling

    def offset_s(self) -> float:
        interval_ns = self.target.interval_ms * 1_000_000
        now = time.time_ns()
        base = interval_ns - now % interval_ns
        nxt = base + (self.target.hash() ^ self.pool.manager.jitter_seed) % interval_ns
        if nxt > interval_ns:
            nxt -= interval_ns
        return nxt / 1e9

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"scrape {self.target.url}")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.target.interval_ms / 1000
        delay = self.offset_s()
        self.next_wall = time.time() + delay
        await asyncio.sleep(delay)
        nxt = loop.time()
        while True:
            try:
                await self.scrape_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not kill the loop; the next tick retries
                log.exception("scrape of %s failed unexpectedly", self.target.url)
            nxt += interval
            now = loop.time()
            if nxt <= now:  # missed ticks are skipped, as a Go ticker does
                nxt += ((now - nxt) // interval + 1) * interval
            self.next_wall = time.time() + (nxt - now)
            await asyncio.sleep(nxt - now)

    # -- one scrape

    async def scrape_once(self) -> None:
        """Scrape, append samples + staleness + report series, update status."""
        start_wall = time.time()
        t_ms = int(start_wall * 1000)
        t0 = time.perf_counter()
        err: str | None = self.forced_error
        prepared: _Prepared | None = None
        stats: tuple[int, int, int] | None = None
        body: bytes = b""
        ctype: str | None = None
        if err is None:
            try:
                body, ctype = await self._fetch()
            except ScrapeError as e:
                err = str(e)
        if err is None:
            try:
                prepared = self._prepare(body, ctype, t_ms)
            except ScrapeError as e:
                err, stats = str(e), e.stats
        appender = self.pool.manager.appender
        tenant = self.pool.manager.tenant
        if prepared is not None and err is None:
            batch = self._batch(prepared, t_ms, up=True, duration=time.perf_counter() - t0)
            try:
                await appender.append(tenant, batch)
            except Exception as e:  # any appender error fails the scrape, as in Prometheus
                err = str(e) or type(e).__name__
            else:
                self.prev = prepared.tracked
                self._after_success(prepared)
        if err is not None:
            if prepared is not None:
                stats = (prepared.total, prepared.added, prepared.series_added)
            await self._append_failure(t_ms, t0, stats or (0, 0, 0))
        self.scraped_once = True
        self.last_error = err or ""
        self.health = "down" if err else "up"
        self.last_scrape = datetime.fromtimestamp(start_wall, UTC).astimezone()
        self.last_duration = time.perf_counter() - t0
        if prepared is not None and err is None:
            await self._send_side_data(prepared)

    async def _append_failure(self, t_ms: int, t0: float, stats: tuple[int, int, int]) -> None:
        """Empty scrape: stale markers for the previous series, up=0."""
        empty = _Prepared([], np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0), set(), *stats)
        batch = self._batch(empty, t_ms, up=False, duration=time.perf_counter() - t0)
        try:
            await self.pool.manager.appender.append(self.pool.manager.tenant, batch)
        except Exception:
            log.warning("appending stale markers for %s failed", self.target.url, exc_info=True)
        self.prev = set()

    def _after_success(self, p: _Prepared) -> None:
        # Keep the cache to series seen in this successful scrape (Prometheus' iterDone flush).
        if len(self.cache) > p.total:
            keep = set(self._last_raws)
            self.cache = {k: v for k, v in self.cache.items() if k in keep}
        self.metadata = p.metadata

    async def _send_side_data(self, p: _Prepared) -> None:
        m = self.pool.manager
        try:
            if p.exemplars:
                await m.appender.append_exemplars(m.tenant, p.exemplars)
            if p.metadata and p.metadata != self._sent_metadata:
                await m.appender.append_metadata(m.tenant, p.metadata)
                self._sent_metadata = p.metadata
        except Exception:
            log.warning("appending exemplars/metadata of %s failed", self.target.url, exc_info=True)

    async def _fetch(self) -> tuple[bytes, str | None]:
        url = self.target.url
        timeout_s = self.target.timeout_ms / 1000
        headers = self.pool.request_headers(timeout_s)
        limit = self.cfg.body_size_limit or 0
        try:
            async with asyncio.timeout(timeout_s):
                async with self.pool.client.stream("GET", url, headers=headers) as resp:
                    if resp.status_code != 200:
                        raise ScrapeError(f"server returned HTTP status {resp.status_code} {resp.reason_phrase}")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in resp.aiter_bytes():
                        size += len(chunk)
                        if limit and size > limit:
                            raise ScrapeError(f"body size limit exceeded: {limit} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks), resp.headers.get("content-type")
        except TimeoutError:
            raise ScrapeError(f'Get "{url}": context deadline exceeded') from None
        except httpx.HTTPError as e:
            raise ScrapeError(f'Get "{url}": {e or type(e).__name__}') from None

    # -- sample processing (the hot path)

    def _prepare(self, body: bytes, ctype: str | None, t_ms: int) -> _Prepared:
        try:
            exp = parse(body, ctype, self.cfg.fallback_scrape_protocol)
        except ExpositionError as e:
            raise ScrapeError(str(e)) from None
        raws = exp.series
        self._last_raws = raws
        lbls, new_series = self._lookup(raws)
        keep = [i for i, lb in enumerate(lbls) if lb is not None]
        if len(keep) == len(lbls):
            kept: list[Labels] = lbls  # type: ignore[assignment]
            values, has_ts, ts_raw = exp.values, exp.has_ts, exp.timestamps
        else:
            kept = [lbls[i] for i in keep]  # type: ignore[misc]
            values, has_ts, ts_raw = exp.values[keep], exp.has_ts[keep], exp.timestamps[keep]
        limit = self.cfg.sample_limit or 0
        if limit and len(kept) > limit:
            # Prometheus appends up to the limit, then rolls the scrape back.
            raise ScrapeError("sample limit exceeded", (len(raws), limit, new_series))
        explicit = has_ts if self.cfg.honor_timestamps else np.zeros(len(kept), dtype=bool)
        ts = np.where(explicit, ts_raw, np.int64(t_ms)).astype(np.int64)
        index: dict[Labels, int] = {}
        sidx = np.fromiter((index.setdefault(lb, len(index)) for lb in kept), dtype=np.int64, count=len(kept))
        rows = self._valid_rows(sidx, ts, t_ms, len(index) < len(kept))
        if rows is not None:
            sidx, ts, values, explicit = sidx[rows], ts[rows], values[rows], explicit[rows]
        series = list(index)
        tracked = self._tracked(series, sidx, explicit)
        p = _Prepared(series, sidx, ts, values, tracked, len(raws), len(sidx), new_series)
        p.exemplars = self._exemplars(exp, lbls, ts_raw if self.cfg.honor_timestamps else None, t_ms)
        p.metadata = exp.metadata
        return p

    def _lookup(self, raws: list[str]) -> tuple[list[Labels | None], int]:
        """Final labels per raw series via the cache; misses are parsed and relabeled once."""
        get = self.cache.get
        lbls: list[Any] = [get(r, _MISS) for r in raws]
        new_series = 0
        if _MISS in lbls:
            for i, lb in enumerate(lbls):
                if lb is not _MISS:
                    continue
                raw = raws[i]
                if raw in self.cache:  # repeated within this scrape
                    lbls[i] = self.cache[raw]
                    continue
                res = self._resolve(raw)
                self.cache[raw] = res
                lbls[i] = res
                if res is not None:
                    new_series += 1
        return lbls, new_series

    def _resolve(self, raw: str) -> Labels | None:
        """Raw series -> stored labels: target labels, honor_labels, metric relabeling, limits."""
        try:
            scraped = parse_series(raw)
        except ExpositionError as e:
            raise ScrapeError(str(e)) from None
        d = _mutate(scraped, self.target.public, self.cfg.honor_labels)
        if self.cfg.metric_relabel_configs:
            out = relabel(d, self.cfg.metric_relabel_configs, scheme=self.cfg.name_scheme)
            if not out:
                return None
        else:
            out = {k: v for k, v in d.items() if v != ""}
        if out.get(METRIC_NAME, "") == "":
            raise ScrapeError("missing metric name (__name__ label)")
        self._check_limits(raw, out)
        return tuple(sorted(out.items()))

    def _check_limits(self, raw: str, lset: dict[str, str]) -> None:
        c = self.cfg
        if c.label_limit and len(lset) > c.label_limit:
            raise ScrapeError(
                f"label_limit exceeded (metric: {raw[:50]}, number of labels: {len(lset)}, limit: {c.label_limit})"
            )
        for name, value in lset.items():
            if c.label_name_length_limit and len(name) > c.label_name_length_limit:
                raise ScrapeError(
                    f"label_name_length_limit exceeded (metric: {raw[:50]}, label name: {name[:50]}, "
                    f"length: {len(name)}, limit: {c.label_name_length_limit})"
                )
            if c.label_value_length_limit and len(value) > c.label_value_length_limit:
                raise ScrapeError(
                    f"label_value_length_limit exceeded (metric: {raw[:50]}, label name: {name[:50]}, "
                    f"value: {go_quote(value[:50])}, length: {len(value)}, limit: {c.label_value_length_limit})"
                )
            if c.name_scheme == "legacy" and not is_valid_label_name(name, "legacy"):
                raise ScrapeError(f"invalid metric name or label names: {raw[:50]}")

    @staticmethod
    def _valid_rows(sidx: np.ndarray, ts: np.ndarray, t_ms: int, has_dupes: bool) -> np.ndarray | None:
        """Rows to keep: drop samples too far in the future and repeated (series, ts) pairs."""
        ok = ts <= t_ms + _MAX_FUTURE_MS
        if not has_dupes and bool(ok.all()):
            return None
        order = np.lexsort((ts, sidx))
        s_sorted, t_sorted = sidx[order], ts[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = (s_sorted[1:] != s_sorted[:-1]) | (t_sorted[1:] != t_sorted[:-1])
        keep = np.zeros(len(sidx), dtype=bool)
        keep[order[first]] = True
        return np.flatnonzero(keep & ok)

    def _tracked(self, series: list[Labels], sidx: np.ndarray, explicit: np.ndarray) -> set[Labels]:
        # Series with an explicit timestamp bypass staleness unless track_timestamps_staleness.
        if self.cfg.track_timestamps_staleness or not bool(explicit.any()):
            return set(series)
        return {series[i] for i in np.unique(sidx[~explicit])}

    def _exemplars(
        self, exp: Exposition, lbls: list[Labels | None], ts_raw: np.ndarray | None, t_ms: int
    ) -> list[Exemplar]:
        out = []
        for ex in exp.exemplars:
            lb = lbls[ex.index]
            if lb is None:
                continue
            ts = ex.ts
            if ts is None:
                ts = int(exp.timestamps[ex.index]) if ts_raw is not None and exp.has_ts[ex.index] else t_ms
            out.append(Exemplar(lb, ex.labels, ts, ex.value))
        return out

    def _batch(self, p: _Prepared, t_ms: int, *, up: bool, duration: float) -> SampleBatch:
        """Samples + staleness markers + report series, column-wise."""
        stale = [s for s in self.prev if s not in p.tracked]
        report_vals = [1.0 if up else 0.0, duration, float(p.total), float(p.added), float(p.series_added)]
        series = p.series + stale + self._report_series
        n_s, n_st, n_r = len(p.idx), len(stale), len(self._report_series)
        base = len(p.series)
        idx = np.concatenate([p.idx, np.arange(base, base + n_st + n_r, dtype=np.int64)])
        ts = np.concatenate([p.ts, np.full(n_st + n_r, t_ms, dtype=np.int64)])
        values = np.concatenate([p.values, np.full(n_st, STALE_NAN), np.array(report_vals)])
        assert len(idx) == n_s + n_st + n_r
        return SampleBatch(series, idx, ts, values)

    def stale_batch(self, t_ms: int) -> SampleBatch | None:
        """End-of-run markers: every series of the last scrape plus the report series."""
        if not self.scraped_once:
            return None
        series = [*self.prev, *self._report_series]
        n = len(series)
        return SampleBatch(series, np.arange(n, dtype=np.int64), np.full(n, t_ms, dtype=np.int64), np.full(n, STALE_NAN))

    def status(self, external_host: str) -> TargetStatus:
        t = self.target
        return TargetStatus(
            discovered_labels=dict(t.discovered),
            labels=dict(t.public),
            scrape_pool=self.cfg.job_name,
            scrape_url=t.url,
            global_url=global_url(t.url, external_host),
            last_error=self.last_error,
            last_scrape=self.last_scrape,
            last_scrape_duration=self.last_duration,
            health=self.health,
            scrape_interval=t.labels.get("__scrape_interval__", ""),
            scrape_timeout=t.labels.get("__scrape_timeout__", ""),
        )


def _mutate(scraped: list[tuple[str, str]], target: Labels, honor: bool) -> dict[str, str]:
    """Attach target labels to scraped labels (Prometheus' mutateSampleLabels)."""
    d = dict(scraped)
    if honor:
        for k, v in target:
            if k not in d:
                d[k] = v
        return d
    conflicts = [(k, d[k]) for k, _ in target if d.get(k, "") != ""]
    d.update(target)
    # Shorter names first, so exported_a wins over exported_exported_a chains deterministically.
    for k, v in sorted(conflicts, key=lambda p: len(p[0])):
        name = k
        while True:
            name = "exported_" + name
            if d.get(name, "") == "":
                d[name] = v
                break
    return d
