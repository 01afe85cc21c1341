"""Envoy's access log for every proxied request and TCP connection, into the log store.

What an Istio user sets with ``accessLogFile: /dev/stdout`` and reads back
from the sidecar's output through promtail: one line per HTTP request (and
per TCP connection) in Istio's default TEXT format (``TEXT_FORMAT``, from
istio/istio ``pilot/pkg/model/telemetry_logging.go``, ``EnvoyTextLogFormat``)
or its default JSON object (``JSON_KEYS``, ``EnvoyJSONLogFormatIstio``).
Values the proxy does not know print as ``-``, as Envoy prints them.

Who logs is decided by Istio's Telemetry API (``telemetry.istio.io/v1``
``accessLogging``; ``TelemetryPolicies``) over the pitwall setting
``kube.mesh_access_log`` (the mesh-wide default and the encoding). The
request path only builds the line and appends it to a bounded queue
(``AccessLogSink.offer``); a task pushes the queue into the log store every
``interval_s``. A full queue drops the line and counts it
(``pitwall_mesh_access_log_dropped_total``): logging never slows a request.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pitwall.core.labels import Labels, labels_from_dict
from pitwall.core.tasks import Flusher, Supervisor
from pitwall.logs import LogAppender, LogEntry, PushStream
from pitwall.traffic.pods import PodInfo

__all__ = ["ACCESS_LOG_MODES", "JSON_KEYS", "ROOT_NAMESPACE", "TEXT_FORMAT", "AccessLogPolicy", "AccessLogSink",
           "AccessRecord", "CelError", "TelemetryPolicies", "compile_filter", "stream_labels", "telemetry_error"]


# Istio's EnvoyTextLogFormat (1.9 onwards), for reference and for the tests: ``format_text`` prints it.
TEXT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    '%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% '
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" '
    '"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% '
    '%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n'
)
# Istio's EnvoyJSONLogFormatIstio keys; Envoy writes the object with its keys sorted.
JSON_KEYS = ("authority", "bytes_received", "bytes_sent", "connection_termination_details", "downstream_local_address",
             "downstream_remote_address", "duration", "method", "path", "protocol", "request_id",
             "requested_server_name", "response_code", "response_code_details", "response_flags", "route_name",
             "start_time", "upstream_cluster", "upstream_host", "upstream_local_address", "upstream_service_time",
             "upstream_transport_failure_reason", "user_agent", "x_forwarded_for")
# JSON values Envoy prints as numbers (the others are strings, or null where the text format has "-").
_JSON_NUMBERS = frozenset({"bytes_received", "bytes_sent", "duration", "response_code"})
ACCESS_LOG_MODES = ("off", "text", "json")
ROOT_NAMESPACE = "istio-system"  # Istio's default meshConfig.rootNamespace
CONTAINER = "istio-proxy"
_MAX_QUEUE = 10_000  # lines waiting for the next flush; past it lines are dropped and counted
_MAX_EXPR = 1024  # characters of a filter expression


@dataclass(slots=True)
class AccessRecord:
    """One request (or TCP connection) as Envoy's access log sees it; ``None``/empty prints as ``-``."""

    start_ns: int
    method: str | None
    path: str | None
    protocol: str | None  # "HTTP/1.1"; None for TCP
    code: int  # 0 for TCP, as Envoy
    flags: str
    details: str | None
    failure_reason: str | None
    bytes_received: int
    bytes_sent: int
    duration_ms: int
    service_time_ms: int | None
    forwarded_for: str | None
    user_agent: str | None
    request_id: str | None
    authority: str | None
    upstream_host: str | None
    upstream_cluster: str | None
    downstream_local: str | None
    downstream_remote: str | None
    route_name: str | None

    def values(self) -> dict[str, str | int | None]:
        """The JSON format's keys and values (None: Envoy's null)."""
        return {
            "authority": self.authority, "bytes_received": self.bytes_received, "bytes_sent": self.bytes_sent,
            "connection_termination_details": None, "downstream_local_address": self.downstream_local,
            "downstream_remote_address": self.downstream_remote, "duration": self.duration_ms,
            "method": self.method, "path": self.path, "protocol": self.protocol, "request_id": self.request_id,
            "requested_server_name": None, "response_code": self.code, "response_code_details": self.details,
            "response_flags": self.flags, "route_name": self.route_name, "start_time": start_time(self.start_ns),
            "upstream_cluster": self.upstream_cluster, "upstream_host": self.upstream_host,
            "upstream_local_address": None,
            "upstream_service_time": None if self.service_time_ms is None else str(self.service_time_ms),
            "upstream_transport_failure_reason": self.failure_reason, "user_agent": self.user_agent,
            "x_forwarded_for": self.forwarded_for,
        }


