"""Tempo's HTTP API, pinned with the requests Grafana's Tempo data source sends.

From Grafana: the backend asks ``/api/traces/{id}?start=<s>&end=<s>`` with ``Accept:
application/protobuf`` and decodes OTLP (``pkg/tsdb/tempo/trace.go``); the search box calls
``/api/search?q=<TraceQL>&limit=20&spss=3&start=<s>&end=<s>``; the editor's autocomplete
``/api/v2/search/tags?start=&end=`` and ``/api/v2/search/tag/{tag}/values?q=&start=&end=``;
the data source's health check and feature detection ``/api/echo`` and
``/api/status/buildinfo``. Shapes follow Tempo's ``tempopb`` (``SearchResponse``,
``TraceSearchMetadata``, ``SpanSet``, ``SearchTagsV2Response``...).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from tests.traces.shop import T0, A, B, C, load_shop

pytestmark = pytest.mark.timeout(60)


def _range() -> dict[str, str]:
    now = int(time.time())
    return {"start": str(now - 3600), "end": str(now + 60)}


async def _search(client: httpx.AsyncClient, q: str, **extra: str) -> dict[str, Any]:
    r = await client.get("/api/search", params={"q": q, "limit": "20", "spss": "3", **_range(), **extra})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_trace_by_id_as_grafana_asks_protobuf(client: httpx.AsyncClient) -> None:
    await load_shop(client)
    r = await client.get(f"/api/traces/{A}", params=_range(), headers={"Accept": "application/protobuf"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/protobuf"
    doc = TracesData.FromString(r.content)
    spans = [sp for rs in doc.resource_spans for ss in rs.scope_spans for sp in ss.spans]
    assert sorted(sp.name for sp in spans) == ["GET /checkout", "POST /reserve", "SELECT stock", "call backend"]
    services = {kv.value.string_value for rs in doc.resource_spans for kv in rs.resource.attributes
                if kv.key == "service.name"}
    assert services == {"frontend", "backend"}
    root = next(sp for sp in spans if sp.name == "GET /checkout")
    assert root.trace_id.hex() == A and root.start_time_unix_nano == T0 and root.status.code == 2
    assert root.end_time_unix_nano - root.start_time_unix_nano == 300_000_000
    # a Tempo trace id may drop leading zeros; not found is a 404
    r = await client.get("/api/traces/" + "e5" * 16, headers={"Accept": "application/protobuf"})
    assert r.status_code == 404


async def test_trace_by_id_v2(client: httpx.AsyncClient) -> None:
    await load_shop(client)
    r = await client.get(f"/api/v2/traces/{B}")
    assert r.status_code == 200
    doc = r.json()
    names = [sp["name"] for rs in doc["trace"]["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]]
    assert sorted(names) == ["GET /cart", "GET /items"]
    r = await client.get(f"/api/v2/traces/{B}", headers={"Accept": "application/protobuf"})
    # TraceByIDResponse: field 1 is the trace (TracesData's wire form)
    assert r.content[0] == 0x0A
    body = r.content[1:]
    n, shift, i = 0, 0, 0
    while True:
        n |= (body[i] & 0x7F) << shift
        shift += 7
        i += 1
        if body[i - 1] < 0x80:
            break
    assert len(body) == i + n
    assert len(TracesData.FromString(body[i:]).resource_spans) == 2


async def test_search_response_shape(client: httpx.AsyncClient) -> None:
    await load_shop(client)
    doc = await _search(client, '{ resource.service.name = "backend" && span.http.status_code >= 500 }')
    assert set(doc) == {"traces", "metrics"}
    [t] = doc["traces"]
    assert t == {
        "traceID": A, "rootServiceName": "frontend", "rootTraceName": "GET /checkout",
        "startTimeUnixNano": str(T0), "durationMs": 300,
        "spanSet": t["spanSets"][0],
        "spanSets": [{"matched": 1, "spans": [{
            "spanID": "a000000000000003", "name": "POST /reserve", "startTimeUnixNano": str(T0 + 20_000_000),
            "durationNanos": "200000000",
            "attributes": [{"key": "service.name", "value": {"stringValue": "backend"}},
                           {"key": "http.status_code", "value": {"intValue": "503"}}]}]}],
    }
    assert doc["metrics"]["inspectedTraces"] >= 1


async def test_spss_limits_spans_and_limit_traces(client: httpx.AsyncClient) -> None:
    await load_shop(client)
    doc = await _search(client, "{ }", spss="2")
    assert [t["traceID"] for t in doc["traces"]] == [C, B, A]  # newest first
    a = next(t for t in doc["traces"] if t["traceID"] == A)
    assert a["spanSets"][0]["matched"] == 4 and len(a["spanSets"][0]["spans"]) == 2
    doc = await _search(client, "{ }", limit="1")
    assert [t["traceID"] for t in doc["traces"]] == [C]


async def test_older_tags_search_and_durations(client: httpx.AsyncClient) -> None:
    await load_shop(client)
    r = await client.get("/api/search", params={"tags": "service.name=worker job.id=42", **_range()})
    assert [t["traceID"] for t in r.json()["traces"]] == [C]
    r = await client.get("/api/search", params={"tags": 'name="GET /cart"', **_range()})
    assert [t["traceID"] for t in r.json()["traces"]] == [B]
    r = await client.get("/api/search", params={"q": "{ }", "minDuration": "250ms", "maxDuration": "1s", **_range()})
    assert [t["traceID"] for t in r.json()["traces"]] == [A]


async def test_tags_and_values(client: httpx.AsyncClient) -> None:
    await load_shop(client)
    r = await client.get("/api/v2/search/tags", params=_range())
    scopes = {s["name"]: s["tags"] for s in r.json()["scopes"]}
    assert scopes["span"] == ["db.system", "http.status_code", "job.id", "peer.service"]
    assert scopes["resource"] == ["deployment.environment", "service.name"]
    assert "duration" in scopes["intrinsic"] and "rootServiceName" in scopes["intrinsic"]
    r = await client.get("/api/v2/search/tags", params={"scope": "resource", **_range()})
    assert [s["name"] for s in r.json()["scopes"]] == ["resource"]
    r = await client.get("/api/search/tags", params=_range())
    assert r.json() == {"tagNames": ["db.system", "deployment.environment", "http.status_code", "job.id",
                                     "peer.service", "service.name"]}
    r = await client.get("/api/v2/search/tag/resource.service.name/values",
                         params={"q": "{}", **_range()})
    assert r.json() == {"tagValues": [{"type": "string", "value": v} for v in ("backend", "frontend", "worker")]}
    r = await client.get("/api/v2/search/tag/span.http.status_code/values", params=_range())
    assert r.json() == {"tagValues": [{"type": "int", "value": v} for v in ("200", "500", "503")]}
    r = await client.get("/api/v2/search/tag/name/values", params=_range())
    assert {"type": "string", "value": "SELECT stock"} in r.json()["tagValues"]
    r = await client.get("/api/v2/search/tag/status/values", params=_range())
    assert [v["value"] for v in r.json()["tagValues"]] == ["error", "ok", "unset"]
    r = await client.get("/api/search/tag/job.id/values", params=_range())
    assert r.json() == {"tagValues": ["42"]}


async def test_echo_and_buildinfo(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/echo")
    assert r.status_code == 200 and r.text == "echo"
    info = (await client.get("/api/status/buildinfo")).json()
    assert set(info) == {"version", "revision", "branch", "buildUser", "buildDate", "goVersion"}
    assert info["version"].split(".")[0] == "2"


@pytest.mark.parametrize(("params", "msg"), [
    ({"q": "{ span.foo = }"}, "parse error at position"),
    ({"q": "{ .a = 1 } | rate()"}, "unsupported TraceQL: pipeline stage 'rate'"),
    ({"q": "{ span.a + 1 > 2 }"}, "unsupported TraceQL: arithmetic"),
    ({"q": "{ event.name = \"x\" }"}, "unsupported TraceQL: 'event.name'"),
    ({"q": "{ parent.service.name = \"x\" }"}, "unsupported TraceQL"),
    ({"q": "{ .a =~ \"(\" }"}, "invalid regular expression"),
    ({"q": "{ .a = 1 }", "tags": "a=1"}, "can't specify tags and q"),
    ({"q": "{ }", "start": "100", "end": "50"}, "start must be before end"),
    ({"q": "{ }", "limit": "0"}, "invalid limit"),
    ({"q": "{ }", "minDuration": "10"}, "invalid minDuration"),
    ({"q": "{ duration > 1d }"}, "parse error"),
    ({"tags": " ".join(f"k{i}=v" for i in range(300))}, "more than 256 tags"),
    ({"tags": "a=1 a=2"}, "tag a has been set twice"),
])
async def test_bad_queries_are_400_in_plain_text(client: httpx.AsyncClient, params: dict[str, str],
                                                 msg: str) -> None:
    r = await client.get("/api/search", params=params)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("text/plain")
    assert msg in r.text


async def test_tag_values_narrowed_by_q_as_grafana_sends_it(client: httpx.AsyncClient) -> None:
    """Grafana's search editor asks span names for the chosen service: ``q={resource.service.name="x"}``."""
    await load_shop(client)

    async def values(tag: str, q: str) -> list[str]:
        r = await client.get(f"/api/v2/search/tag/{tag}/values", params={"q": q, **_range()})
        assert r.status_code == 200, r.text
        return [v["value"] for v in r.json()["tagValues"]]

    assert await values("name", '{resource.service.name="backend"}') == ["GET /items", "POST /reserve",
                                                                        "SELECT stock"]
    assert await values("span.http.status_code", '{resource.service.name="frontend"}') == ["200", "500"]
    assert await values("resource.service.name", "{ status = error }") == ["backend", "frontend"]
    assert await values("rootServiceName", "{}") == ["frontend", "worker"]
    # the query still being typed narrows nothing
    assert len(await values("name", '{resource.service.name="backend" && }')) == 7
