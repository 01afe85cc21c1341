"""Chaos Mesh's StatusCheck: an HTTP probe run every ``intervalSeconds``, its outcomes kept in the status.

As upstream's StatusCheck controller: the first execution is one interval
after ``status.startTime``; each appends ``{startTime, outcome}`` to
``status.records`` (trimmed to ``recordsHistoryLimit``) and counts in
``status.count``; the conditions are recomputed after each (``DurationExceed``
once ``duration`` has passed since the start; ``FailureThresholdExceed`` /
``SuccessThresholdExceed`` when the newest records are that many consecutive
failures / successes; ``Completed`` when the duration is exceeded, the
failure threshold is, or, in ``Synchronous`` mode, the success threshold is).
A completed StatusCheck runs no more. An execution succeeds when the response
status matches ``criteria.statusCode`` (one code or an inclusive ``a-b``
range); a refused connection or a timeout is a failure. A Service's DNS name
(``<svc>.<ns>``, ``<svc>.<ns>.svc``, ``<svc>.<ns>.svc.cluster.local``) is
sent to its cluster IP with the name as the Host header, as cluster DNS
would resolve it (pitwall's cluster IPs are loopback addresses the service
proxy serves; pod IPs and 127.0.0.1 are reached as they are).

Unlike upstream (a goroutine per StatusCheck, its records in memory until
written), the records are the only state: each reconcile runs at most one
execution, so a restart loses nothing and needs no worker bookkeeping.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from pitwall.chaos.model import API_VERSION, ChaosSpecError, parse_go_duration, parse_time
from pitwall.controllers import record_event
from pitwall.kube import KubeClient, KubeError, NotFoundError, fmt_time

__all__ = ["HttpProbe", "StatusCheckReconciler", "check_completed", "service_resolver", "spec_error",
           "status_code_matches"]

Obj = dict[str, Any]
Resolver = Callable[[str, str], Awaitable[str | None]]  # (namespace, service) -> its cluster IP
COMPONENT = "statuscheck"
MAX_TIMEOUT_S = 60.0  # a bound on one execution whatever timeoutSeconds says (a worker is busy meanwhile)
DEFAULTS = {"mode": "Synchronous", "type": "HTTP", "timeoutSeconds": 1, "intervalSeconds": 10,
            "failureThreshold": 3, "successThreshold": 1, "recordsHistoryLimit": 100}
_ORDER = ("Completed", "DurationExceed", "FailureThresholdExceed", "SuccessThresholdExceed")


def status_code_matches(criteria: str, code: int) -> bool:
    """Chaos Mesh's validateStatusCode: ``"200"`` equal, ``"200-299"`` inclusive range, else no match."""
    c = str(criteria).strip()
    if c.isdigit():
        return int(c) == code
    lo, sep, hi = c.partition("-")
    if not sep or not lo.isdigit() or not hi.isdigit():
        return False
    return int(lo) <= code <= int(hi)


def spec_error(spec: Obj) -> str | None:
    """What upstream's admission webhook would refuse in a StatusCheck spec (the field path and why), else
    None; pitwall reports it in an Event and runs nothing."""
    http = spec.get("http")
    if spec.get("type", "HTTP") != "HTTP":
        return f"spec.type: Invalid value: {spec.get('type')!r}: unrecognized type"
    if not isinstance(http, dict):
        return "spec.http: Invalid value: null: the detail of http status check is required"
    url = str(http.get("url") or "")
    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        u = None
    if not url or u is None or not u.is_absolute_url:
        return f"spec.http.url: Invalid value: {url!r}: " + ("request url is required" if not url else
                                                              "invalid http request url")
    code = str((http.get("criteria") or {}).get("statusCode") or "")
    parts = code.split("-", 1)
    if not code or not all(p.isdigit() and 0 < int(p) < 1000 for p in parts):
        return f"spec.http.criteria.statusCode: Invalid value: {code!r}: incorrect status code format"
    return None


