"""Sloth's SLO validation (``validation.ValidateSLO`` with the PromQL dialect), errors naming the field."""

from __future__ import annotations

import re

from pitwall.core.gofmt import go_sprintf
from pitwall.core.gotemplate import Template, TemplateError
from pitwall.slo.errors import SpecError
from pitwall.slo.model import SLO, AlertMeta

__all__ = ["NAME_RE", "render_template", "render_window", "validate_slo"]

NAME_RE = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]*[A-Za-z0-9]$")
_WINDOW_VAR_RE = re.compile(r"{{ *\.window *}}")


_MAX_WIDTH = 4096
_WIDTH_RE = re.compile(r"%[-+# 0]*(\d*)(?:\.(\d*))?")


def _printf(fmt: str, *args: object) -> str:
    # A spec is user input: "%9999999999d" would allocate gigabytes, so widths are bounded.
    if "*" in fmt:
        raise TemplateError(f"printf: widths from arguments (*) are not allowed in {fmt!r}")
    for m in _WIDTH_RE.finditer(fmt):
        if any(g and int(g) > _MAX_WIDTH for g in m.groups()):
            raise TemplateError(f"printf: width or precision over {_MAX_WIDTH} in {fmt!r}")
    return go_sprintf(fmt, *args)


def render_template(text: str, data: dict[str, str]) -> str:
    """``text`` as Go's text/template renders it (missingkey=error), ``printf`` widths bounded."""
    return Template("sliExpr", {"printf": _printf}).option("missingkey=error").parse(text).execute(data)


def render_window(query: str, window: str) -> str:
    """``query`` rendered with ``.window``."""
    return render_template(query, {"window": window})


def _name(value: str, field: str) -> str | None:
    if not value:
        return f"{field}: is required"
    if not NAME_RE.match(value):
        return (f"{field}: {value!r}: name must start and end with an alphanumeric and can only contain "
                "alphanumeric, '.', '_', and '-'")
    return None


def _query(query: str, field: str, check_promql: bool) -> str | None:
    if not query:
        return f"{field}: query template is required"
    if not _WINDOW_VAR_RE.search(query):
        return f"{field}: template must contain the {{{{ .window }}}} variable"
    if not check_promql:
        return None
    try:
        expr = render_window(query, "1m")
    except TemplateError as e:
        return f"{field}: {e.message}"
    from pitwall.metrics import PromQLParseError, parse_promql

    try:
        parse_promql(expr)
    except PromQLParseError as e:
        return f"{field}: invalid PromQL: {e.message}"
    return None


def _labels(labels: dict[str, str], field: str) -> list[str]:
    errs = []
    for k, v in labels.items():
        if k == "__name__" or not k:
            errs.append(f"{field}: the label key {k!r} is not valid")
        if v == "":
            errs.append(f"{field}.{k}: the label value is required")
    return errs


def _alert(a: AlertMeta, field: str) -> list[str]:
    if a.disable:
        return []
    errs = [] if a.name else [f"{field}: alert name is required (alerting.name)"]
    errs += _labels(a.labels, f"{field}.labels")
    errs += [f"{field}.annotations.{k}: the annotation value is required" for k, v in a.annotations.items() if not v]
    return errs


def validate_slo(slo: SLO, *, check_promql: bool = True) -> None:
    """Raise ``SpecError`` listing every problem of ``slo`` (prefixed with its id)."""
    errs = [e for e in (_name(slo.id, "id"), _name(slo.name, "name"), _name(slo.service, "service")) if e]
    if slo.period_ms <= 0:
        errs.append("time window: is required")
    if not 0 < slo.objective <= 100:
        errs.append(f"objective: must be >0 and <=100, got {slo.objective:g}")
    errs += _labels(slo.labels, "labels")
    sli = slo.sli
    if sli.is_events and sli.error_ratio_query:
        errs.append("sli: only one SLI type is allowed")
    elif sli.is_events:
        if sli.error_query == sli.total_query:
            errs.append("sli.events: both error and total queries can't be the same")
        errs += [e for e in (_query(sli.error_query, "sli.events.error_query", check_promql),
                             _query(sli.total_query, "sli.events.total_query", check_promql)) if e]
    elif sli.error_ratio_query:
        e = _query(sli.error_ratio_query, "sli.raw.error_ratio_query", check_promql)
        errs += [e] if e else []
    else:
        errs.append("sli: at least one SLI type is required (events or raw)")
    errs += _alert(slo.page, "alerting.page_alert") + _alert(slo.ticket, "alerting.ticket_alert")
    if slo.override_plugins and not slo.plugins:
        errs.append("plugins: override plugins is set but no plugins are defined")
    if errs:
        raise SpecError(f"invalid SLO {slo.id!r}: " + "; ".join(errs))
