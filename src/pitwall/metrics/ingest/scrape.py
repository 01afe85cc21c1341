"""Prometheus-compatible scraping: target discovery, scrape loops, staleness.

``ScrapeManager`` owns one pool per ``scrape_configs`` job. A pool turns its
target groups (``static_configs`` and polled ``file_sd_configs`` files) into
targets the way Prometheus' ``PopulateLabels`` does, and runs one asyncio task
per target at a deterministic, per-target offset inside the interval.

Each scrape is appended as one ``SampleBatch``: the samples (after
honor_labels / metric relabeling, cached per raw series text), staleness
markers for series of the previous scrape that are gone, and the synthetic
``up`` / ``scrape_*`` series. A failed scrape (HTTP error, timeout, parse
error, sample limit, appender error) writes staleness markers for all series of
the previous scrape plus ``up`` 0, as Prometheus does. A target that
disappears gets end-of-run staleness markers after two intervals; stopping the
manager writes none (Prometheus presumes a restart) unless asked to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from glob import glob
from typing import Any, Literal

import httpx
import numpy as np
import yaml

from pitwall.core.durations import format_duration_ms, parse_duration_ms
from pitwall.core.gofmt import go_quote
from pitwall.core.httpconfig import auth_header, ssl_context
from pitwall.core.labels import METRIC_NAME, Labels
from pitwall.metrics.ingest.exposition import Exposition, ExpositionError, parse, parse_series
from pitwall.metrics.model import STALE_NAN, Exemplar, MetricMetadata, SampleBatch
from pitwall.metrics.relabel import is_valid_label_name, relabel
from pitwall.metrics.scrape_config import SCRAPE_PROTOCOL_HEADERS, ScrapeConfig
from pitwall.metrics.store import Appender

__all__ = ["DroppedTarget", "ScrapeManager", "TargetMetadata", "TargetStatus", "TargetsSnapshot", "accept_header"]

log = logging.getLogger(__name__)

Health = Literal["up", "down", "unknown"]

_REPORT_NAMES = (
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
)
# Prometheus' timeLimitAppender rejects samples further than this in the future.
_MAX_FUTURE_MS = 10 * 60 * 1000
_USER_AGENT = "pitwall/0.1.0"
_MISS: Any = object()


# ---------------------------------------------------------------- public status types


@dataclass(frozen=True)
class TargetStatus:
    """One active target as /api/v1/targets reports it."""

    discovered_labels: dict[str, str]
    labels: dict[str, str]
    scrape_pool: str
    scrape_url: str
    global_url: str
    last_error: str
    last_scrape: datetime | None
    last_scrape_duration: float
    health: Health
    scrape_interval: str
    scrape_timeout: str

    def to_json(self) -> dict[str, Any]:
        return {
            "discoveredLabels": self.discovered_labels,
            "labels": self.labels,
            "scrapePool": self.scrape_pool,
            "scrapeUrl": self.scrape_url,
            "globalUrl": self.global_url,
            "lastError": self.last_error,
            "lastScrape": rfc3339(self.last_scrape),
            "lastScrapeDuration": self.last_scrape_duration,
            "health": self.health,
            "scrapeInterval": self.scrape_interval,
            "scrapeTimeout": self.scrape_timeout,
        }


@dataclass(frozen=True)
class DroppedTarget:
    """A target dropped by ``relabel_configs``, with its labels before relabeling."""

    discovered_labels: dict[str, str]
    scrape_pool: str

    def to_json(self) -> dict[str, Any]:
        return {"discoveredLabels": self.discovered_labels, "scrapePool": self.scrape_pool}


@dataclass(frozen=True)
class TargetsSnapshot:
    active: list[TargetStatus]
    dropped: list[DroppedTarget]
    dropped_counts: dict[str, int]


@dataclass(frozen=True)
class TargetMetadata:
    """Latest metric metadata of one target (for /api/v1/targets/metadata)."""

    target: dict[str, str]
    scrape_pool: str
    metadata: list[MetricMetadata]


def rfc3339(t: datetime | None) -> str:
    """Go's RFC3339Nano rendering of a time.Time (zero time when never scraped)."""
    if t is None:
        return "0001-01-01T00:00:00Z"
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{t.microsecond:06d}".rstrip("0")
    off = t.utcoffset()
    if off is None or off.total_seconds() == 0:
        zone = "Z"
    else:
        secs = int(off.total_seconds())
        sign = "+" if secs >= 0 else "-"
        secs = abs(secs)
        zone = f"{sign}{secs // 3600:02d}:{secs % 3600 // 60:02d}"
    return f"{base}{'.' + frac if frac else ''}{zone}"


