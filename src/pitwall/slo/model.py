"""The SLO model every spec format maps to (Sloth's ``model.PromSLO``), and the generated rules.

Frozen dataclasses, no I/O. A ``SLO`` is one objective of one service;
``SLOGroup`` is what one spec document yields, with where it came from (the
spec's name for ``sloth_spec``, the mode for ``sloth_mode`` and, for a
Kubernetes object, its metadata so the output can be a PrometheusRule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pitwall.slo.promfmt import prom_duration

__all__ = ["SLI", "SLO", "AlertMeta", "GeneratedRules", "PluginRef", "Rule", "RuleGroup", "SLOGroup", "SLOResult"]


@dataclass(frozen=True)
class SLI:
    """Events (error and total queries) or raw (an error ratio query); ``{{.window}}`` in each."""

    error_query: str = ""
    total_query: str = ""
    error_ratio_query: str = ""

    @property
    def is_events(self) -> bool:
        return bool(self.error_query or self.total_query)


@dataclass(frozen=True)
class AlertMeta:
    """A page or ticket alert: disabled, or its name, labels and annotations."""

    disable: bool = True
    name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PluginRef:
    """An SLO plugin in a chain (Sloth's ``PromSLOPluginMetadata``)."""

    id: str
    config: Any = None
    priority: int = 0


@dataclass(frozen=True)
class SLO:
    """One SLO: ``objective`` in percent (99.9), ``period_ms`` the rolling window."""

    id: str
    name: str
    service: str
    sli: SLI
    period_ms: int
    objective: float
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    page: AlertMeta = field(default_factory=AlertMeta)
    ticket: AlertMeta = field(default_factory=AlertMeta)
    plugins: tuple[PluginRef, ...] = ()
    override_plugins: bool = False
    notes: tuple[str, ...] = ()  # what a user should know (an interpolated latency threshold)


@dataclass(frozen=True)
class SLOGroup:
    """The SLOs of one spec document.

    ``spec`` is the ``sloth_spec`` label (``prometheus/v1``, ``sloth.slok.dev/v1``,
    ``openslo/v1alpha``, ``openslo/v1``); ``k8s`` holds name, namespace, labels
    and annotations of a Kubernetes object (output then is a PrometheusRule).
    """

    slos: tuple[SLO, ...]
    spec: str
    k8s: dict[str, Any] | None = None


@dataclass(frozen=True)
class Rule:
    """A Prometheus rule as ``rulefmt.Rule`` (record or alert)."""

    expr: str
    record: str = ""
    alert: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """rulefmt's field order, empty fields left out."""
        out: dict[str, Any] = {"record": self.record} if self.record else {"alert": self.alert}
        out["expr"] = self.expr
        if self.labels:
            out["labels"] = dict(sorted(self.labels.items()))
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out


@dataclass(frozen=True)
class RuleGroup:
    name: str
    rules: tuple[Rule, ...]
    interval_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.interval_ms:
            out["interval"] = prom_duration(self.interval_ms)
        out["rules"] = [r.as_dict() for r in self.rules]
        return out


@dataclass
class GeneratedRules:
    """Sloth's ``PromSLORules``: SLI recordings, metadata recordings, alerts, extra groups."""

    sli: RuleGroup
    meta: RuleGroup
    alerts: RuleGroup
    extra: list[RuleGroup] = field(default_factory=list)

    def groups(self) -> list[RuleGroup]:
        """The non-empty groups in Sloth's output order."""
        return [g for g in (self.sli, self.meta, self.alerts, *self.extra) if g.rules]


@dataclass(frozen=True)
class SLOResult:
    slo: SLO
    rules: GeneratedRules
