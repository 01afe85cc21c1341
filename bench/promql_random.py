"""Random PromQL queries: per-class median latency, pitwall vs Debian's Prometheus (issue 24).

Both servers get ``../shared/bench/prom_datagen.py``'s 10k series x 30 min
over remote write, fed exactly as ``promql_queries.py``'s 30 min variant
does. A generator with its own seed then draws ``N`` queries (default 300)
over seven classes: selectors, rate/increase, aggregations (incl. topk,
quantile, count_values), binary operations with vector matching,
histogram_quantile, subqueries and the ``*_over_time`` family. Each runs as
a range query over the data's 30 min at step 15 s (121 points), ``REPS``
times (default 3) against each server after one untimed warm-up (as
query_bench.py), alternating query by query so that load on the shared
machine biases neither; timing starts once both servers are idle after the
load. Per class: the median of the
per-query medians on each side and their ratio; overall: the median over
all queries. ``agree`` counts queries whose answers are the same series
with every point equal within 1e-9 (relative); ``agree>15m`` the same over
the steps after the first 15 min: rate-based ones may differ at their first
steps, see promql_queries.py on Prometheus 2.42 vs 3.x. Subqueries differ
all along at the steps where the window's start falls on a subquery step:
Prometheus 3.x (and pitwall) leave the range open at its start, 2.42 keeps
that point (seen on ``max_over_time(sum by (job) (rate(x[1m]))[5m:1m])``:
every differing step is a whole minute).

``cpu`` columns: the CPU time each server spent per request (its threads'
``/proc/<pid>/task/*/schedstat`` run time across the request, median per
class): unlike latency, what other work on a shared machine does not
inflate.

Environment: ``N``, ``REPS``, ``SEED`` (default 24); ``DUMP``: a file to write every query's row to
(JSON: class, query, medians, CPU, agreement, the answer's series count).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import random
import shutil
import statistics
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import Server, progress, ratio, run_shared

OFFSET_MS = "1234"
STEP_S = 15
SPAN_S = 1785
# Prometheus 2.42 and 3.x (pitwall) extrapolate rate() differently near the
# data's start; the second agreement column looks only at steps after this.
AGREE_AFTER_S = 900

JOBS = ["api", "web", "worker", "db", "cache"]
STATUSES = ["200", "404", "500", "503"]
PATHS = ["/", "/login", "/search", "/cart", "/checkout", "/api/items", "/api/users", "/health"]
MODES = ["user", "system", "idle", "iowait", "irq", "softirq", "steal", "nice"]
COUNTERS = ["http_requests_total", "node_cpu_seconds_total", "process_cpu_seconds_total",
            "http_request_duration_seconds_count", "http_request_duration_seconds_sum"]
GAUGES = ["queue_depth", "process_resident_memory_bytes", "up"]
LABELS_OF = {
    "http_requests_total": ["job", "instance", "method", "status", "path"],
    "node_cpu_seconds_total": ["job", "instance", "cpu", "mode"],
    "process_cpu_seconds_total": ["job", "instance"],
    "http_request_duration_seconds_count": ["job", "instance", "path"],
    "http_request_duration_seconds_sum": ["job", "instance", "path"],
    "queue_depth": ["job", "instance", "queue"],
    "process_resident_memory_bytes": ["job", "instance"],
    "up": ["job", "instance"],
}
RANGES = ["1m", "2m", "5m", "10m"]


class Gen:
    """Draws queries of each class from the prom_datagen schema."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def _value(self, label: str) -> str:
        r = self.r
        if label == "job":
            return r.choice(JOBS)
        if label == "instance":
            j = r.randrange(len(JOBS))
            return f"host-{j}-{r.randrange(10)}:9100"
        if label == "status":
            return r.choice(STATUSES)
        if label == "path":
            return r.choice(PATHS)
        if label == "mode":
            return r.choice(MODES)
        if label == "method":
            return r.choice(["GET", "POST"])
        if label == "cpu":
            return r.choice(["0", "1"])
        return f"q{r.randrange(13)}"

    def _matchers(self, metric: str) -> str:
        r = self.r
        out = []
        for lb in r.sample(LABELS_OF[metric], r.randint(0, 2)):
            kind = r.choice(["=", "=", "!=", "=~"])
            if kind == "=~":
                if lb == "status":
                    out.append(f'{lb}=~"5.."')
                else:
                    out.append(f'{lb}=~"{self._value(lb)}|{self._value(lb)}"'.replace(".", "\\\\."))
            else:
                out.append(f'{lb}{kind}"{self._value(lb)}"')
        return "{" + ", ".join(out) + "}" if out else ""

    def _by(self, metric: str) -> str:
        labels = self.r.sample(LABELS_OF[metric], self.r.randint(1, 2))
        return f"by ({', '.join(labels)})"

    def selector(self) -> str:
        m = self.r.choice(COUNTERS + GAUGES)
        return m + self._matchers(m)

    def rate(self) -> str:
        m = self.r.choice(COUNTERS)
        inner = f"{self.r.choice(['rate', 'increase', 'irate'])}({m}{self._matchers(m)}[{self.r.choice(RANGES)}])"
        return f"sum {self._by(m)} ({inner})" if self.r.random() < 0.5 else inner

    def aggregation(self) -> str:
        r = self.r
        m = r.choice(COUNTERS + GAUGES)
        sel = m + self._matchers(m)
        if m in COUNTERS:
            sel = f"rate({sel}[5m])"
        op = r.choice(["sum", "avg", "min", "max", "count", "stddev", "topk", "bottomk", "quantile",
                       "count_values", "group"])
        if op in ("topk", "bottomk"):
            return f"{op}({r.choice([1, 3, 5, 10])}, {sel})"
        if op == "quantile":
            return f"quantile {self._by(m)} ({r.choice([0.5, 0.9, 0.99])}, {sel})"
        if op == "count_values":
            return f'count_values("value", {m}{self._matchers(m)})' if m in GAUGES else f'count_values("v", round({sel}))'
        return f"{op} {self._by(m)} ({sel})"

    def binop(self) -> str:
        r = self.r
        kind = r.randrange(4)
        if kind == 0:
            return ('sum by (job) (rate(http_requests_total{status=~"5.."}[5m])) / on (job) '
                    f"sum by (job) (rate(http_requests_total[{r.choice(RANGES)}]))")
        if kind == 1:
            return ("rate(http_request_duration_seconds_sum[5m]) / ignoring () "
                    f"rate(http_request_duration_seconds_count{self._matchers('http_request_duration_seconds_count')}[5m])")
        if kind == 2:
            return (f"process_resident_memory_bytes * on (job, instance) group_left () "
                    f"up{self._matchers('up')}")
        return f"queue_depth{self._matchers('queue_depth')} > {r.choice(['bool ', ''])}{r.randint(30, 70)}"

    def histogram(self) -> str:
        r = self.r
        by = r.choice(["le", "le, job", "le, path", "le, job, instance"])
        m = self._matchers("http_request_duration_seconds_count")[1:-1]
        sel = "http_request_duration_seconds_bucket" + ("{" + m + "}" if m else "")
        return f"histogram_quantile({r.choice([0.5, 0.9, 0.99])}, sum by ({by}) (rate({sel}[{r.choice(RANGES)}])))"

    def subquery(self) -> str:
        r = self.r
        m = r.choice(COUNTERS)
        inner = f"sum by (job) (rate({m}{self._matchers(m)}[1m]))" if r.random() < 0.5 else f"rate({m}[2m])"
        fn = r.choice(["max_over_time", "avg_over_time", "min_over_time", "deriv"])
        return f"{fn}({inner}[{r.choice(['5m', '10m'])}:{r.choice(['30s', '1m'])}])"

    def over_time(self) -> str:
        r = self.r
        m = r.choice(GAUGES + COUNTERS)
        fn = r.choice(["avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
                       "stddev_over_time", "last_over_time", "present_over_time", "quantile_over_time"])
        arg = f"{r.choice([0.5, 0.9])}, " if fn == "quantile_over_time" else ""
        return f"{fn}({arg}{m}{self._matchers(m)}[{r.choice(RANGES)}])"


