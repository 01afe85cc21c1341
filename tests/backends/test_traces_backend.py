"""backends.traces on a second pitwall playing the remote Tempo: spans forwarded as OTLP, Tempo reads through it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from pitwall.config import load_settings
from pitwall.core.errors import ConfigError
from pitwall.traces.model import SPAN_SCHEMA
from pitwall.traces.remote_backend import encode_export
from tests.backends.logpeer import PitwallPeer, wait_for
from tests.conftest import LiveServer

pytestmark = pytest.mark.timeout(240)
PROTO = {"Accept": "application/protobuf"}


@pytest.fixture
def tempo(tmp_path: Path) -> Iterator[PitwallPeer]:
    peer = PitwallPeer(tmp_path / "remote")
    yield peer
    peer.stop()


def _server(tmp_path: Path, tempo: PitwallPeer, **extra: Any) -> LiveServer:
    s = load_settings(data_dir=tmp_path / "pw", listen="127.0.0.1:0", storage={"fsync": False},
                      kube={"enabled": False},
                      backends={"traces": {"type": "otlp+tempo", "otlp_url": tempo.url + "/v1/traces",
                                           "query_url": tempo.url, "timeout": "5s"}}, **extra)
    srv = LiveServer(s)
    srv.start()
    return srv


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"backends\.traces\.otlp_url"):
        load_settings(backends={"traces": {"query_url": "http://t:3200"}})
    with pytest.raises(ConfigError, match=r"backends\.traces\.query_url"):
        load_settings(backends={"traces": {"otlp_url": "http://t:4318/v1/traces", "query_url": "t:3200"}})
    with pytest.raises(ConfigError, match=r"backends\.traces\.type"):
        load_settings(backends={"traces": {"type": "jaeger", "otlp_url": "http://t/v1/traces",
                                           "query_url": "http://t"}})


def test_export_encoding_carries_every_span() -> None:
    n = 3
    cols: dict[str, Any] = {f.name: [None] * n for f in SPAN_SCHEMA}
    cols.update(tenant=["default"] * n, trace_id=["ab" * 16] * n, span_id=["0" * 15 + str(i + 1) for i in range(n)],
                parent_id=["", "0" * 15 + "1", "0" * 15 + "1"], service=["api", "db", "db"],
                name=["GET /", "SELECT", "SELECT"], kind=[2, 3, 3], start_ns=[10, 20, 30], duration_ns=[100, 5, 6],
                status_code=[0, 2, 0], status_message=["", "boom", ""], remote_service=["", "", ""],
                flags=[0, 0, 0], attributes=['{"http.method":"GET"}', "{}", "{}"],
                resource=['{"service.name":"api"}', '{"service.name":"db"}', '{"service.name":"db"}'],
                scope=["{}", "{}", "{}"], events=["[]", "[]", "[]"], links=["[]", "[]", "[]"])
    table = pa.Table.from_pydict({k: v for k, v in cols.items()},
                                 schema=pa.schema([f for f in SPAN_SCHEMA]))
    body, count = encode_export([table.slice(0, 1), table.slice(1)])
    doc = TracesData()
    doc.ParseFromString(body)
    spans = [(rs.resource.attributes[0].value.string_value, s.name, s.status.message)
             for rs in doc.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert count == 3 and sorted(spans) == [("api", "GET /", ""), ("db", "SELECT", ""), ("db", "SELECT", "boom")]


def _trace(trace_id: str, service: str, now_ns: int, n: int = 3) -> dict[str, Any]:
    spans = [{"traceId": trace_id, "spanId": f"{i + 1:016x}", "name": f"op{i}", "kind": 2,
              **({"parentSpanId": "0000000000000001"} if i else {}),
              "startTimeUnixNano": str(now_ns - 10**9 + i * 1000), "endTimeUnixNano": str(now_ns - 10**8 + i),
              "attributes": [{"key": "http.route", "value": {"stringValue": f"/r{i}"}}]} for i in range(n)]
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {
        "stringValue": service}}]}, "scopeSpans": [{"scope": {"name": "t"}, "spans": spans}]}]}


def _post(url: str, doc: dict[str, Any]) -> None:
    r = httpx.post(url + "/v1/traces", json=doc, timeout=30)
    assert r.status_code == 200, r.text


def _answer(r: httpx.Response) -> Any:
    """A Tempo answer without its per-run search metrics (bytes inspected, timings), its traces by id."""
    if "json" not in r.headers.get("content-type", ""):
        return r.content
    body = r.json()
    if not isinstance(body, dict):
        return body
    out = {k: v for k, v in body.items() if k != "metrics"}
    if isinstance(out.get("traces"), list):  # traces starting at the same instant come in no fixed order
        out["traces"] = sorted(out["traces"], key=lambda t: str(t.get("traceID")))
    return out


@pytest.mark.slow
def test_spans_reach_the_remote_and_tempo_reads_answer_as_the_remote(tmp_path: Path, tempo: PitwallPeer) -> None:
    srv = _server(tmp_path, tempo)
    try:
        now = time.time_ns()
        ids = [os.urandom(16).hex() for _ in range(3)]
        for i, tid in enumerate(ids):
            _post(srv.url, _trace(tid, "checkout" if i % 2 else "cart", now))
        for tid in ids:
            wait_for(lambda tid=tid: tempo.get(f"/api/v2/traces/{tid}").status_code == 200)
        # Zipkin's receiver feeds the same WAL the queue reads.
        zid = os.urandom(16).hex()
        z = [{"traceId": zid, "id": "00000000000000aa", "name": "zget", "timestamp": now // 1000 - 5000,
              "duration": 1200, "localEndpoint": {"serviceName": "zsvc"}}]
        assert httpx.post(srv.url + "/api/v2/spans", json=z).status_code == 202
        wait_for(lambda: tempo.get(f"/api/v2/traces/{zid}").status_code == 200)
        rng = {"start": str(now // 10**9 - 60), "end": str(now // 10**9 + 5)}
        cases: list[tuple[str, dict[str, str], dict[str, str]]] = [
            (f"/api/v2/traces/{ids[0]}", {}, {}),
            (f"/api/v2/traces/{ids[1]}", {}, PROTO),
            (f"/api/traces/{ids[2]}", {}, PROTO),
            ("/api/search", {**rng, "q": '{ resource.service.name = "checkout" }'}, {}),
            ("/api/search", {**rng, "tags": "service.name=cart"}, {}),
            ("/api/search/tags", rng, {}),
            ("/api/v2/search/tags", rng, {}),
            ("/api/search/tag/service.name/values", rng, {}),
            ("/api/v2/search/tag/resource.service.name/values", rng, {}),
        ]
        for path, params, headers in cases:
            via = httpx.get(srv.url + path, params=params, headers=headers, timeout=30)
            direct = httpx.get(tempo.url + path, params=params, headers=headers, timeout=30)
            assert via.status_code == direct.status_code == 200, (path, via.text)
            assert _answer(via) == _answer(direct), path
            assert _answer(via), path
        # A trace only the engine has: Tempo's API through pitwall finds it; Jaeger's reads the local copy.
        only = os.urandom(16).hex()
        _post(tempo.url, _trace(only, "engine-only", now))
        got = httpx.get(srv.url + f"/api/v2/traces/{only}").json()
        assert got["trace"]["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"] == "engine-only"
        assert httpx.get(srv.url + f"/api/traces/{only}").status_code == 404
        assert httpx.get(srv.url + f"/api/traces/{ids[0]}").json()["data"][0]["traceID"] == ids[0]
    finally:
        srv.stop()


@pytest.mark.slow
def test_remote_down_under_load_loses_nothing_acknowledged(tmp_path: Path, tempo: PitwallPeer) -> None:
    srv = _server(tmp_path, tempo, traces={"head_max_spans": 50})
    acked: list[str] = []
    stop = threading.Event()
    now = time.time_ns()

    def load() -> None:
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                tid = os.urandom(16).hex()
                try:
                    if c.post(srv.url + "/v1/traces", json=_trace(tid, "load", now, 2)).status_code == 200:
                        acked.append(tid)
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)

    writer = threading.Thread(target=load)
    writer.start()
    try:
        wait_for(lambda: len(acked) > 10)
        tempo.stop()
        r = httpx.get(srv.url + f"/api/v2/traces/{acked[0]}")
        assert r.status_code == 503 and "traces backend otlp+tempo at http://127.0.0.1:" in r.text
        ready = wait_for(lambda: (x := httpx.get(srv.url + "/-/ready")).status_code == 503 and x.text)
        assert "traces backend otlp+tempo" in ready
        n_before = len(acked)
        time.sleep(12)  # the engine is down 12+ s while exports go on
        assert len(acked) > n_before + 30
        tempo.start()
    finally:
        stop.set()
        writer.join()

    left = set(acked)

    def all_there() -> bool | None:
        with httpx.Client(timeout=30) as c:
            left.difference_update([t for t in list(left) if c.get(f"{tempo.url}/api/v2/traces/{t}").status_code
                                    == 200])
        return not left or None

    try:
        wait_for(all_there, timeout=90)
        wait_for(lambda: httpx.get(srv.url + "/-/ready").status_code == 200)
    finally:
        srv.stop()
