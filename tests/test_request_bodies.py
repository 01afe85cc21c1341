"""Request bodies on every endpoint that takes one: limits while streaming, the in-flight budget, work off the loop.

In process: each body endpoint refuses a declared or streamed body over
``max_request_bytes`` (413) and answers 429 with Retry-After when the
in-flight budget is taken. Against the real server in a subprocess (slow):
a 600 MB chunked body is refused without the server's memory growing by it,
concurrent large pushes over a small budget get 429 while every acknowledged
one is stored, and health probes are answered while a large push is parsed.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import select
import socket
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import cramjam
import httpx
import pytest
import yaml

from pitwall.core.limits import InflightBudget
from tests.conftest import free_port, start_pitwall_process, wait_ready

_NOW_US = int(time.time() * 1_000_000)
_ZIPKIN = json.dumps([{"traceId": "1" * 32, "id": "1" * 16, "name": "get", "timestamp": _NOW_US,
                       "duration": 5, "localEndpoint": {"serviceName": "svc"}}]).encode()
_LOKI = json.dumps({"streams": [{"stream": {"app": "b"}, "values": [[str(time.time_ns()), "x"]]}]}).encode()
_ALERTS = json.dumps([{"labels": {"alertname": "A"}}]).encode()

# (path, content type, a valid small body)
ENDPOINTS = [
    ("/loki/api/v1/push", "application/json", _LOKI),
    ("/api/v1/write", "application/x-protobuf", bytes(cramjam.snappy.compress_raw(b""))),
    ("/v1/metrics", "application/json", b"{}"),
    ("/v1/logs", "application/json", b"{}"),
    ("/v1/traces", "application/json", b"{}"),
    ("/api/v2/spans", "application/json", _ZIPKIN),
    ("/_bulk", "application/x-ndjson", b'{"index":{"_index":"i"}}\n{"m":1}\n'),
    ("/api/v2/alerts", "application/json", _ALERTS),
    ("/api/v2/silences", "application/json", b"{}"),
]


def _id(v: object) -> str | None:
    """Bodies hold the time: ids must be the same in every pytest-xdist worker's collection."""
    return "body" if isinstance(v, bytes) else None


@pytest.mark.parametrize(("path", "ctype", "body"), ENDPOINTS, ids=_id)
async def test_each_body_endpoint_refuses_large_bodies_and_backs_off(
        client: httpx.AsyncClient, path: str, ctype: str, body: bytes) -> None:
    limit = 1 << 20  # max_request_bytes of the test settings
    r = await client.post(path, content=b" " * (limit + 1), headers={"Content-Type": ctype})
    assert r.status_code == 413, r.text
    assert "exceeds the limit of 1048576 bytes" in r.text

    async def stream() -> AsyncIterator[bytes]:  # chunked: no Content-Length to refuse up front
        for _ in range(64):
            yield b" " * (64 << 10)

    r = await client.post(path, content=stream(), headers={"Content-Type": ctype})
    assert r.status_code == 413, r.text

    budget: InflightBudget = client.app.state.components.inflight  # type: ignore[attr-defined]
    budget.used = budget.max_bytes  # as if other requests held the whole budget
    try:
        r = await client.post(path, content=body, headers={"Content-Type": ctype})
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "1"
    finally:
        budget.used = 0
    r = await client.post(path, content=body, headers={"Content-Type": ctype})
    assert r.status_code < 300 or path == "/api/v2/silences", r.text  # {} is no valid silence
    assert budget.used == 0


@pytest.mark.parametrize(("path", "ctype", "body"), [e for e in ENDPOINTS if e[0] != "/api/v1/write"], ids=_id)
@pytest.mark.parametrize("deep", [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000])
async def test_deeply_nested_json_is_a_400_everywhere(client: httpx.AsyncClient, path: str, ctype: str, body: bytes,
                                                      deep: bytes) -> None:
    r = await client.post(path, content=deep, headers={"Content-Type": ctype})
    assert r.status_code == 400, r.text


# -- the real server -----------------------------------------------------------------------------------------------


