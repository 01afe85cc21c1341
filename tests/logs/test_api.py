"""Loki's read API as Grafana's Loki data source calls it (requests and response shapes pinned).

Grafana (pkg/tsdb/loki and the frontend's language provider) sends start/end
as unix nanoseconds, ``step`` as ``<n>ms``, and reads Loki's JSON envelopes;
errors are Loki's plain text, which Grafana shows verbatim.
"""

from __future__ import annotations

import httpx
import pytest

from tests.logs.conftest import now_ns, push_body


@pytest.fixture
async def loaded(client: httpx.AsyncClient) -> tuple[httpx.AsyncClient, int]:
    t = now_ns() - 60 * 10**9
    body = push_body({
        (("app", "api"), ("env", "prod")): [[t, "GET /x 200"], [t + 10**9, "GET /x 500 error", {"trace_id": "ab12"}]],
        (("app", "web"), ("env", "prod")): [[t + 2 * 10**9, "web error"]],
        (("app", "cron"), ("env", "dev")): [[t, "tick"]],
    })
    r = await client.post("/loki/api/v1/push", json=body)
    assert r.status_code == 204, r.text
    return client, t


def _range(t: int) -> dict[str, str]:
    return {"start": str(t - 3600 * 10**9), "end": str(t + 3600 * 10**9)}


async def test_labels_as_grafana_asks(loaded: tuple[httpx.AsyncClient, int]) -> None:
    client, t = loaded
    r = await client.get("/loki/api/v1/labels", params=_range(t))
    assert r.status_code == 200
    # service_name: Loki 3's discover_service_name (from ``app``); detected_level is metadata, no label
    assert r.json() == {"status": "success", "data": ["app", "env", "service_name"]}
    r = await client.get("/loki/api/v1/labels", params={**_range(t), "query": '{env="dev"}'})
    assert r.json()["data"] == ["app", "env", "service_name"]
    # a window with no entries has no labels
    r = await client.get("/loki/api/v1/labels", params={"start": "1000000000", "end": "1100000000"})
    assert r.json() == {"status": "success", "data": []}


async def test_label_values_with_selector(loaded: tuple[httpx.AsyncClient, int]) -> None:
    client, t = loaded
    r = await client.get("/loki/api/v1/label/app/values", params=_range(t))
    assert r.json() == {"status": "success", "data": ["api", "cron", "web"]}
    r = await client.get("/loki/api/v1/label/app/values", params={**_range(t), "query": '{env="prod"}'})
    assert r.json()["data"] == ["api", "web"]


async def test_series_get_and_form_post(loaded: tuple[httpx.AsyncClient, int]) -> None:
    client, t = loaded
    r = await client.get("/loki/api/v1/series", params={"match[]": '{env="prod"}', **_range(t)})
    assert r.json() == {"status": "success", "data": [{"app": "api", "env": "prod", "service_name": "api"},
                                                      {"app": "web", "env": "prod", "service_name": "web"}]}
    r = await client.post("/loki/api/v1/series", data={"match[]": ['{app="cron"}', '{app="web"}'], **_range(t)})
    assert [s["app"] for s in r.json()["data"]] == ["cron", "web"]


async def test_index_stats_and_volume(loaded: tuple[httpx.AsyncClient, int]) -> None:
    client, t = loaded
    r = await client.get("/loki/api/v1/index/stats", params={"query": '{env="prod"}', **_range(t)})
    assert r.json() == {"streams": 2, "chunks": 2, "bytes": len("GET /x 200GET /x 500 errorweb error"),
                        "entries": 3}
    r = await client.get("/loki/api/v1/index/volume", params={"query": '{env="prod"}', **_range(t)})
    data = r.json()["data"]
    assert data["resultType"] == "vector"
    assert data["result"][0]["metric"] == {"env": "prod"}
    assert data["result"][0]["value"][1] == str(len("GET /x 200GET /x 500 errorweb error"))


async def test_buildinfo_ready_and_v2alpha_probe(client: httpx.AsyncClient) -> None:
    r = await client.get("/loki/api/v1/status/buildinfo")
    info = r.json()
    assert set(info) >= {"version", "revision", "branch", "buildUser", "buildDate", "goVersion"}
    assert int(info["version"].split(".")[0]) >= 3
    assert (await client.get("/ready")).text == "ready\n"
    # Grafana's live tail probes this; a 400 would make it speak the v2alpha protocol we do not serve.
    assert (await client.get("/loki/api/v2alpha/tail")).status_code != 400


async def test_trace_logs_native_endpoint(loaded: tuple[httpx.AsyncClient, int]) -> None:
    client, t = loaded
    r = await client.get("/api/logs/v1/trace/AB12")
    assert r.json() == {"traceId": "ab12", "streams": [
        {"stream": {"app": "api", "env": "prod", "service_name": "api"},
         "values": [[str(t + 10**9), "GET /x 500 error", {"trace_id": "ab12", "detected_level": "error"}]]}]}
    r = await client.get("/api/logs/v1/trace/not-hex")
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("invalid trace id")


