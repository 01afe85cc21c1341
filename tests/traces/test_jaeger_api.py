"""Jaeger's query API, pinned with the requests Grafana's Jaeger data source and the Jaeger UI send.

Requests are copied from Grafana's ``public/app/plugins/datasource/jaeger/datasource.ts``:
``testDatasource`` calls ``/api/services``; the search form ``/api/services/{service}/operations``;
a search ``/api/traces?service=&operation=&tags=<logfmt as JSON>&minDuration=&maxDuration=&limit=
&start=<µs>&end=<µs>&lookback=custom``; a trace ``/api/traces/{id}`` (reads ``data[0]``); the
dependency graph ``/api/dependencies?endTs=<ms>&lookback=<ms>``. Shapes follow Jaeger's
``structuredResponse`` and ``internal/uimodel``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from tests.traces.shop import T0, A, B, C, load_shop

pytestmark = pytest.mark.timeout(60)

ENVELOPE = {"data", "total", "limit", "offset", "errors"}


def _grafana_range() -> dict[str, str]:
    """``getTimeRange()``: the dashboard's range in microseconds (here the last hour)."""
    end = time.time_ns() // 1000
    return {"start": str(end - 3_600_000_000), "end": str(end)}


async def _get(client: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    r = await client.get(path, params=params, headers={"Accept": "application/json, text/plain, */*"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert set(doc) == ENVELOPE
    return dict(doc)


async def test_services_and_operations(client: httpx.AsyncClient) -> None:
    await load_shop(client)
    doc = await _get(client, "/api/services")
    assert doc == {"data": ["backend", "frontend", "worker"], "total": 3, "limit": 0, "offset": 0, "errors": None}
    doc = await _get(client, "/api/services/backend/operations")
    assert doc["data"] == ["GET /items", "POST /reserve", "SELECT stock"] and doc["total"] == 3
    doc = await _get(client, "/api/operations", service="backend", spanKind="server")
    assert doc["data"] == [{"name": "GET /items", "spanKind": "server"},
                           {"name": "POST /reserve", "spanKind": "server"}]
    doc = await _get(client, "/api/operations", service="backend")
    assert {"name": "SELECT stock", "spanKind": "internal"} in doc["data"] and doc["total"] == 3


async def test_grafana_search_with_logfmt_tags_and_durations(client: httpx.AsyncClient) -> None:
    await load_shop(client)
    # Grafana: tags "http.status_code=503 error=true" -> convertTagsLogfmt -> JSON
    params = {"service": "backend", "tags": json.dumps({"http.status_code": "503", "error": "true"}),
              "minDuration": "100ms", "maxDuration": "1s", "limit": "20", **_grafana_range(),
              "lookback": "custom"}
    doc = await _get(client, "/api/traces", **params)
    assert [t["traceID"] for t in doc["data"]] == [A]
    # the same search without the status tag but a duration that excludes it
    doc = await _get(client, "/api/traces", **{**params, "tags": json.dumps({"http.status_code": "503"}),
                                               "minDuration": "250ms"})
    assert doc["data"] == []
    # operation, and Jaeger UI's tag=key:value form
    doc = await _get(client, "/api/traces", service="frontend", operation="GET /cart",
                     tag="http.status_code:200", **_grafana_range())
    assert [t["traceID"] for t in doc["data"]] == [B]
    doc = await _get(client, "/api/traces", service="frontend", limit="1", lookback="2h")
    assert len(doc["data"]) == 1
    doc = await _get(client, "/api/traces", service="worker", tags=json.dumps({"span.kind": "consumer"}))
    assert [t["traceID"] for t in doc["data"]] == [C]
    doc = await _get(client, "/api/traces", service="worker", tags=json.dumps({"span.kind": "server"}))
    assert doc["data"] == []


async def test_trace_by_id_in_jaeger_ui_model(client: httpx.AsyncClient) -> None:
    await load_shop(client)
    doc = await _get(client, f"/api/traces/{A}")
    [trace] = doc["data"]
    assert trace["traceID"] == A and trace["warnings"] is None
    assert {p["serviceName"] for p in trace["processes"].values()} == {"frontend", "backend"}
    spans = {s["spanID"]: s for s in trace["spans"]}
    root = spans["a000000000000001"]
    assert root == {
        "traceID": A, "spanID": "a000000000000001", "operationName": "GET /checkout", "references": [],
        "startTime": T0 // 1000, "duration": 300_000,
        "tags": [{"key": "http.status_code", "type": "int64", "value": 500},
                 {"key": "span.kind", "type": "string", "value": "server"},
                 {"key": "otel.scope.name", "type": "string", "value": "tests"},
                 {"key": "error", "type": "bool", "value": True},
                 {"key": "otel.status_code", "type": "string", "value": "ERROR"}],
        "logs": [], "processID": root["processID"], "warnings": None,
    }
    assert trace["processes"][root["processID"]] == {"serviceName": "frontend", "tags": []}
    child = spans["a000000000000003"]
    assert child["references"] == [{"refType": "CHILD_OF", "traceID": A, "spanID": "a000000000000002"}]
    assert trace["processes"][child["processID"]]["serviceName"] == "backend"


async def test_search_by_trace_ids_reports_the_missing_ones(client: httpx.AsyncClient) -> None:
    await load_shop(client)
    missing = "d4" * 16
    r = await client.get("/api/traces", params=[("traceID", B), ("traceID", missing)])
    doc = r.json()
    assert [t["traceID"] for t in doc["data"]] == [B]
    assert doc["errors"] == [{"code": 404, "msg": "trace not found", "traceID": missing}]


async def test_dependencies_as_grafana_asks(client: httpx.AsyncClient) -> None:
    await load_shop(client)
    end_ms = time.time_ns() // 1_000_000
    doc = await _get(client, "/api/dependencies", endTs=str(end_ms), lookback=str(3_600_000))
    assert doc["data"] == [{"parent": "frontend", "child": "backend", "callCount": 2}]
    doc = await _get(client, "/api/dependencies", endTs=str(end_ms), lookback="1000")
    assert doc["data"] == []  # outside the window


@pytest.mark.parametrize(("path", "params", "status", "msg"), [
    ("/api/traces", {}, 400, "parameter 'service' is required"),
    ("/api/traces", {"service": "x", "minDuration": "10"}, 400,
     "unable to parse param 'minDuration': time: missing unit in duration \"10\""),
    ("/api/traces", {"service": "x", "minDuration": "2s", "maxDuration": "1s"}, 400,
     "'maxDuration' should be greater than 'minDuration'"),
    ("/api/traces", {"service": "x", "tags": "{not json"}, 400, "malformed 'tags' parameter"),
    ("/api/traces", {"service": "x", "tag": "novalue"}, 400, "malformed 'tag' parameter"),
    ("/api/traces", {"service": "x", "start": "yesterday"}, 400, "unable to parse param 'start'"),
    ("/api/operations", {}, 400, "parameter 'service' is required"),
    ("/api/traces/" + "e5" * 16, {}, 404, "trace not found"),
    ("/api/traces/xyz", {}, 400, "invalid trace id"),
])
async def test_errors_in_jaeger_shape(client: httpx.AsyncClient, path: str, params: dict[str, str], status: int,
                                      msg: str) -> None:
    r = await client.get(path, params=params)
    assert r.status_code == status
    doc = r.json()
    assert doc["data"] is None and doc["errors"][0]["code"] == status
    assert doc["errors"][0]["msg"].startswith(msg)


async def test_native_trace_api_paths_are_untouched(client: httpx.AsyncClient) -> None:
    """``/api/traces/v1/...`` (pitwall's native API) and ``/api/traces/{id}`` (Jaeger) live side by side."""
    await load_shop(client)
    assert (await client.get("/api/traces/v1/services")).json() == {"services": ["backend", "frontend", "worker"]}
    assert "resourceSpans" in (await client.get(f"/api/traces/v1/{A}")).json()
    assert (await client.get(f"/api/traces/{A}")).json()["data"][0]["traceID"] == A


def test_key_values_keep_their_types() -> None:
    from pitwall.traces.jaeger import key_value, parse_go_duration_ns

    assert key_value("big", 2**60) == {"key": "big", "type": "int64", "value": str(2**60)}
    assert key_value("f", 1.5) == {"key": "f", "type": "float64", "value": 1.5}
    assert key_value("b", {"$bytes": "AQI="}) == {"key": "b", "type": "binary", "value": "AQI="}
    assert key_value("l", [1, "x"]) == {"key": "l", "type": "string", "value": '[1,"x"]'}
    assert parse_go_duration_ns("1h1.5s") == 3_601_500_000_000
    assert parse_go_duration_ns("250us") == parse_go_duration_ns("250µs") == 250_000
    with pytest.raises(ValueError, match='time: invalid duration "1d"'):
        parse_go_duration_ns("1d")
