"""The incidents and SLO pages of the web UI: server time per page on a real `pitwall server`.

    PYTHONPATH=src .venv/bin/python bench/ui_incidents_pages.py [--incidents 500] [--slos 10] [--n 30]

Starts `pitwall server` (SQLite state store, fsync on, its Kubernetes API on), opens ``--incidents``
incidents through the Events API with a change event before them, applies ``--slos``
PrometheusServiceLevels of two SLOs each over an hour of remote-written samples, then times
``--n`` sequential GETs of each page (whole response, HTML rendered by the server; the charts'
data is another request, timed on its own). PagerDuty and Sloth have no local UI to compare with,
so the figures stand alone. Not part of the tests.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import cramjam
import httpx
from common import INCIDENTS_KEY, incidents_config, pitwall_with_config

from pitwall.metrics.ingest import prompb


def _samples(services: int) -> bytes:
    now = int(time.time() * 1000)
    w = prompb.WriteRequest()
    for s in range(services):
        for code, per in (("200", 19.0), ("500", 1.0)):
            ts = w.timeseries.add()
            for k, v in sorted({"__name__": "http_requests_total", "job": f"svc{s}", "code": code}.items()):
                lb = ts.labels.add()
                lb.name, lb.value = k, v
            for i, t in enumerate(range(now - 3_600_000, now + 1, 15_000)):
                smp = ts.samples.add()
                smp.timestamp, smp.value = t, per * i
    return bytes(cramjam.snappy.compress_raw(w.SerializeToString()))


def _psl(i: int) -> dict[str, Any]:
    sli = {"events": {"errorQuery": f'sum(rate(http_requests_total{{job="svc{i}",code=~"5.."}}[{{{{.window}}}}]))',
                      "totalQuery": f'sum(rate(http_requests_total{{job="svc{i}"}}[{{{{.window}}}}]))'}}
    return {"apiVersion": "sloth.slok.dev/v1", "kind": "PrometheusServiceLevel",
            "metadata": {"name": f"svc{i}", "namespace": "default"},
            "spec": {"service": f"svc{i}", "slos": [
                {"name": n, "objective": o, "sli": sli, "alerting": {"name": f"Svc{i}{n}",
                                                                     "ticketAlert": {"disable": True}}}
                for n, o in (("availability", 99.0), ("strict", 99.9))]}}


def _time(c: httpx.Client, path: str, n: int) -> None:
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        r = c.get(path)
        lat.append(time.perf_counter() - t)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"{path[:60]:<60} p50 {statistics.median(lat) * 1000:8.1f} ms   max {p99 * 1000:8.1f} ms")


def bench(url: str, incidents: int, slos: int, n: int) -> None:
    with httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v2/change/enqueue", json={"routing_key": INCIDENTS_KEY, "payload": {"summary": "deploy", "source": "ci"}})
        assert r.status_code == 202, r.text
        for i in range(incidents):
            r = c.post("/v2/enqueue", json={"routing_key": INCIDENTS_KEY, "event_action": "trigger", "dedup_key": f"k{i}",
                                            "payload": {"summary": f"alert {i}", "source": "bench",
                                                        "severity": "critical",
                                                        "custom_details": {"service": f"svc{i % max(slos, 1)}"}}})
            assert r.status_code == 202, r.text
        r = c.post("/api/v1/write", content=_samples(slos), headers={
            "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        assert r.status_code < 300, r.text
        for i in range(slos):
            r = c.post("/apis/sloth.slok.dev/v1/namespaces/default/prometheusservicelevels", json=_psl(i))
            assert r.status_code == 201, r.text
        for _ in range(600):  # the controller loads every object's SLOs
            if c.get("/slos").text.count("data-slo-id=") == 2 * slos:
                break
            time.sleep(0.2)
        print(f"pitwall UI, {incidents} open incidents, {slos * 2} SLOs, {n} sequential GETs per row")
        _time(c, "/incidents", n)
        _time(c, "/incidents?status=all", n)
        _time(c, "/incidents/Q0000001", n)
        _time(c, "/incidents/Q0000001?postmortem=1", n)
        _time(c, "/slos", max(3, n // 5))
        _time(c, "/slos/default/svc0-availability", n)
        page = c.get("/slos/default/svc0-availability?from=now-1h").text
        src = page.split('data-testid="slo-chart"')[0].rsplit('data-src="', 1)[1].split('"')[0]
        _time(c, src.replace("&amp;", "&") + "&points=300", max(3, n // 5))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--incidents", type=int, default=500)
    ap.add_argument("--slos", type=int, default=10)
    ap.add_argument("--n", type=int, default=30)
    args = ap.parse_args()
    config = {"incidents": incidents_config(), "global": {"evaluation_interval": "10s"},
              "otlp_grpc": {"enabled": False}}  # 4317 may be taken
    with pitwall_with_config(config) as url:
        bench(url, args.incidents, args.slos, args.n)


if __name__ == "__main__":
    main()