@pytest.mark.parametrize(("path", "params", "message"), [
    ("/loki/api/v1/labels", {"start": "20", "end": "10"}, "end timestamp must not be before or equal to start time"),
    ("/loki/api/v1/labels", {"start": "yesterday"}, 'cannot parse "yesterday" to a valid timestamp'),
    ("/loki/api/v1/series", {"match[]": "{app="}, "parse error"),
    ("/loki/api/v1/query_range", {"query": '{app="x"}', "limit": "-1"}, "limit must be a positive value"),
    ("/loki/api/v1/query_range", {"query": '{app="x"}', "direction": "sideways"}, "invalid direction 'sideways'"),
    ("/loki/api/v1/query_range", {"query": '{app="x"}', "limit": "100000"}, "max entries limit per query exceeded"),
    ("/loki/api/v1/query_range", {"query": '{app="x"}', "step": "0"}, "zero or negative query resolution step"),
    ("/loki/api/v1/query_range", {}, "missing query parameter"),
])
async def test_errors_are_loki_plain_text(client: httpx.AsyncClient, path: str, params: dict[str, str],
                                          message: str) -> None:
    r = await client.get(path, params=params)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("text/plain")
    assert message in r.text


@pytest.mark.parametrize(("raw", "ns"), [
    ("1700000000", 1_700_000_000 * 10**9),  # 10 digits: seconds
    ("1700000000123456789", 1_700_000_000_123_456_789),  # Grafana: nanoseconds
    ("1700000000.5", 1_700_000_000_500_000_000),
    ("2023-11-14T22:13:20Z", 1_700_000_000 * 10**9),
])
def test_timestamp_parameters(raw: str, ns: int) -> None:
    from pitwall.logs.params import parse_timestamp_ns

    assert parse_timestamp_ns(raw) == ns


def test_step_parameters() -> None:
    from pitwall.logs.params import default_step_ns, parse_duration_ns

    assert parse_duration_ns("60000ms") == 60 * 10**9  # Grafana sends <n>ms
    assert parse_duration_ns("15") == 15 * 10**9
    assert parse_duration_ns("1m") == 60 * 10**9
    assert default_step_ns(0, 3600 * 10**9) == 14 * 10**9


async def test_grafana_health_check_instant_query(client: httpx.AsyncClient) -> None:
    # pkg/tsdb/loki/healthcheck.go: instant query of vector(1)+vector(1), expects one sample of value 2.
    r = await client.get("/loki/api/v1/query", params={"query": "vector(1)+vector(1)", "time": "4000000000",
                                                      "direction": "backward"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["resultType"] == "vector"
    assert [float(s["value"][1]) for s in data["result"]] == [2.0]


async def test_log_query_range_as_grafana_sends_it(loaded: tuple[httpx.AsyncClient, int]) -> None:
    client, t = loaded
    params = {"query": '{env="prod"} |= "error"', "direction": "backward", "limit": "1000", "step": "60000ms",
              **_range(t)}
    r = await client.get("/loki/api/v1/query_range", params=params)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["resultType"] == "streams"
    lines = sorted(v[1] for s in data["result"] for v in s["values"])
    assert lines == ["GET /x 500 error", "web error"]
    assert "stats" in data
    r = await client.get("/loki/api/v1/query_range", params={**params, "limit": "1"})
    assert [v[1] for s in r.json()["data"]["result"] for v in s["values"]] == ["web error"]


async def test_trace_id_metadata_filter_in_logql(loaded: tuple[httpx.AsyncClient, int]) -> None:
    client, t = loaded
    r = await client.get("/loki/api/v1/query_range", params={"query": '{app="api"} | trace_id="ab12"', **_range(t)})
    assert r.status_code == 200, r.text
    assert [v[1] for s in r.json()["data"]["result"] for v in s["values"]] == ["GET /x 500 error"]


async def test_metric_query_range(loaded: tuple[httpx.AsyncClient, int]) -> None:
    client, t = loaded
    params = {"query": 'sum by (app) (count_over_time({env="prod"}[5m]))', "step": "60000ms", **_range(t)}
    r = await client.get("/loki/api/v1/query_range", params=params)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["resultType"] == "matrix"
    peak = {s["metric"]["app"]: max(float(v[1]) for v in s["values"]) for s in data["result"]}
    assert peak == {"api": 2.0, "web": 1.0}


async def test_logql_parse_error_is_plain_text_400(client: httpx.AsyncClient) -> None:
    r = await client.get("/loki/api/v1/query_range", params={"query": '{app="x"} |= '})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/plain") and "parse error" in r.text