def start_time(ns: int) -> str:
    """Envoy's default ``%START_TIME%``: ``2024-01-02T03:04:05.678Z`` (UTC, milliseconds)."""
    secs, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{rest // 1_000_000:03d}Z"


def _d(v: object) -> str:
    return "-" if v is None or v == "" else str(v)


def format_text(r: AccessRecord) -> str:
    """The line Istio's TEXT encoding prints (without the trailing newline the log store does not keep)."""
    return (f'[{start_time(r.start_ns)}] "{_d(r.method)} {_d(r.path)} {_d(r.protocol)}" {r.code} {_d(r.flags)} '
            f'{_d(r.details)} - "{_d(r.failure_reason)}" {r.bytes_received} {r.bytes_sent} {r.duration_ms} '
            f'{_d(r.service_time_ms)} "{_d(r.forwarded_for)}" "{_d(r.user_agent)}" "{_d(r.request_id)}" '
            f'"{_d(r.authority)}" "{_d(r.upstream_host)}" {_d(r.upstream_cluster)} - {_d(r.downstream_local)} '
            f'{_d(r.downstream_remote)} - {_d(r.route_name)}')


def format_json(r: AccessRecord) -> str:
    """The object Istio's JSON encoding prints: its default keys, sorted; unknown values null."""
    vals = r.values()
    out = {k: (vals[k] if k in _JSON_NUMBERS or vals[k] is None else str(vals[k])) for k in JSON_KEYS}
    if out["response_flags"] == "":
        out["response_flags"] = "-"
    return json.dumps(out, separators=(",", ":"))


def stream_labels(pod: PodInfo) -> Labels:
    """The labels pitwall's kubelet gives a container's output (``node.logs.stream_labels``), for the
    ``istio-proxy`` container of ``pod``: as promtail's ``kubernetes-pods`` job labels sidecar logs."""
    app = pod.labels.get("app") or pod.labels.get("app.kubernetes.io/name") or pod.name
    lb = {"namespace": pod.namespace, "pod": pod.name, "container": CONTAINER, "app": app,
          "job": f"{pod.namespace}/{app}", "stream": "stdout"}
    if pod.node:  # a pod not scheduled by a kubelet has no node: no empty label (Loki has none)
        lb["node"] = pod.node
    return labels_from_dict(lb)


# -- the filter: a small, safe subset of CEL -------------------------------------------------------------


class CelError(ValueError):
    """A filter expression outside the supported subset."""


# Envoy's request/response attributes the subset knows, with their CEL type.
_ATTRS: dict[str, type] = {
    "response.code": int, "response.size": int, "response.flags": str, "response.code_details": str,
    "request.method": str, "request.url_path": str, "request.path": str, "request.host": str,
    "request.protocol": str, "request.size": int, "request.id": str, "request.useragent": str,
    "request.duration": int,  # milliseconds here (CEL has a duration type; compare with an integer of ms)
}
_TOKEN = re.compile(r"\s*(?:(\|\||&&|==|!=|<=|>=|<|>|!|\(|\))|(\d+)|'([^'\\]*)'|\"([^\"\\]*)\"|"
                    r"([A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)*))")
_OPS = {"==", "!=", "<", "<=", ">", ">="}
Filter = Any  # a compiled expression: nested tuples, evaluated by ``_eval``


def _tokens(expr: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(expr):
        if expr[i:].strip() == "":
            break
        m = _TOKEN.match(expr, i)
        if m is None:
            raise CelError(f"unexpected {expr[i:].strip()[:20]!r} at offset {i}")
        op, num, s1, s2, ident = m.groups()
        if op is not None:
            out.append(("op", op))
        elif num is not None:
            out.append(("lit", int(num)))
        elif s1 is not None or s2 is not None:
            out.append(("lit", s1 if s1 is not None else s2))
        elif ident in ("true", "false"):
            out.append(("lit", ident == "true"))
        else:
            out.append(("attr", ident))
        i = m.end()
    return out


class _Parser:
    def __init__(self, toks: list[tuple[str, Any]]) -> None:
        self.toks, self.i = toks, 0

    def peek(self) -> tuple[str, Any] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, Any]:
        t = self.peek()
        if t is None:
            raise CelError("the expression ends too early")
        self.i += 1
        return t

    def expr(self) -> Filter:
        left = self.conj()
        while self.peek() == ("op", "||"):
            self.i += 1
            left = ("or", left, self.conj())
        return left

    def conj(self) -> Filter:
        left = self.unary()
        while self.peek() == ("op", "&&"):
            self.i += 1
            left = ("and", left, self.unary())
        return left

    def unary(self) -> Filter:
        if self.peek() == ("op", "!"):
            self.i += 1
            return ("not", self.unary())
        if self.peek() == ("op", "("):
            self.i += 1
            inner = self.expr()
            if self.take() != ("op", ")"):
                raise CelError("a '(' is not closed")
            return inner
        return self.comparison()

    def comparison(self) -> Filter:
        kind, name = self.take()
        if kind != "attr":
            raise CelError(f"expected an attribute, got {name!r}")
        if name not in _ATTRS:
            raise CelError(f"attribute {name!r} is not supported (supported: {', '.join(sorted(_ATTRS))})")
        kind, op = self.take()
        if kind != "op" or op not in _OPS:
            raise CelError(f"expected a comparison after {name}, got {op!r}")
        kind, lit = self.take()
        want = _ATTRS[name]
        if kind != "lit" or type(lit) is not want:
            raise CelError(f"{name} compares with a{'n int' if want is int else ' string'} literal, got {lit!r}")
        if want is str and op not in ("==", "!="):
            raise CelError(f"{name} supports only == and !=")
        return ("cmp", name, op, lit)


def compile_filter(expr: str) -> Filter:
    """Compile ``filter.expression``: comparisons of request/response attributes with literals, joined by
    ``&&``, ``||``, ``!`` and parentheses. Anything else raises ``CelError`` naming what is unsupported."""
    if len(expr) > _MAX_EXPR:
        raise CelError(f"longer than {_MAX_EXPR} characters")
    p = _Parser(_tokens(expr))
    if not p.toks:
        raise CelError("empty expression")
    tree = p.expr()
    if p.peek() is not None:
        raise CelError(f"unexpected {p.peek()[1]!r} after a complete expression")  # type: ignore[index]
    return tree


def _attr(name: str, r: AccessRecord) -> object:
    if name == "response.code":
        return r.code
    if name == "response.size":
        return r.bytes_sent
    if name == "request.size":
        return r.bytes_received
    if name == "request.duration":
        return r.duration_ms
    if name == "request.url_path":
        return (r.path or "").split("?", 1)[0]
    return {"response.flags": r.flags, "response.code_details": r.details, "request.method": r.method,
            "request.path": r.path, "request.host": r.authority, "request.protocol": r.protocol,
            "request.id": r.request_id, "request.useragent": r.user_agent}.get(name) or ""


def _eval(f: Filter, r: AccessRecord) -> bool:
    tag = f[0]
    if tag == "or":
        return _eval(f[1], r) or _eval(f[2], r)
    if tag == "and":
        return _eval(f[1], r) and _eval(f[2], r)
    if tag == "not":
        return not _eval(f[1], r)
    _, name, op, lit = f
    v: Any = _attr(name, r)
    if op == "==":
        return bool(v == lit)
    if op == "!=":
        return bool(v != lit)
    if op == "<":
        return bool(v < lit)
    if op == "<=":
        return bool(v <= lit)
    if op == ">":
        return bool(v > lit)
    return bool(v >= lit)


# -- which workloads log: Istio's Telemetry API ----------------------------------------------------------


@dataclass(frozen=True)
class AccessLogPolicy:
    """Access logging in force for one workload: the encoding and an optional filter."""

    encoding: str  # text | json
    filter: Filter | None = None

    def wants(self, r: AccessRecord) -> bool:
        return self.filter is None or _eval(self.filter, r)


@dataclass(frozen=True)
class _Rule:
    selector: tuple[tuple[str, str], ...] | None  # None: the whole namespace
    enabled: bool
    filter: Filter | None


def telemetry_error(o: Mapping[str, Any]) -> str | None:
    """Why a Telemetry's ``accessLogging`` cannot be used (a filter outside the subset), or None."""
    try:
        _compile(o)
    except CelError as e:
        return str(e)
    return None


def _compile(o: Mapping[str, Any]) -> _Rule | None:
    """The access-logging rule of one Telemetry (None: it says nothing about access logs)."""
    spec = o.get("spec") or {}
    entries = spec.get("accessLogging")
    if not entries:
        return None
    enabled: bool | None = None
    flt: Filter | None = None
    for i, e in enumerate(entries):
        providers = [str((p or {}).get("name", "")) for p in e.get("providers") or []]
        if providers and "envoy" not in providers:
            continue  # another provider (OpenTelemetry, a file): nothing pitwall writes
        enabled = not bool(e.get("disabled", False))
        expr = (e.get("filter") or {}).get("expression")
        if expr:
            try:
                flt = compile_filter(str(expr))
            except CelError as err:
                raise CelError(f"spec.accessLogging[{i}].filter.expression: {err}") from None
    if enabled is None:
        return None
    sel = (spec.get("selector") or {}).get("matchLabels")
    selector = tuple(sorted((str(k), str(v)) for k, v in sel.items())) if sel else None
    return _Rule(selector, enabled, flt)


class TelemetryPolicies:
    """The Telemetry objects' access logging, resolved per workload with Istio's precedence: a Telemetry
    selecting the workload in its namespace, then the namespace's, then the root namespace's, then the
    ``kube.mesh_access_log`` default. Immutable: the proxy swaps in a new one on any change."""

    def __init__(self, objs: Iterable[Mapping[str, Any]], default: str = "off") -> None:
        self.encoding = default if default != "off" else "text"  # Istio's default accessLogEncoding is TEXT
        self.default = AccessLogPolicy(default) if default != "off" else None
        self._ns: dict[str, _Rule] = {}
        self._selected: dict[str, list[_Rule]] = {}
        self._any = self.default is not None
        for o in sorted(objs, key=lambda x: str((x.get("metadata") or {}).get("creationTimestamp", ""))):
            try:
                rule = _compile(o)
            except CelError:
                continue  # the proxy refuses such an object before it reaches here
            if rule is None:
                continue
            ns = str((o.get("metadata") or {}).get("namespace") or "default")
            if rule.selector is None:
                self._ns.setdefault(ns, rule)  # the oldest wins, as Istio picks one
            else:
                self._selected.setdefault(ns, []).append(rule)
            self._any = self._any or rule.enabled

    @property
    def active(self) -> bool:
        """Whether any workload logs at all (the proxy skips building records when not)."""
        return self._any

    def for_pod(self, pod: PodInfo) -> AccessLogPolicy | None:
        """The policy for ``pod``'s proxy, or None when it does not log."""
        rule = next((r for r in self._selected.get(pod.namespace, ())
                     if r.selector is not None and all(pod.labels.get(k) == v for k, v in r.selector)), None)
        if rule is None:
            rule = self._ns.get(pod.namespace)
        if rule is None and pod.namespace != ROOT_NAMESPACE:
            rule = self._ns.get(ROOT_NAMESPACE)
        if rule is None:
            return self.default
        return AccessLogPolicy(self.encoding, rule.filter) if rule.enabled else None


# -- the sink --------------------------------------------------------------------------------------------


class AccessLogSink(Flusher):
    """Queues lines (bounded, never blocking) and pushes them into the log store from a task (a Component)."""

    name = "mesh-access-log"

    def __init__(self, appender: LogAppender, *, tenant: str = "default", interval_s: float = 1.0,
                 max_queue: int = _MAX_QUEUE) -> None:
        self.appender = appender
        self.tenant = tenant
        self.interval_s = interval_s
        self.max_queue = max_queue
        self.tasks = Supervisor("mesh-access-log")
        self.dropped = 0
        self.written = 0
        # (pod, completion time, encoding, record): lines are formatted at flush, off the request path
        self._queue: list[tuple[PodInfo, int, str, AccessRecord]] = []

    def offer(self, policy: AccessLogPolicy, pod: PodInfo, r: AccessRecord) -> None:
        """Log ``r`` under ``pod``'s proxy if ``policy``'s filter wants it; a full queue drops it."""
        if not policy.wants(r):
            return
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            return
        self._queue.append((pod, time.time_ns(), policy.encoding, r))

    async def flush(self) -> int:
        """Push the queued lines, grouped by stream; the number pushed."""
        batch, self._queue = self._queue, []
        if not batch:
            return 0
        streams: dict[Labels, list[LogEntry]] = {}
        for pod, ts, encoding, r in batch:
            line = format_json(r) if encoding == "json" else format_text(r)
            streams.setdefault(stream_labels(pod), []).append(LogEntry(ts, line))
        try:
            await self.appender.push(self.tenant, [PushStream(k, sorted(v, key=lambda e: e.ts_ns))
                                                   for k, v in streams.items()])
        except Exception:
            self.dropped += len(batch)  # the store refused or failed: these lines are lost, and counted
            raise
        self.written += len(batch)
        return len(batch)
