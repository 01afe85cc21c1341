"""Logs Drilldown bench: Drain patterns and detected fields over the line counts the endpoints read.

Times the work behind ``/loki/api/v1/patterns`` (Drain over the newest
lines, default 20,000 capped by max_entries_limit_per_query) and
``/detected_fields`` (1,000 lines by default) on a synthetic mix of
plain-text, logfmt and JSON lines, in process (no HTTP, no store reads).

With ``--http`` it also pushes the lines into an in-process server (temporary
data dir, ASGI transport) and times the four endpoints end to end.

    .venv/bin/python bench/logs_drilldown.py [--lines 20000] [--runs 5] [--http]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from typing import Any

import httpx

from pitwall.logs.drain import patterns
from pitwall.logs.logql.detected import detect_fields


def _lines(n: int, seed: int = 7) -> list[tuple[str, str]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        k = i % 3
        if k == 0:
            out.append(("info", f"GET /api/items/{rnd.randint(1, 9999)} {rnd.choice([200, 200, 404])} "
                                f"{rnd.randint(1, 900)}ms from 10.0.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"))
        elif k == 1:
            out.append(("error", f'level=error ts=2026-12-05T22:{i % 60:02d}:00Z msg="db timeout" '
                                 f"attempt={rnd.randint(1, 5)} user={rnd.randint(1, 500)}"))
        else:
            out.append(("info", json.dumps({"msg": f"order {rnd.randint(1, 10**6)} shipped to {rnd.choice('ABC')}",
                                            "level": "info", "took": f"{rnd.randint(1, 90)}ms",
                                            "req": {"size": f"{rnd.randint(1, 99)}KB"}})))
    return out


def _time(fn: Any, runs: int) -> float:
    xs = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t)
    return statistics.median(xs)


async def _http(lines: list[tuple[str, str]], runs: int) -> None:
    from pitwall.config import load_settings
    from pitwall.server import create_app

    with tempfile.TemporaryDirectory() as d:
        app = create_app(load_settings(data_dir=f"{d}/data", listen="127.0.0.1:0", storage={"fsync": False}))
        t0 = (time.time_ns() // 10**9 - 1800) * 10**9
        values = [[str(t0 + i * 50_000_000), line] for i, (_, line) in enumerate(lines)]
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://localhost",
                                                                       timeout=120) as c:
            for i in range(0, len(values), 5000):
                r = await c.post("/loki/api/v1/push", json={"streams": [{"stream": {"app": "shop"},
                                                                         "values": values[i:i + 5000]}]})
                r.raise_for_status()
            window = {"query": '{app="shop"}', "start": str(t0 - 10**9), "end": str(t0 + 3600 * 10**9)}
            for path, extra in (("detected_labels", {}), ("detected_fields", {}),
                                ("detected_field/level/values", {}), ("patterns", {"step": "60s"})):
                xs = []
                for _ in range(runs):
                    t = time.perf_counter()
                    (await c.get(f"/loki/api/v1/{path}", params={**window, **extra})).raise_for_status()
                    xs.append(time.perf_counter() - t)
                print(f"GET /loki/api/v1/{path}: {statistics.median(xs) * 1000:.0f} ms (median of {runs})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--http", action="store_true")
    a = ap.parse_args()
    lines = _lines(a.lines)
    entries = [(("app", "shop"), lvl, line, 1_800_000_000_000 + i * 100) for i, (lvl, line) in enumerate(lines)]
    t_pat = _time(lambda: patterns(entries, 60_000, limit=1000), a.runs)
    got = patterns(entries, 60_000, limit=1000)
    streams = [{"stream": {"app": "shop"},
                "values": [[str(i), line, {"structuredMetadata": {"detected_level": lvl}}]
                           for i, (lvl, line) in enumerate(lines[:1000])]}]
    t_fields = _time(lambda: detect_fields(streams, 1000), a.runs)
    print(f"patterns: {a.lines} lines in {t_pat * 1000:.0f} ms ({a.lines / t_pat:,.0f} lines/s), "
          f"{len(got)} patterns")
    print(f"detected_fields: 1000 lines in {t_fields * 1000:.1f} ms, {len(detect_fields(streams, 1000))} fields")
    if a.http:
        asyncio.run(_http(lines, a.runs))


if __name__ == "__main__":
    main()
