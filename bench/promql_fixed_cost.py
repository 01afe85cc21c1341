"""The fixed cost of a PromQL query through the HTTP API, phase by phase (issue 24).

In-process: the real app (``server.create_app``, every middleware) over
``../shared/bench/prom_datagen.py``'s 10k series x 120 samples, requests
driven straight through its ASGI interface (no socket, so the figures are
pitwall's own cost, not the kernel's). For each query:

- ``e2e``: one GET /api/v1/query through the whole app;
- the phases, each timed alone by calling the same code the request runs:
  ``parse`` (PromQL text to our AST, as the engine does it), ``plan``
  (evaluation context, step grid, evaluator; pitwall has no separate planner),
  ``lookup`` (matchers to series ids and their label sets), ``read`` (the
  samples of those series), ``eval`` (engine total minus the phases before),
  ``json`` (result to the response body);
- ``http``: e2e minus all the above: routing, middleware, parameter parsing,
  the thread hop and the ASGI messages.

Times are medians over ``REPS`` (default 2000) runs, best of ``ROUNDS``
(default 3) rounds: the machine is shared. ``calls`` is the number of function calls
(Python and C, counted by a profile hook) one request makes: load does not
change it.
Rows named ``R ...`` are range queries over the data's 30 min at step 15 s
(121 steps), as ``bench/promql_random.py`` sends them; their ``lookup`` and
``read`` use each selector's window over the whole range. ``ONLY=text``
runs the rows whose name contains it.
``FLUSH=1`` flushes the head into blocks first, so every read is a block read.
``CLOCK=cpu`` times by CPU time instead of wall time.
``--json`` prints the rows as JSON too.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
from common import SHARED_BENCH

from pitwall.config import load_settings
from pitwall.core.labels import labels_from_dict
from pitwall.metrics.model import SampleBatch
from pitwall.metrics.promql import Engine, QueryResult
from pitwall.metrics.promql.ast import MatrixSel, Node, Selector, Subquery, children
from pitwall.metrics.promql.engine import encode_response_body
from pitwall.metrics.promql.evaluator import Evaluator
from pitwall.server import create_app

QUERIES = {
    "vector(1)": "vector(1)",
    "up": "up",
    "one series": 'process_resident_memory_bytes{instance="host-0-0:9100"}',
    "rate 50 series": "rate(process_cpu_seconds_total[5m])",
}
# Range queries over the data's 30 min at step 15 s (121 steps), as bench/promql_random.py
# sends them: the small queries of its classes above Prometheus' medians.
RANGE_QUERIES = {
    "R vector(1)": "vector(1)",
    "R one series": 'process_cpu_seconds_total{instance="host-4-0:9100"}',
    "R selector 13": 'queue_depth{instance="host-4-6:9100"}',
    "R selector 50": "up",
    "R over_time": 'sum_over_time(queue_depth{instance="host-4-3:9100", queue!="q1"}[1m])',
    "R over_time 50": "max_over_time(process_resident_memory_bytes[1m])",
    "R rate": 'rate(http_request_duration_seconds_sum{instance="host-3-8:9100", path=~"/|/cart"}[1m])',
    "R subquery": 'deriv(sum by (job) (rate(http_request_duration_seconds_sum{instance="host-3-8:9100"}[1m]))'
                  '[5m:1m])',
}
RANGE_SPAN_S, RANGE_STEP_S = 1800, 15


# CLOCK=cpu times by the process' CPU time (all threads): on a shared machine, waiting for
# a CPU inflates wall time far more than the work itself.
_clock = time.process_time if os.environ.get("CLOCK") == "cpu" else time.perf_counter


def _median_us(fn: Callable[[], Any], reps: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        ts = []
        for _ in range(reps):
            t = _clock()
            fn()
            ts.append(_clock() - t)
        best = min(best, statistics.median(ts))
    return best * 1e6


async def _amedian_us(fn: Callable[[], Awaitable[Any]], reps: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        ts = []
        for _ in range(reps):
            t = _clock()
            await fn()
            ts.append(_clock() - t)
        best = min(best, statistics.median(ts))
    return best * 1e6


class AsgiGet:
    """GET requests straight into an ASGI app, as uvicorn would make them.

    Called from one long-lived task, as uvicorn's requests run under its
    server task (anyio keeps its worker threads per root task).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, path: str, params: dict[str, str]) -> tuple[int, bytes]:
        qs = urllib.parse.urlencode(params).encode()
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": qs, "root_path": "",
            "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 9090),
        }
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(msg: dict[str, Any]) -> None:
            sent.append(msg)

        await self.app(scope, receive, send)
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def _load(store: Any, t0: int) -> None:
    """prom_datagen's data in prom_remote_write.py's requests: 2,000 series x 10 samples each.

    So the head holds the chunks a server fed by remote write holds (4, where
    whole 10k-series batches left 2).
    """
    sys.path.insert(0, str(SHARED_BENCH))
    os.environ["BENCH_OFFSET_MS"] = "1234"
    import prom_datagen  # type: ignore[import-not-found]

    labels, ts, values = prom_datagen.generate(t0_s=t0)
    series = [labels_from_dict(lb) for lb in labels]
    n_series, n_samp = values.shape
    for c0 in range(0, n_samp, 10):
        for g0 in range(0, n_series, 2000):
            cols = values[g0 : g0 + 2000, c0 : c0 + 10]
            n, k = cols.shape
            batch = SampleBatch(series[g0 : g0 + n], np.repeat(np.arange(n, dtype=np.int64), k),
                                np.tile(ts[c0 : c0 + k], n), cols.reshape(-1).astype(np.float64))
            await store.append("default", batch)