def accept_header(protocols: Sequence[str]) -> str:
    """Prometheus 3's Accept header for ``scrape_protocols``, weights descending.

    Names are requested with ``escaping=underscores``: pitwall parses classic
    (non-UTF-8) metric names only.
    """
    vals = []
    weight = len(SCRAPE_PROTOCOL_HEADERS) + 1
    for p in protocols:
        v = SCRAPE_PROTOCOL_HEADERS[p]
        if p in ("PrometheusText1.0.0", "OpenMetricsText1.0.0"):
            v += ";escaping=underscores"
        vals.append(f"{v};q=0.{weight}")
        weight -= 1
    vals.append(f"*/*;q=0.{weight}")
    return ",".join(vals)


def _fnv64a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


# ---------------------------------------------------------------- targets


@dataclass
class _Target:
    labels: dict[str, str]  # full label set incl. __address__, __scheme__...
    discovered: dict[str, str]
    public: Labels  # labels attached to samples (no "__" prefix)
    url: str
    interval_ms: int
    timeout_ms: int

    @property
    def key(self) -> tuple[Labels, str]:
        return tuple(sorted(self.labels.items())), self.url

    def hash(self) -> int:
        text = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return _fnv64a(text.encode() + b"\xff" + self.url.encode())


def _target_url(labels: dict[str, str], params: dict[str, list[str]]) -> str:
    q = {k: list(v) for k, v in params.items()}
    for name, value in labels.items():
        if name.startswith("__param_"):
            k = name[len("__param_") :]
            if q.get(k):
                q[k][0] = value
            else:
                q[k] = [value]
    query = urllib.parse.urlencode([(k, v) for k in sorted(q) for v in q[k]])
    url = f"{labels.get('__scheme__', '')}://{labels.get('__address__', '')}{labels.get('__metrics_path__', '')}"
    return f"{url}?{query}" if query else url


def populate_labels(
    discovered: dict[str, str], cfg: ScrapeConfig
) -> tuple[_Target | None, dict[str, str]]:
    """Prometheus' PopulateLabels: (target or None when dropped, labels before relabeling).

    Raises ValueError for targets that cannot be scraped (no address, bad interval).
    """
    lb = dict(discovered)
    defaults = {
        "job": cfg.job_name,
        "__scrape_interval__": format_duration_ms(cfg.interval_ms),
        "__scrape_timeout__": format_duration_ms(cfg.timeout_ms),
        "__metrics_path__": cfg.metrics_path,
        "__scheme__": cfg.scheme,
    }
    for k, v in defaults.items():
        if lb.get(k, "") == "":
            lb[k] = v
    for k, vals in cfg.params.items():
        name = "__param_" + k
        if vals and lb.get(name, "") == "":
            lb[name] = vals[0]
    pre = {k: v for k, v in lb.items() if v != ""}
    out = relabel(pre, cfg.relabel_configs, scheme=cfg.name_scheme)
    if out is None:
        return None, pre
    addr = out.get("__address__", "")
    if addr == "":
        raise ValueError("no address")
    if "/" in addr:
        raise ValueError(f'"{addr}" is not a valid hostname')
    interval_ms = _label_duration(out, "__scrape_interval__", "interval")
    timeout_ms = _label_duration(out, "__scrape_timeout__", "timeout")
    if timeout_ms > interval_ms:
        raise ValueError(
            f'scrape timeout cannot be greater than scrape interval ("{out["__scrape_timeout__"]}" > '
            f'"{out["__scrape_interval__"]}")'
        )
    res = {k: v for k, v in out.items() if not k.startswith("__meta_")}
    if res.get("instance", "") == "":
        res["instance"] = addr
    public = tuple(sorted((k, v) for k, v in res.items() if not k.startswith("__")))
    return _Target(res, pre, public, _target_url(res, cfg.params), interval_ms, timeout_ms), pre


