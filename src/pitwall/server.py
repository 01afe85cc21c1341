"""Composition root: builds every component from Settings and serves them.

``build(settings)`` constructs components in dependency order;
``create_app(settings)`` wraps them in a FastAPI app whose lifespan starts
them in that order and stops them in reverse. ``pitwall server``, ``pitwall
demo`` and the tests all go through ``create_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pitwall import __version__
from pitwall.alerting.notify.wiring import NotificationParts, build_notifications
from pitwall.alerting.rules.api import rules_router
from pitwall.alerting.rules.manager import RuleManager
from pitwall.alerting.rules.wiring import build_rule_manager, reload_rules
from pitwall.config import Settings, load_settings
from pitwall.core.auth import BearerAuth
from pitwall.core.browser_guard import BrowserGuard
from pitwall.core.errors import ConfigError, PitwallError, Unavailable
from pitwall.core.http_errors import error_router
from pitwall.core.lifecycle import Component
from pitwall.core.limits import InflightBudget
from pitwall.core.selfmetrics import RequestMetrics, SelfMetrics
from pitwall.core.tenancy import require_server_wide
from pitwall.logs.wiring import LogsParts, build_logs, logs_routers
from pitwall.metrics.api import MetricsApiDeps, ingest_router, otlp_router, query_router
from pitwall.metrics.ingest.otlp import OtlpMetricsTranslator
from pitwall.metrics.ingest.remote_write import RemoteWriteIngester
from pitwall.metrics.ingest.scrape import ScrapeManager
from pitwall.metrics.promql import Engine
from pitwall.metrics.query import local_instant
from pitwall.metrics.scrape_config import GlobalScrapeDefaults, ScrapeConfig, parse_scrape_configs
from pitwall.storage.duckdb import TelemetryDB
from pitwall.storage.metrics import MetricStore, StoreLimits
from pitwall.traces.wiring import TracesParts, build_traces
from pitwall.ui.routes import ui_router

log = logging.getLogger(__name__)


@dataclass
class Components:
    """Everything the server runs, in start order."""

    settings: Settings
    db: TelemetryDB
    metric_store: MetricStore
    engine: Engine
    remote_write: RemoteWriteIngester
    otlp_metrics: OtlpMetricsTranslator
    scrape: ScrapeManager
    self_metrics: SelfMetrics
    inflight: InflightBudget
    traces: TracesParts
    logs: LogsParts
    notifications: NotificationParts
    rules: RuleManager | None = None
    started: list[Component] = field(default_factory=list)
    ready: bool = False

    @property
    def lifecycle(self) -> list[Component]:
        return [self.metric_store, *self.traces.lifecycle, *self.logs.lifecycle, *self.notifications.lifecycle,
                *([self.rules] if self.rules else []), self.scrape]


def scrape_configs_of(settings: Settings) -> list[ScrapeConfig]:
    g = settings.global_
    defaults = GlobalScrapeDefaults(scrape_interval=g.scrape_interval, scrape_timeout=g.scrape_timeout)
    return parse_scrape_configs(settings.scrape_configs, defaults)


def build(settings: Settings) -> Components:
    """Construct components (no I/O beyond opening files)."""
    data = settings.data_dir
    data.mkdir(parents=True, exist_ok=True)
    db = TelemetryDB(data / "telemetry.duckdb", memory_limit=settings.storage.duckdb_memory_limit)
    st = settings.storage
    store = MetricStore(
        db,
        data / "wal" / "metrics",
        block_ms=st.block_duration,
        retention_ms=st.retention,
        head_max_samples=st.head_max_samples,
        head_max_age_s=st.head_max_age / 1000,
        limits=StoreLimits(max_series_per_tenant=settings.limits.max_series_per_tenant),
        fsync=st.fsync,
    )
    inflight = InflightBudget(settings.limits.max_inflight_bytes)
    traces = build_traces(settings.traces, settings.limits, db, data, appender=store, inflight=inflight,
                          fsync=st.fsync)
    q = settings.query
    engine = Engine(lookback_delta_ms=q.lookback_delta, max_samples=q.max_samples, timeout_s=q.timeout / 1000)
    c = Components(
        settings=settings,
        db=db,
        metric_store=store,
        engine=engine,
        remote_write=RemoteWriteIngester(store, settings.limits),
        otlp_metrics=OtlpMetricsTranslator(max_label_value_length=settings.limits.max_label_value_length),
        scrape=ScrapeManager(store, configs=scrape_configs_of(settings)),
        self_metrics=SelfMetrics(),
        inflight=inflight,
        traces=traces,
        logs=build_logs(settings.logs, db=db, data_dir=data, limits=settings.limits, inflight=inflight,
                        fsync=st.fsync),
        notifications=build_notifications(settings, inflight),
    )
    c.rules = build_rule_manager(settings, instant=local_instant(engine, store), store=store,
                                 notify=c.notifications.notify, logs=c.logs)
    return c


def _flags(settings: Settings) -> dict[str, str]:
    return {
        "config.file": str(settings.config_file or ""),
        "storage.tsdb.path": str(settings.data_dir),
        "storage.tsdb.retention.time": f"{settings.storage.retention // 1000}s",
        "web.listen-address": settings.listen,
        "query.lookback-delta": f"{settings.query.lookback_delta // 1000}s",
        "query.max-samples": str(settings.query.max_samples),
        "query.timeout": f"{settings.query.timeout // 1000}s",
    }


class _DataDirLock:
    def __init__(self, path: Path) -> None:
        self.path = path / "lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise ConfigError(f"data_dir: {self.path.parent} is in use by another pitwall process") from None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


async def reload_config(app: FastAPI) -> None:
    """Re-read the config file and env; apply what can change live."""
    c: Components = app.state.components
    old = c.settings
    new = load_settings(old.config_file, data_dir=old.data_dir, listen=old.listen, insecure=old.insecure)
    await c.notifications.reload(new)
    if c.rules is not None:
        await reload_rules(c.rules, new, c.notifications.notify)
    await c.scrape.reload(scrape_configs_of(new))
    c.settings = new
    log.info("configuration reloaded", extra={"config_file": str(old.config_file)})


def create_app(settings: Settings) -> FastAPI:
    """The ASGI app for ``settings``; components start with its lifespan."""
    lock = _DataDirLock(settings.data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock.acquire()
    try:
        c = build(settings)
    except BaseException:
        lock.release()
        raise

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(_reload_logged(app)))
        try:
            for comp in c.lifecycle:
                await comp.start()
                c.started.append(comp)
            c.ready = True
            log.info("pitwall ready", extra={"listen": settings.listen, "data_dir": str(settings.data_dir)})
            yield
        finally:
            c.ready = False
            for comp in reversed(c.started):
                try:
                    await comp.stop()
                except Exception:
                    log.exception("component failed to stop", extra={"component": comp.name})
            c.started.clear()
            c.db.close()
            lock.release()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)

    app = FastAPI(
        title="pitwall",
        version=__version__,
        description="Production support for microservices: Prometheus-, OTLP- and Loki-compatible APIs.",
        lifespan=lifespan,
    )
    app.state.components = c
    # Routes that act on the whole server rather than one tenant (see core.tenancy).
    server_wide = [Depends(require_server_wide)]
    deps = MetricsApiDeps(
        store=c.metric_store,
        engine=c.engine,
        remote_write=c.remote_write,
        otlp=c.otlp_metrics,
        inflight=c.inflight,
        max_points_per_series=settings.query.max_points_per_series,
        started_at=time.time(),
        flags=_flags(settings),
        targets=c.scrape,
    )
    app.include_router(_ops_router(c), dependencies=server_wide)
    app.include_router(query_router(deps))
    app.include_router(ingest_router(deps))
    app.include_router(otlp_router(deps))
    for router in c.traces.routers():
        app.include_router(router)
    for router in logs_routers(c.logs, lambda: c.ready):
        app.include_router(router)
    for router in c.notifications.routers():
        app.include_router(router, dependencies=server_wide)
    app.include_router(rules_router(lambda: c.rules), dependencies=server_wide)
    if settings.ui.enabled:
        app.include_router(ui_router(c))
    c.self_metrics.add_gauges("pitwall_metrics_series", "Series in the metrics store.",
                              lambda: float(c.metric_store.num_series()))
    c.self_metrics.add_gauges("pitwall_metrics_head_samples", "Samples in the in-memory head.",
                              lambda: float(c.metric_store.head_samples))
    c.self_metrics.add_gauges("pitwall_metrics_samples_appended_total", "Samples appended since start.",
                              lambda: float(c.metric_store.samples_appended))
    app.add_middleware(RequestMetrics, metrics=c.self_metrics)
    tokens = [(t.token, t.principal()) for t in settings.auth_tokens]
    if tokens:
        app.add_middleware(BearerAuth, tokens=tokens)
    # Outermost: a foreign Host or a cross-site write is refused before anything else looks at it.
    app.add_middleware(BrowserGuard, allowed_hosts=settings.host_allow_list(),
                       allowed_origins=settings.allowed_origins)
    return app


async def _reload_logged(app: FastAPI) -> None:
    try:
        await reload_config(app)
    except Exception:
        log.exception("configuration reload failed")


def _ops_router(c: Components) -> Any:
    r = error_router("text", tags=["ops"])

    @r.get("/-/healthy")
    async def healthy() -> Response:
        return Response("pitwall is Healthy.\n", media_type="text/plain")

    @r.get("/-/ready")
    async def ready() -> Response:
        if not c.ready:
            raise Unavailable("Service Unavailable")
        return Response("pitwall is Ready.\n", media_type="text/plain")

    @r.post("/-/reload")
    async def reload(request: Request) -> Response:
        try:
            await reload_config(request.app)
        except PitwallError as e:
            return Response(f"failed to reload config: {e.message}\n", 500, media_type="text/plain")
        return Response("", 200)

    @r.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(c.self_metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return r
