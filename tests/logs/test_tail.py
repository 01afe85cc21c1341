"""Live tail over Loki's websocket (``/loki/api/v1/tail?query=...``, as Grafana's RunStream connects)."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlencode

import httpx
import websockets

from tests.conftest import LiveServer
from tests.logs.conftest import push_body


async def _recv_lines(ws: websockets.ClientConnection, want: int, timeout: float = 20) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while len(lines) < want and time.monotonic() < deadline:
        msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=max(0.1, deadline - time.monotonic())))
        assert set(msg) == {"streams", "dropped_entries"}
        lines.extend(v[1] for s in msg["streams"] for v in s["values"])
    return lines


async def test_tail_backfill_then_live_entries_through_the_pipeline(live_server: LiveServer) -> None:
    t = time.time_ns()
    async with httpx.AsyncClient(base_url=live_server.url) as c:
        r = await c.post("/loki/api/v1/push", json=push_body({(("app", "t"),): [[t - 10**9, "old error"],
                                                                                [t - 10**9 + 1, "old ok"]]}))
        assert r.status_code == 204
        url = live_server.url.replace("http", "ws") + "/loki/api/v1/tail?" + urlencode({"query": '{app="t"} |= "error"'})
        async with websockets.connect(url) as ws:
            assert await _recv_lines(ws, 1) == ["old error"]
            for i in range(3):
                body = push_body({(("app", "t"),): [[time.time_ns(), f"new error {i}"], [time.time_ns(), "quiet"]],
                                  (("app", "other"),): [[time.time_ns(), "other error"]]})
                assert (await c.post("/loki/api/v1/push", json=body)).status_code == 204
            assert await _recv_lines(ws, 3) == ["new error 0", "new error 1", "new error 2"]


async def test_tail_rejects_a_bad_query_with_a_close_reason(live_server: LiveServer) -> None:
    url = live_server.url.replace("http", "ws") + "/loki/api/v1/tail?" + urlencode({"query": "{app="})
    async with websockets.connect(url) as ws:
        try:
            await asyncio.wait_for(ws.recv(), 10)
            raise AssertionError("expected the server to close the socket")
        except websockets.ConnectionClosed as e:
            assert e.rcvd is not None and e.rcvd.code == 1011
            assert "parse error" in e.rcvd.reason
