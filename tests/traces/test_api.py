"""Ingest and query over the in-process app: formats, mappings, limits and errors."""

from __future__ import annotations

import gzip
import json
import time

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from pitwall.config import Settings, load_settings
from pitwall.traces.ingest import zipkin_pb
from tests.traces.helpers import PROTO, otlp_request

TID = "5af7183fb1d4cf5f5af7183fb1d4cf5f"


@pytest.fixture
def settings(tmp_path: object) -> Settings:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    return load_settings(
        data_dir=tmp_path / "data", listen="127.0.0.1:0", storage={"fsync": False},
        limits={"max_request_bytes": 1 << 20},
        traces={"max_spans_per_request": 50, "max_attributes_per_span": 8, "max_attribute_value_length": 64,
                "max_spans_per_trace": 5},
    )


def _now_us() -> int:
    return time.time_ns() // 1000


async def test_otlp_json_every_anyvalue_kind_round_trips(client: httpx.AsyncClient) -> None:
    now = time.time_ns()
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeSpans": [{"scope": {"name": "lib", "version": "2"}, "spans": [{
            "traceId": TID, "spanId": "0000000000000001", "name": "op", "kind": 3,
            "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1000),
            "attributes": [
                {"key": "s", "value": {"stringValue": "x"}}, {"key": "b", "value": {"boolValue": True}},
                {"key": "i", "value": {"intValue": "-7"}}, {"key": "d", "value": {"doubleValue": 1.5}},
                {"key": "a", "value": {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "y"}]}}},
                {"key": "kv", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": False}}]}}},
                {"key": "by", "value": {"bytesValue": "AQI="}},
            ],
            "events": [{"timeUnixNano": str(now + 10), "name": "ev", "attributes": [
                {"key": "n", "value": {"intValue": "3"}}]}],
            "links": [{"traceId": "0" * 31 + "1", "spanId": "0" * 15 + "2", "attributes": []}],
            "status": {"code": 2, "message": "boom"},
        }]}],
    }]}
    r = await client.post("/v1/traces", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    doc = (await client.get(f"/api/traces/v1/{TID}")).json()
    rs = doc["resourceSpans"][0]
    sp = rs["scopeSpans"][0]["spans"][0]
    assert rs["scopeSpans"][0]["scope"] == {"name": "lib", "version": "2"}
    assert sp["attributes"] == body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]  # type: ignore[index]
    assert sp["events"] == [{"timeUnixNano": str(now + 10), "name": "ev",
                             "attributes": [{"key": "n", "value": {"intValue": "3"}}]}]
    assert sp["links"][0]["traceId"] == "0" * 31 + "1" and sp["links"][0]["spanId"] == "0" * 15 + "2"
    assert sp["status"] == {"code": 2, "message": "boom"} and sp["kind"] == 3
    z = (await client.get(f"/api/v2/trace/{TID}")).json()[0]
    assert z["kind"] == "CLIENT" and z["tags"]["error"] == "boom" and z["tags"]["otel.status_code"] == "ERROR"
    assert z["tags"]["b"] == "true" and z["tags"]["a"] == '[1,"y"]'
    assert z["annotations"] == [{"timestamp": (now + 10) // 1000, "value": '{"ev":{"n":3}}'}]


async def test_zipkin_json_gzip_and_proto3_with_64bit_ids(client: httpx.AsyncClient) -> None:
    ts = _now_us()
    spans = [{"traceId": "463ac35c9f6413ad", "id": "a2fb4a1d1a96d312", "name": "get", "kind": "CLIENT",
              "timestamp": ts, "duration": 1500, "shared": False,
              "localEndpoint": {"serviceName": "web", "ipv4": "10.0.0.1", "port": 8080},
              "remoteEndpoint": {"serviceName": "db", "ipv4": "10.0.0.2", "port": 5432},
              "annotations": [{"timestamp": ts + 5, "value": "ws"}], "tags": {"error": "", "k": "v"}}]
    r = await client.post("/api/v2/spans", content=gzip.compress(json.dumps(spans).encode()),
                          headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 202, r.text
    msg = zipkin_pb.ListOfSpans()
    sp = msg.spans.add()
    sp.trace_id, sp.id, sp.parent_id = bytes.fromhex("463ac35c9f6413ad"), b"\x00" * 7 + b"\x09", \
        bytes.fromhex("a2fb4a1d1a96d312")
    sp.kind, sp.name, sp.timestamp, sp.duration, sp.shared = 2, "serve", ts + 10, 700, True
    sp.local_endpoint.service_name = "db"
    sp.local_endpoint.ipv4 = bytes([10, 0, 0, 2])
    sp.tags["sql"] = "select 1"
    r = await client.post("/api/v2/spans", content=msg.SerializeToString(),
                          headers={"content-type": "application/x-protobuf"})
    assert r.status_code == 202, r.text
    got = (await client.get("/api/v2/trace/463ac35c9f6413ad")).json()
    assert [s["traceId"] for s in got] == ["463ac35c9f6413ad"] * 2
    client_span, server_span = got
    assert client_span["localEndpoint"] == {"serviceName": "web", "ipv4": "10.0.0.1", "port": 8080}
    assert client_span["remoteEndpoint"] == {"serviceName": "db", "ipv4": "10.0.0.2", "port": 5432}
    assert client_span["annotations"] == [{"timestamp": ts + 5, "value": "ws"}]
    assert client_span["tags"] == {"k": "v", "otel.status_code": "ERROR", "error": "true"}
    assert server_span["shared"] is True and server_span["kind"] == "SERVER"
    assert server_span["parentId"] == "a2fb4a1d1a96d312"
    # 128-bit request form of the same 64-bit trace
    assert len((await client.get("/api/v2/trace/0000000000000000463ac35c9f6413ad")).json()) == 2
    # the shared client/server pair is one call web -> db
    deps = (await client.get("/api/v2/dependencies", params={"endTs": ts // 1000 + 1000})).json()
    assert deps == [{"parent": "web", "child": "db", "callCount": 1}]
    found = (await client.get("/api/v2/traces", params={"annotationQuery": "sql=select 1 and ws"})).json()
    assert found == []  # no single span has both
    found = (await client.get("/api/v2/traces", params={"annotationQuery": "ws", "minDuration": 1000})).json()
    assert len(found) == 1
    many = (await client.get("/api/v2/traceMany", params={"traceIds": f"463ac35c9f6413ad,{TID}"})).json()
    assert len(many) == 1


async def test_otlp_errors_are_otlp_status_and_store_nothing(client: httpx.AsyncClient) -> None:
    cases = [
        (b"\xff\xff", PROTO, 400),
        (b"{}", {"content-type": "text/xml"}, 415),
        (otlp_request("s", [{"trace": TID, "span": "0" * 16}]), PROTO, 400),  # zero span id
        (otlp_request("s", [{"trace": TID, "span": f"{i + 1:016x}"} for i in range(51)]), PROTO, 400),
        (otlp_request("s", [{"trace": TID, "span": "1" * 16, "attrs": {f"k{i}": 1 for i in range(9)}}]), PROTO, 400),
        (otlp_request("s", [{"trace": TID, "span": "1" * 16, "attrs": {"k": "x" * 65}}]), PROTO, 400),
    ]
    for body, headers, status in cases:
        r = await client.post("/v1/traces", content=body, headers=headers)
        assert r.status_code == status, (r.status_code, r.text)
        assert set(r.json()) == {"code", "message"} and r.json()["message"]
    assert "more than the limit of 50 spans" in (await client.post("/v1/traces", content=cases[3][0],
                                                                   headers=PROTO)).json()["message"]
    assert (await client.get(f"/api/v2/trace/{TID}")).status_code == 404
    assert (await client.get("/api/v2/services")).json() == []


async def test_spans_per_trace_limit_is_a_partial_success(client: httpx.AsyncClient) -> None:
    body = otlp_request("s", [{"trace": TID, "span": f"{i + 1:016x}"} for i in range(7)])
    r = await client.post("/v1/traces", content=body, headers=PROTO)
    assert r.status_code == 200
    resp = ExportTraceServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_spans == 2
    assert "limit of 5 spans per trace" in resp.partial_success.error_message
    assert len((await client.get(f"/api/v2/trace/{TID}")).json()) == 5


async def test_zipkin_errors_are_plain_text(client: httpx.AsyncClient) -> None:
    bad = [
        ("/api/v2/spans", b"not json", 400, "Malformed"),
        ("/api/v2/spans", b'[{"traceId":"xyz","id":"a2fb4a1d1a96d312"}]', 400, "traceId"),
        ("/api/v2/spans", b'[{"traceId":"463ac35c9f6413ad","id":"a2fb4a1d1a96d312","kind":"BOSS"}]', 400, "kind"),
    ]
    for path, body, status, text in bad:
        r = await client.post(path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status and text in r.text and r.headers["content-type"].startswith("text/plain")
    r = await client.post("/api/v2/spans", content=b"x" * (2 << 20))
    assert r.status_code == 413
    for path, status in [("/api/v2/trace/123", 400), ("/api/v2/trace/" + "a" * 16, 404), ("/api/v2/spans", 400),
                         ("/api/v2/traceMany?traceIds=aaaaaaaaaaaaaaaa", 400), ("/api/v2/dependencies", 400),
                         ("/api/v2/traces?limit=x", 400), ("/api/v2/autocompleteValues", 400)]:
        r = await client.get(path)
        assert r.status_code == status, (path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("text/plain")


async def test_native_errors_and_search_filters(client: httpx.AsyncClient) -> None:
    now = time.time_ns()
    spans = [{"trace": TID, "span": "1" * 16, "name": "root", "kind": 2, "start": now - 10**9, "duration": 900_000_000,
              "attrs": {"http.status_code": 503}, "status": 2},
             {"trace": TID, "span": "2" * 16, "parent": "1" * 16, "name": "child", "start": now - 10**9 + 1000}]
    assert (await client.post("/v1/traces", content=otlp_request("api", spans), headers=PROTO)).status_code == 200
    async def ids(**params: str) -> list[str]:
        r = await client.get("/api/traces/v1/search", params=params)
        assert r.status_code == 200, r.text
        return [t["traceId"] for t in r.json()["traces"]]
    assert await ids(service="api", operation="root") == [TID]
    assert await ids(attr="http.status_code>=500", status="error") == [TID]
    assert await ids(attr="http.status_code<500") == []
    assert await ids(attr="http.status_code=503") == [TID]
    assert await ids(min_duration="800ms") == [TID]
    assert await ids(min_duration="1s") == []
    assert await ids(max_duration="10ms", operation="child") == [TID]
    assert await ids(status="ok") == []
    for params in ({"attr": "nonsense"}, {"status": "bad"}, {"min_duration": "fast"}, {"limit": "0"},
                   {"start": "yesterday"}):
        r = await client.get("/api/traces/v1/search", params=params)
        assert r.status_code == 400, params
        assert r.json()["error"]["kind"] == "bad_data"
    r = await client.get("/api/traces/v1/" + "f" * 32)
    assert r.status_code == 404 and r.json()["error"]["kind"] == "not_found"
    r = await client.get("/api/traces/v1/nothex")
    assert r.status_code == 400


async def test_autocomplete(client: httpx.AsyncClient) -> None:
    spans = [{"trace": TID, "span": "1" * 16, "attrs": {"http.method": "GET"}},
             {"trace": TID, "span": "2" * 16, "attrs": {"http.method": "POST"}}]
    await client.post("/v1/traces", content=otlp_request("api", spans), headers=PROTO)
    assert "http.method" in (await client.get("/api/v2/autocompleteKeys")).json()
    vals = (await client.get("/api/v2/autocompleteValues", params={"key": "http.method"})).json()
    assert vals == ["GET", "POST"]
    assert (await client.get("/api/v2/autocompleteValues", params={"key": "other"})).json() == []


async def test_zipkin_lower_cases_names_and_queries_ignore_case(client: httpx.AsyncClient) -> None:
    # Zipkin's server lower-cases span and service names on ingest; OTLP keeps them as sent.
    span = {"traceId": "a" * 16, "id": "b" * 16, "name": "GET /Items", "kind": "CLIENT", "timestamp": _now_us(),
            "duration": 10, "localEndpoint": {"serviceName": "Shop-API"}, "remoteEndpoint": {"serviceName": "DB"}}
    assert (await client.post("/api/v2/spans", json=[span])).status_code == 202
    r = await client.post("/v1/traces", content=otlp_request("Billing", [
        {"trace": "c" * 32, "span": "d" * 16, "name": "Charge Card", "kind": 2}]), headers=PROTO)
    assert r.status_code == 200
    assert (await client.get("/api/v2/services")).json() == ["Billing", "shop-api"]
    assert (await client.get("/api/v2/spans", params={"serviceName": "SHOP-API"})).json() == ["get /items"]
    assert (await client.get("/api/v2/remoteServices", params={"serviceName": "shop-api"})).json() == ["db"]
    got = (await client.get("/api/v2/trace/" + "a" * 16)).json()
    assert got[0]["name"] == "get /items" and got[0]["localEndpoint"]["serviceName"] == "shop-api"
    assert got[0]["remoteEndpoint"]["serviceName"] == "db"
    for params in ({"serviceName": "billing", "spanName": "charge card"}, {"serviceName": "BILLING"},
                   {"serviceName": "Shop-Api", "spanName": "GET /ITEMS", "remoteServiceName": "Db"}):
        found = (await client.get("/api/v2/traces", params=params)).json()
        assert len(found) == 1, params
    assert (await client.get("/api/v2/traces", params={"serviceName": "billing", "spanName": "refund"})).json() == []
    native = (await client.get("/api/traces/v1/search", params={"service": "BILLING", "operation": "charge CARD"}
                               )).json()["traces"]
    assert [t["rootSpanName"] for t in native] == ["Charge Card"]


async def test_time_parameters_beyond_int64_nanoseconds_are_clamped(client: httpx.AsyncClient) -> None:
    huge = 59681684835169650797830886177898496
    r = await client.get("/api/v2/dependencies", params={"endTs": huge, "lookback": 5817000})
    assert r.status_code == 200 and r.json() == []
    assert (await client.get("/api/v2/traces", params={"endTs": huge})).status_code == 200
    span = {"traceId": "a" * 16, "id": "b" * 16, "timestamp": 2**64 - 1, "duration": 1}
    r = await client.post("/api/v2/spans", json=[span])
    assert r.status_code == 400 and "timestamp must be a non-negative integer" in r.text
