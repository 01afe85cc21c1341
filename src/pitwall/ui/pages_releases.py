"""The releases pages: ``/releases`` (every Flagger Canary: phase, weight, iteration, last transition,
target), ``/releases/{namespace}/{name}`` (the analysis steps, the weights over time, each metric's
checks, the judge's verdicts and score explained, the traffic split right now, the rollout's change events)
and ``/releases/abtest`` (an A/B report: a GET form, so it works without JavaScript and its URL is the
report's link; with htmx only the result is swapped in).

They read the releases pillar through ``UIDeps.releases`` (a ``ReleasesSource``) and the change stream
through ``UIDeps.changes``; without them they say the pillar is not available. Canaries belong to the whole
server, not a tenant, as the workloads pages. The A/B page runs the pillar's ``run_abtest`` (the code path of
``/api/releases/v1/abtest``) over the metrics the request's tenant may read.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from pitwall.core.errors import PitwallError
from pitwall.core.http_errors import status_of
from pitwall.core.params import tenant_of
from pitwall.core.tenancy import require_server_wide
from pitwall.core.tenancy import server_wide as whole_server
from pitwall.releases import ABTestResult, run_abtest, spec_from_pairs
from pitwall.ui.releases_view import (
    abtest_form,
    abtest_pairs,
    abtest_rows,
    canary_charts,
    canary_row,
    change_rows,
    metric_rows,
    plan,
    verdicts,
)
from pitwall.ui.web import Pages
from pitwall.ui.workloads_view import event_rows

__all__ = ["add_routes"]

MAX_CHANGES = 500  # change events shown per rollout


def add_routes(r: APIRouter, pages: Pages) -> None:
    deps = pages.deps
    server_wide = [Depends(whole_server)]

    @r.get("/releases", response_class=HTMLResponse, dependencies=server_wide)
    async def releases(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        src = deps.releases
        if src is None:
            return pages.render(request, "releases.html", "releases", tr, error=err, available=False)
        ns = request.query_params.get("namespace", "").strip()
        rows = sorted((canary_row(c, src.judged_condition) for c in await src.canaries(ns)),
                      key=lambda c: (c.namespace, c.name))
        return pages.render(request, "releases.html", "releases", tr, error=err, available=True, namespace=ns,
                            canaries=rows)

    @r.get("/releases/abtest", response_class=HTMLResponse)
    async def abtest(request: Request) -> Response:
        pairs = list(request.query_params.multi_items())
        problem, status = "", 200
        experiment = request.query_params.get("experiment", "")
        if experiment:  # a saved ABTest: its spec fills the form
            pairs, problem = await _saved_pairs(request, experiment)
            status = 404 if problem else 200
        form = abtest_form(pairs)
        result: ABTestResult | None = None
        if form.submitted and deps.metrics is not None and not problem:
            try:
                result = await run_abtest(deps.metrics.instant, spec_from_pairs(pairs), tenant_of(request))
            except PitwallError as e:  # shown above the result, the form keeps what was typed
                problem, status = e.message, status_of(e)
        # htmx asks for the result alone (the form stays as typed), with a 200 as htmx swaps in nothing else;
        # without JavaScript, the whole page with the error's status. The form has its own time and window,
        # so the page has no time picker.
        ctx: dict[str, Any] = {"problem": problem, "form": form, "report": result.to_dict() if result else None}
        if request.headers.get("HX-Request"):
            return pages.render(request, "_abtest_result.html", "releases", None, **ctx)
        saved = abtest_rows(await deps.releases.abtests()) if deps.releases and _sees_saved(request) else None
        return pages.render(request, "abtest.html", "releases", None, status=status, available=deps.metrics is not None,
                            saved=saved, experiment=experiment, **ctx)

    def _sees_saved(request: Request) -> bool:
        """Saved experiments are Kubernetes objects of the whole server: not for a token limited to tenants."""
        try:
            require_server_wide(request)
        except PitwallError:
            return False
        return True

    async def _saved_pairs(request: Request, experiment: str) -> tuple[list[tuple[str, str]], str]:
        """The form's parameters from the ABTest ``namespace/name``, or the reason there are none."""
        ns, _, name = experiment.partition("/")
        src = deps.releases if _sees_saved(request) else None
        obj = await src.abtest(ns, name) if src is not None and ns and name else None
        if obj is None:
            return [], f"experiment: ABTest {experiment} not found"
        return abtest_pairs(obj.get("spec") or {}), ""

    @r.get("/releases/{namespace}/{name}", response_class=HTMLResponse, dependencies=server_wide)
    async def release(namespace: str, name: str, request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        src = deps.releases
        ctx: dict[str, Any] = {"namespace": namespace, "name": name}
        if src is None:
            return pages.render(request, "release.html", "releases", tr, error=err, available=False, **ctx)
        cd = await src.canary(namespace, name)
        if cd is None:
            return pages.render(request, "release.html", "releases", tr, available=True, canary=None, status=404,
                                error=f"Canary {namespace}/{name} not found", **ctx)
        events = await src.events(namespace, name)
        row = canary_row(cd, src.judged_condition)
        changes: list[dict[str, str]] = []
        if deps.changes is not None:
            target = row.target.split("/", 1)[-1]
            found = await deps.changes.between(tr.start_ms * 1_000_000, (tr.end_ms + 1) * 1_000_000,
                                               service=f"{namespace}/{target}", limit=MAX_CHANGES)
            key = f"{namespace}/{name}"  # the controller's CanaryView.key
            changes = change_rows([e for e in found if e.kind != "release" or e.details.get("canary") in (key, None)])
        judged = next((c for c in (cd.get("status") or {}).get("conditions") or []
                       if c.get("type") == src.judged_condition), None)
        return pages.render(
            request, "release.html", "releases", tr, error=err, available=True, canary=cd, row=row,
            steps=plan(cd), metrics=metric_rows(cd, events), verdicts=verdicts(src.judgement(cd)), judged=judged,
            split=await src.split(cd), events=event_rows(events), changes=changes,
            changes_available=deps.changes is not None, charts=canary_charts(cd, tr), **ctx)
