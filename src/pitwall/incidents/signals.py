"""Links from an incident to its service's signals in pitwall's UI: golden signals, error logs, traces.

The service is the one the first alert's payload names: ``custom_details.service`` (or
``service_name``, or the same keys under ``custom_details.labels``/``firing`` labels), else the
payload's ``component``. The links open the UI's explorers (``/graph`` PromQL over the span
metrics, ``/logs`` LogQL, ``/traces`` search, ``/services/<name>``) over the incident's window:
30 minutes before it opened until 15 minutes after it resolved (or ``now`` while it is open).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

__all__ = ["LEAD_NS", "TRAIL_NS", "signal_links", "signal_service"]

LEAD_NS = 30 * 60 * 10**9
TRAIL_NS = 15 * 60 * 10**9
_MAX_NAME = 256
_CALLS = "traces_span_metrics_calls_total"
_DURATION = "traces_span_metrics_duration_milliseconds_bucket"
_ENTRY = 'span_kind=~"SPAN_KIND_SERVER|SPAN_KIND_CONSUMER"'


def signal_service(payload: dict[str, Any]) -> str:
    """The service an alert payload names, or ``""``."""
    details = payload.get("custom_details")
    places = [details] + ([details.get("labels")] if isinstance(details, dict) else [])
    for place in places:
        if isinstance(place, dict):
            for key in ("service", "service_name"):
                v = place.get(key)
                if isinstance(v, str) and v.strip():
                    return v.strip()[:_MAX_NAME]
    comp = payload.get("component")
    return comp.strip()[:_MAX_NAME] if isinstance(comp, str) else ""


def _q(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"')


def _ms(ns: int) -> str:
    return str(ns // 1_000_000)


def signal_links(root: str, service: str, created_ns: int, resolved_ns: int = 0) -> list[dict[str, str]]:
    """``[{"type", "text", "href"}]``: the golden-signal queries, error logs and traces of ``service``."""
    if not service:
        return []
    rng = {"from": _ms(created_ns - LEAD_NS), "to": _ms(resolved_ns + TRAIL_NS) if resolved_ns else "now"}
    sel = f'service_name="{_q(service)}",{_ENTRY}'
    golden = [
        ("golden_signals.traffic", "Traffic (requests/s)", f"sum(rate({_CALLS}{{{sel}}}[5m]))"),
        ("golden_signals.errors", "Errors (ratio of requests)",
         f'sum(rate({_CALLS}{{{sel},status_code="STATUS_CODE_ERROR"}}[5m])) / sum(rate({_CALLS}{{{sel}}}[5m]))'),
        ("golden_signals.latency", "Latency (p99, ms)",
         f"histogram_quantile(0.99, sum by (le) (rate({_DURATION}{{{sel}}}[5m])))"),
    ]
    out = [{"type": t, "text": f"{service}: {text}", "href": f"{root}/graph?" + urlencode({"expr": e, **rng})}
           for t, text, e in golden]
    logql = f'{{service_name="{_q(service)}"}} |~ "(?i)(error|exception|fatal|panic)"'
    out += [
        {"type": "logs", "text": f"{service}: error logs (LogQL)",
         "href": f"{root}/logs?" + urlencode({"query": logql, **rng})},
        {"type": "traces.errors", "text": f"{service}: traces with errors",
         "href": f"{root}/traces?" + urlencode({"service": service, "status": "error", **rng})},
        {"type": "traces.slow", "text": f"{service}: traces over 1s",
         "href": f"{root}/traces?" + urlencode({"service": service, "min_duration": "1s", **rng})},
        {"type": "service", "text": f"{service}: service page (RED from span metrics)",
         "href": f"{root}/services/{quote(service, safe='')}?" + urlencode(rng)},
    ]
    return out
