"""Builds the rule manager from Settings; server.py calls these few functions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitwall.alerting.model import NotifyFunc
from pitwall.alerting.rules.api import rules_router
from pitwall.alerting.rules.base import (
    ForStateReader,
    OutSample,
    QueryFunc,
    instant_for_state,
    instant_query_func,
    logql_check,
    logql_query_func,
)
from pitwall.alerting.rules.group import querier_reader
from pitwall.alerting.rules.manager import RuleManager, RuleOptions, expand_globs, promql_check
from pitwall.alerting.rules.notifier import alertmanager_notify, fan_out
from pitwall.alerting.rules.rulefmt import ExprCheck
from pitwall.core.durations import parse_duration_ms
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.metrics import InstantQuery, MetricStorage, SampleBatch

__all__ = ["RulesPart", "build_rule_manager", "build_rules", "reload_rules", "rule_files_of", "shared_engine"]


def _options(settings: Any) -> RuleOptions:
    g, r = settings.global_, settings.rules
    return RuleOptions(
        default_interval_ms=parse_duration_ms(g.evaluation_interval),
        query_offset_ms=r.query_offset or parse_duration_ms(getattr(g, "rule_query_offset", "0s")),
        external_labels=dict(g.external_labels),
        external_url=r.external_url,
        resend_delay_ms=r.resend_delay,
        for_grace_period_ms=r.for_grace_period,
        outage_tolerance_ms=r.for_outage_tolerance,
    )


def rule_files_of(settings: Any) -> dict[str, list[str]]:
    """Rule files per language, globs expanded relative to the config file's directory."""
    base = Path(settings.config_file).parent if settings.config_file else None
    return {"promql": expand_globs(settings.rule_files, base),
            "logql": expand_globs(settings.rules.logql_rule_files, base)}


def _notify(settings: Any, own: NotifyFunc | None) -> NotifyFunc | None:
    targets: list[NotifyFunc] = [own] if own is not None else []
    for am in settings.alerting.alertmanagers:
        targets += [alertmanager_notify(u, am.timeout / 1000) for u in am.urls()]
    if not targets:
        return None
    return targets[0] if len(targets) == 1 else fan_out(targets)


def _logql_language(logs: Any, tenant: str) -> tuple[QueryFunc, ExprCheck] | None:
    """LogQL rules run on the logs pillar's engine and store (``LogsParts``), when there is one."""
    if logs is None:
        return None
    return logql_query_func(logs.engine, lambda: logs.deps.reads.querier(tenant)), logql_check


def shared_engine(settings: Any) -> bool:
    """Whether metrics live on an engine other servers write to as well (``backends.metrics``)."""
    backends = getattr(settings, "backends", None)
    return getattr(backends, "metrics", None) is not None


def _for_state(settings: Any, instant: InstantQuery, store: MetricStorage, tenant: str) -> ForStateReader:
    """ALERTS_FOR_STATE is read where it was written: the engine's query API, else the embedded store."""
    if shared_engine(settings):
        return instant_for_state(instant, tenant)

    def read(matchers: Any, mint: int, maxt: int) -> Any:
        return querier_reader(store.querier(tenant))(matchers, mint, maxt)

    return read


def build_rule_manager(settings: Any, *, instant: InstantQuery, store: MetricStorage,
                       notify: NotifyFunc | None = None, logs: Any = None, tenant: str = "default") -> RuleManager:
    """A RuleManager over the embedded store, loaded from ``rule_files`` (errors raise ConfigError)."""

    async def append(samples: Sequence[OutSample]) -> None:
        batch = SampleBatch.from_rows([(s.labels, s.ts_ms, s.value) for s in samples])
        await store.append(tenant, batch)

    languages: dict[str, tuple[QueryFunc, ExprCheck]] = {"promql": (instant_query_func(instant, tenant), promql_check)}
    logql = _logql_language(logs, tenant)
    if logql is not None:
        languages["logql"] = logql
    mgr = RuleManager(languages=languages, append=append, notify=_notify(settings, notify),
                      options=_options(settings), for_state=_for_state(settings, instant, store, tenant))
    mgr.groups = {g.key: g for g in mgr.load(rule_files_of(settings))}
    return mgr


async def reload_rules(mgr: RuleManager, settings: Any, notify: NotifyFunc | None = None) -> None:
    """Apply new settings (SIGHUP, /-/reload); the old rules stay on error."""
    mgr.notify = _notify(settings, notify)
    await mgr.update(rule_files_of(settings), _options(settings))


@dataclass
class RulesPart:
    """Rule evaluation as a part of the server (``core.lifecycle.Part``)."""

    manager: RuleManager
    notify: NotifyFunc | None
    name: str = "rules"

    def components(self) -> Sequence[Component]:
        return [self.manager]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return [Mount(rules_router(lambda: self.manager), server_wide=True)]

    async def reload(self, settings: Any) -> None:
        await reload_rules(self.manager, settings, self.notify)

    def follow(self, settings: Any, leading: Callable[[], bool]) -> None:
        """Several servers (``leading``: the controllers' election): with a shared metrics engine only the
        leader writes rule results and sends rule alerts; with each server's embedded store nothing changes."""
        if shared_engine(settings):
            self.manager.follow(leading)

    def register_metrics(self, metrics: SelfMetrics) -> None:
        """Rule health is served by ``/api/v1/rules``, as in Prometheus."""


def build_rules(settings: Any, *, instant: InstantQuery, store: MetricStorage, notify: NotifyFunc | None = None,
                logs: Any = None) -> RulesPart:
    """The rule manager for ``settings`` as a part; rule files that do not load raise ConfigError."""
    return RulesPart(build_rule_manager(settings, instant=instant, store=store, notify=notify, logs=logs), notify)
