"""The Prometheus HTTP API v1 as clients (Grafana, promtool, curl) call it."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import cramjam
import httpx
import pytest

from pitwall.metrics.ingest import prompb


def _write_body(series: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> bytes:
    w = prompb.WriteRequest()
    for labels, samples in series:
        ts = w.timeseries.add()
        for k, v in sorted(labels.items()):
            lb = ts.labels.add()
            lb.name, lb.value = k, v
        for t, v in samples:
            s = ts.samples.add()
            s.timestamp, s.value = t, v
    return bytes(cramjam.snappy.compress_raw(w.SerializeToString()))


T0 = 1_700_000_000_000


@pytest.fixture
async def loaded(client: httpx.AsyncClient) -> httpx.AsyncClient:
    series = [
        ({"__name__": "http_requests_total", "job": "api", "code": c}, [(T0 + i * 15_000, i * (2 if c == "500" else 10)) for i in range(41)])
        for c in ("200", "500")
    ] + [({"__name__": "up", "job": "api", "instance": "a:1"}, [(T0 + i * 15_000, 1.0) for i in range(41)])]
    r = await client.post("/api/v1/write", content=_write_body(series))
    assert r.status_code == 204, r.text
    return client


def _ok(r: httpx.Response) -> Any:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success"
    return body["data"]


async def test_grafana_health_check(client: httpx.AsyncClient) -> None:
    # Grafana's data-source health check: instant `1+1` at t=4, sent as a form POST.
    r = await client.post("/api/v1/query", data={"query": "1+1", "time": "4"})
    assert _ok(r) == {"resultType": "scalar", "result": [4, "2"]}


async def test_buildinfo_has_no_features_so_grafana_sees_prometheus(client: httpx.AsyncClient) -> None:
    data = _ok(await client.get("/api/v1/status/buildinfo"))
    assert set(data) >= {"version", "revision", "branch", "buildUser", "buildDate", "goVersion"}
    assert "features" not in data


async def test_instant_and_range_queries(loaded: httpx.AsyncClient) -> None:
    at = (T0 + 600_000) / 1000
    data = _ok(await loaded.get("/api/v1/query", params={"query": "sum by (code) (rate(http_requests_total[5m]))", "time": at}))
    assert data["resultType"] == "vector"
    got = {s["metric"]["code"]: float(s["value"][1]) for s in data["result"]}
    assert got == pytest.approx({"200": 10 / 15, "500": 2 / 15})
    assert data["result"][0]["value"][0] == at
    # Grafana adds a `timeout` parameter and posts a form.
    rng = {"query": "up", "start": T0 / 1000, "end": (T0 + 60_000) / 1000, "step": "15", "timeout": "30s"}
    data = _ok(await loaded.post("/api/v1/query_range", data=rng))
    assert data["resultType"] == "matrix"
    assert data["result"] == [{"metric": {"__name__": "up", "instance": "a:1", "job": "api"},
                               "values": [[T0 / 1000 + i * 15, "1"] for i in range(5)]}]


async def test_stats_parameter_reports_samples_read(loaded: httpx.AsyncClient) -> None:
    at = (T0 + 600_000) / 1000
    plain = _ok(await loaded.get("/api/v1/query", params={"query": "up[1m]", "time": at}))
    assert "stats" not in plain
    data = _ok(await loaded.get("/api/v1/query", params={"query": "up[1m]", "time": at, "stats": "all"}))
    samples = data["stats"]["samples"]
    assert samples["totalQueryableSamples"] == len(data["result"][0]["values"]) == 4  # (at-1m, at]
    assert samples["peakSamples"] >= 4
    assert set(data["stats"]["timings"]) == {"evalTotalTime", "resultSortTime", "queryPreparationTime",
                                             "innerEvalTime", "execQueueTime", "execTotalTime"}
    # a range query reads each stored sample once: both counters' 41 in the range, not one per step
    rng = {"query": "sum(rate(http_requests_total[10m]))", "start": T0 / 1000, "end": (T0 + 600_000) / 1000,
           "step": "15", "stats": "1"}
    data = _ok(await loaded.post("/api/v1/query_range", data=rng))
    assert data["stats"]["samples"]["totalQueryableSamples"] == 2 * 41


async def test_series_labels_values_metadata(loaded: httpx.AsyncClient) -> None:
    series = _ok(await loaded.get("/api/v1/series", params={"match[]": 'http_requests_total{code="500"}'}))
    assert series == [{"__name__": "http_requests_total", "code": "500", "job": "api"}]
    assert _ok(await loaded.get("/api/v1/labels")) == ["__name__", "code", "instance", "job"]
    assert _ok(await loaded.get("/api/v1/labels", params={"match[]": "up"})) == ["__name__", "instance", "job"]
    assert _ok(await loaded.get("/api/v1/label/__name__/values")) == ["http_requests_total", "up"]
    r = await loaded.get("/api/v1/label/code/values", params={"limit": "1"})
    assert r.json()["data"] == ["200"] and r.json()["warnings"] == ["results truncated due to limit"]
    # Outside the data's time range nothing matches.
    assert _ok(await loaded.get("/api/v1/label/job/values", params={"start": "0", "end": "1"})) == []
    assert _ok(await loaded.get("/api/v1/metadata")) == {}


@pytest.mark.parametrize(("path", "params", "status", "etype", "message"), [
    ("/api/v1/query", {"query": "sum(up"}, 400, "bad_data", "parse error"),
    ("/api/v1/query", {}, 400, "bad_data", "query"),
    ("/api/v1/query", {"query": "up", "time": "yesterday"}, 400, "bad_data", 'cannot parse "yesterday" to a valid timestamp'),
    ("/api/v1/query_range", {"query": "up", "start": "10", "end": "5", "step": "1"}, 400, "bad_data", "end timestamp must not be before start time"),
    ("/api/v1/query_range", {"query": "up", "start": "0", "end": "5", "step": "0"}, 400, "bad_data", "zero or negative query resolution step widths"),
    ("/api/v1/query_range", {"query": "up", "start": "0", "end": "100000", "step": "1"}, 400, "bad_data", "exceeded maximum resolution of 11,000 points per timeseries"),
    ("/api/v1/series", {}, 400, "bad_data", "no match[] parameter provided"),
    ("/api/v1/series", {"match[]": "up{"}, 400, "bad_data", "parse error"),
])
async def test_errors_use_prometheus_envelope(client: httpx.AsyncClient, path: str, params: dict[str, str],
                                              status: int, etype: str, message: str) -> None:
    r = await client.get(path, params=params)
    assert r.status_code == status
    body = r.json()
    assert body["status"] == "error" and body["errorType"] == etype
    assert message in body["error"]


async def test_too_many_samples_is_422_execution(loaded: httpx.AsyncClient) -> None:
    engine = loaded.app.state.components.engine  # type: ignore[attr-defined]
    engine.max_samples = 10
    r = await loaded.get("/api/v1/query", params={"query": "http_requests_total[10m]", "time": (T0 + 600_000) / 1000})
    assert r.status_code == 422
    assert r.json() == {"status": "error", "errorType": "execution",
                        "error": "query processing would load too many samples into memory in query execution"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("query", "max_samples"), [
    # The security review's query, default limit: 2.6e9 inner steps, refused before any.
    ("count_over_time(http_requests_total[30d:1ms])", None),
    # 2.6M inner steps fit 3M; 2 series x 2.6M steps do not.
    ("count_over_time(http_requests_total[30d:1s])", 3_000_000),
])
async def test_huge_subquery_is_refused_before_allocating(
    loaded: httpx.AsyncClient, query: str, max_samples: int | None
) -> None:
    """The query is refused with Prometheus' error instead of growing memory to the
    host's limit (it once reached 22.8 GB)."""
    if max_samples is not None:
        loaded.app.state.components.engine.max_samples = max_samples  # type: ignore[attr-defined]
    tracemalloc.start()
    try:
        r = await loaded.get("/api/v1/query", params={"query": query, "time": (T0 + 600_000) / 1000})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert r.status_code == 422
    assert r.json()["error"] == "query processing would load too many samples into memory in query execution"
    assert peak < 64 << 20, f"peak {peak >> 20} MiB"


