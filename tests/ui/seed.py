"""A deterministic data set for the UI tests and the first-paint benchmark, sent through the real ingest APIs.

Metrics go in by Prometheus remote write, spans by OTLP/HTTP JSON, logs by
OTLP/HTTP JSON (with trace ids) and by Loki push. Everything is placed
relative to ``now`` so that it falls in the UI's default range (the last hour).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cramjam
import httpx

from pitwall.metrics.ingest import prompb

# The trace the tests open: frontend -> checkout -> payment (error) and inventory.
KNOWN_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INSTANCES = ("a:9100", "b:9100", "c:9100")
SERVICES = ("checkout", "frontend", "inventory", "payment")
S = 1_000_000_000

RULES = """
groups:
  - name: ui-test
    interval: 1s
    rules:
      - alert: ServerErrors
        expr: sum by (job) (http_requests_total{code="500"}) > 0
        labels: {severity: critical}
        annotations: {summary: "{{ $labels.job }} answers with 500s"}
"""

DASHBOARD = """
title: Checkout health
time: 1h
variables:
  - {name: instance, label: Instance, query: 'label_values(http_requests_total, instance)'}
rows:
  - title: Traffic
    panels:
      - {title: Requests, type: timeseries, datasource: prometheus, query: 'sum by (code) (rate(http_requests_total{instance="$instance"}[5m]))', unit: req/s}
      - {title: Series, type: stat, datasource: prometheus, query: 'count(http_requests_total)'}
      - {title: Load, type: gauge, datasource: prometheus, query: 'sum(rate(http_requests_total[5m]))', max: 100}
  - title: Signals
    panels:
      - {title: Checkout logs, type: logs, datasource: loki, query: '{service_name="checkout"}'}
      - {title: Failed traces, type: traces, datasource: traces, query: 'service=payment status=error'}
      - {title: By instance, type: table, datasource: prometheus, query: 'sum by (instance) (http_requests_total)'}
