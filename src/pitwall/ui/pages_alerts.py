"""The alerts page: grouped alerts, rules, silences (create from an alert, expire), notification history."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from pitwall.core.body import read_form
from pitwall.core.errors import PitwallError
from pitwall.core.params import tenant_of
from pitwall.core.tenancy import server_wide as whole_server
from pitwall.ui.alerts_view import AlertFilter
from pitwall.ui.web import Pages, call

__all__ = ["add_routes", "parse_matcher"]

_OPS = ("=~", "!~", "!=", "=")
HISTORY_SHORT, HISTORY_ALL = 50, 1000  # notification history rows shown, and with "show all"


def parse_matcher(text: str) -> tuple[str, str, str]:
    """``name=value``, ``name!=value``, ``name=~re``, ``name!~re`` (value may be quoted)."""
    for op in _OPS:
        i = text.find(op)
        if i > 0:
            name, value = text[:i].strip(), text[i + len(op):].strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return name, op, value
    return text.strip(), "=", ""


def silence_link(labels: dict[str, str]) -> str:
    """The alerts page with the new-silence form filled with these labels."""
    return "/alerts?" + urlencode([("m", f"{k}={v}") for k, v in sorted(labels.items())]) + "#new-silence"


def add_routes(r: APIRouter, pages: Pages) -> None:
    deps = pages.deps
    server_wide = [Depends(whole_server)]  # one alerting pipeline for the whole server

    async def render(request: Request, problem: str = "", status: int = 200) -> Response:
        tr, err = pages.range_or_error(request)
        av = deps.alerts
        if av is None:
            return pages.render(request, "alerts.html", "alerts", tr, error=err, available=False)
        tenant = tenant_of(request)
        p = request.query_params
        prefill = [parse_matcher(m) for m in p.getlist("m") if m]
        try:
            only = AlertFilter.parse(p.get("filter", ""), silenced=p.get("silenced") == "1",
                                     inhibited=p.get("inhibited") == "1")
        except PitwallError as e:
            only, problem, status = AlertFilter(), e.message, 400
        all_history = p.get("history") == "all"
        return pages.render(
            request, "alerts.html", "alerts", tr, error=err, available=True, status=status,
            groups=await call(av.groups, tenant, only), only=only, filter_text=p.get("filter", ""),
            pending=await call(av.pending), rules=await call(av.rule_list), silences=await call(av.silences),
            history=await call(av.history, HISTORY_ALL if all_history else HISTORY_SHORT), all_history=all_history,
            history_short=HISTORY_SHORT, counters=await call(av.counters), prefill=prefill or [("", "=", "")],
            problem=problem, show_expired=p.get("expired") == "1", silence_link=silence_link)

    @r.get("/alerts", response_class=HTMLResponse, dependencies=server_wide)
    async def alerts(request: Request) -> Response:
        return await render(request)

    @r.get("/alerts/alert/{fp}", response_class=HTMLResponse, dependencies=server_wide)
    async def alert_detail(fp: str, request: Request) -> Response:
        """One alert: labels, annotations with runbook and dashboard links, state, and the rule behind it."""
        tr, err = pages.range_or_error(request)
        if deps.alerts is None:
            return pages.render(request, "alert.html", "alerts", tr, error=err, available=False)
        detail = await call(deps.alerts.alert, fp)
        return pages.render(request, "alert.html", "alerts", tr, error=err, available=True, detail=detail, fp=fp,
                            status=200 if detail else 404, silence_link=silence_link)

    @r.get("/ui/fragment/silence-preview", response_class=HTMLResponse, dependencies=server_wide)
    async def silence_preview(request: Request) -> Response:
        """The alerts the silence being written would hit (the form's matchers, as it stands)."""
        tr, _ = pages.range_or_error(request)
        p = request.query_params
        rows = list(zip(p.getlist("name"), p.getlist("op"), p.getlist("value"), strict=False))
        problem, hits = "", []
        if deps.alerts is not None:
            try:
                hits = await call(deps.alerts.preview, rows)
            except PitwallError as e:
                problem = e.message
        return pages.render(request, "_silence_preview.html", "alerts", tr, hits=hits, problem=problem,
                            named=any(n.strip() for n, _, _ in rows))

    @r.post("/alerts/silences", response_class=HTMLResponse, dependencies=server_wide)
    async def create_silence(request: Request) -> Response:
        if deps.alerts is None:
            return await render(request, "the alerting pillar is not available", 503)
        form = await read_form(request)
        names = [str(v) for v in form.getlist("name")]
        ops = [str(v) for v in form.getlist("op")]
        values = [str(v) for v in form.getlist("value")]
        matchers = list(zip(names, ops, values, strict=False))
        try:
            sid = await call(deps.alerts.create_silence, matchers, str(form.get("duration", "2h")),
                             str(form.get("created_by", "")), str(form.get("comment", "")))
        except PitwallError as e:
            return await render(request, e.message, 400)
        return RedirectResponse(f"/alerts?created={sid}#silences", 303)

    @r.post("/alerts/silences/{silence_id}/expire", response_class=HTMLResponse, dependencies=server_wide)
    async def expire_silence(silence_id: str, request: Request) -> Response:
        if deps.alerts is None:
            return await render(request, "the alerting pillar is not available", 503)
        try:
            await call(deps.alerts.expire_silence, silence_id)
        except PitwallError as e:
            return await render(request, e.message, 400)
        return RedirectResponse("/alerts#silences", 303)