def _label_duration(labels: dict[str, str], name: str, what: str) -> int:
    try:
        ms = parse_duration_ms(labels.get(name, ""))
    except ValueError as e:
        raise ValueError(f"error parsing scrape {what}: {e}") from e
    if ms == 0:
        raise ValueError(f"scrape {what} cannot be 0")
    return ms


def _global_url(url: str, external_host: str) -> str:
    """Replace a loopback host by the server's host name, as Prometheus' globalUrl does."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        return url
    netloc = external_host + (f":{parts.port}" if parts.port is not None else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# ---------------------------------------------------------------- scrape loop


class _ScrapeError(Exception):
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


class _ScrapeLoop:
    def __init__(self, pool: _Pool, target: _Target) -> None:
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
            except _ScrapeError as e:
                err = str(e)
        if err is None:
            try:
                prepared = self._prepare(body, ctype, t_ms)
            except _ScrapeError as e:
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
                        raise _ScrapeError(f"server returned HTTP status {resp.status_code} {resp.reason_phrase}")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in resp.aiter_bytes():
                        size += len(chunk)
                        if limit and size > limit:
                            raise _ScrapeError(f"body size limit exceeded: {limit} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks), resp.headers.get("content-type")
        except TimeoutError:
            raise _ScrapeError(f'Get "{url}": context deadline exceeded') from None
        except httpx.HTTPError as e:
            raise _ScrapeError(f'Get "{url}": {e or type(e).__name__}') from None

    # -- sample processing (the hot path)

    def _prepare(self, body: bytes, ctype: str | None, t_ms: int) -> _Prepared:
        try:
            exp = parse(body, ctype, self.cfg.fallback_scrape_protocol)
        except ExpositionError as e:
            raise _ScrapeError(str(e)) from None
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
            raise _ScrapeError("sample limit exceeded", (len(raws), limit, new_series))
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
            raise _ScrapeError(str(e)) from None
        d = _mutate(scraped, self.target.public, self.cfg.honor_labels)
        if self.cfg.metric_relabel_configs:
            out = relabel(d, self.cfg.metric_relabel_configs, scheme=self.cfg.name_scheme)
            if not out:
                return None
        else:
            out = {k: v for k, v in d.items() if v != ""}
        if out.get(METRIC_NAME, "") == "":
            raise _ScrapeError("missing metric name (__name__ label)")
        self._check_limits(raw, out)
        return tuple(sorted(out.items()))

    def _check_limits(self, raw: str, lset: dict[str, str]) -> None:
        c = self.cfg
        if c.label_limit and len(lset) > c.label_limit:
            raise _ScrapeError(
                f"label_limit exceeded (metric: {raw[:50]}, number of labels: {len(lset)}, limit: {c.label_limit})"
            )
        for name, value in lset.items():
            if c.label_name_length_limit and len(name) > c.label_name_length_limit:
                raise _ScrapeError(
                    f"label_name_length_limit exceeded (metric: {raw[:50]}, label name: {name[:50]}, "
                    f"length: {len(name)}, limit: {c.label_name_length_limit})"
                )
            if c.label_value_length_limit and len(value) > c.label_value_length_limit:
                raise _ScrapeError(
                    f"label_value_length_limit exceeded (metric: {raw[:50]}, label name: {name[:50]}, "
                    f"value: {go_quote(value[:50])}, length: {len(value)}, limit: {c.label_value_length_limit})"
                )
            if c.name_scheme == "legacy" and not is_valid_label_name(name, "legacy"):
                raise _ScrapeError(f"invalid metric name or label names: {raw[:50]}")

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
            global_url=_global_url(t.url, external_host),
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


# ---------------------------------------------------------------- pools


def _read_sd_file(path: str) -> list[tuple[list[str], dict[str, str]]]:
    """Target groups of a file_sd file (JSON or YAML list of {targets, labels})."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    data = json.loads(text) if path.lower().endswith(".json") else yaml.safe_load(text)
    if data is None:
        return []
    if not isinstance(data, list):
        raise ValueError("expected a list of target groups")
    groups = []
    for g in data:
        if not isinstance(g, dict) or set(g) - {"targets", "labels"}:
            raise ValueError(f"invalid target group {g!r}")
        targets = g.get("targets") or []
        labels = g.get("labels") or {}
        if not all(isinstance(t, str) for t in targets) or not isinstance(labels, dict):
            raise ValueError(f"invalid target group {g!r}")
        for t in targets:
            if "/" in t:
                raise ValueError(f'"{t}" is not a valid hostname')
        groups.append((list(targets), {str(k): str(v) for k, v in labels.items()}))
    return groups


