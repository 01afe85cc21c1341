"""The config pages: ``/config`` (Consul KV by folder), ``/config/history`` (a key's or a ConfigMap's or
Secret's recorded changes with their diffs and a rollback to any of them), ``/config/envs`` (two
environments compared). They read the registry's ``ConfigConsole`` through ``UIDeps.config``."""

from __future__ import annotations

import contextlib
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from pitwall.core.body import read_form
from pitwall.core.errors import PitwallError
from pitwall.core.tenancy import PRINCIPAL_KEY
from pitwall.core.tenancy import server_wide as whole_server
from pitwall.ui.config_view import breadcrumbs
from pitwall.ui.web import Pages

__all__ = ["add_routes"]


def _who(request: Request) -> str:
    p = request.scope.get(PRINCIPAL_KEY)
    return str(getattr(p, "name", "") or "") or "anonymous"


def add_routes(r: APIRouter, pages: Pages) -> None:
    deps = pages.deps
    server_wide = [Depends(whole_server)]  # the KV and the control plane are the whole server's

    @r.get("/config", response_class=HTMLResponse, dependencies=server_wide)
    async def config(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        if deps.config is None:
            return pages.render(request, "config.html", "config", tr, error=err, available=False)
        prefix = request.query_params.get("prefix", "")
        problem, rows = "", []
        try:
            rows = await deps.config.keys(prefix)
        except PitwallError as e:
            problem = e.message
        return pages.render(request, "config.html", "config", tr, error=err, available=True, prefix=prefix,
                            rows=rows, crumbs=breadcrumbs(prefix), problem=problem,
                            status=400 if problem else 200)

    @r.get("/config/history", response_class=HTMLResponse, dependencies=server_wide)
    async def history(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        p = request.query_params
        key, source = p.get("key", ""), p.get("source", "consul")
        if deps.config is None:
            return pages.render(request, "config_history.html", "config", tr, error=err, available=False)
        problem, changes, status = "", [], 200
        try:
            changes = await deps.config.changes(key, source)
        except PitwallError as e:
            problem, status = e.message, getattr(e, "status", 400)
        return pages.render(request, "config_history.html", "config", tr, error=err, available=True, key=key,
                            source=source, changes=changes, problem=problem, done=p.get("done", ""),
                            status=status)

    @r.post("/config/rollback", response_class=HTMLResponse, dependencies=server_wide)
    async def rollback(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        form = await read_form(request)
        key, source, to = str(form.get("key", "")), str(form.get("source", "consul")), str(form.get("to", ""))
        back = {"key": key, "source": source}
        if deps.config is None:
            return pages.render(request, "config_history.html", "config", tr, error=err, available=False)
        try:
            if not to.isdigit() or int(to) <= 0:
                raise ValueError(to)
            await deps.config.rollback(key, int(to), who=_who(request))
        except ValueError:
            problem = f"to: a store revision (a positive integer) is required, got {to[:20]!r}"
            return pages.render(request, "config_history.html", "config", tr, error=err, available=True, key=key,
                                source=source, changes=[], problem=problem, done="", status=400)
        except PitwallError as e:
            changes = []
            with contextlib.suppress(PitwallError):
                changes = await deps.config.changes(key, source)
            return pages.render(request, "config_history.html", "config", tr, error=err, available=True, key=key,
                                source=source, changes=changes, problem=e.message, done="",
                                status=getattr(e, "status", 400))
        return RedirectResponse("/config/history?" + urlencode({**back, "done": to}), 303)

    @r.get("/config/envs", response_class=HTMLResponse, dependencies=server_wide)
    async def envs(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        p = request.query_params
        a, b, service = p.get("a", ""), p.get("b", ""), p.get("service", "")
        if deps.config is None:
            return pages.render(request, "config_envs.html", "config", tr, error=err, available=False)
        problem, result = "", None
        if a and b:
            try:
                result = await deps.config.envs(a, b, service)
            except PitwallError as e:
                problem = e.message
        return pages.render(request, "config_envs.html", "config", tr, error=err, available=True, a=a, b=b,
                            service=service, result=result, problem=problem, status=400 if problem else 200)
