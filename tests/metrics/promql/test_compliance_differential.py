"""PromQL compliance, differentially: pitwall against Debian's real Prometheus.

The query list is the PromQL compliance tester's own
(``prometheus-compliance/promql/promql-test-queries.yml``), expanded with the
tester's variant values (``conformance/SOURCES.md`` section 2). Identical
deterministic data, shaped like the PromLabs demo service the queries expect,
is remote-written to both servers; every query then runs as a range query
(range 10m, step 10s, as the tester's defaults) against both, and the answers
must match: the same series and labels, the same timestamps, values equal to
1e-6 relative (NaN equals NaN), and failing queries failing on both sides.

The peer is Prometheus 2.42 while pitwall follows Prometheus 3. Data and query
times are placed so that the 3.0 change to left-open range and lookback
windows cannot show: samples sit 1234 ms off whole seconds, and the query
steps sit 5 s off the 10 s grid of subquery steps. Queries whose meaning still
differs between 2.42 and 3.x are listed with the reason in ``VERSION_SKIPS``.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cramjam
import httpx
import pytest
import yaml

from pitwall.metrics.ingest import prompb
from pitwall.metrics.model import STALE_NAN
from tests.conftest import SHARED, LiveServer
from tests.peers import PrometheusPeer, need_prometheus

QUERIES_FILE = SHARED / "conformance" / "prometheus-compliance" / "promql" / "promql-test-queries.yml"

# The compliance tester's variant values (promql/testcases/expand.go, listed in SOURCES.md).
VARIANTS: dict[str, list[str]] = {
    "range": ["1s", "15s", "1m", "5m", "15m", "1h"],
    "offset": ["1m", "5m", "10m"],
    "simpleAggrOp": ["sum", "avg", "max", "min", "count", "stddev", "stdvar"],
    "simpleTimeAggrOp": ["sum", "avg", "max", "min", "count", "stddev", "stdvar", "absent", "last"],
    "topBottomOp": ["topk", "bottomk"],
    "quantile": ["-0.5", "0.1", "0.5", "0.75", "0.95", "0.90", "0.99", "1", "1.5"],
    "arithBinOp": ["+", "-", "*", "/", "%", "^"],
    "compBinOp": ["==", "!=", "<", ">", "<=", ">="],
    "binOp": ["+", "-", "*", "/", "%", "^", "==", "!=", "<", ">", "<=", ">="],
    "simpleMathFunc": ["abs", "ceil", "floor", "exp", "sqrt", "ln", "log2", "log10", "round"],
    "extrapolatedRateFunc": ["delta", "rate", "increase"],
    "clampFunc": ["clamp_min", "clamp_max"],
    "instantRateFunc": ["idelta", "irate"],
    "dateFunc": ["day_of_month", "day_of_week", "days_in_month", "hour", "minute", "month", "year"],
    "smoothingFactor": ["0.1", "0.5", "0.8"],
    "trendFactor": ["0.1", "0.5", "0.8"],
}

# Queries whose answer legitimately differs between Prometheus 2.42 (the peer)
# and 3.x (what pitwall implements), exact text -> reason. Checked against the
# Prometheus 3.0 migration guide; see the module docstring for the window
# changes that the data layout neutralises instead of skipping.
VERSION_SKIPS: dict[str, str] = {}

# Cases not in the query file. holt_winters (in older versions of the file,
# with the smoothingFactor/trendFactor variants) was renamed
# double_exponential_smoothing in Prometheus 3.0: pitwall is asked under the
# new name, the 2.42 peer under the old one.
EXTRA_CASES: list[dict[str, Any]] = [
    {
        "query": "double_exponential_smoothing(demo_disk_usage_bytes[{{.range}}], {{.smoothingFactor}}, {{.trendFactor}})",
        "peer_query": "holt_winters(demo_disk_usage_bytes[{{.range}}], {{.smoothingFactor}}, {{.trendFactor}})",
        "variant_args": ["range", "smoothingFactor", "trendFactor"],
    },
    {"query": "double_exponential_smoothing(demo_disk_usage_bytes[5m], 1, 0.5)",
     "peer_query": "holt_winters(demo_disk_usage_bytes[5m], 1, 0.5)", "should_fail": True},
    # More shapes over the same data: histograms aggregated first, staleness,
    # @, subqueries with the default step, set operators, scalar().
    *({"query": q} for q in [
        "sum by (le) (rate(demo_api_request_duration_seconds_bucket[5m]))",
        "histogram_quantile(0.9, sum by (le, path) (rate(demo_api_request_duration_seconds_bucket[5m])))",
        "histogram_quantile(0.5, sum without (instance) (rate(demo_api_request_duration_seconds_bucket[1m])))",
        "rate(demo_api_request_duration_seconds_sum[5m]) / rate(demo_api_request_duration_seconds_count[5m])",
        "resets(demo_api_request_duration_seconds_count[15m])",
        "demo_intermittent_metric offset 5m",
        "count_over_time(demo_intermittent_metric[1m])",
        "last_over_time(demo_intermittent_metric[10m])",
        "present_over_time(demo_intermittent_metric[1m])",
        "absent(demo_intermittent_metric)",
        "timestamp(demo_intermittent_metric)",
        "rate(demo_cpu_usage_seconds_total[5m] @ end())",
        "demo_memory_usage_bytes @ start()",
        "sum_over_time(demo_num_cpus[30m:1m])",
        "max_over_time(deriv(demo_disk_usage_bytes[5m])[10m:])",
        "changes(demo_memory_usage_bytes[5m])",
        "topk(2, rate(demo_cpu_usage_seconds_total[5m]))",
        "demo_memory_usage_bytes and on(instance) demo_num_cpus > 5",
        "demo_memory_usage_bytes unless on(instance) demo_intermittent_metric",
        "demo_num_cpus or demo_intermittent_metric",
        "sgn(deriv(demo_disk_usage_bytes[5m]))",
        "scalar(sum(demo_num_cpus))",
        "vector(scalar(demo_num_cpus))",
        "quantile by (instance) (0.5, demo_memory_usage_bytes)",
        "avg by (mode) (rate(demo_cpu_usage_seconds_total[1m]))",
        "predict_linear(demo_disk_usage_bytes[15m] offset 5m, 3600)",
        "irate(demo_cpu_usage_seconds_total[1m] offset 3m)",
        "increase(demo_cpu_usage_seconds_total[2m])",
        "delta(demo_memory_usage_bytes[3m])",
        "sum by (instance) (demo_cpu_usage_seconds_total) / on(instance) demo_num_cpus",
        "count_values by (instance) (\"cpus\", demo_num_cpus)",
        "stddev_over_time(rate(demo_cpu_usage_seconds_total[1m])[5m:30s])",
        "label_replace(rate(demo_cpu_usage_seconds_total[1m]), \"m\", \"$1\", \"mode\", \"(.)(.*)\")",
    ]),
]

INSTANCES = [f"demo.promlabs.com:{port}" for port in (10000, 10001, 10002)]
JOB = "demo"
INTERVAL_MS = 5_000
OFF_GRID_MS = 1_234
NUM_POINTS = 75 * 60 * 1000 // INTERVAL_MS  # 75 minutes of 5 s scrapes
# Both fall inside the last ten minutes, which the range queries cover.
RESET_AT = 800  # demo.promlabs.com:10001 restarts here: its counters start again
GAP = range(850, 886)  # demo.promlabs.com:10002 misses three minutes of scrapes (no stale markers)
INTERMITTENT_ON = 120  # demo_intermittent_metric: present this many scrapes, then absent as long
LE = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "+Inf"]
API_ROUTES = [("GET", "/api/foo", "200"), ("GET", "/api/foo", "500"), ("POST", "/api/bar", "200"), ("GET", "/api/bar", "200")]

Series = tuple[dict[str, str], list[tuple[int, float]]]


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def demo_data(t0_ms: int) -> list[Series]:
    """The demo service's metrics for three instances, deterministic."""
    rnd = random.Random(20240806)
    times = [t0_ms + i * INTERVAL_MS + OFF_GRID_MS for i in range(NUM_POINTS)]
    out: list[Series] = []

    def scraped(inst: int, i: int) -> bool:
        return not (inst == 2 and i in GAP)

    def counter(inst: int, base_rate: float) -> list[tuple[int, float]]:
        v = 0.0
        pts = []
        for i, t in enumerate(times):
            if inst == 1 and i == RESET_AT:
                v = 0.0
            v += base_rate * (0.5 + rnd.random())
            if scraped(inst, i):
                pts.append((t, round(v, 6)))
        return pts

    for k, inst in enumerate(INSTANCES):
        base = {"instance": inst, "job": JOB}
        for m, mode in enumerate(["idle", "user", "system"]):
            out.append(({**base, "__name__": "demo_cpu_usage_seconds_total", "mode": mode},
                         counter(k, (3.0 - m) * 1.7 + k)))
        for m, typ in enumerate(["buffers", "cached", "free", "used"]):
            level = (m + 1) * 3e8 + k * 1e8
            pts = [(t, float(round(level + 5e7 * math.sin(i / (30 + 7 * m + k)) + rnd.uniform(-1e6, 1e6))))
                   for i, t in enumerate(times) if scraped(k, i)]
            out.append(({**base, "__name__": "demo_memory_usage_bytes", "type": typ}, pts))
        out.append(({**base, "__name__": "demo_num_cpus"},
                    [(t, float(4 + 2 * k)) for i, t in enumerate(times) if scraped(k, i)]))
        disk = 1e10 + k * 1e9
        disk_pts = []
        for i, t in enumerate(times):
            disk += rnd.uniform(-2e5, 1e6)
            if scraped(k, i):
                disk_pts.append((t, round(disk)))
        out.append(({**base, "__name__": "demo_disk_usage_bytes"}, [(t, float(v)) for t, v in disk_pts]))
        batch: list[tuple[int, float]] = []
        last_success = (t0_ms - 30_000) / 1000
        for i, t in enumerate(times):
            if i % (11 + k) == 0:
                last_success = (t - OFF_GRID_MS - 2000) / 1000
            if scraped(k, i):
                batch.append((t, last_success))
        out.append(({**base, "__name__": "demo_batch_last_success_timestamp_seconds"}, batch))
        inter: list[tuple[int, float]] = []
        for i, t in enumerate(times):
            on = (i // INTERMITTENT_ON) % 2 == 0
            if on:
                inter.append((t, float(i % 17 + k)))
            elif (i // INTERMITTENT_ON) % 2 == 1 and i % INTERMITTENT_ON == 0:
                inter.append((t, STALE_NAN))  # the scrape that no longer sees it marks it stale
        out.append(({**base, "__name__": "demo_intermittent_metric"}, inter))
        for method, path, status in API_ROUTES:
            lbl = {**base, "method": method, "path": path, "status": status}
            speed = 0.02 * (1 + k) * (3 if status == "500" else 1) * (2 if method == "POST" else 1)
            counts = [0.0] * len(LE)
            total = 0.0
            hist_pts: list[list[tuple[int, float]]] = [[] for _ in LE]
            sum_pts: list[tuple[int, float]] = []
            count_pts: list[tuple[int, float]] = []
            for i, t in enumerate(times):
                if k == 1 and i == RESET_AT:
                    counts = [0.0] * len(LE)
                    total = 0.0
                for _ in range(rnd.randint(0, 6)):
                    d = rnd.expovariate(1 / speed)
                    total += d
                    for j, le in enumerate(LE):
                        if d <= float(le):
                            counts[j] += 1
                if scraped(k, i):
                    for j in range(len(LE)):
                        hist_pts[j].append((t, counts[j]))
                    sum_pts.append((t, round(total, 9)))
                    count_pts.append((t, counts[-1]))
            for j, le in enumerate(LE):
                out.append(({**lbl, "__name__": "demo_api_request_duration_seconds_bucket", "le": le}, hist_pts[j]))
            out.append(({**lbl, "__name__": "demo_api_request_duration_seconds_sum"}, sum_pts))
            out.append(({**lbl, "__name__": "demo_api_request_duration_seconds_count"}, count_pts))
    return out


def _write_request(series: list[Series]) -> bytes:
    w = prompb.WriteRequest()
    for labels, samples in series:
        ts = w.timeseries.add()
        for name, value in sorted(labels.items()):
            lb = ts.labels.add()
            lb.name, lb.value = name, value
        for t, v in samples:
            s = ts.samples.add()
            s.timestamp, s.value = t, v
    return bytes(cramjam.snappy.compress_raw(w.SerializeToString()))


def push_in_time_order(urls: list[str], data: list[Series], window_ms: int = 5 * 60_000) -> None:
    """Remote-write ``data`` to every url in time windows, oldest first."""
    lo = min(t for _, pts in data for t, _ in pts[:1])
    hi = max(t for _, pts in data for t, _ in pts[-1:])
    start = lo
    while start <= hi:
        chunk = [(lbl, [p for p in pts if start <= p[0] < start + window_ms]) for lbl, pts in data]
        body = _write_request([(lbl, pts) for lbl, pts in chunk if pts])
        for url in urls:
            r = httpx.post(url + "/api/v1/write", content=body, timeout=60,
                           headers={"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                                    "X-Prometheus-Remote-Write-Version": "0.1.0"})
            assert r.status_code in (200, 204), (url, r.status_code, r.text)
        start += window_ms


# ---------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{\s*\.(\w+)\s*\}\}")


def expand(query: str, variant_args: list[str]) -> list[str]:
    """Every combination of the variant values, as the tester's expand.go does."""
    if not variant_args:
        return [query]
    out = []
    for combo in itertools.product(*(VARIANTS[a] for a in variant_args)):
        values = dict(zip(variant_args, combo, strict=True))

        def fill(m: re.Match[str], values: dict[str, str] = values) -> str:
            return values[m.group(1)]

        out.append(_PLACEHOLDER.sub(fill, query))
    return out


def test_cases() -> Iterator[tuple[str, str, bool, bool]]:
    """(query, peer query, should_fail, skip_comparison) for every expanded test case."""
    doc = yaml.safe_load(QUERIES_FILE.read_text())
    for case in [*doc["test_cases"], *EXTRA_CASES]:
        args = case.get("variant_args") or []
        mine = expand(case["query"], args)
        theirs = expand(case.get("peer_query", case["query"]), args)
        for q, pq in zip(mine, theirs, strict=True):
            yield q, pq, bool(case.get("should_fail")), bool(case.get("skip_comparison"))


test_cases.__test__ = False  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if a == b:
        return True
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))


def _points(item: dict[str, Any]) -> list[tuple[float, float]]:
    pts = item.get("values") or [item["value"]]
    return [(float(t), float(v)) for t, v in pts]


def compare(mine: dict[str, Any], theirs: dict[str, Any], should_fail: bool) -> str | None:
    """None when equivalent, else a short description of the difference."""
    ok_m, ok_t = mine.get("status") == "success", theirs.get("status") == "success"
    if not ok_m or not ok_t:
        if ok_m == ok_t:
            return None  # both failed, as the tester requires of should_fail cases
        return f"only one side failed: pitwall={mine.get('error')!r} prometheus={theirs.get('error')!r}"
    if should_fail:
        return "both succeeded but the case should fail"
    dm, dt = mine["data"], theirs["data"]
    if dm["resultType"] != dt["resultType"]:
        return f"result type {dm['resultType']} vs {dt['resultType']}"
    if dm["resultType"] == "scalar":
        return None if _close(float(dm["result"][1]), float(dt["result"][1])) else "scalar differs"
    a = {tuple(sorted(s["metric"].items())): _points(s) for s in dm["result"]}
    b = {tuple(sorted(s["metric"].items())): _points(s) for s in dt["result"]}
    if set(a) != set(b):
        only_m = [dict(x) for x in set(a) - set(b)][:3]
        only_t = [dict(x) for x in set(b) - set(a)][:3]
        return f"series differ: only pitwall {only_m}, only prometheus {only_t}"
    for lbl, pm in a.items():
        pt = b[lbl]
        if [t for t, _ in pm] != [t for t, _ in pt]:
            return f"{dict(lbl)}: timestamps differ ({len(pm)} vs {len(pt)} points)"
        for (t, x), (_, y) in zip(pm, pt, strict=True):
            if not _close(x, y):
                return f"{dict(lbl)} at {t}: {x!r} vs {y!r}"
    return None


# ---------------------------------------------------------------------------
# The test
# ---------------------------------------------------------------------------


@pytest.fixture
def peers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[PrometheusPeer, LiveServer]]:
    need_prometheus()
    pw: LiveServer = request.getfixturevalue("live_server")
    prom = PrometheusPeer(tmp_path / "prom")
    try:
        yield prom, pw
    finally:
        prom.stop()


def _range_query(client: httpx.Client, url: str, q: str, start: float, end: float) -> dict[str, Any]:
    r = client.get(url + "/api/v1/query_range", params={"query": q, "start": start, "end": end, "step": 10})
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.slow
@pytest.mark.peer
def test_compliance_queries_match_prometheus(peers: tuple[PrometheusPeer, LiveServer]) -> None:
    prom, pw = peers
    # The newest sample lands about 40 s before now; the data spans 75 minutes before that.
    newest = (int(time.time()) // 10 * 10 - 40) * 1000
    t0 = newest - (NUM_POINTS - 1) * INTERVAL_MS
    push_in_time_order([prom.url, pw.url], demo_data(t0))

    # end sits 5 s off the 10 s grid on which subquery steps lie (see module docstring).
    end = newest / 1000 - 25
    assert end % 10 == 5
    start = end - 600

    compared = equal = nonempty = 0
    skipped: list[str] = []
    diffs: list[str] = []
    with httpx.Client(timeout=60) as client:
        for q, peer_q, should_fail, skip_comparison in test_cases():
            if q in VERSION_SKIPS:
                skipped.append(f"{q}: {VERSION_SKIPS[q]}")
                continue
            mine = _range_query(client, pw.url, q, start, end)
            theirs = _range_query(client, prom.url, peer_q, start, end)
            if skip_comparison:
                # The tester only checks that both sides answer.
                assert mine.get("status") == theirs.get("status"), q
                skipped.append(f"{q}: skip_comparison in the query file")
                continue
            compared += 1
            if theirs.get("status") == "success" and theirs["data"]["result"]:
                nonempty += 1
            diff = compare(mine, theirs, should_fail)
            if diff is None:
                equal += 1
            else:
                diffs.append(f"{q}\n    {diff}")
    print(f"compliance queries: {compared} compared ({nonempty} with a non-empty answer), {equal} equal, "
          f"{len(diffs)} differing, {len(skipped)} skipped")
    for s in skipped:
        print("  skipped", s)
    # Guard against a vacuous pass (e.g. data that never arrived): most answers hold series.
    assert compared > 500 and nonempty > 400, (compared, nonempty)
    assert not diffs, f"{len(diffs)} of {compared} queries differ:\n" + "\n".join(diffs)


# ---------------------------------------------------------------------------
# The harness itself (no peer needed)
# ---------------------------------------------------------------------------


def test_expansion_covers_every_variant_combination() -> None:
    cases = list(test_cases())
    queries = [c[0] for c in cases]
    assert len(queries) == len(set(queries))
    assert not any("{{" in q for q in queries)
    # 9 simpleTimeAggrOp x 6 ranges for the *_over_time line alone.
    assert sum(q.endswith("_over_time(demo_memory_usage_bytes[1h])") for q in queries) == 9
    assert "quantile(-0.5, demo_memory_usage_bytes)" in queries
    assert ("holt_winters(demo_disk_usage_bytes[15m], 0.8, 0.1)" in [c[1] for c in cases])


def _matrix(v: float, labels: dict[str, str] | None = None, t: float = 10.0) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": labels or {"a": "1"}, "values": [[t, str(v)]]}]}}


def test_compare_detects_differences() -> None:
    assert compare(_matrix(1.0), _matrix(1.0 + 1e-9), False) is None
    assert compare(_matrix(math.nan), _matrix(math.nan), False) is None
    assert compare(_matrix(1.0), _matrix(1.001), False) is not None
    assert compare(_matrix(1.0), _matrix(math.nan), False) is not None
    assert compare(_matrix(1.0), _matrix(1.0, {"a": "2"}), False) is not None
    assert compare(_matrix(1.0), _matrix(1.0, t=20.0), False) is not None
    err = {"status": "error", "errorType": "bad_data", "error": "x"}
    assert compare(err, err, True) is None
    assert compare(err, _matrix(1.0), False) is not None
    assert compare(_matrix(1.0), _matrix(1.0), True) is not None
