"""``pitwall server`` with a gateway: curl through it, reloads (file, /-/reload, Kong's admin /config), PromQL."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port, start_pitwall_process, wait_ready

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


class _Echo(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def upstream() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


def _kong(port: int, path: str, minute: int = 2) -> dict[str, Any]:
    return {"_format_version": "3.0",
            "consumers": [{"username": "alice", "keyauth_credentials": [{"key": "alice-key"}]}],
            "services": [{"name": "echo", "url": f"http://127.0.0.1:{port}", "routes": [
                {"name": "api", "paths": [path]}],
                "plugins": [{"name": "key-auth"}, {"name": "rate-limiting", "config": {"minute": minute}},
                            {"name": "prometheus", "config": {"per_consumer": True, "status_code_metrics": True}}]}]}


def _curl(url: str, *args: str) -> tuple[int, str]:
    out = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", *args, url], capture_output=True,
                         text=True, timeout=20, check=True).stdout
    body, _, code = out.rpartition("\n")
    return int(code), body


def _eventually(check: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_gateway_in_pitwall_server(tmp_path: Path, upstream: int) -> None:
    kong = tmp_path / "kong.yaml"
    kong.write_text(yaml.safe_dump(_kong(upstream, "/api")))
    gw_port, api_port = free_port(), free_port()
    cfg = tmp_path / "pitwall.yaml"
    cfg.write_text(yaml.safe_dump({"gateway": {"listen": f"127.0.0.1:{gw_port}", "declarative_config": str(kong)},
                                   "kube": {"enabled": False}, "storage": {"fsync": False}}))
    data = tmp_path / "data"
    data.mkdir()
    proc = start_pitwall_process(data, api_port, config=cfg)
    gw, api = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{api_port}"
    try:
        wait_ready(api, proc=proc)
        assert _curl(gw + "/api/x") == (401, '{"message":"No API key found in request"}')
        code, body = _curl(gw + "/api/x", "-H", "apikey: alice-key")
        assert code == 200 and json.loads(body)["path"] == "/x"
        assert json.loads(body)["headers"]["x-consumer-username"] == "alice"
        assert _curl(gw + "/api/x", "-H", "apikey: alice-key")[0] == 200
        assert _curl(gw + "/api/x", "-H", "apikey: alice-key") == (429, '{"message":"API rate limit exceeded"}')

        # The file changes: picked up without a request.
        kong.write_text(yaml.safe_dump(_kong(upstream, "/v2", minute=100)))
        _eventually(lambda: _assert_eq(_curl(gw + "/v2/y", "-H", "apikey: alice-key")[0], 200))
        assert _curl(gw + "/v2/y")[0] == 401
        assert _curl(gw + "/api/x", "-H", "apikey: alice-key")[0] == 404

        # An invalid file is refused whole, with its field path; the previous config stays in force.
        broken = _kong(upstream, "v3")
        kong.write_text(yaml.safe_dump(broken))
        r = httpx.post(api + "/-/reload", timeout=10)
        assert r.status_code == 500 and "services[0].routes[0].paths[0]: should start with" in r.text
        assert _curl(gw + "/v2/y", "-H", "apikey: alice-key")[0] == 200

        # Kong's admin POST /config replaces the configuration; a bad one is a 400 with the fields.
        # (The service and its plugin keep their ids, so alice's counts carry over, as in Kong.)
        r = httpx.post(api + "/kong-admin/config", json=_kong(upstream, "/admin", minute=100), timeout=10)
        assert r.status_code == 201 and r.json()["services"][0]["routes"][0]["paths"] == ["/admin"]
        assert _curl(gw + "/admin/z", "-H", "apikey: alice-key")[0] == 200
        form = tmp_path / "form.yaml"
        form.write_text(yaml.safe_dump(_kong(upstream, "/form", minute=100)))
        code, body = _curl(api + "/kong-admin/config", "-X", "POST", "-F", f"config=@{form}")
        assert code == 201 and json.loads(body)["services"][0]["routes"][0]["paths"] == ["/form"]
        assert _curl(gw + "/form/z", "-H", "apikey: alice-key")[0] == 200
        assert "/form" in httpx.get(api + "/kong-admin/config", timeout=10).json()["config"]
        r = httpx.post(api + "/kong-admin/config", json={"_format_version": "3.0", "plugins": [{"name": "x"}]},
                       timeout=10)
        assert r.status_code == 400 and r.json()["name"] == "invalid declarative configuration"
        assert r.json()["fields"] == ["plugins[0].name: plugin 'x' not enabled; add it to the 'plugins' "
                                      "configuration property"]
        assert _curl(gw + "/form/z", "-H", "apikey: alice-key")[0] == 200

        # Per-consumer analytics are PromQL series (flushed every 10 s).
        def series() -> None:
            q = httpx.get(api + "/api/v1/query", params={
                "query": 'sum by (code) (kong_http_requests_total{consumer="alice",service="echo"})'}, timeout=10)
            got = {s["metric"]["code"]: float(s["value"][1]) for s in q.json()["data"]["result"]}
            assert got.get("429") == 1 and (got.get("200") or 0) >= 4, got

        _eventually(series, timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _assert_eq(a: Any, b: Any) -> None:
    assert a == b