class _Pool:
    def __init__(self, manager: ScrapeManager, cfg: ScrapeConfig) -> None:
        self.manager = manager
        self.cfg = cfg
        self.client = _make_client(cfg, manager.transport)
        self.loops: dict[tuple[Labels, str], _ScrapeLoop] = {}
        self.dropped: list[DroppedTarget] = []
        self.dropped_count = 0
        self.file_groups: dict[str, list[tuple[list[str], dict[str, str]]]] = {}
        self.file_task: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()
        self._accept = accept_header(cfg.protocols)

    def request_headers(self, timeout_s: float) -> dict[str, str]:
        h = {
            "Accept": self._accept,
            "Accept-Encoding": "gzip" if self.cfg.enable_compression else "identity",
            "User-Agent": _USER_AGENT,
            "X-Prometheus-Scrape-Timeout-Seconds": f"{timeout_s:g}",
        }
        auth = auth_header(self.cfg)
        if auth:
            h["Authorization"] = auth
        return h

    def groups(self) -> list[tuple[list[str], dict[str, str]]]:
        out = [(list(s.targets), dict(s.labels)) for s in self.cfg.static_configs]
        for path in sorted(self.file_groups):
            for targets, labels in self.file_groups[path]:
                out.append((targets, {**labels, "__meta_filepath": path}))
        return out

    def refresh_files(self) -> bool:
        """Re-read file_sd files; a file that fails to read keeps its last good targets."""
        new: dict[str, list[tuple[list[str], dict[str, str]]]] = {}
        for sd in self.cfg.file_sd_configs:
            for pattern in sd.files:
                for path in sorted(glob(pattern)):
                    try:
                        new[path] = _read_sd_file(path)
                    except (OSError, ValueError, yaml.YAMLError) as e:
                        log.error("error reading file_sd file %s: %s", path, e)
                        if path in self.file_groups:
                            new[path] = self.file_groups[path]
        changed = new != self.file_groups
        self.file_groups = new
        return changed

    async def sync(self) -> None:
        """Rebuild targets from the current groups; start new loops, retire vanished ones."""
        async with self.lock:
            wanted: dict[tuple[Labels, str], _Target] = {}
            dropped: list[DroppedTarget] = []
            for targets, glabels in self.groups():
                for addr in targets:
                    disc = {**glabels, "__address__": addr}
                    try:
                        tgt, pre = populate_labels(disc, self.cfg)
                    except ValueError as e:
                        log.error("creating target for %s in job %s failed: %s", addr, self.cfg.job_name, e)
                        continue
                    if tgt is None:
                        dropped.append(DroppedTarget(pre, self.cfg.job_name))
                    else:
                        wanted.setdefault(tgt.key, tgt)
            self.dropped_count = len(dropped)
            keep_n = self.cfg.keep_dropped_targets or 0
            self.dropped = dropped[:keep_n] if keep_n else dropped
            for key in [k for k in self.loops if k not in wanted]:
                loop = self.loops.pop(key)
                await self.manager.retire(loop)
            for key, tgt in wanted.items():
                if key in self.loops:
                    self.loops[key].target.discovered = tgt.discovered
                else:
                    sl = _ScrapeLoop(self, tgt)
                    self.loops[key] = sl
                    sl.start()
            self._apply_target_limit()

    def _apply_target_limit(self) -> None:
        limit = self.cfg.target_limit or 0
        err = None
        if limit and len(self.loops) > limit:
            err = f"target_limit exceeded (number of targets: {len(self.loops)}, limit: {limit})"
        for sl in self.loops.values():
            sl.forced_error = err

    async def start(self) -> None:
        self.refresh_files()
        await self.sync()
        if self.cfg.file_sd_configs:
            self.file_task = asyncio.create_task(self._watch_files(), name=f"file_sd {self.cfg.job_name}")

    async def _watch_files(self) -> None:
        interval = min(sd.refresh_interval for sd in self.cfg.file_sd_configs) / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                if self.refresh_files():
                    await self.sync()
            except Exception:
                log.exception("file_sd refresh of job %s failed", self.cfg.job_name)

    async def stop_loops(self) -> list[_ScrapeLoop]:
        """Cancel the file watcher and every loop; return the loops (for staleness decisions)."""
        if self.file_task is not None:
            self.file_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.file_task
        loops = list(self.loops.values())
        self.loops.clear()
        for sl in loops:
            await _cancel(sl.task)
        return loops


