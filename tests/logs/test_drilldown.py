"""Loki's endpoints for Grafana's Logs Drilldown app, called as the app calls them.

The app (grafana/logs-drilldown, ``getResource('detected_labels' | 'detected_fields' | 'patterns', ...)``)
sends ``query`` plus ``start``/``end`` as ISO 8601 (``range.from.utc().toISOString()``) and reads
``detectedLabels``, ``fields`` and ``data`` from Loki's JSON; errors are Loki's plain text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pitwall.logs.drain import Drain, DrainConfig, detect_format
from pitwall.logs.drain import patterns as drain_patterns
from pitwall.logs.logql.detected import detected_labels, determine_type
from tests.conftest import LiveServer
from tests.logs.conftest import now_ns, push_body

pytestmark = pytest.mark.timeout(60)
S = 10**9


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / S, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
async def loaded(client: httpx.AsyncClient) -> tuple[httpx.AsyncClient, int]:
    t = (now_ns() // S - 600) * S
    body = push_body({
        (("app", "api"), ("cluster", "eu"), ("pod", "api-1"), ("build", "42")): [
            [t, json.dumps({"level": "info", "msg": "served", "status": 200, "took": "12ms",
                            "req": {"path": "/a", "size": "1KB"}})],
            [t + S, json.dumps({"level": "error", "msg": "served", "status": 500, "took": "1.5s",
                                "req": {"path": "/b", "size": "2KB"}}), {"trace_id": "ab12"}],
        ],
        (("app", "web"), ("cluster", "eu"), ("pod", "web-1"), ("build", "43")): [
            [t + 2 * S, "level=warn caller=main.go ratio=0.5 ok=true"],
            [t + 3 * S, "level=info caller=main.go ratio=0.75 ok=false"],
        ],
        (("app", "cron"), ("cluster", "eu"), ("pod", "cron-1"), ("build", "44")): [[t, "tick"]],
    })
    r = await client.post("/loki/api/v1/push", json=body)
    assert r.status_code == 204, r.text
    return client, t


def _window(t: int) -> dict[str, str]:
    return {"start": _iso(t - 3600 * S), "end": _iso(t + 60 * S)}


async def test_detected_labels_as_drilldown_asks(loaded: tuple[httpx.AsyncClient, int]) -> None:
    client, t = loaded
    r = await client.get("/loki/api/v1/detected_labels", params={"query": "", **_window(t)})
    assert r.status_code == 200, r.text
    got = {d["label"]: d["cardinality"] for d in r.json()["detectedLabels"]}
    # build: every value numeric, an id, dropped; cluster: static, kept with one value
    assert got == {"app": 3, "cluster": 1, "pod": 3, "service_name": 3}
    r = await client.get("/loki/api/v1/detected_labels", params={"query": '{app="web"}', **_window(t)})
    assert {d["label"]: d["cardinality"] for d in r.json()["detectedLabels"]} == {"app": 1, "cluster": 1, "pod": 1,
                                                                                 "service_name": 1}
    r = await client.get("/loki/api/v1/detected_labels", params={"start": _iso(10 * S), "end": _iso(20 * S)})
    assert r.json() == {"detectedLabels": []}


def test_detected_label_rules() -> None:
    uuids = ["6f1c6b55-1c0e-4b8e-9a55-25a6b0f1a9f1", "0b0e6f0e-5a0e-4c1e-8f1e-1f2e3d4c5b6a"]
    got = detected_labels({"ids": [*uuids, "7"], "flag": ["0", "1"], "one": ["x"], "n": ["1", "2", "3"],
                           "namespace": ["1"], "__stream_shard__": ["a", "b"], "mixed": ["1", "x"]})
    assert got == [{"label": "flag", "cardinality": 2}, {"label": "mixed", "cardinality": 2},
                   {"label": "namespace", "cardinality": 1}, {"label": "one", "cardinality": 1}]


@pytest.mark.parametrize(("value", "kind"), [
    ("200", "int"), ("-3", "int"), ("0.5", "float"), ("1e3", "float"), ("true", "boolean"), ("F", "boolean"),
    ("12ms", "duration"), ("1h30m", "duration"), ("2KB", "bytes"), ("5 MiB", "bytes"), ("served", "string"),
    ("", "string"), ("99999999999999999999", "float"),
])
def test_field_types_as_loki_determines_them(value: str, kind: str) -> None:
    assert determine_type(value) == kind


async def test_detected_fields_json_logfmt_and_metadata(loaded: tuple[httpx.AsyncClient, int]) -> None:
    client, t = loaded
    r = await client.get("/loki/api/v1/detected_fields", params={"query": '{cluster="eu"}', **_window(t)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["limit"] == 1000
    fields = {f["label"]: f for f in body["fields"]}
    assert fields["status"] == {"label": "status", "type": "int", "cardinality": 2, "parsers": ["json"],
                                "jsonPath": ["status"]}
    assert fields["req_path"]["jsonPath"] == ["req", "path"]
    assert fields["req_size"]["type"] == "bytes"
    assert fields["took"]["type"] == "duration" and fields["took"]["cardinality"] == 2
    assert fields["ratio"] == {"label": "ratio", "type": "float", "cardinality": 2, "parsers": ["logfmt"]}
    assert fields["ok"]["type"] == "boolean"
    assert fields["level"]["parsers"] == ["json", "logfmt"] or fields["level"]["parsers"] == ["logfmt", "json"]
    assert fields["level"]["cardinality"] == 3
    # structured metadata: no parser
    assert fields["trace_id"]["parsers"] is None
    assert fields["detected_level"]["parsers"] is None
    assert "tick" not in fields and "app" not in fields
    r = await client.get("/loki/api/v1/detected_fields",
                         params={"query": '{cluster="eu"} | logfmt', "field_limit": "2", **_window(t)})
    assert len(r.json()["fields"]) == 2 and r.json()["limit"] == 2


async def test_detected_field_values(loaded: tuple[httpx.AsyncClient, int]) -> None:
    client, t = loaded
    r = await client.get("/loki/api/v1/detected_field/level/values", params={"query": '{cluster="eu"}',
                                                                            **_window(t)})
    assert r.status_code == 200, r.text
    assert r.json() == {"values": ["error", "info", "warn"]}
    r = await client.get("/loki/api/v1/detected_field/trace_id/values",
                         params={"query": '{app="api"}', **_window(t)})
    assert r.json() == {"values": ["ab12"]}


@pytest.mark.parametrize(("path", "params", "needle"), [
    ("/loki/api/v1/detected_fields", {"query": "sum(rate({a=\"b\"}[1m]))"}, "only log selector is supported"),
    ("/loki/api/v1/detected_fields", {}, "missing query parameter"),
    ("/loki/api/v1/detected_fields", {"query": '{a="b"}', "line_limit": "999999999"}, "max entries limit"),
    ("/loki/api/v1/detected_labels", {"query": "{a="}, "parse error"),
    ("/loki/api/v1/detected_labels", {"start": "20", "end": "10"}, "end timestamp must not be before"),
    ("/loki/api/v1/detected_fields", {"query": '{a="b"}', "line_limit": "abc"}, "invalid limit"),
    ("/loki/api/v1/detected_fields", {"query": '{a="b"}', "field_limit": "0"}, "limit must be a positive value"),
    ("/loki/api/v1/detected_field/x/values", {"query": '{a=~".*"}'}, "queries require at least one regexp"),
    ("/loki/api/v1/patterns", {"query": '{a="b"}', "step": "0"}, "zero or negative query resolution step"),
    ("/loki/api/v1/patterns", {"query": '{a="b"}', "step": "x"}, "invalid step"),
    ("/loki/api/v1/patterns", {"query": 'rate({a="b"}[1m])'}, "only log selector is supported"),
])
async def test_drilldown_errors_are_loki_plain_text(client: httpx.AsyncClient, path: str,
                                                    params: dict[str, str], needle: str) -> None:
    r = await client.get(path, params=params)
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/plain")
    assert needle in r.text


# ---------------------------------------------------------------- patterns (Drain)


def test_drain_clusters_as_loki() -> None:
    d = Drain(detect_format("user 1 logged in"))
    for i in range(5):
        d.train(f"user {i} logged in from 10.0.0.{i} after {i * 3}ms", 0)
        d.train(f"connection reset by peer addr=10.1.1.{i}:443", 0)
    d.train("too few", 0)  # under 4 tokens: skipped, as Loki
    d.train("x " * 100, 0)  # over 80 tokens: skipped
    got = {d.pattern(c): c.size for c in d.clusters.values()}
    assert got == {"user <_> logged in from <_> after <_>": 5, "connection reset by peer addr=<_>": 5}


def test_drain_logfmt_and_json_tokenizers() -> None:
    lines = [f'level=info ts=2024-01-0{i}T00:00:00Z msg="request done" status={200 + i} path=/a' for i in (1, 2, 3)]
    assert detect_format(lines[0]) == "logfmt"
    d = Drain("logfmt")
    for line in lines:
        d.train(line, 0)
    assert [d.pattern(c) for c in d.clusters.values()] == ['level=info ts=<_> msg="request done" status=<_> path=/a']
    d = Drain(detect_format('{"msg":"x"}'))
    for i in range(3):
        d.train(json.dumps({"msg": f"order {i} shipped to warehouse B", "level": "info"}), 0)
    # Loki's JSON tokenizer patterns the message field, wrapped in placeholders
    assert [d.pattern(c) for c in d.clusters.values()] == ["<_>order <_> shipped to warehouse B<_>"]


def test_drain_bounded_clusters() -> None:
    d = Drain("", DrainConfig(max_clusters=3))
    for i in range(10):
        d.train(" ".join(["word"] * (4 + i)), 0)  # a token count of its own: a new cluster each
    assert len(d.clusters) == 3


def test_patterns_bucketed_per_step() -> None:
    entries = [(("a",), "info", f"job {i} done in {i}s ok", 1_000_000 + i * 1000) for i in range(30)]
    got = drain_patterns(entries, 10_000, limit=10)
    assert got == [{"pattern": "job <_> done in <_> ok", "level": "info",
                    "samples": [[1000, 10], [1010, 10], [1020, 10]]}]


async def test_patterns_as_drilldown_asks(client: httpx.AsyncClient) -> None:
    t = (now_ns() // S - 600) // 60 * 60 * S
    vals = [[t + i * S, f"GET /api/items/{i} 200 {i}ms"] for i in range(40)]
    vals += [[t + i * S, f"level=error msg=\"db timeout\" attempt={i}"] for i in range(0, 40, 4)]
    r = await client.post("/loki/api/v1/push", json=push_body({(("app", "shop"),): vals}))
    assert r.status_code == 204, r.text
    r = await client.get("/loki/api/v1/patterns", params={"query": '{app="shop"}', "step": "30s",
                                                        "start": _iso(t - 60 * S), "end": _iso(t + 120 * S)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success"
    got = {(p["pattern"], p.get("level")): p["samples"] for p in body["data"]}
    # one stream, two detected levels (Loki keeps a Drain per stream and level)
    assert got[("GET <_> 200 <_>", "unknown")] == [[t // S, 30], [t // S + 30, 10]]
    assert got[('level=error msg="db timeout" attempt=<_>', "error")] == [[t // S, 8], [t // S + 30, 2]]
    r = await client.get("/loki/api/v1/patterns", params={"query": "{app=", "step": "30s"})
    assert r.status_code == 400 and r.headers["content-type"].startswith("text/plain")


async def test_index_volume_range_buckets(client: httpx.AsyncClient) -> None:
    t = (now_ns() // S - 600) // 60 * 60 * S
    body = push_body({(("app", "a"), ("env", "prod")): [[t + 5 * S, "x" * 10], [t + 65 * S, "y" * 7]],
                      (("app", "b"), ("env", "prod")): [[t + 70 * S, "z" * 3]]})
    assert (await client.post("/loki/api/v1/push", json=body)).status_code == 204
    r = await client.get("/loki/api/v1/index/volume_range", params={
        "query": '{env="prod"}', "start": str(t), "end": str(t + 119 * S), "step": "60s", "targetLabels": "app"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["resultType"] == "matrix"
    got = {s["metric"]["app"]: s["values"] for s in data["result"]}
    assert got == {"a": [[t // S, "10"], [t // S + 60, "7"]], "b": [[t // S + 60, "3"]]}
    assert f'[{t // S},"10"]' in r.text  # whole seconds written as integers
    r = await client.get("/loki/api/v1/index/volume_range", params={
        "query": '{env="prod"}', "start": str(t), "end": str(t + 3600 * S), "step": "1s"})
    assert r.status_code == 400 and "maximum resolution" in r.text


@pytest.mark.slow
def test_drilldown_over_http_after_restart(live_server: LiveServer) -> None:
    """The app's four calls over a real socket, with Grafana's resource-proxy header, after a restart."""
    t = (now_ns() // S - 300) // 60 * 60 * S
    vals = [[t + i * S, json.dumps({"msg": f"charged card {i} for order {i * 7}", "amount": i,
                                       "level": "info"})] for i in range(20)]
    r = httpx.post(live_server.url + "/loki/api/v1/push", json=push_body({(("app", "pay"), ("pod", "p-1")): vals}))
    assert r.status_code == 204, r.text
    live_server.restart()
    hdr = {"X-Query-Tags": "Source=grafana-lokiexplore-app"}
    window = {"start": _iso(t - 60 * S), "end": _iso(t + 120 * S)}
    with httpx.Client(base_url=live_server.url, headers=hdr, timeout=30) as c:
        labels = c.get("/loki/api/v1/detected_labels", params={"query": '{app="pay"}', **window}).json()
        assert {d["label"] for d in labels["detectedLabels"]} == {"app", "pod", "service_name"}
        fields = {f["label"]: f for f in c.get("/loki/api/v1/detected_fields",
                                              params={"query": '{app="pay"}', **window}).json()["fields"]}
        assert fields["amount"]["type"] == "int" and fields["amount"]["cardinality"] == 20
        assert c.get("/loki/api/v1/detected_field/level/values",
                     params={"query": '{app="pay"}', **window}).json() == {"values": ["info"]}
        pats = c.get("/loki/api/v1/patterns", params={"query": '{app="pay"}', "step": "60s", **window}).json()
        assert pats["status"] == "success"
        assert [(p["pattern"], sum(n for _, n in p["samples"])) for p in pats["data"]] == [
            ("<_>charged card <_> for order <_>", 20)]  # JSON: the msg field, wrapped; <_><_> folded


_PATHS = ["/loki/api/v1/detected_labels", "/loki/api/v1/detected_fields", "/loki/api/v1/detected_field/x/values",
          "/loki/api/v1/patterns", "/loki/api/v1/index/volume_range"]
_QUERIES = st.one_of(st.sampled_from(['{app="pay"}', '{app="pay"} | json', '{app=~"p.*"} |= ip("10.0.0.0/8")',
                                      'rate({app="pay"}[1m])', "{", "", '{app="pay"} | distinct msg']),
                     st.text(max_size=30))
_VALUES = st.one_of(st.none(), st.integers(-(10**20), 10**20).map(str), st.text(max_size=12),
                    st.sampled_from(["1s", "0", "-5m", "1e9", "NaN", "2026-12-05T21:00:00Z", "10ms"]))


@pytest.mark.slow
def test_drilldown_endpoints_never_fail_with_5xx(live_server: LiveServer) -> None:
    """Random parameters: every answer is a 2xx or Loki's plain-text 4xx, never a server error."""
    t = now_ns()
    httpx.post(live_server.url + "/loki/api/v1/push",
               json=push_body({(("app", "pay"),): [[t - i * S, f"msg=m{i} addr=10.0.0.{i} took={i}ms"]
                                                   for i in range(30)]}))
    keys = ("start", "end", "step", "line_limit", "field_limit", "limit", "targetLabels")
    with httpx.Client(base_url=live_server.url, timeout=30) as c:

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(path=st.sampled_from(_PATHS), query=_QUERIES, vals=st.tuples(*[_VALUES] * len(keys)))
        def run(path: str, query: str, vals: tuple[str | None, ...]) -> None:
            params = {k: v for k, v in zip(keys, vals, strict=True) if v is not None}
            r = c.get(path, params={"query": query, **params})
            assert r.status_code < 500, (path, query, params, r.text)
            if r.status_code >= 400:
                assert r.headers["content-type"].startswith("text/plain")

        run()


