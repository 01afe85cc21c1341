"""Chaos Toolkit extension: drive pitwall's faults and read its telemetry from any Chaos Toolkit run.

Use it from an experiment as a ``python`` provider with ``"module": "pitwall.chaos.ctk"``:

- actions ``start_fault(kind, name, spec, namespace="default")`` (creates the
  Chaos Mesh object ``kind`` — PodChaos, StressChaos, NetworkChaos, ... — with
  ``spec`` as its ``.spec``) and ``stop_fault(kind, name, namespace="default")``
  (deletes it: pitwall reverts the fault);
- probes ``query_promql(expr)`` and ``query_logql(expr)`` (a single sample's
  value as a number, otherwise the API's ``data``) and ``slo_status(name)``
  (the SLO API's document for ``name``).

The module is also a Chaos Toolkit *control*: declared in the experiment's
``controls`` (``{"name": "pitwall", "provider": {"type": "python", "module":
"pitwall.chaos.ctk"}}``), its ``after_experiment_control`` asks the server for
the run's resilience report (``POST /api/chaos/v1/report``, the target and
window read from the journal by ``pitwall.chaos.runreport``), waiting up to
``recovery_wait_s`` for the target to recover, and writes it into the journal's
``pitwall`` extension entry (``report``, or ``report_note`` saying why none).

The server is the experiment's ``configuration.pitwall_url`` or ``PITWALL_URL``
(default ``http://127.0.0.1:9900``); the bearer token ``PITWALL_TOKEN`` (or
``configuration.pitwall_token``). Failures raise, so Chaos Toolkit marks the
activity failed with the server's message.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

import httpx

__all__ = ["after_experiment_control", "attach_report", "query_logql", "query_promql", "slo_status", "start_fault",
           "stop_fault"]

log = logging.getLogger("chaostoolkit")

DEFAULT_URL = "http://127.0.0.1:9900"
GROUP = "chaos-mesh.org/v1alpha1"
PLURALS = {"PodChaos": "podchaos", "NetworkChaos": "networkchaos", "HTTPChaos": "httpchaos",
           "StressChaos": "stresschaos", "IOChaos": "iochaos", "TimeChaos": "timechaos", "DNSChaos": "dnschaos", "Schedule": "schedules",
           "Workflow": "workflows"}
TIMEOUT_S = 30.0
RECOVERY_WAIT_S = 180.0  # how long the control waits, by default, for the report to be final (recovered or not)
REPORT_POLL_S = 5.0  # the report's query step is 5 s or more: asking more often finds nothing new

Configuration = dict[str, Any] | None


class PitwallError(RuntimeError):
    """pitwall answered with an error, or could not be reached (the message says which)."""


def _client(configuration: Configuration) -> httpx.Client:
    cfg = configuration or {}
    url = str(cfg.get("pitwall_url") or os.environ.get("PITWALL_URL") or DEFAULT_URL).rstrip("/")
    token = cfg.get("pitwall_token") or os.environ.get("PITWALL_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    verify = cfg.get("pitwall_verify_tls", True)
    return httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_S, verify=bool(verify))


def _send(configuration: Configuration, method: str, path: str, **kw: Any) -> httpx.Response:
    with _client(configuration) as c:
        try:
            return c.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise PitwallError(f"cannot reach pitwall at {c.base_url}: {e}") from None


def _message(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return resp.text.strip()[:500]
    if isinstance(doc, dict):
        return str(doc.get("message") or doc.get("error") or doc)[:500]
    return str(doc)[:500]


def _plural(kind: str) -> str:
    if kind not in PLURALS:
        raise PitwallError(f"unknown chaos kind {kind!r}; one of {', '.join(PLURALS)}")
    return PLURALS[kind]


def start_fault(kind: str, name: str, spec: dict[str, Any], namespace: str = "default",
                configuration: Configuration = None) -> dict[str, Any]:
    """Create the Chaos Mesh object ``kind``/``name`` with ``spec``; returns its metadata (name, uid)."""
    body = {"apiVersion": GROUP, "kind": kind, "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    resp = _send(configuration, "POST", f"/apis/{GROUP}/namespaces/{namespace}/{_plural(kind)}", json=body)
    if resp.status_code >= 400:
        raise PitwallError(f"{kind} {namespace}/{name} not created: HTTP {resp.status_code}: {_message(resp)}")
    meta = resp.json().get("metadata") or {}
    return {"kind": kind, "namespace": namespace, "name": meta.get("name", name), "uid": meta.get("uid", "")}


def stop_fault(kind: str, name: str, namespace: str = "default", configuration: Configuration = None) -> bool:
    """Delete ``kind``/``name`` (pitwall reverts its fault first); True when it existed."""
    resp = _send(configuration, "DELETE", f"/apis/{GROUP}/namespaces/{namespace}/{_plural(kind)}/{name}")
    if resp.status_code == 404:
        return False
    if resp.status_code >= 400:
        raise PitwallError(f"{kind} {namespace}/{name} not deleted: HTTP {resp.status_code}: {_message(resp)}")
    return True


def _single(data: dict[str, Any]) -> Any:
    """A scalar, or a one-sample vector, as a number; anything else as the API's ``data``."""
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list):
        return float(result[1])
    if kind == "vector" and isinstance(result, list) and len(result) == 1:
        return float(result[0]["value"][1])
    return data


