"""Builds the notification pipeline from Settings; ``server.py`` calls these in a few lines.

``build_notifications`` (in ``build()``), ``NotificationParts.lifecycle`` (in
the start order), ``NotificationParts.routers()`` (in ``create_app``) and
``NotificationParts.reload(settings)`` (in ``reload_config``).
``NotificationParts.notify`` is the NotifyFunc for the rule manager.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from pitwall.alerting.model import NotifyFunc
from pitwall.alerting.notify.api import router as api_router
from pitwall.alerting.notify.pipeline import NotificationPipeline
from pitwall.alerting.notify.settings import NotificationSettings
from pitwall.core.body import BodyLimits
from pitwall.core.lifecycle import Component
from pitwall.core.limits import InflightBudget
from pitwall.storage.state import StateStore, sqlite_url

__all__ = ["NotificationParts", "alertmanager_config_path", "build_notifications"]


class _StateCloser:
    """Closes the state store after everything that writes to it has stopped."""

    name = "state-store"

    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.store.close()


@dataclass
class NotificationParts:
    pipeline: NotificationPipeline
    state: StateStore
    body_limits: BodyLimits
    inflight: InflightBudget

    @property
    def lifecycle(self) -> list[Component]:
        return [_StateCloser(self.state), self.pipeline]

    @property
    def notify(self) -> NotifyFunc:
        return self.pipeline.notify

    def routers(self) -> list[APIRouter]:
        return [api_router(lambda: self.pipeline, self.body_limits, self.inflight)]

    async def reload(self, settings: Any) -> None:
        """Re-read the Alertmanager file named by the (new) settings; raises ConfigError if bad."""
        await self.pipeline.reload(alertmanager_config_path(settings))


def alertmanager_config_path(settings: Any) -> Path | None:
    """``alertmanager_config`` resolved against the directory of pitwall.yaml (as Prometheus resolves rule files)."""
    path: Path | None = getattr(settings, "alertmanager_config", None)
    if path is None or path.is_absolute():
        return path
    cfg_file: Path | None = getattr(settings, "config_file", None)
    return (cfg_file.parent / path) if cfg_file is not None else path


def build_notifications(settings: Any, inflight: InflightBudget) -> NotificationParts:
    """The pipeline for ``settings`` (a ``pitwall.config.Settings``); loads and validates the Alertmanager file.

    API bodies are read within ``settings.limits``, holding their bytes in ``inflight``.
    """
    ns: NotificationSettings = getattr(settings, "notifications", None) or NotificationSettings()
    data_dir: Path = settings.data_dir
    state = StateStore(ns.state_url or sqlite_url(data_dir))
    external = ns.external_url or f"http://{settings.listen}"
    try:
        pipeline = NotificationPipeline(ns, state, alertmanager_config_path(settings), external)
    except BaseException:
        state.close()
        raise
    return NotificationParts(pipeline, state, BodyLimits.of(settings.limits), inflight)
