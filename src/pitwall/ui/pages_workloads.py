"""The workloads pages: ``/workloads`` (Deployments with their rollout, Pods with their status) and
``/workloads/{namespace}/{kind}/{name}`` (one object: rollout history, pods, containers, Events).

They read the Kubernetes API through ``UIDeps.workloads`` (a ``WorkloadsSource``); without one they
say the orchestration pillar is not available. Kubernetes objects belong to the whole server, not
a tenant, so the pages are server-wide as the targets page is.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from pitwall.core.tenancy import server_wide as whole_server
from pitwall.ui.web import Pages
from pitwall.ui.workloads_view import (
    deployment_row,
    event_rows,
    history,
    logs_link,
    metrics_link,
    other_rows,
    owned_by,
    pod_row,
)

__all__ = ["add_routes"]

Obj = dict[str, Any]


def _by_pod(events: list[Obj]) -> dict[tuple[str, str], list[Obj]]:
    out: dict[tuple[str, str], list[Obj]] = defaultdict(list)
    for e in events:
        io = e.get("involvedObject") or {}
        if io.get("kind") == "Pod":
            out[(str(io.get("namespace") or (e.get("metadata") or {}).get("namespace", "")),
                 str(io.get("name", "")))].append(e)
    return out


def add_routes(r: APIRouter, pages: Pages) -> None:
    deps = pages.deps
    server_wide = [Depends(whole_server)]

    @r.get("/workloads", response_class=HTMLResponse, dependencies=server_wide)
    async def workloads(request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        src = deps.workloads
        if src is None:
            return pages.render(request, "workloads.html", "workloads", tr, error=err, available=False)
        ns = request.query_params.get("namespace", "").strip()
        deployments = [deployment_row(d) for d in await src.objects("deployment", ns)]
        pod_events = _by_pod(await src.events(ns, "pod"))
        pods = [pod_row(p, pod_events.get((str(p["metadata"].get("namespace", "")), str(p["metadata"]["name"]))))
                for p in await src.objects("pod", ns)]
        namespaces = sorted(str(n["metadata"]["name"]) for n in await src.objects("namespace"))
        others = other_rows(await src.objects("job", ns), await src.objects("cronjob", ns),
                            await src.objects("horizontalpodautoscaler", ns))
        return pages.render(request, "workloads.html", "workloads", tr, error=err, available=True, namespace=ns,
                            others=others,
                            namespaces=namespaces, deployments=sorted(deployments, key=lambda d: (d.namespace,
                                                                                               d.name)),
                            pods=sorted(pods, key=lambda p: (p.namespace, p.name)), logs_link=logs_link,
                            metrics_link=metrics_link)

    @r.get("/workloads/{namespace}/{kind}/{name}", response_class=HTMLResponse, dependencies=server_wide)
    async def workload(namespace: str, kind: str, name: str, request: Request) -> Response:
        tr, err = pages.range_or_error(request)
        src = deps.workloads
        ctx: dict[str, Any] = {"namespace": namespace, "kind": kind, "name": name, "logs_link": logs_link,
                               "metrics_link": metrics_link}
        if src is None:
            return pages.render(request, "workload.html", "workloads", tr, error=err, available=False, **ctx)
        kind = kind.lower()
        obj = await src.object(kind, namespace, name) if kind in src.kinds() else None
        if obj is None:
            return pages.render(request, "workload.html", "workloads", tr, available=True, obj=None, status=404,
                                error=f"{kind} {namespace}/{name} not found", **{**ctx, "kind": kind})
        ctx["kind"] = kind
        events = await src.events(namespace, kind, name)
        pods: list[Obj] = []
        if kind == "deployment":
            rss = await src.objects("replicaset", namespace)
            ctx["rollout"] = deployment_row(obj)
            ctx["history"] = history(obj, rss)
            mine = owned_by(rss, {str(obj["metadata"].get("uid", ""))})
            pods = owned_by(await src.objects("pod", namespace), {str(rs["metadata"].get("uid", "")) for rs in mine})
            ctx["pod_regex"] = "|".join(p["metadata"]["name"] for p in pods) or name + "-.*"
        elif kind == "replicaset" or kind == "job":
            pods = owned_by(await src.objects("pod", namespace), {str(obj["metadata"].get("uid", ""))})
        elif kind == "cronjob":
            ctx["jobs"] = other_rows(owned_by(await src.objects("job", namespace),
                                              {str(obj["metadata"].get("uid", ""))}), [], [])
        elif kind == "pod":
            pods = [obj]
        pod_events = _by_pod(await src.events(namespace, "pod")) if pods else {}
        ctx["pods"] = [pod_row(p, pod_events.get((namespace, str(p["metadata"]["name"])))) for p in pods]
        ctx["events"] = event_rows(events)
        ctx["status_items"] = sorted((k, v) for k, v in (obj.get("status") or {}).items()
                                     if not isinstance(v, list | dict))
        ctx["conditions"] = (obj.get("status") or {}).get("conditions") or []
        return pages.render(request, "workload.html", "workloads", tr, error=err, available=True, obj=obj, **ctx)
