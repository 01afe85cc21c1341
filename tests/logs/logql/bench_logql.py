"""LogQL engine benchmark over Loki's reference queries (prints figures; never asserts).

Run: .venv/bin/python tests/logs/logql/bench_logql.py [n_lines]
Loads /work/shared/bench/loki_datagen.py's data into an InMemoryLogQuerier and
runs /work/shared/bench/loki_queries.tsv as range queries over the hour
(step 60s, limit 1000, backward), beside Grafana Loki 3.7's figures.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

from pitwall.logs.logql import LogQLEngine
from pitwall.logs.memory import InMemoryLogQuerier
from pitwall.logs.model import Direction

BENCH = Path("/work/shared/bench")
LOKI_MS = {
    "line_filter_error": 114,
    "regex_filter_5xx": 78,
    "json_label_filter": 361,
    "count_over_time_by_app": 775,
    "rate_sum_by_env": 3500,
    "json_count_by_level": 418,
    "quantile_latency_unwrap": 628,
}


def load(n_lines: int) -> tuple[InMemoryLogQuerier, int]:
    spec = importlib.util.spec_from_file_location("loki_datagen", BENCH / "loki_datagen.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    streams = gen.streams()
    cols: list[tuple[list[int], list[str]]] = [([], []) for _ in streams]
    for s, ts, line in gen.generate(n_lines):
        cols[s][0].append(ts)
        cols[s][1].append(line)
    q = InMemoryLogQuerier()
    for st, (ts, lines) in zip(streams, cols, strict=True):
        q.append_columns(tuple(sorted(st.items())), ts, lines)
    return q, int(gen.T0_NS)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    t = time.perf_counter()
    q, t0 = load(n)
    q.scan([], 0, 1)  # build column arrays once
    print(f"loaded {n} lines in {time.perf_counter() - t:.1f}s")
    eng = LogQLEngine(max_series=10_000)
    start, end, step = t0, t0 + 3600 * 10**9, 60 * 10**9
    for row in (BENCH / "loki_queries.tsv").read_text().splitlines():
        if not row or row.startswith("#"):
            continue
        name, expr = row.split("\t", 1)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            res = eng.query_range(q, expr, start, end, step, limit=1000, direction=Direction.BACKWARD)
            best = min(best, time.perf_counter() - t)
        data = res.to_loki_data()
        ms = best * 1000
        print(
            f"{name:26s} pitwall {ms:8.1f} ms  loki {LOKI_MS.get(name, 0):6d} ms  "
            f"ratio {ms / LOKI_MS.get(name, 1):5.2f}  results={len(data['result'])}"
        )


if __name__ == "__main__":
    main()
