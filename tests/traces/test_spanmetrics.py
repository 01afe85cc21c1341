"""Spans feed RED metrics into the metrics store, queryable with PromQL, with exemplars."""

from __future__ import annotations

import time

import httpx

from tests.traces.helpers import PROTO, otlp_request

TID = "0af7651916cd43dd8448eb211c80319c"


async def test_span_metrics_in_promql_with_exemplars(client: httpx.AsyncClient) -> None:
    spans = [{"trace": TID, "span": f"{i + 1:016x}", "name": "GET /", "kind": 2, "duration": d, "status": s}
             for i, (d, s) in enumerate([(1_000_000, 0), (3_000_000, 0), (120_000_000, 2)])]
    r = await client.post("/v1/traces", content=otlp_request("web", spans), headers=PROTO)
    assert r.status_code == 200
    sm = client.app.state.components.traces.spanmetrics  # type: ignore[attr-defined]
    await sm.flush()
    now = time.time()

    async def q(expr: str) -> list[dict[str, object]]:
        res = (await client.get("/api/v1/query", params={"query": expr, "time": now + 1})).json()
        assert res["status"] == "success", res
        return list(res["data"]["result"])

    calls = await q('sum by (status_code) (traces_span_metrics_calls_total{service_name="web",'
                    'span_name="GET /",span_kind="SPAN_KIND_SERVER"})')
    assert {c["metric"]["status_code"]: c["value"][1] for c in calls} == {  # type: ignore[index]
        "STATUS_CODE_UNSET": "2", "STATUS_CODE_ERROR": "1"}
    le = await q('sum by (le) (traces_span_metrics_duration_milliseconds_bucket{service_name="web"})')
    by_le = {c["metric"]["le"]: c["value"][1] for c in le}  # type: ignore[index]
    assert (by_le["2"], by_le["4"], by_le["100"], by_le["200"], by_le["+Inf"]) == ("1", "2", "2", "3", "3")
    total = await q('sum(traces_span_metrics_duration_milliseconds_sum{service_name="web"})')
    assert total[0]["value"][1] == "124"  # type: ignore[index]
    ex = (await client.get("/api/v1/query_exemplars", params={
        "query": 'traces_span_metrics_duration_milliseconds_bucket{service_name="web"}',
        "start": now - 60, "end": now + 60})).json()["data"]
    trace_ids = {e["labels"]["trace_id"] for s in ex for e in s["exemplars"]}
    assert trace_ids == {TID}