def check_completed(obj: Obj) -> bool:
    """StatusCheck.IsCompleted: the ``Completed`` condition is True."""
    return any(c.get("type") == "Completed" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def _spec(obj: Obj) -> Obj:
    spec = {**DEFAULTS, **{k: v for k, v in (obj.get("spec") or {}).items() if v is not None}}
    for k in ("timeoutSeconds", "intervalSeconds", "failureThreshold", "successThreshold", "recordsHistoryLimit"):
        spec[k] = max(int(spec[k]), 1)
    return spec


def _streak(records: Sequence[Obj], outcome: str, threshold: int) -> bool:
    """isThresholdExceed: the newest ``threshold`` records all have ``outcome``."""
    tail = list(records)[-threshold:]
    return len(tail) >= threshold and all(r.get("outcome") == outcome for r in tail)


def service_resolver(client: KubeClient) -> Resolver:
    """Service names to cluster IPs through ``client`` (None when there is no such Service or it is headless)."""
    async def resolve(namespace: str, name: str) -> str | None:
        try:
            svc = await client.get("v1", "Service", name, namespace)
        except NotFoundError:
            return None
        ip = str((svc.get("spec") or {}).get("clusterIP") or "")
        return ip if ip and ip != "None" else None
    return resolve


async def _target(url: str, resolve: Resolver | None) -> tuple[str, list[tuple[str, str]]]:
    """The URL to connect to and the Host header to send with it (none when the URL's host is used as is)."""
    u = httpx.URL(url)
    parts = u.host.split(".")
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(u.host)
        return url, []
    if resolve is not None and len(parts) >= 2 and parts[2:] in ([], ["svc"], ["svc", "cluster", "local"]):
        ip = await resolve(parts[1], parts[0])
        if ip:
            return str(u.copy_with(host=ip)), [("Host", u.netloc.decode())]
    return url, []


class HttpProbe:
    """One HTTP execution of a StatusCheck's ``http`` block, with a bounded timeout and no body read."""

    def __init__(self, resolve: Resolver | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.resolve = resolve
        self.transport = transport

    async def __call__(self, http: Obj, timeout_s: float) -> tuple[bool, str]:
        """(success, message) for one request; any error is a failure, as upstream records it."""
        headers = [(str(k), str(v)) for k, vs in (http.get("headers") or {}).items()
                   for v in (vs if isinstance(vs, list) else [vs])]
        timeout = min(max(timeout_s, 0.1), MAX_TIMEOUT_S)
        try:
            url, host = await _target(str(http.get("url") or ""), self.resolve)
            if host:
                headers = [*host, *((k, v) for k, v in headers if k.lower() != "host")]
            async with httpx.AsyncClient(timeout=timeout, follow_redirects=True, max_redirects=10,
                                         trust_env=False, transport=self.transport) as client:
                req = client.build_request(str(http.get("method") or "GET"), url, headers=headers,
                                           content=str(http.get("body") or "").encode())
                resp = await client.send(req, stream=True)  # only the status matters: the body is not read
                await resp.aclose()
        except (httpx.HTTPError, httpx.InvalidURL, ValueError, KubeError) as e:
            return False, f"do http request: {type(e).__name__}: {e}"
        criteria = str((http.get("criteria") or {}).get("statusCode") or "")
        if not status_code_matches(criteria, resp.status_code):
            return False, f"unexpected status code: {resp.status_code}"
        return True, ""


class StatusCheckReconciler:
    """Runs ``StatusCheck`` objects (a ``controllers.Reconciler``); see the module's docstring."""

    name = "chaos-statuscheck"
    primary = (API_VERSION, "StatusCheck")
    secondary: Sequence[tuple[str, str]] = ()

    def __init__(self, client: KubeClient, probe: HttpProbe | None = None) -> None:
        self.client = client
        self.probe = probe or HttpProbe(service_resolver(client))

    def keys_for(self, api_version: str, kind: str, obj: Obj) -> list[str]:
        m = obj.get("metadata") or {}
        return [f"{m.get('namespace') or ''}/{m.get('name') or ''}"]

    async def reconcile(self, key: str) -> float | None:
        ns, _, name = key.partition("/")
        try:
            sc = await self.client.get(API_VERSION, "StatusCheck", name, ns)
        except NotFoundError:
            return None
        sc.setdefault("apiVersion", API_VERSION)
        sc.setdefault("kind", "StatusCheck")
        if sc["metadata"].get("deletionTimestamp") or check_completed(sc):
            return None
        spec = _spec(sc)
        invalid = spec_error(spec)
        try:
            duration = parse_go_duration(str(spec["duration"]), "spec.duration") if spec.get("duration") else None
        except ChaosSpecError as e:
            duration, invalid = None, invalid or str(e)
        if invalid is not None:
            await record_event(self.client, sc, "Warning", "InvalidSpec", invalid, COMPONENT)
            return None
        now = datetime.now(UTC)
        st = copy.deepcopy(sc.get("status") or {})
        start = parse_time(st["startTime"]) if st.get("startTime") else now
        st["startTime"] = fmt_time(start)
        records = list(st.get("records") or [])
        interval = timedelta(seconds=spec["intervalSeconds"])
        due = (parse_time(records[-1]["startTime"]) if records else start) + interval
        exceeded = duration is not None and now >= start + timedelta(seconds=duration)
        if now >= due and not exceeded:
            await self._execute(sc, spec, st, now)
        done = self._conditions(spec, st, duration, datetime.now(UTC))
        if done and not st.get("completionTime"):
            st["completionTime"] = fmt_time(datetime.now(UTC))
            reason = next(c["reason"] for c in st["conditions"] if c["type"] == "Completed")
            await record_event(self.client, sc, "Normal", "Completed", f"Status check completed: {reason}", COMPONENT)
        await self.client.modify(sc, lambda o: o.__setitem__("status", st), status=True)
        if done:
            return None
        nxt = parse_time(st["records"][-1]["startTime"]) + interval if st.get("records") else start + interval
        if duration is not None:
            nxt = min(nxt, start + timedelta(seconds=duration))
        return max((nxt - datetime.now(UTC)).total_seconds(), 0.05)

    async def _execute(self, sc: Obj, spec: Obj, st: Obj, now: datetime) -> None:
        ok, msg = await self.probe(spec["http"], float(spec["timeoutSeconds"]))
        records = [*(st.get("records") or []), {"startTime": fmt_time(now), "outcome": "Success" if ok else "Failure"}]
        st["records"] = records[-spec["recordsHistoryLimit"]:]
        st["count"] = int(st.get("count") or 0) + 1
        if ok:
            await record_event(self.client, sc, "Normal", "StatusCheckExecutionSucceed",
                               "HTTP status check execution succeed", COMPONENT)
        else:
            await record_event(self.client, sc, "Warning", "StatusCheckExecutionFailed",
                               f"HTTP status check execution failed: {msg}", COMPONENT)

    @staticmethod
    def _conditions(spec: Obj, st: Obj, duration: float | None, now: datetime) -> bool:
        """Recompute the four conditions as upstream's generateConditions; True when Completed."""
        records = st.get("records") or []
        start = parse_time(st["startTime"])
        duration_exceed = duration is not None and now > start + timedelta(seconds=duration)
        failed = _streak(records, "Failure", spec["failureThreshold"])
        succeeded = _streak(records, "Success", spec["successThreshold"])
        if duration_exceed:
            completed, reason = True, "StatusCheckDurationExceed"
        elif failed:
            completed, reason = True, "StatusCheckFailureThresholdExceed"
        elif spec.get("mode") == "Synchronous" and succeeded:
            completed, reason = True, "StatusCheckSuccessThresholdExceed"
        else:
            completed, reason = False, ""
        values = {"Completed": (completed, reason), "DurationExceed": (duration_exceed, ""),
                  "FailureThresholdExceed": (failed, ""), "SuccessThresholdExceed": (succeeded, "")}
        old = {c.get("type"): c for c in st.get("conditions") or []}
        # probed at the last execution: a reconcile that ran none writes nothing new (no status churn)
        stamp = records[-1]["startTime"] if records else st["startTime"]
        conds = []
        for t in _ORDER:
            value, why = values[t]
            status = "True" if value else "False"
            prev = old.get(t) or {}
            changed = prev.get("status") != status
            conds.append({"type": t, "status": status, "reason": why, "lastProbeTime": stamp,
                          "lastTransitionTime": stamp if changed else prev.get("lastTransitionTime", stamp)})
        st["conditions"] = conds
        return completed