async def _cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has ended.

    Cancels again while it runs on: in Python 3.11 a cancel that lands while
    the scrape's ``asyncio.timeout`` expires comes out as TimeoutError (a
    failed scrape), the loop carries on, and a single cancel would wait forever.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    if not task.cancelled():
        task.result()  # re-raise what it ended with, as awaiting it would


def _make_client(cfg: ScrapeConfig, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        verify=ssl_context(cfg.tls_config),
        follow_redirects=cfg.follow_redirects,
        proxy=cfg.proxy_url,
        trust_env=cfg.proxy_from_environment,
        timeout=None,  # the whole scrape is bounded by scrape_timeout instead
        transport=transport,
    )


# ---------------------------------------------------------------- manager


class ScrapeManager:
    """Scrapes every configured target and appends the results (a Component).

    ``stale_markers_on_stop`` writes end-of-run staleness markers when the
    manager stops; Prometheus does not (it expects to be restarted), so the
    default is False. ``transport`` lets tests route HTTP in-process.
    """

    name = "scrape"

    def __init__(
        self,
        appender: Appender,
        *,
        tenant: str = "default",
        configs: Sequence[ScrapeConfig],
        jitter_seed: int = 0,
        external_host: str | None = None,
        stale_markers_on_stop: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.appender = appender
        self.tenant = tenant
        self.jitter_seed = jitter_seed
        self.external_host = external_host or socket.gethostname()
        self.stale_markers_on_stop = stale_markers_on_stop
        self.transport = transport
        self._configs = list(configs)
        self._pools: dict[str, _Pool] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._started = False

    async def start(self) -> None:
        self._started = True
        for cfg in self._configs:
            await self._add_pool(cfg)

    async def _add_pool(self, cfg: ScrapeConfig) -> None:
        pool = _Pool(self, cfg)
        self._pools[cfg.job_name] = pool
        await pool.start()

    async def stop(self) -> None:
        self._started = False
        for task in list(self._retiring):
            await _cancel(task)
        for pool in list(self._pools.values()):
            loops = await pool.stop_loops()
            if self.stale_markers_on_stop:
                await self._write_stale(loops, int(time.time() * 1000))
            await pool.client.aclose()
        self._pools.clear()

    async def reload(self, configs: Sequence[ScrapeConfig]) -> None:
        """Apply new scrape configs: unchanged jobs keep running, changed jobs restart
        (keeping each target's previous series so staleness carries over), removed jobs
        get end-of-run staleness markers."""
        self._configs = list(configs)
        if not self._started:
            return
        new = {c.job_name: c for c in configs}
        for job in [j for j in self._pools if j not in new]:
            pool = self._pools.pop(job)
            for sl in await pool.stop_loops():
                await self.retire(sl, already_stopped=True)
            await pool.client.aclose()
        for job, cfg in new.items():
            old = self._pools.get(job)
            if old is not None and old.cfg == cfg:
                continue
            if old is None:
                await self._add_pool(cfg)
                continue
            await self._restart_pool(old, cfg)

    async def _restart_pool(self, old: _Pool, cfg: ScrapeConfig) -> None:
        previous = {k: sl for k, sl in old.loops.items()}
        for sl in previous.values():
            await _cancel(sl.task)
        old.loops.clear()
        if old.file_task is not None:
            await _cancel(old.file_task)
        await old.client.aclose()
        pool = _Pool(self, cfg)
        self._pools[cfg.job_name] = pool
        pool.refresh_files()
        await pool.sync()
        for key, sl in previous.items():
            new_loop = pool.loops.get(key)
            if new_loop is None:
                await self.retire(sl, already_stopped=True)
            else:
                # Like Prometheus' reload: no end-of-run markers, staleness continues from the old loop.
                new_loop.prev = sl.prev
                new_loop.scraped_once = sl.scraped_once
        if cfg.file_sd_configs:
            pool.file_task = asyncio.create_task(pool._watch_files(), name=f"file_sd {cfg.job_name}")

    async def retire(self, sl: _ScrapeLoop, *, already_stopped: bool = False) -> None:
        """Stop a loop whose target vanished and schedule its end-of-run staleness markers."""
        if not already_stopped:
            await _cancel(sl.task)
        if not sl.scraped_once:
            return
        task = asyncio.create_task(self._end_of_run(sl), name=f"staleness {sl.target.url}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _end_of_run(self, sl: _ScrapeLoop) -> None:
        # Prometheus waits for the next scheduled scrape (its time is the markers' timestamp),
        # one more interval and 10% on top, in case the target comes back under a new loop.
        interval = sl.target.interval_ms / 1000
        stale_wall = sl.next_wall if sl.next_wall > time.time() else time.time()
        await asyncio.sleep(max(0.0, stale_wall - time.time()) + interval + interval / 10)
        await self._write_stale([sl], int(stale_wall * 1000))

    async def _write_stale(self, loops: Iterable[_ScrapeLoop], t_ms: int) -> None:
        for sl in loops:
            batch = sl.stale_batch(t_ms)
            if batch is None or len(batch) == 0:
                continue
            try:
                await self.appender.append(self.tenant, batch)
            except Exception:
                log.warning("appending end-of-run staleness markers for %s failed", sl.target.url, exc_info=True)
            sl.prev = set()

    # -- status

    def targets(self, scrape_pool: str | None = None) -> TargetsSnapshot:
        """Active and dropped targets, sorted by pool then scrape URL."""
        active: list[TargetStatus] = []
        dropped: list[DroppedTarget] = []
        counts: dict[str, int] = {}
        for job in sorted(self._pools):
            if scrape_pool is not None and job != scrape_pool:
                continue
            pool = self._pools[job]
            loops = sorted(pool.loops.values(), key=lambda s: s.target.url)
            active.extend(sl.status(self.external_host) for sl in loops)
            dropped.extend(pool.dropped)
            counts[job] = pool.dropped_count
        return TargetsSnapshot(active, dropped, counts)

    def to_prometheus_targets_json(self, state: str = "any", scrape_pool: str | None = None) -> dict[str, Any]:
        """The ``data`` object of Prometheus' /api/v1/targets (state: active, dropped or any)."""
        snap = self.targets(scrape_pool)
        state = state.lower()
        show_active = state in ("", "any", "active")
        show_dropped = state in ("", "any", "dropped")
        return {
            "activeTargets": [t.to_json() for t in snap.active] if show_active else [],
            "droppedTargets": [d.to_json() for d in snap.dropped] if show_dropped else [],
            "droppedTargetCounts": snap.dropped_counts if show_dropped else None,
        }

    def metadata(self) -> list[TargetMetadata]:
        """Latest metric metadata per active target."""
        out = []
        for job in sorted(self._pools):
            for sl in sorted(self._pools[job].loops.values(), key=lambda s: s.target.url):
                out.append(TargetMetadata(dict(sl.target.public), job, list(sl.metadata)))
        return out