class _Server:
    def __init__(self, tmp: Path, settings: dict[str, object]) -> None:
        cfg = tmp / "pitwall.yaml"
        cfg.write_text(yaml.safe_dump({"storage": {"fsync": False}, **settings}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (tmp / "data").mkdir()
        self.proc = start_pitwall_process(tmp / "data", self.port, config=cfg)
        wait_ready(self.url, 60, self.proc)

    def rss_mb(self, key: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
        raise AssertionError(key)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[_Server]:
    srv = _Server(tmp_path, getattr(request, "param", {}))
    yield srv
    srv.stop()


def _status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def _chunked_post(port: int, path: str, chunks: Iterable[bytes], ctype: str) -> tuple[int, int]:
    """POST a chunked body as curl does: stop sending once the server has answered. Returns (status, bytes sent)."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ctype}\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n".encode())
        sent = 0
        for c in chunks:
            if select.select([s], [], [], 0)[0]:
                break
            s.sendall(b"%x\r\n%s\r\n" % (len(c), c))
            sent += len(c)
        else:
            s.sendall(b"0\r\n\r\n")
        return _status(s.recv(65536)), sent


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", ["/api/v2/alerts", "/api/v2/silences"])
def test_a_600mb_chunked_body_is_refused_without_holding_it(server: _Server, path: str) -> None:
    before = server.rss_mb()

    def body() -> Iterator[bytes]:
        yield b"["
        for _ in range(600):
            yield b" " * (1 << 20)

    status, sent = _chunked_post(server.port, path, body(), "application/json")
    assert status == 413
    assert sent < 100 << 20  # refused at max_request_bytes (32 MiB), not after 600 MB
    assert server.rss_mb("VmHWM") - before < 200
    assert httpx.get(server.url + "/api/v2/alerts").json() == []


def _loki_body(n: int, labels: dict[str, str], t0: int, line: str = "line {} of a push") -> bytes:
    values = ",".join(f'["{t0 + i}","{line.format(i)}"]' for i in range(n))
    return ('{"streams":[{"stream":' + json.dumps(labels) + ',"values":[' + values + "]}]}").encode()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("server", [{"limits": {"max_inflight_bytes": 64 << 20},
                                     "logs": {"limits": {"ingestion_rate_mb": 10_000,
                                                         "ingestion_burst_size_mb": 10_000}}}], indirect=True)
def test_concurrent_large_pushes_over_a_small_budget_get_429(server: _Server) -> None:
    n = 700_000  # 26 MB of JSON per push
    t0 = time.time_ns() - 3_600 * 10**9
    template = _loki_body(n, {"job": "push-00"}, t0)
    assert 24 << 20 < len(template) < 32 << 20
    before = server.rss_mb()

    def push(k: int) -> tuple[int, str | None]:
        body = template.replace(b'"push-00"', b'"push-%02d"' % k)
        r = httpx.post(server.url + "/loki/api/v1/push", content=body, headers={"Content-Type": "application/json"},
                       timeout=240)
        assert r.status_code in (204, 429), r.text
        return r.status_code, r.headers.get("retry-after")

    with concurrent.futures.ThreadPoolExecutor(16) as ex:
        results = list(ex.map(push, range(16)))
    peak = server.rss_mb("VmHWM") - before
    acked = [k for k, (status, _) in enumerate(results) if status == 204]
    refused = [retry for status, retry in results if status == 429]
    assert acked and refused
    assert all(retry == "1" for retry in refused)
    assert peak < 1024, f"RSS grew by {peak} MiB"
    for k in acked:  # every acknowledged push is stored, whole
        r = httpx.get(server.url + "/loki/api/v1/query", timeout=60, params={
            "query": f'count_over_time({{job="push-{k:02d}"}}[3h])', "time": str(time.time_ns())})
        assert r.json()["data"]["result"][0]["value"][1] == str(n)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("server", [{"logs": {"limits": {"max_entries_per_request": 5_000_000,
                                                         "ingestion_rate_mb": 10_000,
                                                         "ingestion_burst_size_mb": 10_000}}}], indirect=True)
def test_health_probes_are_answered_while_a_large_push_is_parsed(server: _Server) -> None:
    n = 3_000_000  # ~100 MB of JSON, 15 MB gzipped: seconds of parsing
    body = gzip.compress(_loki_body(n, {"job": "big"}, time.time_ns() - 3_600 * 10**9, "l{}"), 1)
    answered: list[float] = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=240) as s, \
            httpx.Client(base_url=server.url, timeout=60) as probe:
        s.sendall(f"POST /loki/api/v1/push HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                  f"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        while not select.select([s], [], [], 0)[0]:  # until the push is answered
            t = time.monotonic()
            assert probe.get("/-/healthy").status_code == 200
            answered.append(time.monotonic() - t)
            time.sleep(0.05)
        assert _status(s.recv(65536)) == 204
    # Before, the event loop parsed the push and every probe waited for it: at most one got through.
    # (How long each probe took is left to bench/: on a loaded machine any bound flakes.)
    assert len(answered) >= 5, answered
