"""Logs Drilldown bench: Drain patterns and detected fields over the line counts the endpoints read.

Times the work behind ``/loki/api/v1/patterns`` (Drain over the newest
lines, default 20,000 capped by max_entries_limit_per_query) and
``/detected_fields`` (1,000 lines by default) on a synthetic mix of
plain-text, logfmt and JSON lines, in process (no HTTP, no store reads).

    .venv/bin/python bench/logs_drilldown.py [--lines 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
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


if __name__ == "__main__":
    main()