async def _calls_per_request(get: AsgiGet, path: str, params: dict[str, str]) -> int:
    """Function calls (Python and C) of one request, on the event loop and in the worker thread.

    The profile hook is installed in anyio's worker thread by running it there:
    requests run one at a time, and anyio reuses its most recently idle worker.
    """
    n = [0]

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event in ("call", "c_call"):
            n[0] += 1

    await anyio.to_thread.run_sync(sys.setprofile, hook)
    sys.setprofile(hook)
    await get(path, params)
    sys.setprofile(None)
    await anyio.to_thread.run_sync(sys.setprofile, None)
    return n[0]


def _selector_windows(node: Node, start: int, end: int, lookback: int) -> list[tuple[Selector, int, int]]:
    """Each selector of ``node`` with the window the evaluator reads for it (offsets and @ ignored)."""
    if isinstance(node, Selector):
        return [(node, start - lookback + 1, end)]
    if isinstance(node, MatrixSel):
        return [(node.sel, start - node.range_ms + 1, end)]
    if isinstance(node, Subquery):
        return _selector_windows(node.expr, start - node.range_ms, end, lookback)
    return [w for c in children(node) for w in _selector_windows(c, start, end, lookback)]


async def measure(get: AsgiGet, app: Any, name: str, expr: str, start_ms: int, end_ms: int, step_ms: int,
                  reps: int, rounds: int) -> dict[str, Any]:
    """One row: e2e through the app, then each phase alone (``step_ms`` 0: an instant query at ``end_ms``)."""
    c = app.state.components
    engine: Engine = c.metrics.engine
    store = c.metrics.store
    q = store.querier("default")
    if step_ms:
        path = "/api/v1/query_range"
        params = {"query": expr, "start": f"{start_ms / 1000:.3f}", "end": f"{end_ms / 1000:.3f}",
                  "step": f"{step_ms / 1000:g}"}

        def evaluate() -> QueryResult:
            return engine.range(q, expr, start_ms, end_ms, step_ms)
    else:
        path = "/api/v1/query"
        params = {"query": expr, "time": f"{end_ms / 1000:.3f}"}

        def evaluate() -> QueryResult:
            return engine.instant(q, expr, end_ms)
    status, body = await get(path, params)
    if status != 200:
        raise RuntimeError(f"{expr}: HTTP {status}: {body[:300]!r}")
    node = engine.parse(expr)
    wins = _selector_windows(node, start_ms, end_ms, engine.lookback_delta_ms)
    ctx = engine._context(q, start_ms, end_ms, step_ms)
    row: dict[str, Any] = {"query": name}
    row["e2e"] = await _amedian_us(lambda: get(path, params), reps, rounds)
    row["parse"] = _median_us(lambda: engine.parse(expr), reps, rounds)
    row["plan"] = _median_us(lambda: (engine._context(q, start_ms, end_ms, step_ms),
                                      np.arange(start_ms, end_ms + 1, step_ms or 1, dtype=np.int64),
                                      Evaluator(ctx)), reps, rounds)

    def lookup() -> None:
        for s, lo, hi in wins:
            sids = store.candidate_sids("default", list(s.matchers), lo, hi)
            store.series_labels(sids.tolist())

    sids_of = [(store.candidate_sids("default", list(s.matchers), lo, hi), lo, hi) for s, lo, hi in wins]

    def read() -> None:
        for sids, lo, hi in sids_of:
            store.read_columns(sids, lo, hi)

    row["lookup"] = _median_us(lookup, reps, rounds)
    row["read"] = _median_us(read, reps, rounds)
    total = _median_us(evaluate, reps, rounds)
    row["eval"] = max(0.0, total - row["parse"] - row["plan"] - row["lookup"] - row["read"])
    res = evaluate()
    row["json"] = _median_us(lambda: encode_response_body(res), reps, rounds)
    row["http"] = max(0.0, row["e2e"] - total - row["json"])
    row["calls"] = await _calls_per_request(get, path, params)
    row["series"] = len(res.series)
    return row