async def test_patterns_page_past_max_entries(tmp_path: Path) -> None:
    """/patterns reads more lines than one query may return, in pages (max_entries_limit_per_query 50 here)."""
    from pitwall.config import load_settings
    from pitwall.server import create_app

    app = create_app(load_settings(data_dir=tmp_path / "d", listen="127.0.0.1:0", storage={"fsync": False},
                                   logs={"limits": {"max_entries_limit_per_query": 50}}))
    t = (now_ns() // S - 600) // 60 * 60 * S
    vals = [[t + i * S // 4, f"worker {i % 7} finished job {i} ok"] for i in range(230)]
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                   base_url="http://localhost") as c:
        assert (await c.post("/loki/api/v1/push", json=push_body({(("app", "w"),): vals}))).status_code == 204
        r = await c.get("/loki/api/v1/patterns", params={"query": '{app="w"}', "step": "60s",
                                                        "start": _iso(t - 60 * S), "end": _iso(t + 120 * S)})
        assert r.status_code == 200, r.text
        [pat] = r.json()["data"]
        assert pat["pattern"] == "worker <_> finished job <_> ok"
        assert sum(n for _, n in pat["samples"]) == 230


async def test_patterns_paging_ends_when_a_page_shares_one_timestamp(tmp_path: Path) -> None:
    from pitwall.config import load_settings
    from pitwall.server import create_app

    app = create_app(load_settings(data_dir=tmp_path / "d", listen="127.0.0.1:0", storage={"fsync": False},
                                   logs={"limits": {"max_entries_limit_per_query": 5}}))
    t = (now_ns() // S - 600) * S
    vals = [[t, f"same instant line number {i} here"] for i in range(12)]  # one nanosecond, 12 entries
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport,
                                                                   base_url="http://localhost") as c:
        assert (await c.post("/loki/api/v1/push", json=push_body({(("app", "w"),): vals}))).status_code == 204
        r = await c.get("/loki/api/v1/patterns", params={"query": '{app="w"}', "step": "60s",
                                                        "start": _iso(t - 60 * S), "end": _iso(t + 60 * S)})
        assert r.status_code == 200, r.text
        [pat] = r.json()["data"]
        # the engine returns 5 of the 12 at that instant per page; paging steps past the instant and stops
        assert pat["pattern"] == "same instant line number <_> here"
        assert 5 <= sum(n for _, n in pat["samples"]) <= 12
