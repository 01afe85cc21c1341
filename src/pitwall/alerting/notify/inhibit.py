"""Inhibition: a firing source alert mutes target alerts that share the ``equal`` labels.

Follows Alertmanager's ``inhibit/inhibit.go``: a target is muted when some
unresolved source alert matches the source matchers and agrees on every
``equal`` label (absent reads as empty); an alert matching both sides cannot
inhibit itself through a source that also matches the target side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from pitwall.alerting.notify.alerts import StoredAlert
from pitwall.alerting.notify.config import InhibitRuleConfig
from pitwall.alerting.notify.matchers import Matcher, matchers_match

__all__ = ["InhibitRule", "Inhibitor"]


@dataclass(frozen=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]

    @classmethod
    def from_config(cls, cfg: InhibitRuleConfig) -> InhibitRule:
        return cls(tuple(cfg.source), tuple(cfg.target), tuple(cfg.equal))


class Inhibitor:
    """Answers "is this label set inhibited, and by which alerts?" over the live alert set."""

    def __init__(self, rules: list[InhibitRule], alerts: Callable[[], list[StoredAlert]]) -> None:
        self.rules = rules
        self._alerts = alerts

    def inhibited_by(self, labels: Mapping[str, str], now: datetime) -> list[str]:
        """Fingerprints of the alerts inhibiting ``labels`` (first match per rule, as Alertmanager)."""
        if not self.rules:
            return []
        alerts = [a for a in self._alerts() if not a.resolved_at(now)]
        for rule in self.rules:
            if not matchers_match(rule.target, labels):
                continue
            two_sided = matchers_match(rule.source, labels)
            for a in alerts:
                if not matchers_match(rule.source, a.labels):
                    continue
                if any(a.labels.get(n, "") != labels.get(n, "") for n in rule.equal):
                    continue
                if two_sided and matchers_match(rule.target, a.labels):
                    continue
                return [a.fingerprint]
        return []