async def run(reps: int, rounds: int) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="pitwall-fixed-"))
    settings = load_settings(data_dir=work / "data", listen="127.0.0.1:0", storage={"fsync": False},
                             kube={"enabled": False}, otlp_grpc={"enabled": False})
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            t0 = int(time.time()) // 60 * 60 - 3600
            t = time.perf_counter()
            await _load(app.state.components.metrics.store, t0)
            if os.environ.get("FLUSH") == "1":  # every sample in sealed blocks (DuckDB), none in the head
                await app.state.components.metrics.store.flush()
            print(f"loaded 10k series x 120 samples in {time.perf_counter() - t:.1f} s; "
                  f"reps={reps} rounds={rounds} (best median, clock {_clock.__name__})")
            at_ms = (t0 + 1785) * 1000
            get = AsgiGet(app)
            only = os.environ.get("ONLY", "")
            rows = [await measure(get, app, name, expr, at_ms, at_ms, 0, reps, rounds)
                    for name, expr in QUERIES.items() if only in name]
            start_ms = t0 * 1000
            rows += [await measure(get, app, name, expr, start_ms, start_ms + RANGE_SPAN_S * 1000,
                                   RANGE_STEP_S * 1000, reps, rounds)
                     for name, expr in RANGE_QUERIES.items() if only in name]
            return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    reps, rounds = int(os.environ.get("REPS", "2000")), int(os.environ.get("ROUNDS", "3"))
    rows = asyncio.run(run(reps, rounds))
    cols = ["e2e", "http", "parse", "plan", "lookup", "read", "eval", "json"]
    print(f"\n{'query (median us)':18s}" + "".join(f"{c:>8s}" for c in cols) + f"{'calls':>8s}{'series':>8s}")
    for r in rows:
        print(f"{r['query']:18s}" + "".join(f"{r[c]:8.0f}" for c in cols) + f"{r['calls']:8d}{r['series']:8d}")
    if "--json" in sys.argv:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
