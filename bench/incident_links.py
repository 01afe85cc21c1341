"""Incidents: the acknowledge/resolve links of pages, on a real `pitwall server`.

    PYTHONPATH=src .venv/bin/python bench/incident_links.py [--n 300] [--concurrency 8]

Measures signing and verifying one link token in process, then starts
`pitwall server` (SQLite state store, fsync on) whose users are paged through a
webhook to a local sink, triggers ``n`` incidents, takes the acknowledge and
resolve links out of the delivered pages and measures: opening a link (GET,
the confirmation page), clicking acknowledge (POST, one state-store write),
clicking it again (already acknowledged: no write), clicking resolve; and,
beside them, acknowledging ``n`` other incidents through the REST API
(`PUT /pagerduty/incidents/{id}`), the path a link replaces. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import threading
import time
import timeit
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from common import INCIDENTS_KEY, free_port, incidents_config, pitwall_with_config
from incidents_events import _run, _show

from pitwall.incidents.links import LinkClaims, sign, verify

_FORM_TOKEN = re.compile(r'name="token" value="([^"]+)"')


class Sink:
    """Collects the alerts webhook pages deliver."""

    def __init__(self) -> None:
        self.alerts: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                owner.alerts += body["alerts"]
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


async def _each(items: list[Any], conc: int, make: Callable[[Any], Awaitable[None]]) -> tuple[float, list[float]]:
    return await _run(len(items), conc, lambda i: make(items[i]))


def tokens() -> None:
    key, c = b"k" * 32, LinkClaims("Q0000001", "PALICE1", "acknowledge", 2_000_000_000, "email", "PAMAIL")
    token = sign(key, c)
    n = 20_000
    s = timeit.timeit(lambda: sign(key, c), number=n) / n
    v = timeit.timeit(lambda: verify(key, token, "acknowledge", 1_000), number=n) / n
    print(f"token: {len(token)} characters, sign {s * 1e6:.1f} µs, verify {v * 1e6:.1f} µs")


async def bench(url: str, sink: Sink, n: int, conc: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        async def trigger(i: int) -> None:
            r = await c.post("/v2/enqueue", json={"routing_key": INCIDENTS_KEY, "event_action": "trigger",
                                                  "dedup_key": f"k{i}", "payload": {
                                                      "summary": f"alert {i}", "source": "bench",
                                                      "severity": "critical"}})
            assert r.status_code == 202, r.text

        await _run(2 * n, conc, trigger)
        deadline = time.monotonic() + 120
        while len(sink.alerts) < 2 * n and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        by_incident = {a["labels"]["incident_id"]: a["annotations"] for a in sink.alerts}
        ids = sorted(by_incident)
        linked, rest = ids[:n], ids[n:2 * n]
        tok: dict[str, str] = {}

        async def open_link(i: str) -> None:
            r = await c.get(by_incident[i]["acknowledge_url"])
            assert r.status_code == 200, r.text
            m = _FORM_TOKEN.search(r.text)
            assert m is not None
            tok[i] = m.group(1)

        async def click(i: str, action: str, expect: str) -> None:
            r = await c.post(f"/incident-actions/{action}", data={"token": tok[i] if action == "acknowledge"
                                                                     else resolve_tok[i]})
            assert r.status_code == 200 and expect in r.text, r.text

        resolve_tok = {i: by_incident[i]["resolve_url"].split("token=", 1)[1] for i in linked}
        _show("GET link page", *await _each(linked, conc, open_link))
        _show("POST acknowledge (acts)", *await _each(linked, conc, lambda i: click(i, "acknowledge", "by ")))
        _show("POST acknowledge again (no write)", *await _each(linked, conc,
                                                               lambda i: click(i, "acknowledge", "already")))
        _show("POST resolve (acts)", *await _each(linked, conc, lambda i: click(i, "resolve", "by ")))

        async def rest_ack(i: str) -> None:
            r = await c.put(f"/pagerduty/incidents/{i}", headers={"From": "alice@example.com"},
                            json={"incident": {"type": "incident_reference", "status": "acknowledged"}})
            assert r.status_code == 200, r.text

        _show("REST PUT status=acknowledged", *await _each(rest, conc, rest_ack))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    tokens()
    sink = Sink()
    cfg = incidents_config()
    for u in cfg["users"]:
        u["contact_methods"] = [{"type": "webhook", "address": f"http://127.0.0.1:{sink.port}/page"}]
    port = free_port()
    cfg["external_url"] = f"http://127.0.0.1:{port}"
    try:
        with pitwall_with_config({"incidents": cfg}, port=port) as url:
            print(f"pitwall incident links, {args.n} incidents per row, concurrency {args.concurrency}")
            asyncio.run(bench(url, sink, args.n, args.concurrency))
    finally:
        sink.server.shutdown()


if __name__ == "__main__":
    main()
