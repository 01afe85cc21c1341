"""A query's first run vs its repeats, and repeats after an idle pause (issue 24).

Starts one ``pitwall server``, pushes prom_datagen's 10k series x 30 min as
``promql_random.py`` does, then runs ``K`` of ``promql_random.draw``'s
queries (classes in ``ONLY``, comma-separated; default selector,
``*_over_time`` and subquery) ``R`` times each (default 12) on one
keep-alive connection, sleeping ``SLEEP`` seconds (default 0) before each
request. Prints per query the first run and the median of the repeats after
the second, in wall and server CPU ms (all the server's threads, as
promql_random.py's ``cpu`` columns), then the medians over all queries.

``promql_random.py`` alternates pitwall and Prometheus query by query, so
each server sits idle while the other works; ``SLEEP=0.005`` reproduces
that pause without a second server.

Environment: ``K`` (default 40), ``R``, ``SLEEP``, ``ONLY``, ``SEED`` (24).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import promql_random as pr
from common import Server, run_shared


def main() -> None:
    only = os.environ.get("ONLY", "selector,*_over_time,subquery").split(",")
    k, reps = int(os.environ.get("K", "40")), int(os.environ.get("R", "12"))
    pause = float(os.environ.get("SLEEP", "0"))
    pairs = [p for p in pr.draw(300, int(os.environ.get("SEED", "24"))) if p[0] in only][:k]
    t0 = int(time.time()) // 60 * 60 - 3600
    work = Path(tempfile.mkdtemp(prefix="pitwall-first-"))
    srv = Server("pitwall", work)
    try:
        res = run_shared("prom_remote_write.py", "--url", srv.url + "/api/v1/write",
                         "--samples-per-series-per-req", "10",
                         env={"BENCH_T0": str(t0), "BENCH_OFFSET_MS": pr.OFFSET_MS})
        if not res["ok"]:
            raise RuntimeError(f"push failed: {res['errors']}")
        pr.settle({"pitwall": srv})
        client = pr.Client(srv.url)
        rows = []
        for _, q in pairs:
            wall, cpu = [], []
            for _ in range(reps):
                time.sleep(pause)
                c0 = pr.cpu_ns(srv.proc.pid)
                dt, _body = client.range_query(q, t0, t0 + pr.SPAN_S)
                cpu.append((pr.cpu_ns(srv.proc.pid) - c0) / 1e6)
                wall.append(dt * 1000)
            row = (wall[0], statistics.median(wall[2:]), cpu[0], statistics.median(cpu[2:]))
            rows.append(row)
            print(f"first {row[0]:7.2f} / {row[2]:7.2f} ms  repeats {row[1]:6.2f} / {row[3]:6.2f} ms  {q}")
        med = [statistics.median(r[i] for r in rows) for i in range(4)]
        print(f"\nmedian over {len(rows)} queries (wall / cpu ms): first {med[0]:.2f} / {med[2]:.2f}, "
              f"repeats {med[1]:.2f} / {med[3]:.2f}; pause {pause * 1000:.0f} ms; "
              f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
