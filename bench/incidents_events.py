"""Incidents: Events API v2 intake and the REST reads an on-call engineer makes, on a real `pitwall server`.

    PYTHONPATH=src .venv/bin/python bench/incidents_events.py [--n 1000] [--concurrency 16]

Starts `pitwall server` (SQLite state store, fsync on) with one service, a
weekly schedule and a two-level policy, then measures: new-incident triggers
(unique dedup keys: events/s, p50/p99), deduplicated triggers (one key),
acknowledge+resolve by dedup key, listing all incidents with pagination
(`GET /pagerduty/incidents`, 100 per page), `GET /pagerduty/oncalls`, and
triggers under alert grouping: time-based (all join one incident) and
content-based with no match (each opens an incident, so the open set grows).
PagerDuty is a hosted service with no local peer to run beside it, so the
figures stand alone. Not part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx
from common import INCIDENTS_KEY, incidents_config, pitwall_with_config


async def _run(n: int, conc: int, make: Callable[[int], Awaitable[None]]) -> tuple[float, list[float]]:
    lat: list[float] = []
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            t = time.perf_counter()
            await make(i)
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return n / (time.perf_counter() - t0), sorted(lat)


def _show(name: str, rate: float, lat: list[float]) -> None:
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"{name:<34} {rate:9.0f}/s   p50 {statistics.median(lat) * 1000:7.1f} ms   p99 {p99 * 1000:7.1f} ms")


async def bench(url: str, n: int, conc: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        async def send(action: str, key: str) -> None:
            body: dict[str, object] = {"routing_key": INCIDENTS_KEY, "event_action": action, "dedup_key": key}
            if action == "trigger":
                body["payload"] = {"summary": f"alert {key}", "source": "bench", "severity": "critical"}
            r = await c.post("/v2/enqueue", json=body)
            assert r.status_code == 202, r.text

        _show("trigger (new incident)", *await _run(n, conc, lambda i: send("trigger", f"k{i}")))
        _show("trigger (deduplicated)", *await _run(n, conc, lambda i: send("trigger", "k0")))
        _show("acknowledge", *await _run(n, conc, lambda i: send("acknowledge", f"k{i}")))
        _show("resolve", *await _run(n, conc, lambda i: send("resolve", f"k{i}")))

        async def list_all(_: int) -> None:
            offset = 0
            while True:
                body = (await c.get("/pagerduty/incidents", params={"limit": 100, "offset": offset})).json()
                if not body["more"]:
                    return
                offset += 100

        _show(f"list {n} incidents (pages of 100)", *await _run(5, 1, list_all))

        async def oncalls(_: int) -> None:
            r = await c.get("/pagerduty/oncalls")
            assert r.status_code == 200

        _show("GET /oncalls", *await _run(200, 4, oncalls))

        # Alert grouping: every trigger first looks through the service's open incidents.
        sid = (await c.get("/pagerduty/services")).json()["services"][0]["id"]

        async def grouping(params: dict[str, object]) -> None:
            r = await c.put(f"/pagerduty/services/{sid}", json={"service": {"alert_grouping_parameters": params}})
            assert r.status_code == 200, r.text

        await grouping({"type": "time", "config": {"timeout": 0}})
        _show("trigger (time-grouped, 1 incident)", *await _run(n, conc, lambda i: send("trigger", f"g{i}")))
        await send("resolve", "g0")  # its first alert only: resolve the rest so nothing stays open
        await _run(n, conc, lambda i: send("resolve", f"g{i}"))
        await grouping({"type": "content_based", "config": {"aggregate": "all", "fields": ["summary"]}})
        _show(f"trigger (content, no match, 0-{n} open)", *await _run(n, conc, lambda i: send("trigger", f"c{i}")))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    with pitwall_with_config({"incidents": incidents_config()}) as url:
        print(f"pitwall incidents, {args.n} events per row, concurrency {args.concurrency}")
        asyncio.run(bench(url, args.n, args.concurrency))


if __name__ == "__main__":
    main()