async def test_query_timeout_is_503_timeout(loaded: httpx.AsyncClient) -> None:
    engine = loaded.app.state.components.engine  # type: ignore[attr-defined]
    engine.timeout_s = 0.0
    r = await loaded.get("/api/v1/query", params={"query": "sum(rate(http_requests_total[5m]))", "time": (T0 + 600_000) / 1000})
    assert r.status_code == 503
    assert r.json()["errorType"] == "timeout"


async def test_remote_write_errors_are_plain_text(loaded: httpx.AsyncClient) -> None:
    old = _write_body([({"__name__": "up", "job": "api", "instance": "a:1"}, [(T0, 1.0)])])
    r = await loaded.post("/api/v1/write", content=old)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text.startswith('out of order sample for series up{instance="a:1", job="api"}')
    r = await loaded.post("/api/v1/write", content=b"\x05abc")
    assert r.status_code == 400 and "snappy" in r.text


async def test_remote_write_empty_bodies_answered_as_prometheus(client: httpx.AsyncClient) -> None:
    # Zero bytes are no snappy block: Prometheus' handler answers 400 with Go's "snappy: corrupt input".
    r = await client.post("/api/v1/write", content=b"",
                          headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"})
    assert r.status_code == 400
    assert r.text == "snappy: corrupt input\n"
    # The one-byte block of an empty WriteRequest decodes, holds nothing, and is acknowledged, as there.
    assert (await client.post("/api/v1/write", content=b"\x00")).status_code == 204


async def test_remote_write_body_limit_is_413(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/write", content=b"x" * ((1 << 20) + 1))
    assert r.status_code == 413
    assert "exceeds the limit" in r.text


async def test_overload_answers_429_with_retry_after(client: httpx.AsyncClient) -> None:
    budget = client.app.state.components.inflight  # type: ignore[attr-defined]
    budget.used = budget.max_bytes  # as if other requests held the whole budget
    body = _write_body([({"__name__": "up"}, [(T0, 1.0)])])
    r = await client.post("/api/v1/write", content=body)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "1"
    budget.used = 0
    assert (await client.post("/api/v1/write", content=body)).status_code == 204


async def test_tenants_via_header(client: httpx.AsyncClient) -> None:
    body = _write_body([({"__name__": "up"}, [(T0, 1.0)])])
    assert (await client.post("/api/v1/write", content=body, headers={"X-Scope-OrgID": "team-a"})).status_code == 204
    assert _ok(await client.get("/api/v1/label/__name__/values")) == []
    assert _ok(await client.get("/api/v1/label/__name__/values", headers={"X-Scope-OrgID": "team-a"})) == ["up"]


async def test_format_query(client: httpx.AsyncClient) -> None:
    assert _ok(await client.get("/api/v1/format_query", params={"query": "sum by(job)(rate(x[5m]))"})) == \
        "sum by (job) (rate(x[5m]))"


async def test_ops_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/-/healthy")).status_code == 200
    assert (await client.get("/-/ready")).status_code == 200
    metrics = (await client.get("/metrics")).text
    assert "pitwall_http_requests_total" in metrics and "pitwall_metrics_series" in metrics
    spec = (await client.get("/openapi.json")).json()
    assert "/api/v1/query" in spec["paths"]
    assert _ok(await client.get("/api/v1/targets")) == {"activeTargets": [], "droppedTargets": [], "droppedTargetCounts": {}}
    flags = _ok(await client.get("/api/v1/status/flags"))
    assert flags["storage.tsdb.retention.time"] == "1296000s"
    assert time.time() > 0
