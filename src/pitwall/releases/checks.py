"""A Canary's metric checks, as Flagger runs them (``pkg/controller/scheduler_metrics.go``).

Built-ins ``request-success-rate`` and ``request-duration`` are the Istio
observer's queries (``pkg/metrics/observers/istio.go``) over the mesh's
``istio_*`` series; ``query`` and MetricTemplates are Go templates with
Flagger's functions (``name``, ``namespace``, ``target``, ``service``,
``ingress``, ``route``, ``interval``, ``variables``). A query without a
value (no series, or NaN) is "no values found": a failed check, as in
Flagger. pitwall adds a minimum-request guard: with the annotation
``releases.pitwall.dev/min-requests: N`` a step whose canary served fewer
than N requests in the metric interval is treated as
``releases.pitwall.dev/no-traffic`` says: ``fail`` (Flagger's behaviour, the
default), ``wait`` (the step is run again, nothing counted) or ``pass``.

Providers are chosen in one place, ``provider_for``: ``prometheus`` with an
empty address (or one naming this server) runs in process, another address
through the Prometheus HTTP API. Kayenta's statistical judge
(``pitwall.releases.judge``) is asked for with the annotation
``releases.pitwall.dev/judge: kayenta`` on a ``prometheus`` MetricTemplate
(Flagger's schema has no ``kayenta`` provider type): the template's query is
sampled over the interval for the canary (``{{ target }}``) and for the
primary, and the judge compares the two.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from pitwall.core.gotemplate import Template, TemplateError
from pitwall.kube import KubeClient, NotFoundError
from pitwall.metrics import InstantQuery
from pitwall.releases.judge import JudgeConfig, JudgeResult, MetricInput, judge
from pitwall.releases.model import (
    API_VERSION,
    METRIC_TEMPLATE,
    MIN_REQUESTS,
    NO_TRAFFIC,
    CanaryView,
    duration_s,
)

__all__ = [
    "ISTIO_QUERIES",
    "CheckResult",
    "MetricContext",
    "NoValuesFound",
    "ProviderUnavailable",
    "QueryFn",
    "provider_for",
    "render_query",
    "run_checks",
]

METRIC_INTERVAL = "1m"
# A MetricTemplate with this annotation is judged by Kayenta's NetflixACAJudge, canary against primary.
JUDGE = "releases.pitwall.dev/judge"
JUDGE_DIRECTION = "releases.pitwall.dev/judge-direction"  # increase, decrease or either (bad when it moves so)
JUDGE_CRITICAL = "releases.pitwall.dev/judge-critical"  # "true": a failing metric fails the whole judgement
JUDGE_PASS = "releases.pitwall.dev/judge-pass-score"  # default 95
JUDGE_MARGINAL = "releases.pitwall.dev/judge-marginal-score"  # default 75
JUDGE_POINTS = 30  # samples per side over the metric interval
_HTTP_TIMEOUT_S = 10.0
_MAX_RESPONSE = 4 << 20

ISTIO_QUERIES = {
    "request-success-rate": (
        'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",'
        'destination_workload=~"{{ target }}",response_code!~"5.*"}[{{ interval }}])) / '
        'sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",'
        'destination_workload=~"{{ target }}"}[{{ interval }}])) * 100'),
    "request-duration": (
        'histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",'
        'destination_workload_namespace="{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}]))'
        ' by (le))'),
}
_REQUESTS = ('sum(increase(istio_requests_total{reporter="destination",destination_workload_namespace='
             '"{{ namespace }}",destination_workload=~"{{ target }}"}[{{ interval }}]))')


class NoValuesFound(Exception):
    """The query returned no series, or NaN (Flagger's providers.ErrNoValuesFound)."""


class ProviderUnavailable(Exception):
    """The metric provider type cannot be used here."""


class QueryFn(Protocol):
    def __call__(self, query: str) -> Awaitable[float]: ...


@dataclass
class MetricContext:
    """What the checks need besides the Canary: the in-process PromQL engine, the Kubernetes client (templates,
    secrets) and the addresses under which this server is its own Prometheus."""

    instant: InstantQuery | None
    client: KubeClient
    self_addresses: frozenset[str] = frozenset()
    tenant: str = "default"
    http: Callable[[], httpx.AsyncClient] = field(default=lambda: httpx.AsyncClient(timeout=_HTTP_TIMEOUT_S))


@dataclass
class CheckResult:
    """The outcome of one analysis step's metric checks: ``ok``; ``wait`` (no traffic under the guard's
    ``wait`` policy: neither passed nor failed); the Events to record (type, message); the judge's results
    (metric name, result) of the metrics it judged, passed or not; ``values``: (metric name, value) of each
    check that got a value, as Flagger's recorder keeps them for ``flagger_canary_metric_analysis``."""

    ok: bool
    wait: bool = False
    events: list[tuple[str, str]] = field(default_factory=list)
    judgements: list[tuple[str, JudgeResult]] = field(default_factory=list)
    values: list[tuple[str, float]] = field(default_factory=list)


def _value(result_type: str, values: list[Any]) -> float:
    if result_type not in ("vector", "scalar") or not values or not len(values[0]):
        raise NoValuesFound("no values found")
    v = float(values[0][-1])
    if math.isnan(v):
        raise NoValuesFound("no values found")
    return v


def _local(instant: InstantQuery, tenant: str) -> QueryFn:
    async def run(query: str) -> float:
        res = await asyncio.to_thread(instant, query, int(time.time() * 1000), tenant)
        return _value(res.result_type, list(res.values))

    return run


def _http_prometheus(ctx: MetricContext, address: str, creds: Mapping[str, str]) -> QueryFn:
    url = address.rstrip("/") + "/api/v1/query"
    headers: dict[str, str] = {}
    if creds.get("token"):
        headers["Authorization"] = f"Bearer {creds['token']}"
    elif creds.get("username"):
        raw = f"{creds['username']}:{creds.get('password', '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()

    async def run(query: str) -> float:
        body = bytearray()
        async with ctx.http() as http, http.stream("GET", url, params={"query": query}, headers=headers) as r:
            async for chunk in r.aiter_bytes():
                body += chunk
                if len(body) > _MAX_RESPONSE:
                    raise ValueError(f"response of {url} larger than {_MAX_RESPONSE} bytes")
        if r.status_code != 200:
            raise ValueError(f"{url} answered {r.status_code}: {bytes(body[:200]).decode(errors='replace')}")
        data = (json.loads(body).get("data") or {})
        rt, result = data.get("resultType", ""), data.get("result") or []
        if rt == "scalar":
            return _value("scalar", [[float(result[1])]] if result else [])
        return _value(rt, [[float(s["value"][1])] for s in result if "value" in s])

    return run


async def _secret_data(client: KubeClient, namespace: str, name: str) -> dict[str, str]:
    sec = await client.get("v1", "Secret", name, namespace)
    return {k: base64.b64decode(v).decode(errors="replace") for k, v in (sec.get("data") or {}).items()}


async def provider_for(ctx: MetricContext, provider: Mapping[str, Any], namespace: str) -> QueryFn:
    """The query function of a MetricTemplate's ``spec.provider`` (the one place provider types are told
    apart); ``ProviderUnavailable`` for a type pitwall does not serve."""
    kind = str(provider.get("type") or "")
    if kind == "prometheus":
        address = str(provider.get("address") or "").rstrip("/")
        if not address or address in ctx.self_addresses:
            if ctx.instant is None:
                raise ProviderUnavailable("provider prometheus not available: no metric store in this server")
            return _local(ctx.instant, ctx.tenant)
        creds: dict[str, str] = {}
        ref = provider.get("secretRef") or {}
        if ref.get("name"):
            creds = await _secret_data(ctx.client, namespace, str(ref["name"]))
        return _http_prometheus(ctx, address, creds)
    if kind == "kayenta":  # Flagger's schema refuses this type; the judge is a MetricTemplate annotation
        raise ProviderUnavailable(f"provider kayenta not available: annotate a prometheus MetricTemplate with "
                                  f"{JUDGE}: kayenta")
    raise ProviderUnavailable(f"provider {kind or '(empty)'} not available: pitwall serves prometheus")


def render_query(text: str, cd: CanaryView, interval: str, variables: Mapping[str, Any] | None,
                 target: str = "") -> str:
    """A query with Flagger's template functions filled in (Go's text/template, missingkey=error); ``target``
    replaces the Canary's target (the judge renders the query for the primary too)."""
    target = target or cd.target
    service = str(cd.service.get("name") or target)
    ingress = str((cd.spec.get("ingressRef") or {}).get("name") or target)
    route = str((cd.spec.get("routeRef") or {}).get("name") or target)
    vars_ = {str(k): str(v) for k, v in (variables or {}).items()}
    funcs: dict[str, Callable[..., Any]] = {
        "name": lambda: cd.name, "namespace": lambda: cd.namespace, "target": lambda: target,
        "service": lambda: service, "ingress": lambda: ingress, "route": lambda: route,
        "interval": lambda: interval, "variables": lambda: vars_,
    }
    return Template("tmpl", funcs).option("missingkey=error").parse(text).execute(None)


def _bounds(metric: Mapping[str, Any]) -> tuple[float | None, float | None]:
    tr = metric.get("thresholdRange")
    if isinstance(tr, dict):
        lo, hi = tr.get("min"), tr.get("max")
        return (float(lo) if lo is not None else None, float(hi) if hi is not None else None)
    return None, None


def _judge(cd: CanaryView, metric: Mapping[str, Any], what: str, val: float, shown: str,
           legacy_min: bool, unit: str = "") -> str | None:
    """The Halt message when ``val`` is out of the metric's range (``threshold`` is a minimum for the success
    rate and a maximum otherwise, as in Flagger); None when it passes."""
    lo, hi = _bounds(metric)
    head = f"Halt {cd.name}.{cd.namespace} advancement {what}"
    if lo is not None or hi is not None:
        if lo is not None and val < lo:
            return f"{head} {shown} < {_num(lo)}{unit}"
        if hi is not None and val > hi:
            return f"{head} {shown} > {_num(hi)}{unit}"
        return None
    thr = metric.get("threshold")
    if thr is None:
        return None
    t = float(thr)
    if legacy_min and t > val:
        return f"{head} {shown} < {_num(t)}{unit}"
    if not legacy_min and val > t:
        return f"{head} {shown} > {_num(t)}{unit}"
    return None


def _num(v: float) -> str:
    return str(int(v)) if v == int(v) else str(v)


async def _guard(ctx: MetricContext, cd: CanaryView, interval: str) -> CheckResult | None:
    """The minimum-request guard; None when it lets the checks run."""
    raw = cd.annotation(MIN_REQUESTS)
    if not raw or ctx.instant is None:
        return None
    try:
        need = float(raw)
    except ValueError:
        return CheckResult(False, events=[("Warning", f"annotation {MIN_REQUESTS}: Invalid value: {raw!r}: not a "
                                                      "number")])
    try:
        seen = await _local(ctx.instant, ctx.tenant)(render_query(_REQUESTS, cd, interval, None))
    except NoValuesFound:
        seen = 0.0
    if seen >= need:
        return None
    policy = cd.annotation(NO_TRAFFIC) or "fail"
    msg = (f"Halt {cd.name}.{cd.namespace} advancement: {seen:.0f} requests to {cd.target} in {interval} < "
           f"{raw} ({NO_TRAFFIC}: {policy})")
    if policy == "pass":
        return CheckResult(True, events=[("Normal", msg.replace("Halt", "Passing", 1))])
    if policy == "wait":
        return CheckResult(False, wait=True, events=[("Warning", msg)])
    return CheckResult(False, events=[("Warning", msg)])


async def _builtin(ctx: MetricContext, cd: CanaryView, metric: Mapping[str, Any], interval: str,
                   values: list[tuple[str, float]]) -> str | None:
    """Run a built-in; the Halt message, or None if it passed. Its value goes into ``values`` (the duration in
    seconds, as Flagger records it)."""
    name = str(metric.get("name"))
    if ctx.instant is None:
        raise ProviderUnavailable("prometheus not available: no metric store in this server")
    query = render_query(ISTIO_QUERIES[name], cd, interval, metric.get("templateVariables"))
    try:
        val = await _local(ctx.instant, ctx.tenant)(query)
    except NoValuesFound as e:
        return (f"Halt advancement no values found for istio metric {name} probably {cd.target}.{cd.namespace} is "
                f"not receiving traffic: {e}")
    if name == "request-success-rate":
        values.append((name, val))
        return _judge(cd, metric, "success rate", val, f"{val:.2f}%", True, "%")
    ms = int(val)
    values.append((name, ms / 1000))
    return _judge(cd, metric, "request duration", float(ms), f"{ms}ms", False, "ms")


async def _templated(ctx: MetricContext, cd: CanaryView, metric: Mapping[str, Any], interval: str,
                     judged: list[tuple[str, JudgeResult]] | None = None,
                     values: list[tuple[str, float]] | None = None) -> str | None:
    ref = metric.get("templateRef") or {}
    ns = str(ref.get("namespace") or cd.namespace)
    tname = str(ref.get("name") or "")
    name = str(metric.get("name"))
    try:
        tmpl = await ctx.client.get(API_VERSION, METRIC_TEMPLATE, tname, ns)
    except NotFoundError:
        return f"Metric template {tname}.{ns} error: metrictemplate.flagger.app \"{tname}\" not found"
    spec = tmpl.get("spec") or {}
    annotations = (tmpl.get("metadata") or {}).get("annotations") or {}
    if annotations.get(JUDGE):
        return await _judged(ctx, cd, metric, spec, annotations, interval, f"{tname}.{ns}", judged)
    try:
        run = await provider_for(ctx, spec.get("provider") or {}, ns)
    except (ProviderUnavailable, NotFoundError) as e:
        return f"Metric template {tname}.{ns} provider {(spec.get('provider') or {}).get('type')} error: {e}"
    try:
        query = render_query(str(spec.get("query") or ""), cd, interval, metric.get("templateVariables"))
    except TemplateError as e:
        return f"Metric template {tname}.{ns} query render error: {e}"
    try:
        val = await run(query)
    except NoValuesFound as e:
        return f"Halt advancement no values found for custom metric: {name}: {e}"
    except (httpx.HTTPError, ValueError) as e:
        return f"Metric query failed for {name}: {e}"
    if values is not None:
        values.append((name, val))
    return _judge(cd, metric, name, val, f"{val:.2f}", False)


async def _judged(ctx: MetricContext, cd: CanaryView, metric: Mapping[str, Any], spec: Mapping[str, Any],
                  annotations: Mapping[str, str], interval: str, where: str,
                  judged: list[tuple[str, JudgeResult]] | None = None) -> str | None:
    """Kayenta's judge over the template's query for the canary and for the primary, sampled over the interval;
    the Halt message (score and each verdict) unless the judge passes. The result goes into ``judged``."""
    name = str(metric.get("name"))
    if annotations.get(JUDGE) != "kayenta":
        return f"Metric template {where} error: {JUDGE} must be kayenta, not {annotations.get(JUDGE)!r}"
    provider = spec.get("provider") or {}
    address = str(provider.get("address") or "").rstrip("/")
    if provider.get("type") != "prometheus" or (address and address not in ctx.self_addresses):
        return f"Metric template {where} error: the judge reads pitwall's own metrics (provider prometheus, " \
               f"no address)"
    if ctx.instant is None:
        raise ProviderUnavailable("prometheus not available: no metric store in this server")
    try:
        inp = MetricInput(
            name=name, canary=await _samples(ctx, cd, spec, metric, interval, cd.target),
            baseline=await _samples(ctx, cd, spec, metric, interval, cd.primary_workload),
            direction=annotations.get(JUDGE_DIRECTION, "either"),
            critical=annotations.get(JUDGE_CRITICAL, "false") == "true")
        result = judge([inp], JudgeConfig(pass_threshold=float(annotations.get(JUDGE_PASS, 95.0)),
                                          marginal_threshold=float(annotations.get(JUDGE_MARGINAL, 75.0))))
    except TemplateError as e:
        return f"Metric template {where} query render error: {e}"
    except ValueError as e:
        return f"Metric template {where} judge error: {e}"
    if judged is not None:
        judged.append((name, result))
    verdicts = "; ".join(f"{v.name} {v.classification}: {v.reason}" for v in result.metrics)
    if result.classification == "Pass":
        return None
    return (f"Halt {cd.name}.{cd.namespace} advancement judge {name} score {result.score:.0f} "
            f"{result.classification}: {verdicts or result.reason}")


async def _samples(ctx: MetricContext, cd: CanaryView, spec: Mapping[str, Any], metric: Mapping[str, Any],
                   interval: str, target: str) -> list[float]:
    """The query's value at JUDGE_POINTS instants over the last interval (NaN where it had none)."""
    assert ctx.instant is not None
    query = render_query(str(spec.get("query") or ""), cd, interval, metric.get("templateVariables"), target)
    end_ms = int(time.time() * 1000)
    step_ms = max(1, int(duration_s(interval) * 1000) // JUDGE_POINTS)
    out = []
    for i in range(JUDGE_POINTS):
        res = await asyncio.to_thread(ctx.instant, query, end_ms - i * step_ms, ctx.tenant)
        try:
            out.append(_value(res.result_type, list(res.values)))
        except NoValuesFound:
            out.append(math.nan)
    return out[::-1]


async def run_checks(ctx: MetricContext, cd: CanaryView) -> CheckResult:
    """Every metric of the analysis in order; the first failure stops the step (as Flagger's loop returns)."""
    events: list[tuple[str, str]] = []
    judged: list[tuple[str, JudgeResult]] = []
    values: list[tuple[str, float]] = []
    default_interval = METRIC_INTERVAL
    guard_interval = next((str(m["interval"]) for m in cd.metrics if m.get("interval")), default_interval)
    guard = await _guard(ctx, cd, guard_interval)
    if guard is not None:
        return guard
    for metric in cd.metrics:
        interval = str(metric.get("interval") or default_interval)
        try:
            duration_s(interval)
        except ValueError as e:
            return CheckResult(False, events=[("Warning", f"metric {metric.get('name')} interval: {e}")])
        name = str(metric.get("name") or "")
        try:
            if metric.get("templateRef"):
                msg = await _templated(ctx, cd, metric, interval, judged, values)
            elif name in ISTIO_QUERIES:
                msg = await _builtin(ctx, cd, metric, interval, values)
            elif metric.get("query"):
                msg = await _inline(ctx, cd, metric, interval, values)
            else:
                msg = "Metric query failed for no usable metrics template and query were configured"
        except ProviderUnavailable as e:
            msg = f"Prometheus query failed: {e}"
        except TemplateError as e:
            msg = f"Metric {name} query render error: {e}"
        except Exception as e:  # a query the engine refuses (parse error, limits): a failed check, as in Flagger
            msg = f"Prometheus query failed for {name}: {e}"
        if msg is not None:
            events.append(("Warning", msg))
            return CheckResult(False, events=events, judgements=judged, values=values)
    return CheckResult(True, events=events, judgements=judged, values=values)


async def _inline(ctx: MetricContext, cd: CanaryView, metric: Mapping[str, Any], interval: str,
                  values: list[tuple[str, float]]) -> str | None:
    """A metric with its own ``query``: run on the mesh's Prometheus (pitwall itself)."""
    if ctx.instant is None:
        raise ProviderUnavailable("prometheus not available: no metric store in this server")
    name = str(metric.get("name"))
    query = render_query(str(metric["query"]), cd, interval, metric.get("templateVariables"))
    try:
        val = await _local(ctx.instant, ctx.tenant)(query)
    except NoValuesFound:
        return f"Halt advancement no values found for metric: {name}"
    values.append((name, val))
    return _judge(cd, metric, name, val, f"{val:.2f}", False)