def query_promql(expr: str, configuration: Configuration = None) -> Any:
    """PromQL at the current time (``GET /api/v1/query``)."""
    resp = _send(configuration, "GET", "/api/v1/query", params={"query": expr})
    if resp.status_code >= 400:
        raise PitwallError(f"PromQL {expr!r}: HTTP {resp.status_code}: {_message(resp)}")
    return _single(resp.json().get("data") or {})


def query_logql(expr: str, configuration: Configuration = None) -> Any:
    """LogQL at the current time (``GET /loki/api/v1/query``): a metric query's single value as a number,
    a log query's ``data``."""
    resp = _send(configuration, "GET", "/loki/api/v1/query", params={"query": expr})
    if resp.status_code >= 400:
        raise PitwallError(f"LogQL {expr!r}: HTTP {resp.status_code}: {_message(resp)}")
    return _single(resp.json().get("data") or {})


def slo_status(name: str, configuration: Configuration = None) -> dict[str, Any]:
    """The SLO ``name`` as ``GET /api/slo/v1/slos/{name}`` answers it (objective, error budget, burn rates)."""
    resp = _send(configuration, "GET", f"/api/slo/v1/slos/{name}")
    if resp.status_code == 404:
        raise PitwallError(f"SLO {name!r} not found on pitwall (GET /api/slo/v1/slos/{name} answered 404: "
                           f"{_message(resp)}); define it first, or check this server serves the SLO API")
    if resp.status_code >= 400:
        raise PitwallError(f"SLO {name!r}: HTTP {resp.status_code}: {_message(resp)}")
    doc: dict[str, Any] = resp.json()
    return doc


def fetch_report(body: dict[str, Any], configuration: Configuration, wait_s: float) -> dict[str, Any]:
    """The server's report for ``body``, asked again every few seconds until it is final (``complete``: the
    target recovered, or the whole margin after the revert is in the data) or ``wait_s`` has passed."""
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        resp = _send(configuration, "POST", "/api/chaos/v1/report", json=body)
        if resp.status_code >= 400:
            raise PitwallError(f"resilience report: HTTP {resp.status_code}: {_message(resp)}")
        doc: dict[str, Any] = resp.json()
        if doc.get("complete") or time.monotonic() + REPORT_POLL_S > deadline:
            return doc
        time.sleep(REPORT_POLL_S)


def _mapping(configuration: Configuration, secrets: Any) -> dict[str, Any]:
    flat = {k: v for scope in (secrets or {}).values() if isinstance(scope, dict) for k, v in scope.items()}
    return {**(configuration or {}), **flat}


def attach_report(journal: dict[str, Any], configuration: Configuration = None, secrets: Any = None,
                  recovery_wait_s: float = RECOVERY_WAIT_S) -> dict[str, Any]:
    """Ask the server for the run's resilience report and put it in the journal's ``pitwall`` extension entry
    (added when the experiment has none); returns that entry. No target, or a server error, leaves
    ``report`` null and the reason in ``report_note``: a report never fails the run."""
    from pitwall.chaos.runreport import EXTENSION, NoTarget, report_request  # numpy: only when reporting

    exp = dict(journal.get("experiment") or {})
    # copies, so the experiment object the caller holds keeps the extensions as written
    entries = [dict(e) if isinstance(e, dict) else e for e in exp.get("extensions") or []]
    entry = next((e for e in entries if isinstance(e, dict) and e.get("name") == EXTENSION), None)
    if entry is None:
        entry = {"name": EXTENSION}
        entries.append(entry)
    exp["extensions"], journal["experiment"] = entries, exp
    try:
        body = report_request(journal, datetime.now(UTC), _mapping(configuration, secrets))
        log.info("Resilience report of %s: waiting up to %.0f s for it to be final",
                 "/".join(v for v in (body["target"].get("namespace"), body["target"].get("app")) if v),
                 recovery_wait_s)
        entry["report"] = report = fetch_report(body, configuration, recovery_wait_s)
        entry.pop("report_note", None)
        rec = report.get("recovery_s")
        log.info("Resilience report: %s", f"recovered {rec:.0f} s after the last revert" if rec is not None
                 else report.get("recovery_note"))
    except (NoTarget, PitwallError) as e:
        entry["report"], entry["report_note"] = None, str(e)
        log.warning("No resilience report: %s", e)
    return entry


def after_experiment_control(context: Any, state: dict[str, Any], configuration: Configuration = None,
                             secrets: Any = None, recovery_wait_s: float = RECOVERY_WAIT_S, **kwargs: Any) -> None:
    """Chaos Toolkit's hook after the run (``state`` is the journal, written after this returns): the run's
    resilience report into the journal (``attach_report``)."""
    attach_report(state, configuration, secrets, float(recovery_wait_s))
