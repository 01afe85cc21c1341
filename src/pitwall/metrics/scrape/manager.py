"""The scrape manager: one pool per ``scrape_configs`` job, reloads, target status.

Contract: ``ScrapeManager`` (a Component) owns one ``Pool`` per job. A pool
holds the job's HTTP client and one ``ScrapeLoop`` per target, re-syncing
its targets when file_sd files change (new targets start, vanished ones are
retired). A retired target gets end-of-run staleness markers after its next
scheduled scrape plus an interval; stopping the manager writes none
(Prometheus presumes a restart) unless ``stale_markers_on_stop``. ``reload``
keeps unchanged jobs running and restarts changed ones, carrying each
target's previous series over so staleness continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

import httpx

from pitwall.core.labels import Labels
from pitwall.metrics.scrape.client import accept_header, make_client, request_headers
from pitwall.metrics.scrape.config import ScrapeConfig
from pitwall.metrics.scrape.discovery import Groups, read_file_groups, target_groups, targets_of
from pitwall.metrics.scrape.kubernetes import DEFAULT_POD_JOB, PodSource, default_pod_job, pod_groups, pods_of
from pitwall.metrics.scrape.loop import ScrapeLoop
from pitwall.metrics.scrape.targets import DroppedTarget, TargetMetadata, TargetsSnapshot, TargetStatus
from pitwall.metrics.store import Appender

__all__ = ["Pool", "ScrapeManager", "cancel"]

log = logging.getLogger(__name__)

POD_RESYNC_S = 30.0  # re-list pods this often even without a change notice
POD_RETRY_S = 1.0  # after a failed list, or when the change stream ends


class Pool:
    """One job: its config, HTTP client, target groups and scrape loops."""

    def __init__(self, manager: ScrapeManager, cfg: ScrapeConfig) -> None:
        self.manager = manager
        self.cfg = cfg
        self.client = make_client(cfg, manager.transport)
        self.loops: dict[tuple[Labels, str], ScrapeLoop] = {}
        self.dropped: list[DroppedTarget] = []
        self.dropped_count = 0
        self.file_groups: dict[str, Groups] = {}
        self.file_task: asyncio.Task[None] | None = None
        self.pod_groups: Groups = []
        self.pod_task: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()
        self._accept = accept_header(cfg.protocols)

    def request_headers(self, timeout_s: float) -> dict[str, str]:
        return request_headers(self.cfg, self._accept, timeout_s)

    def refresh_files(self) -> bool:
        """Re-read file_sd files; True when the groups changed."""
        new = read_file_groups(self.cfg, self.file_groups)
        changed = new != self.file_groups
        self.file_groups = new
        return changed

    async def sync(self) -> None:
        """Rebuild targets from the current groups; start new loops, retire vanished ones."""
        async with self.lock:
            groups = target_groups(self.cfg, self.file_groups) + self.pod_groups
            wanted, dropped = targets_of(groups, self.cfg)
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
                    sl = ScrapeLoop(self, tgt)
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
        self.start_watchers()

    def start_watchers(self) -> None:
        """The file_sd and kubernetes_sd refresh tasks this job needs."""
        if self.cfg.file_sd_configs:
            self.file_task = asyncio.create_task(self._watch_files(), name=f"file_sd {self.cfg.job_name}")
        if self.cfg.kubernetes_sd_configs:
            source = self.manager.pod_source
            if source is None:
                log.warning("job %s has kubernetes_sd_configs but this server has no Kubernetes API",
                            self.cfg.job_name)
            else:
                self.pod_task = asyncio.create_task(self._watch_pods(source),
                                                    name=f"kubernetes_sd {self.cfg.job_name}")

    async def refresh_pods(self, source: PodSource) -> bool:
        """Re-list the pods of every ``kubernetes_sd_configs`` entry; True when the groups changed."""
        groups: Groups = []
        for sd in self.cfg.kubernetes_sd_configs:
            groups += pod_groups(await pods_of(source, sd))
        changed = groups != self.pod_groups
        self.pod_groups = groups
        return changed

    async def _watch_pods(self, source: PodSource) -> None:
        changed = asyncio.Event()
        listener = asyncio.create_task(_listen(source, changed), name=f"pod changes {self.cfg.job_name}")
        try:
            while True:
                changed.clear()
                try:
                    if await self.refresh_pods(source):
                        await self.sync()
                    delay = POD_RESYNC_S
                except Exception as e:  # the API not started yet, or a failed list: retry soon
                    log.debug("kubernetes_sd refresh of job %s failed: %s", self.cfg.job_name, e)
                    delay = POD_RETRY_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), delay)
                await asyncio.sleep(0.05)  # one re-list for a burst of changes
        finally:
            await cancel(listener)

    async def _watch_files(self) -> None:
        interval = min(sd.refresh_interval for sd in self.cfg.file_sd_configs) / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                if self.refresh_files():
                    await self.sync()
            except Exception:
                log.exception("file_sd refresh of job %s failed", self.cfg.job_name)

    async def stop_loops(self) -> list[ScrapeLoop]:
        """Cancel the discovery watchers and every loop; return the loops (for staleness decisions)."""
        if self.file_task is not None:
            self.file_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.file_task
        await cancel(self.pod_task)
        loops = list(self.loops.values())
        self.loops.clear()
        for sl in loops:
            await cancel(sl.task)
        return loops


async def _listen(source: PodSource, changed: asyncio.Event) -> None:
    """Set ``changed`` on every change the source reports; subscribe again when its stream ends."""
    while True:
        try:
            async for _ in source.pod_changes():
                changed.set()
        except Exception as e:
            log.debug("pod change stream ended: %s", e)
        changed.set()  # something may have been missed while away
        await asyncio.sleep(POD_RETRY_S)


async def cancel(task: asyncio.Task[Any] | None) -> None:
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
        self._pools: dict[str, Pool] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._started = False
        self.pod_source: PodSource | None = None
        self.default_pod_interval_ms = 15_000

    def set_pod_source(self, source: PodSource | None, *, default_interval_ms: int = 15_000) -> None:
        """Discover pods (``kubernetes_sd_configs``, role pod) from ``source``; call before ``start``.
        Unless a job uses ``kubernetes_sd_configs`` (or is named ``kubernetes-pods``), the manager adds
        the conventional ``kubernetes-pods`` job, scraping annotated pods every ``default_interval_ms``."""
        self.pod_source = source
        self.default_pod_interval_ms = default_interval_ms

    def _effective(self, configs: Sequence[ScrapeConfig]) -> list[ScrapeConfig]:
        out = list(configs)
        if self.pod_source is not None and not any(c.kubernetes_sd_configs or c.job_name == DEFAULT_POD_JOB
                                                   for c in out):
            out.append(default_pod_job(self.default_pod_interval_ms))
        return out

    async def start(self) -> None:
        self._started = True
        for cfg in self._effective(self._configs):
            await self._add_pool(cfg)

    async def _add_pool(self, cfg: ScrapeConfig) -> None:
        pool = Pool(self, cfg)
        self._pools[cfg.job_name] = pool
        await pool.start()

    async def stop(self) -> None:
        self._started = False
        for task in list(self._retiring):
            await cancel(task)
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
        new = {c.job_name: c for c in self._effective(configs)}
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

    async def _restart_pool(self, old: Pool, cfg: ScrapeConfig) -> None:
        previous = {k: sl for k, sl in old.loops.items()}
        for sl in previous.values():
            await cancel(sl.task)
        old.loops.clear()
        if old.file_task is not None:
            await cancel(old.file_task)
        await cancel(old.pod_task)
        await old.client.aclose()
        pool = Pool(self, cfg)
        self._pools[cfg.job_name] = pool
        pool.refresh_files()
        if self.pod_source is not None and cfg.kubernetes_sd_configs:
            with contextlib.suppress(Exception):
                await pool.refresh_pods(self.pod_source)
        await pool.sync()
        for key, sl in previous.items():
            new_loop = pool.loops.get(key)
            if new_loop is None:
                await self.retire(sl, already_stopped=True)
            else:
                # Like Prometheus' reload: no end-of-run markers, staleness continues from the old loop.
                new_loop.prev = sl.prev
                new_loop.scraped_once = sl.scraped_once
        pool.start_watchers()

    async def retire(self, sl: ScrapeLoop, *, already_stopped: bool = False) -> None:
        """Stop a loop whose target vanished and schedule its end-of-run staleness markers."""
        if not already_stopped:
            await cancel(sl.task)
        if not sl.scraped_once:
            return
        task = asyncio.create_task(self._end_of_run(sl), name=f"staleness {sl.target.url}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _end_of_run(self, sl: ScrapeLoop) -> None:
        # Prometheus waits for the next scheduled scrape (its time is the markers' timestamp),
        # one more interval and 10% on top, in case the target comes back under a new loop.
        interval = sl.target.interval_ms / 1000
        stale_wall = sl.next_wall if sl.next_wall > time.time() else time.time()
        await asyncio.sleep(max(0.0, stale_wall - time.time()) + interval + interval / 10)
        await self._write_stale([sl], int(stale_wall * 1000))

    async def _write_stale(self, loops: Iterable[ScrapeLoop], t_ms: int) -> None:
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
