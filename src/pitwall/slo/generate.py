"""SLO -> Prometheus rules, exactly as Sloth generates them (its default SLO plugin chain).

For each SLO three groups: ``sloth-slo-sli-recordings-<id>`` (the error
ratio ``slo:sli_error:ratio_rate<W>`` for every alert window, plus the
period computed from the shortest window's recording), ``sloth-slo-meta-
recordings-<id>`` (objective, error budget, period days, current and period
burn rates, remaining budget, ``sloth_slo_info``) and ``sloth-slo-alerts-
<id>`` (the page and ticket multi-window multi-burn-rate alerts). Numbers are
printed as Go prints them (``vector(0.9990000000000001)``,
``(14.4 * 0.0009999999999999432)``) so the text equals Sloth's.

The plugin chain follows Sloth: an SLO's plugins sorted by priority, those
below 0 before the defaults, the rest after; ``overridePrevious`` drops the
defaults. pitwall knows Sloth's core plugins and
``contrib/validate_victoria_metrics`` (which checks everything but PromQL
syntax: MetricsQL is not parsed here); other plugin ids are refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from pitwall.core.gofmt import format_float, format_float_f, go_quote
from pitwall.core.gotemplate import TemplateError
from pitwall.slo.errors import SpecError
from pitwall.slo.model import SLO, AlertMeta, GeneratedRules, Rule, RuleGroup, SLOGroup, SLOResult
from pitwall.slo.promfmt import prom_duration
from pitwall.slo.spec import SPEC_OPENSLO_V1, SPEC_OPENSLO_V1ALPHA, SPEC_SLOTH_K8S
from pitwall.slo.validate import render_window, validate_slo
from pitwall.slo.windows import MWMBAlert, MWMBAlertGroup, WindowsCatalog

__all__ = ["GenerateOptions", "PluginRequest", "Processor", "generate_group", "info_version", "label_filter", "prom_duration", "sli_metric"]

log = logging.getLogger(__name__)

SLI_METRIC = "slo:sli_error:ratio_rate"
WINDOW_LABEL = "sloth_window"


@dataclass
class GenerateOptions:
    """``sloth generate`` flags: extra labels, what to leave out, the windows, who generates."""

    extra_labels: dict[str, str] = field(default_factory=dict)
    disable_alerts: bool = False
    disable_recordings: bool = False
    windows: WindowsCatalog = field(default_factory=WindowsCatalog)
    agent: str = "cli"  # cli | api | ctrl: the sloth_mode label
    version: str = ""  # sloth_version; pitwall's version when empty


def sli_metric(window_ms: int) -> str:
    return SLI_METRIC + prom_duration(window_ms)


def label_filter(labels: Mapping[str, str]) -> str:
    """Prometheus' ``LabelSet.String()``: ``{a="x", b="y"}``, keys sorted."""
    return "{" + ", ".join(f"{k}={go_quote(v)}" for k, v in sorted(labels.items())) + "}"


def _id_labels(slo: SLO) -> dict[str, str]:
    return {"sloth_id": slo.id, "sloth_slo": slo.name, "sloth_service": slo.service}


def _g(x: float) -> str:
    return format_float(x, "g")


@dataclass
class PluginRequest:
    slo: SLO
    alerts: MWMBAlertGroup
    info: dict[str, str]
    rules: GeneratedRules


def _render(query: str, window: str, slo: SLO) -> str:
    try:
        return render_window(query, window)
    except TemplateError as e:
        raise SpecError(f"invalid SLO {slo.id!r}: could not render SLI expression template: {e.message}") from None


def _sli_rule(slo: SLO, window_ms: int) -> Rule:
    w = prom_duration(window_ms)
    if slo.sli.is_events:
        expr = _render(f"({slo.sli.error_query})\n/\n({slo.sli.total_query})\n", w, slo)
    else:
        expr = _render(f"({slo.sli.error_ratio_query})", w, slo)
    return Rule(expr, record=sli_metric(window_ms), labels={**_id_labels(slo), WINDOW_LABEL: w, **slo.labels})


def _optimized_sli_rule(slo: SLO, window_ms: int, short_ms: int) -> Rule:
    # The period's ratio from the shortest recording: sum of ratios / count of ratios.
    if window_ms == short_ms:
        raise SpecError(f"invalid SLO {slo.id!r}: can't optimize using the same short window as the window")
    metric, f, w = sli_metric(short_ms), label_filter(_id_labels(slo)), prom_duration(window_ms)
    expr = (f"sum_over_time({metric}{f}[{w}])\n/ ignoring ({WINDOW_LABEL})\n"
            f"count_over_time({metric}{f}[{w}])\n")
    return Rule(expr, record=sli_metric(window_ms), labels={**_id_labels(slo), WINDOW_LABEL: w, **slo.labels})


