"""Alerting rules: pending -> firing -> inactive, as Prometheus' ``rules/alerting.go``.

Times are Unix milliseconds. Each evaluation expands labels and annotations
through Prometheus' template language, tracks one alert per label set, and
returns the ``ALERTS`` / ``ALERTS_FOR_STATE`` samples to write back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from enum import StrEnum

from pitwall.alerting.rules.base import Health, OutSample, QueryFunc, RuleError
from pitwall.alerting.rules.rulefmt import TEMPLATE_DEFS
from pitwall.alerting.rules.templates import AlertTemplateData, expand
from pitwall.core.gotemplate import TemplateError
from pitwall.core.labels import METRIC_NAME, Labels

log = logging.getLogger(__name__)

RESOLVED_RETENTION_MS = 15 * 60_000  # resolved alerts are kept (and re-sent) this long


class AlertState(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


@dataclass
class ActiveAlert:
    labels: Labels
    annotations: dict[str, str]
    state: AlertState
    value: float
    active_at_ms: int
    fired_at_ms: int = 0
    resolved_at_ms: int = 0
    last_sent_at_ms: int = 0
    valid_until_ms: int = 0
    keep_firing_since_ms: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def needs_sending(self, ts_ms: int, resend_delay_ms: int) -> bool:
        if self.state == AlertState.PENDING:
            return False
        if self.resolved_at_ms > self.last_sent_at_ms:  # resolved since the last send
            return True
        return self.last_sent_at_ms + resend_delay_ms < ts_ms


class AlertingRule:
    """One ``alert:`` rule and its active alerts."""

    kind = "alerting"

    def __init__(self, name: str, expr: str, *, hold_ms: int, keep_firing_for_ms: int, labels: dict[str, str],
                 annotations: dict[str, str], query: QueryFunc, external_labels: dict[str, str] | None = None,
                 external_url: str = "", restored: bool = True) -> None:
        self.name = name
        self.expr = expr
        self.hold_ms = hold_ms
        self.keep_firing_for_ms = keep_firing_for_ms
        self.labels = dict(labels)
        self.annotations = dict(annotations)
        self.query = query
        self.external_labels = dict(external_labels or {})
        self.external_url = external_url
        self.restored = restored
        self.active: dict[Labels, ActiveAlert] = {}
        self.health = Health.UNKNOWN
        self.last_error = ""
        self.last_evaluation_ms = 0
        self.evaluation_seconds = 0.0

    def identity(self) -> tuple[str, str, tuple[tuple[str, str], ...]]:
        return self.name, self.expr, tuple(sorted(self.labels.items()))

    def _expand(self, text: str, data: AlertTemplateData, ts_ms: int) -> str:
        name = f"__alert_{self.name}"
        try:
            return expand(TEMPLATE_DEFS + text, name, data, ts_ms=ts_ms, query=self.query,
                          external_url=self.external_url)
        except TemplateError as e:
            log.warning("expanding alert template failed", extra={"rule": self.name, "err": e.message})
            return f"<error expanding template: {e.message}>"

    def eval(self, ts_ms: int, query_offset_ms: int, limit: int) -> list[OutSample]:
        """One evaluation at ``ts_ms``; returns the ALERTS samples to append."""
        at = ts_ms - query_offset_ms
        vector = self.query(self.expr, at)
        fresh: dict[Labels, ActiveAlert] = {}
        for lbl, v in vector:
            sample_labels = dict(lbl)
            data = AlertTemplateData(sample_labels, self.external_labels, self.external_url, v)
            out = {k: val for k, val in sample_labels.items() if k != METRIC_NAME}
            for k, tmpl in sorted(self.labels.items()):
                expanded = self._expand(tmpl, data, ts_ms)
                if expanded == "":
                    out.pop(k, None)
                else:
                    out[k] = expanded
            out["alertname"] = self.name
            annotations = {k: self._expand(t, data, ts_ms) for k, t in sorted(self.annotations.items())}
            key: Labels = tuple(sorted(out.items()))
            if key in fresh:
                raise RuleError("vector contains metrics with the same labelset after applying alert labels")
            fresh[key] = ActiveAlert(key, annotations, AlertState.PENDING, v, ts_ms)
        for key, a in fresh.items():
            cur = self.active.get(key)
            if cur is not None and cur.state != AlertState.INACTIVE:
                cur.value = a.value
                cur.annotations = a.annotations
                continue
            self.active[key] = a
        return self._advance(ts_ms, at, set(fresh), limit)

    def _advance(self, ts_ms: int, at: int, present: set[Labels], limit: int) -> list[OutSample]:
        samples: list[OutSample] = []
        num_active = 0
        for key, a in list(self.active.items()):
            if key not in present:
                keep = False
                if a.state == AlertState.FIRING and self.keep_firing_for_ms > 0:
                    if a.keep_firing_since_ms == 0:
                        a.keep_firing_since_ms = ts_ms
                    keep = ts_ms - a.keep_firing_since_ms < self.keep_firing_for_ms
                if a.state == AlertState.PENDING or (
                        a.resolved_at_ms and ts_ms - a.resolved_at_ms > RESOLVED_RETENTION_MS):
                    del self.active[key]
                if a.state != AlertState.INACTIVE and not keep:
                    a.state = AlertState.INACTIVE
                    a.resolved_at_ms = ts_ms
                if not keep:
                    continue
            else:
                a.keep_firing_since_ms = 0
            num_active += 1
            if a.state == AlertState.PENDING and ts_ms - a.active_at_ms >= self.hold_ms:
                a.state = AlertState.FIRING
                a.fired_at_ms = ts_ms
            if self.restored:
                samples.append(self._alerts_sample(a, at))
                samples.append(self._for_state_sample(a, at))
        if limit > 0 and num_active > limit:
            self.active = {}
            raise RuleError(f"exceeded limit of {limit} with {num_active} alerts")
        return samples

    @staticmethod
    def _alerts_sample(a: ActiveAlert, at: int) -> OutSample:
        d = dict(a.labels)
        d[METRIC_NAME] = "ALERTS"
        d["alertstate"] = a.state.value
        return OutSample(tuple(sorted(d.items())), at, 1.0)

    @staticmethod
    def _for_state_sample(a: ActiveAlert, at: int) -> OutSample:
        d = dict(a.labels)
        d[METRIC_NAME] = "ALERTS_FOR_STATE"
        return OutSample(tuple(sorted(d.items())), at, float(a.active_at_ms // 1000))

    def active_alerts(self) -> list[ActiveAlert]:
        """Pending and firing alerts (resolved ones kept for re-sending are left out)."""
        return [a for a in self.active.values() if a.state != AlertState.INACTIVE]

    def state(self) -> AlertState:
        """The rule's state: the most severe of its alerts."""
        states = {a.state for a in self.active.values()}
        for s in (AlertState.FIRING, AlertState.PENDING):
            if s in states:
                return s
        return AlertState.INACTIVE

    def alerts_to_send(self, ts_ms: int, resend_delay_ms: int, interval_ms: int) -> list[ActiveAlert]:
        """Alerts due for (re)sending, with ``valid_until`` set (Prometheus' sendAlerts)."""
        out = []
        for a in self.active.values():
            if a.needs_sending(ts_ms, resend_delay_ms):
                a.last_sent_at_ms = ts_ms
                a.valid_until_ms = ts_ms + 4 * max(resend_delay_ms, interval_ms)
                out.append(replace(a, annotations=dict(a.annotations)))
        return out
