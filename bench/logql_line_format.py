"""Per-entry ``line_format`` / ``label_format`` micro-bench.

Compiles a LogQL pipeline once and runs it over N synthetic entries in-process
(no store, no engine), so the figure is the template's own per-entry cost.
Prints the best of --runs runs (default 3) per template; never asserts.

    .venv/bin/python bench/logql_line_format.py [--entries 100000]
"""

from __future__ import annotations

import argparse
import time

from pitwall.logs.logql.parser import parse_log_selector
from pitwall.logs.logql.pipeline import Pipeline

CASES = [
    ("fields", '{app="api"} | line_format "{{.app}} {{.status}} {{.path}}"'),
    ("funcs", '{app="api"} | line_format "{{ .path | ToUpper }} {{ printf \\"%s=%s\\" .method .status }}"'),
    ("if", '{app="api"} | line_format "{{ if eq .status \\"500\\" }}ERR {{ __line__ }}{{ else }}ok{{ end }}"'),
    ("label_format", '{app="api"} | label_format msg="{{.method}} {{.path}}", app="{{ .app | upper }}"'),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    n = args.entries
    entries = [
        (
            i,
            f"method=GET path=/api/{i % 50} status={500 if i % 10 == 0 else 200}",
            {"app": "api", "method": "GET", "path": f"/api/{i % 50}", "status": "500" if i % 10 == 0 else "200"},
        )
        for i in range(n)
    ]
    base = frozenset({"app"})
    for name, query in CASES:
        pipe = Pipeline.compile(parse_log_selector(query).stages)
        best = float("inf")
        for _ in range(args.runs):
            work = [(ts, line, dict(labels)) for ts, line, labels in entries]
            t = time.perf_counter()
            for ts, line, labels in work:
                pipe.process(ts, line, labels, base)
            best = min(best, time.perf_counter() - t)
        print(f"{name:14s} {n} entries  {best * 1000:8.1f} ms  {best / n * 1e6:6.2f} us/entry")


if __name__ == "__main__":
    main()