def _sli_rules(req: PluginRequest, optimized: bool = True) -> None:
    rules = [_sli_rule(req.slo, w) for w in req.alerts.windows_ms()]
    period = req.slo.period_ms
    rules.append(_optimized_sli_rule(req.slo, period, req.alerts.page_quick.short_ms) if optimized
                 else _sli_rule(req.slo, period))
    req.rules.sli = replace(req.rules.sli, rules=tuple(rules))


def _burn_rate_expr(sli: str, f: str) -> str:
    return (f"{sli}{f}\n/ on(sloth_id, sloth_slo, sloth_service) group_left\n"
            f"slo:error_budget:ratio{f}\n")


def _meta_rules(req: PluginRequest) -> None:
    slo = req.slo
    labels = {**_id_labels(slo), **slo.labels}
    ratio = slo.objective / 100
    f = label_filter(_id_labels(slo))
    days = (slo.period_ms // 3_600_000 + (slo.period_ms % 3_600_000) / 3_600_000) / 24
    info = {**labels, "sloth_version": req.info["version"], "sloth_mode": req.info["mode"],
            "sloth_spec": req.info["spec"], "sloth_objective": format_float_f(slo.objective)}
    rules = (
        Rule(f"vector({_g(ratio)})", record="slo:objective:ratio", labels=labels),
        Rule(f"vector(1-{_g(ratio)})", record="slo:error_budget:ratio", labels=labels),
        Rule(f"vector({_g(days)})", record="slo:time_period:days", labels=labels),
        Rule(_burn_rate_expr(sli_metric(req.alerts.page_quick.short_ms), f), record="slo:current_burn_rate:ratio",
             labels=labels),
        Rule(_burn_rate_expr(sli_metric(slo.period_ms), f), record="slo:period_burn_rate:ratio", labels=labels),
        Rule(f"1 - slo:period_burn_rate:ratio{f}", record="slo:period_error_budget_remaining:ratio", labels=labels),
        Rule("vector(1)", record="sloth_slo_info", labels=info),
    )
    req.rules.meta = replace(req.rules.meta, rules=rules)


def _mwmb_expr(slo: SLO, quick: MWMBAlert, slow: MWMBAlert) -> str:
    f = label_filter(_id_labels(slo))
    budget = _g(quick.error_budget / 100)

    def cond(window_ms: int, factor: float) -> str:
        return f"max({sli_metric(window_ms)}{f} > ({_g(factor)} * {budget})) without ({WINDOW_LABEL})"

    return ("(\n"
            f"    {cond(quick.short_ms, quick.burn_rate_factor)}\n    and\n"
            f"    {cond(quick.long_ms, quick.burn_rate_factor)}\n"
            ")\nor\n(\n"
            f"    {cond(slow.short_ms, slow.burn_rate_factor)}\n    and\n"
            f"    {cond(slow.long_ms, slow.burn_rate_factor)}\n"
            ")\n")


def _alert_rule(slo: SLO, meta: AlertMeta, quick: MWMBAlert, slow: MWMBAlert) -> Rule:
    sev = quick.severity
    annotations = {
        "title": f"({sev}) {{{{$labels.sloth_service}}}} {{{{$labels.sloth_slo}}}} SLO error budget burn rate "
                 "is too fast.",
        "summary": "{{$labels.sloth_service}} {{$labels.sloth_slo}} SLO error budget burn rate is over expected.",
    }
    return Rule(_mwmb_expr(slo, quick, slow), alert=meta.name, labels={"sloth_severity": sev, **meta.labels},
                annotations={**annotations, **meta.annotations})


def _alert_rules(req: PluginRequest) -> None:
    rules = []
    if not req.slo.page.disable:
        rules.append(_alert_rule(req.slo, req.slo.page, req.alerts.page_quick, req.alerts.page_slow))
    if not req.slo.ticket.disable:
        rules.append(_alert_rule(req.slo, req.slo.ticket, req.alerts.ticket_quick, req.alerts.ticket_slow))
    req.rules.alerts = replace(req.rules.alerts, rules=tuple(rules))


def _validate(req: PluginRequest) -> None:
    validate_slo(req.slo)


def _validate_metricsql(req: PluginRequest) -> None:
    validate_slo(req.slo, check_promql=False)


def _noop(req: PluginRequest) -> None:
    return None


def _debug(req: PluginRequest) -> None:
    log.debug("slo plugin debug", extra={"slo": req.slo.id, "rules": len(req.rules.groups())})


Processor = Callable[[PluginRequest], None]
CORE = "sloth.dev/core/"
PLUGINS: dict[str, Processor] = {
    CORE + "validate/v1": _validate,
    CORE + "sli_rules/v1": _sli_rules,
    CORE + "metadata_rules/v1": _meta_rules,
    CORE + "alert_rules/v1": _alert_rules,
    CORE + "noop/v1": _noop,
    CORE + "debug/v1": _debug,
    "sloth.dev/contrib/validate_victoria_metrics/v1": _validate_metricsql,
}
DEFAULT_CHAIN: Sequence[Processor] = (_validate, _sli_rules, _meta_rules, _alert_rules)


def _processor(plugin_id: str, config: object, slo: SLO) -> Processor:
    from pitwall.slo.contrib import CONTRIB

    if plugin_id == CORE + "sli_rules/v1" and isinstance(config, dict) and \
            str(config.get("disableOptimized", "false")).lower() == "true":
        return lambda req: _sli_rules(req, optimized=False)
    p = PLUGINS.get(plugin_id)
    if p is not None:
        return p
    factory = CONTRIB.get(plugin_id)
    if factory is None:
        raise SpecError(f"invalid SLO {slo.id!r}: plugins: SLO plugin {plugin_id!r} is not available in pitwall "
                        f"(known: {', '.join(sorted([*PLUGINS, *CONTRIB]))})")
    try:
        return factory(config if isinstance(config, dict) else {})
    except (ValueError, TypeError) as e:
        raise SpecError(f"invalid SLO {slo.id!r}: plugins: {plugin_id}: invalid config: {e}") from None


def _chain(slo: SLO) -> list[Processor]:
    ordered = sorted(slo.plugins, key=lambda p: p.priority)
    pre = [_processor(p.id, p.config, slo) for p in ordered if p.priority < 0]
    post = [_processor(p.id, p.config, slo) for p in ordered if p.priority >= 0]
    return pre + ([] if slo.override_plugins else list(DEFAULT_CHAIN)) + post


_MODES = {"prometheus/v1": "prom", SPEC_SLOTH_K8S: "k8s", SPEC_OPENSLO_V1ALPHA: "openslo", SPEC_OPENSLO_V1: "openslo"}


def info_version(opts: GenerateOptions) -> str:
    """The ``sloth_version`` label: the one asked for, else pitwall's version."""
    from pitwall import __version__

    return opts.version or f"pitwall-{__version__}"


def _info(group: SLOGroup, opts: GenerateOptions) -> dict[str, str]:
    return {"version": info_version(opts),
            "mode": f"{opts.agent}-gen-{_MODES.get(group.spec, 'prom')}", "spec": group.spec}


def generate_group(group: SLOGroup, opts: GenerateOptions | None = None) -> list[SLOResult]:
    """Rules for every SLO of ``group``; ``SpecError`` names the SLO and field on invalid input."""
    opts = opts or GenerateOptions()
    if not group.slos:
        raise SpecError("at least one SLO is required")
    seen: set[str] = set()
    for s in group.slos:
        if s.id in seen:
            raise SpecError(f"SLO ID {s.id!r} is repeated")
        seen.add(s.id)
    info = _info(group, opts)
    out = []
    for slo in group.slos:
        slo = replace(slo, labels={**slo.labels, **opts.extra_labels})
        alerts = opts.windows.alerts(slo.period_ms, slo.objective)
        rules = GeneratedRules(RuleGroup("sloth-slo-sli-recordings-" + slo.id, ()),
                               RuleGroup("sloth-slo-meta-recordings-" + slo.id, ()),
                               RuleGroup("sloth-slo-alerts-" + slo.id, ()))
        req = PluginRequest(slo, alerts, info, rules)
        for p in _chain(slo):
            p(req)
        if opts.disable_alerts:
            rules.alerts = replace(rules.alerts, rules=())
        if opts.disable_recordings:
            rules.sli = replace(rules.sli, rules=())
            rules.meta = replace(rules.meta, rules=())
        out.append(SLOResult(slo, rules))
    return out