CLASSES: dict[str, Callable[[Gen], str]] = {
    "selector": Gen.selector, "rate/increase": Gen.rate, "aggregation": Gen.aggregation,
    "binary op": Gen.binop, "histogram_quantile": Gen.histogram, "subquery": Gen.subquery,
    "*_over_time": Gen.over_time,
}


def draw(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (class, query) pairs, classes in turn."""
    g = Gen(random.Random(seed))
    names = list(CLASSES)
    return [(names[i % len(names)], CLASSES[names[i % len(names)]](g)) for i in range(n)]


class Client:
    """One keep-alive connection; ``get`` returns (seconds, parsed body)."""

    def __init__(self, url: str) -> None:
        u = urllib.parse.urlparse(url)
        assert u.hostname is not None and u.port is not None
        self.host, self.port = u.hostname, u.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)

    def range_query(self, q: str, start: int, end: int) -> tuple[float, dict[str, Any]]:
        path = "/api/v1/query_range?" + urllib.parse.urlencode({"query": q, "start": start, "end": end,
                                                                 "step": STEP_S})
        for attempt in range(2):
            t = time.perf_counter()
            try:
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                body = r.read()
            except (http.client.RemoteDisconnected, ConnectionError):
                # An idle keep-alive connection the server closed (uvicorn: after 5 s): reconnect, untimed.
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=300)
                if attempt:
                    raise
                continue
            return time.perf_counter() - t, json.loads(body)
        raise AssertionError("unreachable")


def same(a: dict[str, Any], b: dict[str, Any], since: float = -math.inf) -> bool:
    """Same series with every point at or after ``since`` equal within 1e-9 (relative)."""
    if a.get("status") != "success" or b.get("status") != "success":
        return a.get("status") == b.get("status") == "error"

    def points(body: dict[str, Any]) -> dict[str, dict[float, str]]:
        out = {json.dumps(x["metric"], sort_keys=True): {t: v for t, v in x["values"] if t >= since}
               for x in body["data"]["result"]}
        return {k: v for k, v in out.items() if v}

    ra, rb = points(a), points(b)
    if ra.keys() != rb.keys():
        return False
    for k, pts in rb.items():
        mine = ra[k]
        if mine.keys() != pts.keys():
            return False
        for t, v in pts.items():
            x, y = float(mine[t]), float(v)
            if not (x == y or (math.isnan(x) and math.isnan(y)) or abs(x - y) <= 1e-9 * max(abs(x), abs(y))):
                return False
    return True


def settle(servers: dict[str, Server], limit_s: float = 90) -> None:
    """Wait until no server spends more than a fifth of a core (post-ingest flushes, compaction)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = {k: s.cpu_seconds() for k, s in servers.items()}
        time.sleep(2)
        if all(s.cpu_seconds() - before[k] < 0.4 for k, s in servers.items()):
            return


def cpu_ns(pid: int) -> int:
    """Nanoseconds all threads of ``pid`` have run on a CPU (exited threads' time is lost: none exit here)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended meanwhile
    return total


def run(pairs: list[tuple[str, str]], servers: dict[str, Server], t0: int, reps: int) -> list[dict[str, Any]]:
    clients = {k: Client(s.url) for k, s in servers.items()}
    rows = []
    for cls, q in progress(pairs, "queries"):
        times: dict[str, list[float]] = {k: [] for k in clients}
        cpu: dict[str, list[float]] = {k: [] for k in clients}
        bodies: dict[str, dict[str, Any]] = {}
        for c in clients.values():
            c.range_query(q, t0, t0 + SPAN_S)  # warm-up, untimed, as query_bench.py does
        for _ in range(reps):
            for k, c in clients.items():
                pid = servers[k].proc.pid
                c0 = cpu_ns(pid)
                dt, bodies[k] = c.range_query(q, t0, t0 + SPAN_S)
                cpu[k].append((cpu_ns(pid) - c0) / 1e6)
                times[k].append(dt * 1000)
        rows.append({"class": cls, "query": q, **{k: statistics.median(v) for k, v in times.items()},
                     **{k + "_cpu": statistics.median(v) for k, v in cpu.items()},
                     "agree": same(bodies["pitwall"], bodies["prometheus"]),
                     "agree_late": same(bodies["pitwall"], bodies["prometheus"], t0 + AGREE_AFTER_S),
                     "series": len((bodies["prometheus"].get("data") or {}).get("result") or []),
                     "error": bodies["pitwall"].get("error") or bodies["prometheus"].get("error")})
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    print(f"{'class':20s} {'n':>4s} {'pitwall ms':>11s} {'prom ms':>9s} {'ratio':>7s} {'agree':>8s} "
          f"{'agree>15m':>9s} {'pit cpu':>8s} {'prom cpu':>8s} {'cpu ratio':>9s}")
    for cls in [*CLASSES, "ALL"]:
        sub = [r for r in rows if cls in ("ALL", r["class"])]
        if not sub:  # a small N may draw no query of a class
            continue
        p = statistics.median(r["pitwall"] for r in sub)
        q = statistics.median(r["prometheus"] for r in sub)
        agree, late = sum(r["agree"] for r in sub), sum(r["agree_late"] for r in sub)
        pc = statistics.median(r["pitwall_cpu"] for r in sub)
        qc = statistics.median(r["prometheus_cpu"] for r in sub)
        print(f"{cls:20s} {len(sub):4d} {p:11.2f} {q:9.2f} {ratio(p, q):>7s} {agree:4d}/{len(sub):<3d} "
              f"{late:5d}/{len(sub):<3d} {pc:8.2f} {qc:8.2f} {ratio(pc, qc):>9s}")
    worst = sorted(rows, key=lambda r: r["pitwall"] / max(r["prometheus"], 1e-9), reverse=True)[:5]
    print("\nhighest ratios:")
    for r in worst:
        print(f"  {r['pitwall']:8.2f} / {r['prometheus']:8.2f} ms  {r['query']}")
    worst_cpu = sorted(rows, key=lambda r: r["pitwall_cpu"] / max(r["prometheus_cpu"], 1e-3), reverse=True)[:5]
    print("\nhighest CPU ratios (CPU ms):")
    for r in worst_cpu:
        print(f"  {r['pitwall_cpu']:8.2f} / {r['prometheus_cpu']:8.2f} ms  {r['query']}")
    print(f"\nload average at the end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    errors = [r for r in rows if r["error"]]
    for r in errors[:5]:
        print(f"  error: {r['query']}: {r['error']}")


def main() -> None:
    n, reps, seed = int(os.environ.get("N", "300")), int(os.environ.get("REPS", "3")), int(os.environ.get("SEED", "24"))
    pairs = draw(n, seed)
    work = Path(tempfile.mkdtemp(prefix="pitwall-rbench-"))
    t0 = int(time.time()) // 60 * 60 - 3600
    env = {"BENCH_T0": str(t0), "BENCH_OFFSET_MS": OFFSET_MS}
    servers: dict[str, Server] = {}
    started = time.perf_counter()
    try:
        for kind in ("pitwall", "prometheus"):
            srv = servers[kind] = Server(kind, work)
            res = run_shared("prom_remote_write.py", "--url", srv.url + "/api/v1/write",
                             "--samples-per-series-per-req", "10", env=env)
            if not res["ok"]:
                raise RuntimeError(f"{kind}: push failed: {res['errors']}")
        settle(servers)
        print(f"random PromQL: {n} queries (seed {seed}), 10k series x 120 samples, range [T0, T0+{SPAN_S}s] "
              f"step {STEP_S}s, median of {reps} reps per query, servers alternating (BENCH_T0={t0})")
        rows = run(pairs, servers, t0, reps)
    finally:
        for srv in servers.values():
            srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(rows)
    if os.environ.get("DUMP"):
        Path(os.environ["DUMP"]).write_text(json.dumps(rows, indent=1))
    print(f"\ntotal bench time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