"""


@dataclass
class Seeded:
    now_ns: int
    trace_ids: list[str] = field(default_factory=list)
    error_trace_ids: list[str] = field(default_factory=list)
    spans: int = 0


def _remote_write(series: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> bytes:
    w = prompb.WriteRequest()
    for labels, samples in series:
        ts = w.timeseries.add()
        for k, v in sorted(labels.items()):
            lb = ts.labels.add()
            lb.name, lb.value = k, v
        for t, v in samples:
            s = ts.samples.add()
            s.timestamp, s.value = t, v
    return bytes(cramjam.snappy.compress_raw(w.SerializeToString()))


def _attr(k: str, v: Any) -> dict[str, Any]:
    if isinstance(v, int):
        return {"key": k, "value": {"intValue": str(v)}}
    return {"key": k, "value": {"stringValue": str(v)}}


def _span(trace: str, span: str, parent: str, name: str, kind: int, start: int, dur: int, error: bool,
          attrs: dict[str, Any], events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "traceId": trace, "spanId": span, "name": name, "kind": kind,
        "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + dur),
        "attributes": [_attr(k, v) for k, v in attrs.items()],
        "status": {"code": 2, "message": "card declined"} if error else {"code": 1},
    }
    if parent:
        d["parentSpanId"] = parent
    if events:
        d["events"] = events
    return d


def _trace(i: int, start: int) -> tuple[str, bool, dict[str, list[dict[str, Any]]]]:
    """One checkout: frontend -> checkout -> {inventory, payment}; every 5th payment fails."""
    tid = KNOWN_TRACE if i == 0 else f"{0xa1b2c3d4 + i:08x}{i:024x}"
    error = i % 5 == 0
    sid = lambda n: f"{i:08x}{n:08x}"  # noqa: E731
    base = 2_000_000 + (i % 7) * 1_500_000
    spans: dict[str, list[dict[str, Any]]] = {s: [] for s in SERVICES}
    total = base * 6
    spans["frontend"].append(_span(tid, sid(1), "", "GET /checkout", 2, start, total, error,
                                   {"http.method": "GET", "http.route": "/checkout",
                                    "http.status_code": 500 if error else 200}))
    spans["frontend"].append(_span(tid, sid(2), sid(1), "POST checkout", 3, start + 200_000, total - 400_000,
                                   error, {"peer.service": "checkout"}))
    spans["checkout"].append(_span(tid, sid(3), sid(2), "PlaceOrder", 2, start + 300_000, total - 600_000, error,
                                   {"order.items": 1 + i % 3},
                                   [{"timeUnixNano": str(start + 400_000), "name": "order.validated",
                                     "attributes": [_attr("items", 1 + i % 3)]}]))
    spans["inventory"].append(_span(tid, sid(4), sid(3), "Reserve", 2, start + 500_000, base, False,
                                    {"db.system": "sqlite"}))
    spans["payment"].append(_span(tid, sid(5), sid(3), "Charge", 2, start + 700_000 + base, base * 3, error,
                                  {"payment.amount": 10 + i}))
    return tid, error, spans


def _otlp_traces(by_service: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {"resourceSpans": [
        {"resource": {"attributes": [_attr("service.name", svc), _attr("deployment.environment", "test")]},
         "scopeSpans": [{"scope": {"name": "ui-seed"}, "spans": spans}]}
        for svc, spans in by_service.items() if spans]}


def _otlp_logs(records: list[tuple[str, int, str, str, str]]) -> dict[str, Any]:
    by_service: dict[str, list[dict[str, Any]]] = {}
    for svc, ts, sev, body, trace in records:
        rec: dict[str, Any] = {"timeUnixNano": str(ts), "severityText": sev, "body": {"stringValue": body}}
        if trace:
            rec["traceId"] = trace
            rec["spanId"] = "0000000000000003"
        by_service.setdefault(svc, []).append(rec)
    return {"resourceLogs": [
        {"resource": {"attributes": [_attr("service.name", svc)]},
         "scopeLogs": [{"scope": {"name": "ui-seed"}, "logRecords": recs}]}
        for svc, recs in by_service.items()]}


def _post(client: httpx.Client, path: str, **kw: Any) -> None:
    r = client.post(path, **kw)
    if r.status_code >= 300:
        raise RuntimeError(f"POST {path}: {r.status_code} {r.text[:300]}")


def _wait(client: httpx.Client, expr: str, ok: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = client.get("/api/v1/query", params={"query": expr}).json()
        if last.get("status") == "success" and ok(last["data"]["result"]):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{expr}: still {last}")


def seed(base_url: str, traces: int = 40) -> Seeded:
    now_ns = time.time_ns()
    now_ms = now_ns // 1_000_000
    out = Seeded(now_ns)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        # Metrics: three instances of a counter over the last hour, every 15 s, plus 500s on one.
        series = []
        for k, inst in enumerate(INSTANCES):
            pts = [(now_ms - 3_600_000 + j * 15_000, float(j * (k + 1) * 10)) for j in range(241)]
            series.append(({"__name__": "http_requests_total", "job": "api", "instance": inst, "code": "200"}, pts))
        series.append(({"__name__": "http_requests_total", "job": "api", "instance": "a:9100", "code": "500"},
                       [(now_ms - 3_600_000 + j * 15_000, float(j)) for j in range(241)]))
        series.append(({"__name__": "node_load1", "job": "node", "instance": "a:9100"},
                       [(now_ms - 3_600_000 + j * 15_000, 0.5 + (j % 10) / 10) for j in range(241)]))
        _post(client, "/api/v1/write", content=_remote_write(series),
              headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                       "X-Prometheus-Remote-Write-Version": "0.1.0"})

        # Traces in two batches, so span metrics get two flushes (a rate needs two samples).
        batches: list[dict[str, list[dict[str, Any]]]] = [{s: [] for s in SERVICES}, {s: [] for s in SERVICES}]
        for i in range(traces):
            start = now_ns - 30 * 60 * S + i * (29 * 60 * S // traces)
            tid, error, spans = _trace(i, start)
            out.trace_ids.append(tid)
            if error:
                out.error_trace_ids.append(tid)
            for svc, lst in spans.items():
                batches[i % 2][svc].extend(lst)
                out.spans += len(lst)
        _post(client, "/v1/traces", json=_otlp_traces(batches[0]))
        _wait(client, "sum(traces_span_metrics_calls_total)", lambda r: bool(r))
        _post(client, "/v1/traces", json=_otlp_traces(batches[1]))
        total = out.spans
        _wait(client, "sum(traces_span_metrics_calls_total)", lambda r: bool(r) and float(r[0]["value"][1]) >= total)

        # Logs: checkout lines tied to their traces (OTLP), inventory lines by Loki push.
        records = []
        traces = len(out.trace_ids)
        for i, tid in enumerate(out.trace_ids):
            start = now_ns - 30 * 60 * S + i * (29 * 60 * S // traces)
            err = tid in out.error_trace_ids
            body = json.dumps({"msg": "payment failed" if err else "order placed", "order": i, "level":
                               "error" if err else "info"})
            records.append(("checkout", start + 1_000_000, "ERROR" if err else "INFO", body, tid))
        _post(client, "/v1/logs", json=_otlp_logs(records))
        values = [[str(now_ns - (20 * 60 - j * 30) * S), f"level={'warn' if j % 4 == 0 else 'info'} "
                   f"msg=\"reserved stock\" sku=sku-{j} qty={j % 5 + 1}"] for j in range(40)]
        _post(client, "/loki/api/v1/push", json={"streams": [
            {"stream": {"service_name": "inventory", "job": "inventory", "env": "test"}, "values": values}]})
    return out


def write_fixture_files(folder: Path) -> tuple[Path, Path]:
    """A rule file and a dashboards folder for the live server's settings."""
    folder.mkdir(parents=True, exist_ok=True)
    rules = folder / "ui.rules.yaml"
    rules.write_text(RULES)
    dash = folder / "dashboards"
    dash.mkdir(exist_ok=True)
    (dash / "checkout.yaml").write_text(DASHBOARD)
    return rules, dash
