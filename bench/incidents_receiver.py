"""pitwall's alerting into incidents: ``pitwall_incident_configs`` (in process) against ``pagerduty_configs``
pointed at the same server's ``/v2/enqueue`` (HTTP), on a real `pitwall server`.

    PYTHONPATH=src .venv/bin/python bench/incidents_receiver.py [--groups 50] [--alerts 10]

Each run starts a fresh server (SQLite state store, fsync on, ``kube.enabled: false``) whose Alertmanager
file routes every alert to one receiver, grouped by ``alertname`` (``group_wait: 10ms``). One POST to
``/api/v2/alerts`` fires ``--groups`` groups of ``--alerts`` alerts; the clock stops when the REST API shows
every group's incident with its alerts: one alert each with ``pagerduty_configs`` and with
``pitwall_incident_configs`` under ``alert_dedup: group``, ``--alerts`` each under ``alert_dedup: alert``.
Not part of the tests.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from common import INCIDENTS_KEY, free_port, incidents_config, pitwall_with_config


def _receiver(kind: str, url: str) -> dict[str, Any]:
    if kind == "pagerduty_configs":
        return {"pagerduty_configs": [{"routing_key": INCIDENTS_KEY, "url": url + "/v2/enqueue"}]}
    return {"pitwall_incident_configs": [{"service": "web"}]}


def _done(url: str, groups: int, per_incident: int) -> bool:
    r = httpx.get(url + "/pagerduty/incidents", params={"date_range": "all", "limit": 100}, timeout=30)
    incs = r.json()["incidents"]
    return len(incs) >= groups and all(i["alert_counts"]["all"] >= per_incident for i in incs)


def run(kind: str, dedup: str, groups: int, alerts: int) -> float:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        am = Path(tmp) / "alertmanager.yml"
        am.write_text(yaml.safe_dump({
            "route": {"receiver": "r", "group_by": ["alertname"], "group_wait": "10ms", "group_interval": "1s",
                      "repeat_interval": "1h"},
            "receivers": [{"name": "r", **_receiver(kind, url)}]}))
        inc = incidents_config()
        inc["services"][0]["alert_dedup"] = dedup
        with pitwall_with_config({"alertmanager_config": str(am), "kube": {"enabled": False}, "incidents": inc},
                                 port=port) as base:
            body = [{"labels": {"alertname": f"G{g}", "instance": f"h{a}"}} for g in range(groups)
                    for a in range(alerts)]
            t0 = time.perf_counter()
            httpx.post(base + "/api/v2/alerts", json=body, timeout=30).raise_for_status()
            want = alerts if dedup == "alert" else 1
            while not _done(base, groups, want):
                time.sleep(0.05)
            return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=50)
    ap.add_argument("--alerts", type=int, default=10)
    a = ap.parse_args()
    for kind, dedup in (("pagerduty_configs", "group"), ("pitwall_incident_configs", "group"),
                        ("pitwall_incident_configs", "alert")):
        secs = run(kind, dedup, a.groups, a.alerts)
        events = a.groups * (a.alerts if dedup == "alert" else 1)
        print(f"{kind:26s} alert_dedup={dedup:5s} {a.groups} groups x {a.alerts} alerts: {secs:6.2f} s to "
              f"{a.groups} incidents ({events} events, {events / secs:6.1f} events/s)")


if __name__ == "__main__":
    main()
