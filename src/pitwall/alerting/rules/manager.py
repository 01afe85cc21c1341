"""The rule manager: loads rule files, runs one task per group, reloads live.

Like Prometheus' ``rules/manager.go``: a reload keeps unchanged groups
running untouched, copies alert state into changed groups, writes staleness
markers for the series of removed groups, and leaves the previous rule set
in place when the new files do not load.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pitwall.alerting.model import NotifyFunc
from pitwall.alerting.rules.alerting_rule import AlertingRule
from pitwall.alerting.rules.base import ForStateReader, QueryFunc
from pitwall.alerting.rules.group import AppendFunc, Group, Rule, querier_reader
from pitwall.alerting.rules.recording_rule import RecordingRule
from pitwall.alerting.rules.rulefmt import ExprCheck, GroupSpec, parse_rule_file, parse_rules
from pitwall.core.errors import ConfigError
from pitwall.metrics import Querier

log = logging.getLogger(__name__)

__all__ = ["RuleManager", "RuleOptions", "build_groups", "expand_globs", "promql_check"]


def promql_check(expr: str) -> str | None:
    """Parse error of a PromQL expression, or None."""
    from pitwall.metrics import PromQLParseError, parse_promql

    try:
        parse_promql(expr)
    except PromQLParseError as e:
        return e.message
    return None


@dataclass
class RuleOptions:
    """Evaluation options shared by all groups (from pitwall.yaml)."""

    default_interval_ms: int = 60_000
    query_offset_ms: int = 0
    external_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    resend_delay_ms: int = 60_000
    for_grace_period_ms: int = 600_000
    outage_tolerance_ms: int = 3_600_000


def expand_globs(patterns: Sequence[str], base: Path | None = None) -> list[str]:
    """Files matching ``patterns`` (relative ones resolved against ``base``), sorted per pattern."""
    out: list[str] = []
    for pat in patterns:
        p = pat if base is None or Path(pat).is_absolute() else str(base / pat)
        for f in sorted(glob.glob(p)):
            if f not in out:
                out.append(f)
    return out


def build_groups(specs: Sequence[GroupSpec], query: QueryFunc, opts: RuleOptions, *, append: AppendFunc,
                 notify: NotifyFunc | None, restored: bool, offload: bool = True,
                 interval_ms: int | None = None) -> list[Group]:
    """Runnable groups from parsed specs."""
    groups = []
    for spec in specs:
        rules: list[Rule] = []
        for r in spec.rules:
            labels = {**spec.labels, **r.labels}
            if r.alert:
                rules.append(AlertingRule(
                    r.name, r.expr, hold_ms=r.for_ms, keep_firing_for_ms=r.keep_firing_for_ms, labels=labels,
                    annotations=r.annotations, query=query, external_labels=opts.external_labels,
                    external_url=opts.external_url, restored=restored))
            else:
                rules.append(RecordingRule(r.name, r.expr, labels, query))
        groups.append(Group(
            spec.name, spec.file, rules,
            interval_ms=spec.interval_ms or interval_ms or opts.default_interval_ms,
            query_offset_ms=opts.query_offset_ms if spec.query_offset_ms is None else spec.query_offset_ms,
            limit=spec.limit, append=append, notify=notify, resend_delay_ms=opts.resend_delay_ms,
            external_labels=opts.external_labels, external_url=opts.external_url, offload=offload))
    return groups


class RuleManager:
    """Component running rule groups; ``languages`` maps a language to (query function, expression check).

    ``for_state`` reads ALERTS_FOR_STATE back (``querier``, a store's, is the older way to give it); without
    either, nothing is restored.
    """

    name = "rules"

    def __init__(self, *, languages: Mapping[str, tuple[QueryFunc, ExprCheck]], append: AppendFunc,
                 notify: NotifyFunc | None, querier: Callable[[], Querier] | None = None,
                 options: RuleOptions | None = None, for_state: ForStateReader | None = None) -> None:
        self.languages = dict(languages)
        self.append = append
        self.notify = notify
        self.querier = querier
        self.for_state = for_state
        # Several servers writing to one metrics engine: groups write and send only while ``writes()``.
        self.writes: Callable[[], bool] = lambda: True
        self.gated = False
        self.options = options or RuleOptions()
        self.groups: dict[tuple[str, str], Group] = {}
        self._tasks: dict[tuple[str, str], tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._started = False
        self._restored_once = False
        # Groups added at run time by a source that is not a file (an SLO object, ...): source -> specs.
        self._generated: dict[str, list[GroupSpec]] = {}
        self._swap_lock = asyncio.Lock()  # one swap at a time: reloads and generated groups interleave otherwise

    def load(self, files: Mapping[str, Sequence[str]], options: RuleOptions | None = None) -> list[Group]:
        """Parse rule files per language into groups; raises ConfigError listing every error."""
        opts = options or self.options
        errors: list[str] = []
        groups: list[Group] = []
        for language, paths in files.items():
            if not paths:
                continue
            lang = self.languages.get(language)
            if lang is None:
                errors.append(f"{language} rule files are configured but no {language} engine is available")
                continue
            query, check = lang
            specs: list[GroupSpec] = []
            for path in paths:
                got, errs = parse_rule_file(path, check)
                specs.extend(got)
                errors.extend(errs)
            groups += build_groups(specs, query, opts, append=self.append, notify=self.notify,
                                   restored=self._restored_once or not self._can_restore)
        if errors:
            raise ConfigError("error loading rules:\n" + "\n".join(errors))
        return groups

    @property
    def _can_restore(self) -> bool:
        return self.for_state is not None or self.querier is not None

    def _reader(self) -> ForStateReader | None:
        if self.for_state is not None:
            return self.for_state
        return querier_reader(self.querier()) if self.querier is not None else None

    def follow(self, leading: Callable[[], bool]) -> None:
        """Write series (recording rules, ALERTS, ALERTS_FOR_STATE) and send alerts only while ``leading()``
        (a leader election's state); call before ``start``. For servers sharing one metrics engine: every
        server still evaluates every group, so each answers /api/v1/rules and /api/v1/alerts, but one writes.
        A server gaining the lead first restores ``for`` state from what the previous leader wrote."""
        self.writes = leading
        self.gated = True
        for g in self.groups.values():
            self._gate(g)

    def _gate(self, g: Group) -> None:
        g.notify = self.notify
        if not self.gated or g.on_lead is not None:
            return
        g.writes = self.writes
        g.wrote = self.writes()

        def on_lead(ts_ms: int) -> None:
            self.restore_group(g, ts_ms, demote=True)

        g.on_lead = on_lead

    def restore_group(self, g: Group, ts_ms: int, demote: bool = False) -> None:
        """Restore ``g``'s ``for`` state at ``ts_ms`` (errors are logged: evaluation goes on unrestored)."""
        read = self._reader()
        if read is None:
            return
        try:
            g.restore_for_state(ts_ms, read, self.options.for_grace_period_ms, self.options.outage_tolerance_ms,
                                demote=demote)
        except Exception:  # the engine is down: evaluate on without restored state
            log.exception("restoring 'for' state failed", extra={"group": g.name})
            for r in g.rules:  # and still write ALERTS (Prometheus would stop writing them until restarted)
                if isinstance(r, AlertingRule):
                    r.restored = True

    async def update(self, files: Mapping[str, Sequence[str]], options: RuleOptions | None = None) -> None:
        """Swap in the groups of ``files``; on a load error the running rules stay."""
        new_groups = self.load(files, options)
        async with self._swap_lock:
            if options is not None:
                self.options = options
            await self._swap(new_groups + self._generated_groups())

    def _generated_groups(self) -> list[Group]:
        query, _check = self.languages["promql"]
        specs = [s for source in sorted(self._generated) for s in self._generated[source]]
        return build_groups(specs, query, self.options, append=self.append, notify=self.notify,
                            restored=self._restored_once or not self._can_restore)

    async def set_rule_groups(self, source: str, text: str) -> None:
        """Add or replace the groups of ``source`` (a name that is not a file, e.g. ``slo:ns/name``) from
        rule-file YAML, live, as a reload would; ConfigError (promtool's messages) changes nothing."""
        _query, check = self.languages["promql"]
        specs, errs = parse_rules(text, source, check)
        if errs:
            raise ConfigError(f"{source}: " + "\n".join(errs))
        await self._replace_generated(source, specs)

    async def remove_rule_groups(self, source: str) -> None:
        """Drop the groups of ``source`` (their series get staleness markers); unknown sources are ignored."""
        if source in self._generated:
            await self._replace_generated(source, None)

    def generated_sources(self) -> list[str]:
        return sorted(self._generated)

    async def _replace_generated(self, source: str, specs: list[GroupSpec] | None) -> None:
        async with self._swap_lock:
            owned = set(self._generated) | {source}
            files = [g for g in self.groups.values() if g.file not in owned]
            if specs is None:
                self._generated.pop(source, None)
            else:
                self._generated[source] = specs
            await self._swap(files + self._generated_groups())

    async def _swap(self, new_groups: list[Group]) -> None:
        old = self.groups
        fresh: dict[tuple[str, str], Group] = {}
        restore: set[tuple[str, str]] = set()
        for g in new_groups:
            prev = old.get(g.key)
            if prev is not None and prev.identity() == g.identity():
                fresh[g.key] = prev  # unchanged: keep it running as is
                continue
            if prev is not None:
                g.copy_state(prev)
            elif g.file in self._generated and self._can_restore:
                restore.add(g.key)  # a leader-only group (an SLO's) appearing on a new leader continues its state
                for r in g.rules:
                    if isinstance(r, AlertingRule):
                        r.restored = False
            fresh[g.key] = g
        now_ms = int(time.time() * 1000)
        for key, g in old.items():
            if fresh.get(key) is not g:
                await self._stop_group(key)
                if key not in fresh:
                    await g.mark_stale(now_ms)
        self.groups = fresh
        for g in fresh.values():
            self._gate(g)
        if self._started:
            for key, g in fresh.items():
                if key not in self._tasks:
                    self._start_group(g, restore=key in restore)

    def _start_group(self, g: Group, restore: bool) -> None:
        stop = asyncio.Event()
        restore_fn = None
        if restore and self._can_restore:

            def restore_fn(ts_ms: int) -> None:
                self.restore_group(g, ts_ms)

        task = asyncio.create_task(g.run(stop, restore_fn), name=f"rules:{g.file}:{g.name}")
        self._tasks[g.key] = (task, stop)

    async def _stop_group(self, key: tuple[str, str]) -> None:
        entry = self._tasks.pop(key, None)
        if entry is None:
            return
        task, stop = entry
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def start(self) -> None:
        self._started = True
        for g in self.groups.values():
            self._gate(g)
            self._start_group(g, restore=not self._restored_once)
        self._restored_once = True

    async def stop(self) -> None:
        self._started = False
        for key in list(self._tasks):
            await self._stop_group(key)

    def rule_groups(self) -> list[Group]:
        """Groups sorted by file then name, as /api/v1/rules lists them."""
        return [self.groups[k] for k in sorted(self.groups)]
