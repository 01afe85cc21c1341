"""``/api/releases/v1``: A/B reports over HTTP (pitwall's native JSON; errors ``{"error": {...}}``).

``GET /api/releases/v1/abtest?numerator=...&denominator=...`` and ``POST`` of the same fields as a form or
as JSON (``variants`` a list of ``{name, successes, trials}`` queries) answer the report of
:mod:`pitwall.releases.abtest_query`: per-variant counts, rates and intervals, each treatment's test,
p-value, intervals and verdict, the sample-size estimate and the arithmetic. The POST only reads, so a
``read`` token may send it (``core.auth.READ_ONLY_POSTS``). A bad field is a 400 whose message starts with
the field's name.

``GET /api/releases/v1/abtests/{namespace}/{name}`` is the report of a saved experiment (a ``pitwall.dev/v1``
ABTest object: :mod:`pitwall.releases.abtest_kind`); like the Kubernetes API it serves the whole server, not
one tenant, while the metrics are read as the request's tenant.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from pitwall.core.body import media_type, read_capped
from pitwall.core.errors import BadData, NotFound, Unavailable
from pitwall.core.http_errors import error_router
from pitwall.core.params import all_params, tenant_of
from pitwall.core.tenancy import server_wide
from pitwall.kube import KubeClient
from pitwall.metrics import InstantQuery
from pitwall.releases.abtest_kind import saved_spec
from pitwall.releases.abtest_query import run_abtest
from pitwall.releases.abtest_spec import ABTestSpec, spec_from_json, spec_from_pairs

__all__ = ["MAX_BODY_BYTES", "PREFIX", "releases_router"]

PREFIX = "/api/releases/v1"
MAX_BODY_BYTES = 256 << 10  # ten variants of 4 KiB queries fit many times over


def releases_router(instant: InstantQuery | None, client: KubeClient | None = None) -> APIRouter:
    """The releases API over the metrics pillar's ``instant`` query (None: every report is a 503) and, for
    saved experiments, the Kubernetes API's ``client`` (None without the control plane: they are 404s)."""
    r = error_router("native", prefix=PREFIX, tags=["releases"])

    async def report(request: Request, spec: ABTestSpec) -> JSONResponse:
        if instant is None:
            raise Unavailable("A/B reports need the metrics query interface, which this server does not have")
        return JSONResponse((await run_abtest(instant, spec, tenant_of(request))).to_dict())

    async def abtest(request: Request) -> JSONResponse:
        # One handler for both methods: a read-only POST is the GET's twin (tests/test_security.py).
        if request.method == "GET":
            spec = spec_from_pairs(request.query_params.multi_items())
        elif media_type(request) == "application/json":
            spec = spec_from_json(await _json(request))
        else:
            spec = spec_from_pairs(list((await all_params(request)).multi_items()))
        return await report(request, spec)

    summary = ("An A/B report: each variant's rate from PromQL, each treatment tested against the control, the "
               "sample size needed and the arithmetic (POST: the same fields as a form or JSON, per-variant "
               "queries in `variants`)")
    for method in ("GET", "POST"):  # distinct OpenAPI operation ids, as the Prometheus API's twins
        r.add_api_route("/abtest", abtest, methods=[method], operation_id=f"abtest_{method.lower()}", summary=summary)

    @r.get("/abtests/{namespace}/{name}", dependencies=[Depends(server_wide)],
           summary="The A/B report of a saved experiment (a pitwall.dev/v1 ABTest object)")
    async def saved(namespace: str, name: str, request: Request) -> JSONResponse:
        if client is None:
            raise NotFound("saved A/B experiments are ABTest objects, served with the control plane (kube.enabled)")
        spec = await saved_spec(client, namespace, name)
        if spec is None:
            raise NotFound(f"ABTest {namespace}/{name} not found")
        return await report(request, spec)

    return r


async def _json(request: Request) -> Any:
    data = await read_capped(request, MAX_BODY_BYTES, "A/B request body")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise BadData(f"body: invalid JSON: {e}") from None
