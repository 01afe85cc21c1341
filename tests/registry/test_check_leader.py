"""Servers sharing the state store are one Consul agent: only the election's leader runs the checks (one probe
per interval), and a TTL update taken by any server keeps the check alive on the leader's runner."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitwall.registry.agent import TTL_BEATS, AgentServices, CheckRunner
from pitwall.storage.revstore.sqlite import SqliteRevStore

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def probed() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that counts the probes it answers."""
    hits: list[str] = []

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/health", hits
    finally:
        srv.shutdown()
        srv.server_close()


async def test_only_the_leader_probes_and_ttl_beats_reach_it(tmp_path: Path, probed: tuple[str, list[str]]) -> None:
    url, hits = probed
    store = SqliteRevStore(tmp_path / "state.db", compact_interval_s=None)
    await store.start()
    try:
        a, b = AgentServices(store, "node-a"), AgentServices(store, "node-b")  # two servers, one agent
        lead = {"a": True}
        run_a = CheckRunner(a, leading=lambda: lead["a"])
        run_b = CheckRunner(b, leading=lambda: not lead["a"])
        await a.register({"Name": "web", "ID": "web-1", "Check": {"HTTP": url, "Interval": "10s"}})
        await b.register({"Name": "job", "ID": "job-1", "Check": {"TTL": "2s"}})
        for _ in range(3):
            await run_a.pass_once()
            await run_b.pass_once()
        await asyncio.sleep(0.3)
        assert hits == ["/health"]  # one probe in the interval, by the leader
        assert (await a.check("service:web-1")).status == "passing"  # type: ignore[union-attr]

        # the TTL check is updated through the follower now and then: the leader never expires it
        for _ in range(4):
            await b.set_status("service:job-1", "passing", "ok", ttl_only=True)
            await asyncio.sleep(0.8)
            await run_a.pass_once()
            assert (await a.check("service:job-1")).status == "passing"  # type: ignore[union-attr]
        # no update for longer than the TTL: critical, written once by the leader
        await asyncio.sleep(2.2)
        await run_b.pass_once()
        assert (await a.check("service:job-1")).status == "passing"  # type: ignore[union-attr]
        await run_a.pass_once()
        c = await a.check("service:job-1")
        assert c is not None and (c.status, c.output) == ("critical", "TTL expired")

        # the lead moves: b runs the checks from the store's state
        lead["a"] = False
        hits.clear()
        await run_a.pass_once()
        await run_b.pass_once()
        await asyncio.sleep(0.3)
        assert hits == ["/health"]
        # a deregistered service leaves no heartbeat behind
        await a.deregister("job-1")
        assert (await store.range(TTL_BEATS)).kvs == []
    finally:
        await run_a.stop()
        await run_b.stop()
        await store.stop()
