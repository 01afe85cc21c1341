"""``/api/chaos/v1``: the global halt-all (Gremlin's Halt) and a list of experiments.

``POST /api/chaos/v1/halt`` sets Chaos Mesh's pause annotation on every
chaos object and Schedule in every namespace; the controllers then recover
every fault (a paused experiment's desired phase is Stop) and Schedules stop
spawning. Resume one with ``kubectl annotate ... experiment.chaos-mesh.org/pause-``.

``GET .../experiments/{ns}/{kind}/{name}/report`` is an experiment's resilience report;
``POST /api/chaos/v1/report`` the same report for a Chaos Toolkit run's window and target (what the
``pitwall.chaos.ctk`` control sends).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from pitwall.chaos.events import ChaosReport
from pitwall.chaos.model import API_VERSION, CHAOS_KINDS, PAUSE_ANNOTATION
from pitwall.chaos.resilience import ResilienceReporter
from pitwall.chaos.target import BadTarget
from pitwall.core.errors import BadData, BodyTooLarge, NotFound
from pitwall.core.http_errors import error_router
from pitwall.core.tenancy import PRINCIPAL_KEY
from pitwall.kube import KubeClient, NotFoundError, parse_time

__all__ = ["chaos_router", "halt_all", "halt_and_report", "run_window"]

MAX_RUN_REPORT_BYTES = 64 << 10
MAX_RUN_WINDOW_S = 7 * 86400.0  # a run's report covers at most a week (its range queries stay bounded anyway)


async def _small_json(request: Request, what: str) -> dict[str, Any]:
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > MAX_RUN_REPORT_BYTES:
            raise BodyTooLarge(f"{what} larger than {MAX_RUN_REPORT_BYTES} bytes")
    try:
        doc = orjson.loads(bytes(buf))
    except orjson.JSONDecodeError as e:
        raise BadData(f"{what}: invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadData(f"{what}: a JSON object is required")
    return doc


def _time(doc: dict[str, Any], key: str, required: bool = True) -> datetime | None:
    v = doc.get(key)
    if v is None and not required:
        return None
    t = parse_time(v)
    if t is None or t.tzinfo is None:
        raise BadData(f"{key}: an RFC 3339 time with its offset is required")
    return t


def run_window(doc: dict[str, Any]) -> tuple[dict[str, Any], datetime, datetime, datetime | None]:
    """The target and window of ``POST /api/chaos/v1/report``'s body, checked: start <= reverted_at <= end,
    at most ``MAX_RUN_WINDOW_S`` long, a target object of bounded size."""
    start, end = _time(doc, "start"), _time(doc, "end")
    reverted = _time(doc, "reverted_at", required=False)
    assert start is not None and end is not None
    if end < start or (end - start).total_seconds() > MAX_RUN_WINDOW_S:
        raise BadData(f"end: after start and at most {MAX_RUN_WINDOW_S:.0f} s after it")
    if reverted is not None and not start <= reverted <= end:
        raise BadData("reverted_at: between start and end")
    target = doc.get("target")
    if not isinstance(target, dict) or len(target) > 8:
        raise BadData("target: an object with a namespace and an app or labelSelectors")
    if any(not isinstance(v, str | list | dict) or len(v) > 64 for v in target.values()):
        raise BadData("target: strings, or lists/objects of at most 64 entries")
    return target, start, end, reverted


async def halt_all(client: KubeClient) -> list[str]:
    """Pause every chaos object and Schedule; returns ``Kind ns/name`` of those newly paused."""
    paused: list[str] = []
    for kind in (*CHAOS_KINDS, "Schedule", "Workflow"):
        for obj in (await client.list(API_VERSION, kind)).items:
            m = obj["metadata"]
            if (m.get("annotations") or {}).get(PAUSE_ANNOTATION) == "true" or m.get("deletionTimestamp"):
                continue
            try:
                await client.patch(API_VERSION, kind, m["name"], {"metadata": {"annotations": {PAUSE_ANNOTATION: "true"}}},
                                   namespace=m["namespace"])
            except NotFoundError:
                continue
            paused.append(f"{kind} {m['namespace']}/{m['name']}")
    return paused


async def halt_and_report(client: KubeClient, report: ChaosReport, who: str) -> list[str]:
    """``halt_all`` as the API, the CLI and the UI run it: the halt counted and on the change stream."""
    paused = await halt_all(client)
    await report.halt(who, paused)
    return paused


async def experiments(client: KubeClient) -> list[dict[str, Any]]:
    out = []
    for kind in CHAOS_KINDS:
        for obj in (await client.list(API_VERSION, kind)).items:
            st = obj.get("status") or {}
            out.append({"kind": kind, "namespace": obj["metadata"]["namespace"], "name": obj["metadata"]["name"],
                        "desiredPhase": (st.get("experiment") or {}).get("desiredPhase", ""),
                        "conditions": {c["type"]: c["status"] for c in st.get("conditions") or []},
                        "targets": [r["id"] for r in (st.get("experiment") or {}).get("containerRecords") or []]})
    return out


def chaos_router(client: KubeClient, report: ChaosReport, resilience: ResilienceReporter | None = None) -> APIRouter:
    r = error_router("native", prefix="/api/chaos/v1", tags=["chaos"])
    reporter = resilience or ResilienceReporter()

    @r.post("/halt")
    async def halt(request: Request) -> JSONResponse:
        principal = request.scope.get(PRINCIPAL_KEY)
        who = getattr(principal, "name", "") or "anonymous"
        paused = await halt_and_report(client, report, who)
        return JSONResponse({"status": "halted", "paused": paused})

    @r.post("/runs")
    async def run_report(request: Request) -> JSONResponse:
        """A Chaos Toolkit run (``pitwall chaos run --report``) onto the change stream and the counters."""
        doc = await _small_json(request, "run report")
        if not isinstance(doc.get("status"), str):
            raise BadData("run report: an object with a string status is required")
        status = "deviated" if doc.get("deviated") else str(doc["status"])[:32]
        details: dict[str, Any] = {k: doc[k] for k in ("file", "start", "end", "rollbacks", "status", "deviated") if k in doc}
        await report.run(str(doc.get("title") or "")[:256], status, details)
        return JSONResponse({"recorded": True, "status": status})

    @r.post("/report")
    async def run_resilience_report(request: Request) -> JSONResponse:
        """The resilience report of a Chaos Toolkit run: ``{start, end, reverted_at?, target}`` (the
        ``pitwall.chaos.ctk`` control sends it), computed as an experiment's (``ResilienceReporter.report_run``)."""
        target, start, end, reverted = run_window(await _small_json(request, "report request"))
        try:
            return JSONResponse(await reporter.report_run(target, start, end, time.time(), reverted))
        except BadTarget as e:
            raise BadData(str(e)) from None

    @r.get("/experiments")
    async def list_experiments() -> JSONResponse:
        return JSONResponse({"experiments": await experiments(client)})

    @r.get("/experiments/{namespace}/{kind}/{name}/report")
    async def resilience_report(namespace: str, kind: str, name: str) -> JSONResponse:
        """The experiment's golden signals before, during and after its window, its time to recover and the
        error budget its target's SLOs spent (``pitwall.chaos.resilience``)."""
        if kind not in (*CHAOS_KINDS, "Schedule", "Workflow"):
            raise NotFound(f"no chaos kind {kind!r}")
        try:
            obj = await client.get(API_VERSION, kind, name, namespace)
        except NotFoundError:
            raise NotFound(f"{kind} {namespace}/{name} not found") from None
        return JSONResponse(await reporter.report(obj, time.time()))

    return r
