"""Sloth's built-in contrib SLO plugins, rewritten: ``denominator_corrected_rules``, ``info_labels``,
``rule_intervals`` (ids ``sloth.dev/contrib/<name>/v1``), with Sloth's configuration keys.

- ``denominator_corrected_rules`` (config ``disableOptimized``): each
  window's error ratio is weighted by ``slo:numerator_correction:ratio<W>``
  = total(W) / total(period), so low-traffic windows burn less budget;
  requires an events SLI.
- ``info_labels`` (``labels``, ``metricName`` default ``sloth_slo_info``):
  adds labels to that metadata rule.
- ``rule_intervals`` (``interval: {default, sliError, metadata, alert}``):
  evaluation intervals of the three groups.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pitwall.core.durations import parse_duration_ms
from pitwall.slo.errors import SpecError
from pitwall.slo.generate import PluginRequest, Processor, label_filter, sli_metric
from pitwall.slo.model import Rule
from pitwall.slo.promfmt import prom_duration
from pitwall.slo.validate import render_template

__all__ = ["CONTRIB"]

CONTRIB_PREFIX = "sloth.dev/contrib/"
NUMERATOR_CORRECTION = "slo:numerator_correction:ratio"


def _render(text: str, data: dict[str, str]) -> str:
    return render_template(text, data)


def _ids(req: PluginRequest) -> dict[str, str]:
    s = req.slo
    return {"sloth_id": s.id, "sloth_slo": s.name, "sloth_service": s.service}


def _denominator_corrected(config: dict[str, Any]) -> Processor:
    optimized = str(config.get("disableOptimized", "false")).lower() != "true"

    def run(req: PluginRequest) -> None:
        slo = req.slo
        if not (slo.sli.error_query and slo.sli.total_query):
            raise SpecError(f"invalid SLO {slo.id!r}: denominator corrected SLI requires SLI event type")
        f = label_filter(_ids(req))
        windows = req.alerts.windows_ms()
        sli_rules = []
        for w in [*windows, slo.period_ms]:
            if w == slo.period_ms and optimized:
                metric = sli_metric(req.alerts.page_quick.short_ms) + f
                tpl = (f"sum_over_time({metric}[{{{{.window}}}}])\n/ ignoring ({{{{.windowKey}}}})\n"
                       f"count_over_time({metric}[{{{{.window}}}}])\n")
            elif w == slo.period_ms:
                tpl = f"({slo.sli.error_query})\n/\n({slo.sli.total_query})\n"
            else:
                tpl = (f"(\n{{{{.numeratorCorrectionMetric}}}}{{{{.window}}}}{{{{.filter}}}}\n* on()\n"
                       f"{slo.sli.error_query}\n)\n/\n({slo.sli.total_query})\n")
            ws = prom_duration(w)
            expr = _render(tpl, {"numeratorCorrectionMetric": NUMERATOR_CORRECTION, "window": ws, "filter": f,
                                 "windowKey": "sloth_window"})
            sli_rules.append(Rule(expr, record=sli_metric(w),
                                  labels={**_ids(req), "sloth_window": ws, **slo.labels}))
        req.rules.sli = replace(req.rules.sli, rules=tuple(sli_rules))
        labels = {**_ids(req), **slo.labels}
        period = prom_duration(slo.period_ms)
        meta = [Rule(f"({_render(slo.sli.total_query, {'window': prom_duration(w)})})/"
                     f"({_render(slo.sli.total_query, {'window': period})})",
                     record=NUMERATOR_CORRECTION + prom_duration(w), labels=labels) for w in windows]
        req.rules.meta = replace(req.rules.meta, rules=(*req.rules.meta.rules, *meta))

    return run


def _info_labels(config: dict[str, Any]) -> Processor:
    labels = config.get("labels") or {}
    if not isinstance(labels, dict) or not labels:
        raise ValueError("at least one label is required")
    metric = str(config.get("metricName") or "sloth_slo_info")

    def run(req: PluginRequest) -> None:
        rules = list(req.rules.meta.rules)
        for i, r in enumerate(rules):
            if r.record == metric:
                rules[i] = replace(r, labels={**r.labels, **{str(k): str(v) for k, v in labels.items()}})
                break
        req.rules.meta = replace(req.rules.meta, rules=tuple(rules))

    return run


def _rule_intervals(config: dict[str, Any]) -> Processor:
    iv = config.get("interval") or {}
    if not isinstance(iv, dict):
        raise ValueError("interval must be a mapping")

    def ms(key: str) -> int:
        v = iv.get(key)
        return parse_duration_ms(str(v)) if v else 0

    default = ms("default")
    if not default:
        raise ValueError("at least default interval is required")
    sli, meta, alert = ms("sliError") or default, ms("metadata") or default, ms("alert") or default

    def run(req: PluginRequest) -> None:
        req.rules.sli = replace(req.rules.sli, interval_ms=sli)
        req.rules.meta = replace(req.rules.meta, interval_ms=meta)
        req.rules.alerts = replace(req.rules.alerts, interval_ms=alert)

    return run


CONTRIB: dict[str, Callable[[dict[str, Any]], Processor]] = {
    CONTRIB_PREFIX + "denominator_corrected_rules/v1": _denominator_corrected,
    CONTRIB_PREFIX + "info_labels/v1": _info_labels,
    CONTRIB_PREFIX + "rule_intervals/v1": _rule_intervals,
}
