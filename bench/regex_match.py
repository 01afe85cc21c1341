"""Regex micro-bench: label matching over many values, relabeling, LogQL regex stages.

Everything runs in-process on synthetic data (no server, a few seconds):

* PromQL-style matchers over 10k label values, one value at a time
  (``Matcher.matches``) and through the series index (``SeriesIndex.select``);
* metric relabeling of 10k label sets with ``replace`` and ``drop`` rules;
* LogQL range queries with line regex filters, ``| regexp``, and label regex
  filters after ``| logfmt`` / ``| json``, over an in-memory querier.

Prints the best of three runs per item; never asserts.

    .venv/bin/python bench/regex_match.py [--lines 200000]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from pitwall.core.labels import Matcher, MatchType
from pitwall.logs.logql import LogQLEngine
from pitwall.logs.memory import InMemoryLogQuerier
from pitwall.logs.model import Direction
from pitwall.metrics.relabel import RelabelConfig, relabel
from pitwall.storage.series_index import SeriesIndex

T0 = 1_700_000_000 * 10**9


def best(fn: Callable[[], object], runs: int = 3) -> float:
    out = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t)
    return out * 1000


def label_values(n: int) -> list[str]:
    rnd = random.Random(1)
    kinds = ["api", "web", "payments", "gateway", "worker", "cron"]
    return [f"{rnd.choice(kinds)}-{i:05d}.{rnd.choice(['eu', 'us'])}-{rnd.randrange(1000)}" for i in range(n)]


def bench_matchers(values: list[str]) -> None:
    idx = SeriesIndex()
    for sid, v in enumerate(values):
        idx.add(sid, (("__name__", "up"), ("pod", v)))
    patterns = ["api-.*", ".*-0012.*", "(api|web)-[0-9]+\\.eu-.*", "payments-00001.eu-1|gateway.*", "(a+)+b"]
    for p in patterns:
        m = Matcher.of(MatchType.REGEX, "pod", p)
        per_value = best(lambda m=m: [m.matches(v) for v in values])
        sel = best(lambda m=m: idx.select([m]))
        print(f"matcher {p!r:34s} {len(values)} values: matches() loop {per_value:7.2f} ms, "
              f"index select {sel:7.2f} ms")


def bench_relabel(values: list[str]) -> None:
    cfgs = [
        RelabelConfig.model_validate({"source_labels": ["pod"], "regex": "([a-z]+)-(\\d+)\\..*",
                                      "target_label": "app", "replacement": "$1"}),
        RelabelConfig.model_validate({"source_labels": ["__name__"], "regex": "go_.*", "action": "drop"}),
    ]
    sets = [{"__name__": "up", "pod": v} for v in values]
    ms = best(lambda: [relabel(s, cfgs) for s in sets])
    print(f"relabel replace+drop over {len(sets)} label sets: {ms:7.2f} ms")


def log_querier(n: int) -> InMemoryLogQuerier:
    rnd = random.Random(2)
    q = InMemoryLogQuerier()
    levels = ["info", "info", "info", "debug", "warn", "error"]
    paths = ["/api/users", "/api/orders", "/static/app.js", "/healthz", "/api/pay"]
    for app, fmt in (("api", "logfmt"), ("web", "json")):
        ts: list[int] = []
        lines: list[str] = []
        for i in range(n // 2):
            lvl, path = rnd.choice(levels), rnd.choice(paths)
            status = rnd.choice([200, 200, 200, 201, 404, 500, 503])
            method = rnd.choice(["GET", "GET", "POST", "DELETE"])
            dur = rnd.randrange(1, 900)
            if fmt == "logfmt":
                line = f'level={lvl} method={method} path={path} status={status} duration_ms={dur} msg="handled"'
            else:
                line = (f'{{"level":"{lvl}","method":"{method}","path":"{path}","status":{status},'
                        f'"duration_ms":{dur}}}')
            ts.append(T0 + i * 3600 * 10**9 // (n // 2))
            lines.append(line)
        q.append_columns((("app", app),), ts, lines)
    q.scan([], 0, 1)  # build the column arrays once
    return q


QUERIES = [
    ("line |~ pushed down", 'sum(count_over_time({app="api"} |~ "status=5[0-9]{2}" [5m]))'),
    ("line |~ or-chain", 'sum(count_over_time({app="api"} |~ "method=POST" or "method=DELETE" [5m]))'),
    ("| regexp", 'sum by (status) (count_over_time({app="api"} | regexp "status=(?P<status>\\\\d+)" [5m]))'),
    ("| logfmt | level=~", 'sum(count_over_time({app="api"} | logfmt | level=~"err.*|warn" [5m]))'),
    ("| json | path=~", 'sum(count_over_time({app="web"} | json | path=~"/api/.*" [5m]))'),
    ("| line_format |~", 'sum(count_over_time({app="api"} | line_format "{{.app}} {{.status}}" |~ "a.i 5.." [5m]))'),
]


def bench_logql(n: int) -> None:
    q = log_querier(n)
    eng = LogQLEngine(max_series=10_000)
    start, end, step = T0, T0 + 3600 * 10**9, 60 * 10**9
    for name, expr in QUERIES:
        ms = best(lambda expr=expr: eng.query_range(q, expr, start, end, step, limit=1000,
                                                    direction=Direction.BACKWARD))
        print(f"logql {name:22s} {n} lines: {ms:8.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--values", type=int, default=10_000)
    ap.add_argument("--lines", type=int, default=200_000)
    args = ap.parse_args()
    values = label_values(args.values)
    bench_matchers(values)
    bench_relabel(values)
    bench_logql(args.lines)


if __name__ == "__main__":
    main()
