"""Builds the notification pipeline from Settings; ``server.py`` calls these in a few lines.

``NotificationParts`` follows the wiring contract of ``core.lifecycle.Part``;
its ``notify`` is the NotifyFunc for the rule manager.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitwall.alerting.model import NotifyFunc
from pitwall.alerting.notify.api import router as api_router
from pitwall.alerting.notify.pipeline import NotificationPipeline
from pitwall.alerting.notify.settings import NotificationSettings
from pitwall.core.body import BodyLimits
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.limits import InflightBudget
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.storage.state import StateStore

__all__ = ["NotificationParts", "alertmanager_config_path", "build_notifications"]


@dataclass
class NotificationParts:
    pipeline: NotificationPipeline
    state: StateStore
    body_limits: BodyLimits
    inflight: InflightBudget

    name: str = "notifications"

    def components(self) -> Sequence[Component]:
        return [self.pipeline]

    @property
    def notify(self) -> NotifyFunc:
        return self.pipeline.notify

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        """Alertmanager's API acts on the whole server (one alert space, as Alertmanager has)."""
        return [Mount(api_router(lambda: self.pipeline, self.body_limits, self.inflight), server_wide=True)]

    async def reload(self, settings: Any) -> None:
        """Re-read the Alertmanager file named by the (new) settings; raises ConfigError if bad."""
        await self.pipeline.reload(alertmanager_config_path(settings))

    def register_metrics(self, metrics: SelfMetrics) -> None:
        """Notification outcomes are kept in the notification log, not as gauges."""


def alertmanager_config_path(settings: Any) -> Path | None:
    """``alertmanager_config`` resolved against the directory of pitwall.yaml (as Prometheus resolves rule files)."""
    path: Path | None = getattr(settings, "alertmanager_config", None)
    if path is None or path.is_absolute():
        return path
    cfg_file: Path | None = getattr(settings, "config_file", None)
    return (cfg_file.parent / path) if cfg_file is not None else path


def build_notifications(settings: Any, state: StateStore, inflight: InflightBudget) -> NotificationParts:
    """The pipeline for ``settings`` (a ``pitwall.config.Settings``); loads and validates the Alertmanager file.

    Silences, the notification log and the retry queue live in ``state``.
    API bodies are read within ``settings.limits``, holding their bytes in ``inflight``.
    """
    ns: NotificationSettings = getattr(settings, "notifications", None) or NotificationSettings()
    external = ns.external_url or f"http://{settings.listen}"
    pipeline = NotificationPipeline(ns, state, alertmanager_config_path(settings), external)
    return NotificationParts(pipeline, state, BodyLimits.of(settings.limits), inflight)
