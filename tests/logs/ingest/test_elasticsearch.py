"""Elasticsearch ``_bulk``: index/create actions, per-item answers with errors, nothing half-stored."""

from __future__ import annotations

import json
import time

import httpx

from pitwall.logs.ingest.elasticsearch import BulkDecoder, parse_timestamp
from pitwall.logs.settings import ElasticsearchSettings


def _ndjson(*objs: object) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def test_decoder_labels_timestamp_and_line() -> None:
    body = _ndjson({"index": {"_index": "app-logs", "_id": "1"}},
                   {"@timestamp": "2023-11-14T22:13:20.250Z", "host": {"name": "h1"}, "message": "hi"},
                   {"create": {}}, {"timestamp": 1_700_000_000_000, "hostname": "h2", "message": "yo"})
    req = BulkDecoder(ElasticsearchSettings(label_fields=["host.name", "hostname"])).decode(body, "fallback", 5)
    assert [(it.action, it.index) for it in req.items] == [("index", "app-logs"), ("create", "fallback")]
    assert req.cols is not None
    assert req.cols.streams == [(("host_name", "h1"), ("index", "app-logs"), ("job", "elasticsearch")),
                                (("hostname", "h2"), ("index", "fallback"), ("job", "elasticsearch"))]
    assert req.cols.ts.tolist() == [1_700_000_000_250_000_000, 1_700_000_000_000_000_000]
    assert json.loads(req.cols.lines[0])["message"] == "hi"
    assert parse_timestamp("not a time") is None


async def test_bulk_endpoint_per_item_results(client: httpx.AsyncClient) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = _ndjson({"index": {"_index": "web"}}, {"@timestamp": now, "message": "good one"},
                   {"delete": {"_index": "web", "_id": "x"}},
                   {"create": {"_index": "web"}}, {"@timestamp": now, "message": "x" * 300_000})
    body += b'{"index": {"_index": "web"}}\n{not json\n'
    r = await client.post("/_bulk", content=body, headers={"Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["errors"] is True
    statuses = [(next(iter(i)), next(iter(i.values()))["status"]) for i in out["items"]]
    assert statuses == [("index", 201), ("delete", 400), ("create", 400), ("index", 400)]
    assert out["items"][0]["index"]["result"] == "created"
    assert "max entry size" in out["items"][2]["create"]["error"]["reason"]
    assert out["items"][3]["index"]["error"]["type"] == "document_parsing_exception"
    r = await client.get("/loki/api/v1/query_range", params={"query": '{job="elasticsearch", index="web"}'})
    assert [json.loads(v[1])["message"] for s in r.json()["data"]["result"] for v in s["values"]] == ["good one"]


async def test_index_in_path_and_malformed_action(client: httpx.AsyncClient) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    r = await client.post("/elasticsearch/logs-x/_bulk", content=_ndjson({"index": {}}, {"@timestamp": now, "m": 1}))
    assert r.json()["errors"] is False and r.json()["items"][0]["index"]["_index"] == "logs-x"
    r = await client.post("/_bulk", content=_ndjson({"upsert": {}}, {"m": 1}))
    assert r.status_code == 400
    assert "Malformed action/metadata line [1]" in r.json()["error"]["message"]
    assert (await client.get("/_cat/health")).status_code == 200
    info = (await client.get("/elasticsearch/")).json()
    assert info["version"]["number"].startswith("8.")
