"""The HorizontalPodAutoscaler controller (autoscaling/v2): scale a target through its ``scale`` subresource.

As upstream's (pkg/controller/podautoscaler), every 15 s per HPA:

1. reads the target's ``Scale`` (``scaleTargetRef``: a Deployment, a
   ReplicaSet or any kind with a scale subresource) and its pods (the
   Scale's selector);
2. the target at 0 replicas (with ``minReplicas`` > 0) is left alone
   (ScalingActive False, ScalingDisabled); above ``maxReplicas`` or below
   ``minReplicas`` it is brought within; otherwise every metric proposes a
   count (``pitwall.controllers.autoscale``) and the highest wins — when a
   metric fails and the rest would scale down, nothing changes;
3. the proposal is stabilised (``behavior.*.stabilizationWindowSeconds``)
   and rate-limited by the policies, ``minReplicas`` and ``maxReplicas``;
4. a changed count is written to the Scale (Event ``SuccessfulRescale``,
   "New size: N; reason: ..."), and ``status`` tells why: currentReplicas,
   desiredReplicas, currentMetrics, lastScaleTime and the conditions
   AbleToScale, ScalingActive, ScalingLimited with upstream's reasons.

Where the numbers come from:

- ``Resource`` / ``ContainerResource`` (cpu, memory): current usage as
  metrics.k8s.io serves it (``pod_metrics(namespace)``: the node's
  PodMetrics), against the containers' requests (``Utilization``) or as a
  per-pod average (``AverageValue``). A pod's cpu sample counts once the pod
  is ready (upstream's cpu initialisation rules: 5 min, 30 s).
- ``Pods``: ``sum by (pod) (<name>{namespace="<ns>",pod=~"<the target's pods>",<selector>})``,
  one value per pod, averaged by the algorithm (so it is
  ``avg(...)`` of the pods that reported, with upstream's handling of
  missing and unready ones);
- ``Object``: ``sum(<name>{namespace="<ns>",<kind>="<name>",<selector>})``
  where ``<kind>`` is the described object's kind in lower case
  (``service="web"``), as prometheus-adapter labels series;
- ``External``: ``sum(<name>{<selector>})``.

The selector's ``matchLabels`` become ``label="value"``, ``matchExpressions``
``In`` ``=~"a|b"``, ``NotIn`` ``!~"a|b"``, ``Exists`` ``!=""``,
``DoesNotExist`` ``=""``; characters other than letters, digits and ``_``
in label names become ``_``. Queries run through the injected
``InstantQuery`` (the metrics pillar's), at the sync's time.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pitwall.controllers._common import deleting, meta, now
from pitwall.controllers.autoscale import (
    Behavior,
    History,
    PodSample,
    Proposal,
    limited,
    longest_period,
    per_pod_replicas,
    ratio_replicas,
    stabilize,
    total_replicas,
)
from pitwall.controllers.loop import object_key, record_event, split_key
from pitwall.kube import Conflict, KubeAPI, KubeClient, NotFoundError, fmt_time, parse_time

if TYPE_CHECKING:
    from pitwall.metrics import InstantQuery

__all__ = ["SYNC_PERIOD_S", "HorizontalPodAutoscalerController", "PodMetricsSource", "format_quantity",
           "parse_quantity", "pod_metrics_of", "promql_query"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]
COMPONENT = "horizontal-pod-autoscaler"
SYNC_PERIOD_S = 15.0  # upstream --horizontal-pod-autoscaler-sync-period
CPU_INIT_PERIOD = timedelta(minutes=5)
INITIAL_READINESS_DELAY = timedelta(seconds=30)
PodMetricsSource = Callable[[str], Awaitable[list[Obj]]]  # namespace -> PodMetrics (metrics.k8s.io shape)

_SUFFIX = {"": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "E": 1e18, "Ki": 2.0 ** 10, "Mi": 2.0 ** 20, "Gi": 2.0 ** 30, "Ti": 2.0 ** 40, "Pi": 2.0 ** 50,
           "Ei": 2.0 ** 60}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:[eE]([+-]?\d+))?(Ki|Mi|Gi|Ti|Pi|Ei|[munkMGTPE]?)$")


def pod_metrics_of(kube: KubeAPI) -> PodMetricsSource:
    """The PodMetrics ``kube`` serves on metrics.k8s.io (``kubectl top``), read when asked: the node registers
    its provider after the controllers are built, and without one the Resource metrics fail as upstream's do
    without metrics-server."""

    async def pod_metrics(namespace: str) -> list[Obj]:
        provider = kube.metrics_provider
        if provider is None:
            raise RuntimeError("the metrics API (metrics.k8s.io) is not served: no node reports pod usage")
        return await provider.pod_metrics(namespace)

    return pod_metrics


def parse_quantity(q: Any) -> float:
    """A Kubernetes quantity (``250m``, ``1.5``, ``128Mi``, ``2k``) as a number; ``ValueError`` if bad."""
    if isinstance(q, (int, float)):
        return float(q)
    m = _QUANTITY.match(str(q).strip())
    if not m:
        raise ValueError(f"invalid quantity {q!r}")
    return float(m.group(1)) * (10.0 ** int(m.group(2)) if m.group(2) else 1.0) * _SUFFIX[m.group(3)]


def format_quantity(v: float) -> str:
    """A number as a quantity the way the API prints it: whole numbers plain, else in milli-units."""
    if abs(v - round(v)) < 1e-9:
        return str(round(v))
    return f"{round(v * 1000)}m"


def _label_name(k: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", k)


def _str(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _alternatives(values: Sequence[str]) -> str:
    return _str("|".join(re.escape(str(v)) for v in values))


def _matchers(selector: Obj | None) -> list[str]:
    sel = selector or {}
    out = [f"{_label_name(k)}={_str(str(v))}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        key, op, values = _label_name(str(e.get("key"))), e.get("operator"), e.get("values") or []
        if op == "In":
            out.append(f"{key}=~{_alternatives(values)}")
        elif op == "NotIn":
            out.append(f"{key}!~{_alternatives(values)}")
        elif op == "Exists":
            out.append(f'{key}!=""')
        elif op == "DoesNotExist":
            out.append(f'{key}=""')
    return out


def promql_query(metric_type: str, name: str, selector: Obj | None, *, namespace: str = "",
                 pods: Sequence[str] = (), described: Obj | None = None) -> str:
    """The PromQL query of a Pods, Object or External metric (see the module's docstring)."""
    extra = _matchers(selector)
    if metric_type == "Pods":
        ms = [f"namespace={_str(namespace)}", f"pod=~{_alternatives(sorted(pods))}", *extra]
        return f"sum by (pod) ({name}{{{','.join(ms)}}})"
    if metric_type == "Object":
        d = described or {}
        ms = [f"namespace={_str(namespace)}", f"{_label_name(str(d.get('kind', '')).lower())}={_str(str(d.get('name', '')))}",
              *extra]
        return f"sum({name}{{{','.join(ms)}}})"
    return f"sum({name}{{{','.join(extra)}}})"


class MetricError(Exception):
    """A metric could not be read; ``reason`` is upstream's condition/Event reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class _Measured:
    proposal: Proposal
    status: Obj
    description: str  # "cpu resource utilization (percentage of request)"


def _cond(conds: list[Obj], type_: str, status: str, reason: str, message: str, at: datetime) -> list[Obj]:
    prev = next((c for c in conds if c.get("type") == type_), None)
    transition = fmt_time(at) if prev is None or prev.get("status") != status else prev.get("lastTransitionTime")
    return [*(c for c in conds if c.get("type") != type_),
            {"type": type_, "status": status, "lastTransitionTime": transition, "reason": reason, "message": message}]


def _ready(pod: Obj) -> Obj | None:
    return next((c for c in (pod.get("status") or {}).get("conditions") or []
                 if isinstance(c, dict) and c.get("type") == "Ready"), None)


def _window(s: Any) -> timedelta:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", str(s or "0"))
    if not m:
        return timedelta(0)
    return timedelta(seconds=float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m.group(2)])


class HorizontalPodAutoscalerController:
    """A ``Reconciler`` of autoscaling/v2 HorizontalPodAutoscalers.

    ``instant`` answers Pods/Object/External metrics (PromQL); ``pod_metrics`` the Resource ones (PodMetrics
    of a namespace, as metrics.k8s.io serves them); either may be None (those metrics then fail with
    upstream's reasons). ``now`` is the clock; ``sync_period_s`` how often each HPA is evaluated.
    """

    name = COMPONENT
    primary = ("autoscaling/v2", "HorizontalPodAutoscaler")
    secondary: Sequence[tuple[str, str]] = ()

    def __init__(self, client: KubeClient, *, instant: InstantQuery | None = None,
                 pod_metrics: PodMetricsSource | None = None, now: Callable[[], datetime] = now,
                 sync_period_s: float = SYNC_PERIOD_S, tenant: str = "default") -> None:
        self.client = client
        self.instant = instant
        self.pod_metrics = pod_metrics
        self.now = now
        self.sync_period_s = sync_period_s
        self.tenant = tenant
        self._history: dict[str, History] = {}

    def keys_for(self, api_version: str, kind: str, obj: dict[str, Any]) -> list[str]:
        return [object_key(obj)]

    async def reconcile(self, key: str) -> float | None:
        ns, name = split_key(key)
        try:
            hpa = await self.client.get("autoscaling/v2", "HorizontalPodAutoscaler", name, ns)
        except NotFoundError:
            self._history.pop(key, None)
            return None
        hpa.setdefault("apiVersion", "autoscaling/v2")
        hpa.setdefault("kind", "HorizontalPodAutoscaler")
        if deleting(hpa):
            return None
        await self._sync(key, hpa)
        return self.sync_period_s

    async def _sync(self, key: str, hpa: Obj) -> None:
        at = self.now()
        ns = meta(hpa).get("namespace") or "default"
        spec = hpa.get("spec") or {}
        ref = spec.get("scaleTargetRef") or {}
        old_status: Obj = hpa.get("status") or {}
        status: Obj = {k: v for k, v in old_status.items() if k in ("lastScaleTime", "conditions", "currentMetrics")}
        status["observedGeneration"] = int(meta(hpa).get("generation") or 0) or None
        conds: list[Obj] = list(status.get("conditions") or [])
        ref_kind, ref_name = str(ref.get("kind") or ""), str(ref.get("name") or "")
        try:
            scale = await self.client.get_scale(str(ref.get("apiVersion") or "apps/v1"), ref_kind, ref_name, ns)
        except Exception as e:
            msg = f"the HPA controller was unable to get the target's current scale: {e}"
            conds = _cond(conds, "AbleToScale", "False", "FailedGetScale", msg, at)
            await record_event(self.client, hpa, "Warning", "FailedGetScale", str(e), COMPONENT)
            await self._write(hpa, {**status, "conditions": conds, "currentReplicas": 0,
                                    "desiredReplicas": int(old_status.get("desiredReplicas") or 0)})
            return
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        status_replicas = int((scale.get("status") or {}).get("replicas") or 0)
        conds = _cond(conds, "AbleToScale", "True", "SucceededGetScale",
                      "the HPA controller was able to get the target's current scale", at)
        raw_min = spec.get("minReplicas")
        min_r = 1 if raw_min is None else int(raw_min)
        max_r = int(spec.get("maxReplicas") or 1)
        history = self._history.setdefault(key, History())
        behavior = Behavior.of(spec.get("behavior"))
        reason = ""
        metrics_status: list[Obj] | None = None
        if current == 0 and min_r != 0:
            desired = 0
            conds = _cond(conds, "ScalingActive", "False", "ScalingDisabled",
                          "scaling is disabled since the replica count of the target is zero", at)
        elif current > max_r:
            desired, reason = max_r, "Current number of replicas above Spec.MaxReplicas"
        elif current < min_r:
            desired, reason = min_r, "Current number of replicas below Spec.MinReplicas"
        else:
            try:
                proposed, metric_desc, metrics_status, conds = await self._compute(hpa, scale, current,
                                                                                    status_replicas, conds, at)
            except MetricError:
                await self._write(hpa, {**status, "conditions": conds,
                                        "currentReplicas": status_replicas,
                                        "desiredReplicas": int(old_status.get("desiredReplicas") or current)})
                return
            stabilized, s_reason, s_msg = stabilize(history, current, proposed, behavior, at)
            if stabilized != proposed:
                conds = _cond(conds, "AbleToScale", "True", s_reason, s_msg, at)
            else:
                conds = _cond(conds, "AbleToScale", "True", "ReadyForNewScale",
                              "recommended size matches current size", at)
            desired, l_reason, l_msg = limited(history, current, stabilized, behavior, min_r, max_r, at)
            conds = _cond(conds, "ScalingLimited", "True" if desired != stabilized else "False", l_reason, l_msg, at)
            if desired > current:
                reason = f"{metric_desc} above target"
            elif desired < current:
                reason = "All metrics below target"
        if metrics_status is not None:
            status["currentMetrics"] = metrics_status or None
        if desired != current and reason:
            ref_av = str(ref.get("apiVersion") or "apps/v1")
            try:
                await self.client.set_scale(ref_av, ref_kind, ref_name, desired, ns)
            except Exception as e:
                conds = _cond(conds, "AbleToScale", "False", "FailedUpdateScale",
                              f"the HPA controller was unable to update the target scale: {e}", at)
                await record_event(self.client, hpa, "Warning", "FailedRescale",
                                   f"New size: {desired}; reason: {reason}; error: {e}", COMPONENT)
                await self._write(hpa, {**status, "conditions": conds, "currentReplicas": status_replicas,
                                        "desiredReplicas": current})
                raise
            conds = _cond(conds, "AbleToScale", "True", "SucceededRescale",
                          f"the HPA controller was able to update the target scale to {desired}", at)
            await record_event(self.client, hpa, "Normal", "SuccessfulRescale",
                               f"New size: {desired}; reason: {reason}", COMPONENT)
            history.record_scale(desired - current, at, longest_period(behavior))
            status["lastScaleTime"] = fmt_time(at)
            log.info("hpa rescaled", extra={"hpa": key, "from": current, "to": desired, "reason": reason})
        await self._write(hpa, {**status, "conditions": conds, "currentReplicas": status_replicas,
                                "desiredReplicas": desired})

    async def _write(self, hpa: Obj, status: Obj) -> None:
        status = {k: v for k, v in status.items() if v is not None}
        if status == (hpa.get("status") or {}):
            return
        hpa["status"] = status
        try:
            await self.client.update_status(hpa)
        except Conflict:
            log.info("hpa status conflict; next sync writes it", extra={"hpa": object_key(hpa)})

    async def _compute(self, hpa: Obj, scale: Obj, current: int, status_replicas: int, conds: list[Obj],
                       at: datetime) -> tuple[int, str, list[Obj], list[Obj]]:
        """(the highest proposal, what it measured, currentMetrics, conditions); ``MetricError`` (after setting
        ScalingActive False and recording Events) when no count can be trusted."""
        ns = meta(hpa).get("namespace") or "default"
        selector = (scale.get("status") or {}).get("selector")
        if not selector:
            msg = "the HPA target's scale is missing a selector"
            await record_event(self.client, hpa, "Warning", "SelectorRequired", msg, COMPONENT)
            conds[:] = _cond(conds, "ScalingActive", "False", "InvalidSelector", msg, at)
            raise MetricError("InvalidSelector", msg)
        pods = [p for p in (await self.client.list("v1", "Pod", ns, label_selector=str(selector))).items]
        specs = (hpa.get("spec") or {}).get("metrics") or []
        best: tuple[int, str] | None = None
        statuses: list[Obj] = []
        errors: list[MetricError] = []
        for m in specs:
            try:
                got = await self._measure(m, ns, pods, current, status_replicas, at)
            except MetricError as e:
                errors.append(e)
                await record_event(self.client, hpa, "Warning", e.reason, str(e), COMPONENT)
                statuses.append({"type": m.get("type") or ""})
                continue
            statuses.append(got.status)
            if best is None or got.proposal.replicas > best[0]:
                best = (got.proposal.replicas, got.description)
        if errors and (best is None or best[0] < current):
            first = errors[0]
            msg = f"invalid metrics ({len(errors)} invalid out of {len(specs)}), first error is: {first}"
            await record_event(self.client, hpa, "Warning", "FailedComputeMetricsReplicas", msg, COMPONENT)
            conds[:] = _cond(conds, "ScalingActive", "False", first.reason,
                             f"the HPA was unable to compute the replica count: {first}", at)
            raise MetricError(first.reason, msg)
        assert best is not None
        conds = _cond(conds, "ScalingActive", "True", "ValidMetricFound",
                      f"the HPA was able to successfully calculate a replica count from {best[1]}", at)
        return best[0], best[1], [s for s in statuses if len(s) > 1], conds

    async def _measure(self, m: Obj, ns: str, pods: list[Obj], current: int, status_replicas: int,
                       at: datetime) -> _Measured:
        typ = str(m.get("type") or "")
        if typ in ("Resource", "ContainerResource"):
            return await self._resource(m, typ, ns, pods, current, at)
        if typ == "Pods":
            src = m.get("pods") or {}
            metric = src.get("metric") or {}
            goal = parse_quantity((src.get("target") or {}).get("averageValue") or 0)
            names = [str(meta(p).get("name")) for p in pods]
            expr = promql_query("Pods", str(metric.get("name")), metric.get("selector"), namespace=ns, pods=names)
            values = await self._query(expr, at, "FailedGetPodsMetric")
            samples = [self._sample(p, None) for p in pods]
            try:
                prop = per_pod_replicas(current, samples, values, goal, utilization=False)
            except ValueError as e:
                raise MetricError("FailedGetPodsMetric", f"failed to get pods metric value: {e}") from None
            return _Measured(prop, {"type": "Pods", "pods": {"metric": metric, "current": {
                "averageValue": format_quantity(prop.value)}}}, f"pods metric {metric.get('name')}")
        if typ in ("Object", "External"):
            key = typ.lower()
            src = m.get(key) or {}
            metric = src.get("metric") or {}
            target = src.get("target") or {}
            reason = f"FailedGet{typ}Metric"
            expr = promql_query(typ, str(metric.get("name")), metric.get("selector"), namespace=ns,
                                described=src.get("describedObject"))
            values = await self._query(expr, at, reason)
            if not values:
                raise MetricError(reason, f"unable to get {key} metric {metric.get('name')}: no samples for {expr}")
            total = sum(values.values())
            current_status: Obj
            if target.get("type") == "AverageValue" or (target.get("averageValue") is not None
                                                         and target.get("value") is None):
                prop = total_replicas(current, status_replicas, total, parse_quantity(target.get("averageValue")))
                current_status = {"averageValue": format_quantity(prop.value)}
            else:
                ready = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Running"
                            and (_ready(p) or {}).get("status") == "True")
                prop = ratio_replicas(current, ready, total, parse_quantity(target.get("value") or 0))
                current_status = {"value": format_quantity(total)}
            body: Obj = {"metric": metric, "current": current_status}
            if typ == "Object":
                body["describedObject"] = src.get("describedObject") or {}
            desc = f"{'external' if typ == 'External' else 'object'} metric {metric.get('name')}"
            return _Measured(prop, {"type": typ, key: body}, desc)
        raise MetricError("InvalidMetricSourceType", f"unknown metric source type {typ!r}")

    async def _query(self, expr: str, at: datetime, reason: str) -> dict[str, float]:
        """Run ``expr``; values by ``pod`` label (or by series index when absent). NaNs are dropped."""
        if self.instant is None:
            raise MetricError(reason, "no metrics query is configured for the autoscaler")
        instant = self.instant
        try:
            res = await asyncio.to_thread(instant, expr, int(at.timestamp() * 1000), self.tenant)
        except Exception as e:
            raise MetricError(reason, f"unable to query {expr}: {e}") from None
        out: dict[str, float] = {}
        if res.result_type == "scalar" and res.values:
            return {"": float(res.values[0][-1])}
        for i, labels in enumerate(res.series):
            if i >= len(res.values) or not len(res.values[i]):
                continue
            v = float(res.values[i][-1])
            if v != v:
                continue
            pod = dict(labels).get("pod", str(i))
            out[pod] = out.get(pod, 0.0) + v
        return out

    def _sample(self, pod: Obj, cpu_sample: tuple[datetime, timedelta] | None, request: float = 0.0) -> PodSample:
        status = pod.get("status") or {}
        unready = False
        if cpu_sample is not None:
            ready = _ready(pod)
            started = parse_time(status.get("startTime")) or parse_time(meta(pod).get("creationTimestamp"))
            ts, window = cpu_sample
            transition = parse_time((ready or {}).get("lastTransitionTime"))
            if ready is None or started is None or transition is None:
                unready = True
            elif started + CPU_INIT_PERIOD > self.now():
                unready = ready.get("status") == "False" or ts < transition + window
            else:
                unready = ready.get("status") == "False" and started + INITIAL_READINESS_DELAY > transition
        return PodSample(name=str(meta(pod).get("name")), phase=str(status.get("phase") or "Pending"),
                         deleting=deleting(pod), unready=unready, request=request)

    async def _resource(self, m: Obj, typ: str, ns: str, pods: list[Obj], current: int, at: datetime) -> _Measured:
        src = m.get("resource" if typ == "Resource" else "containerResource") or {}
        res_name = str(src.get("name") or "cpu")
        container = str(src.get("container") or "")
        target = src.get("target") or {}
        reason = "FailedGetResourceMetric" if typ == "Resource" else "FailedGetContainerResourceMetric"
        if self.pod_metrics is None:
            raise MetricError(reason, f"unable to get metrics for resource {res_name}: no metrics API is serving "
                                      "pod metrics")
        try:
            raw = await self.pod_metrics(ns)
        except Exception as e:
            raise MetricError(reason, f"unable to get metrics for resource {res_name}: {e}") from None
        usage: dict[str, float] = {}
        stamps: dict[str, tuple[datetime, timedelta]] = {}
        for pm in raw:
            pname = str((pm.get("metadata") or {}).get("name"))
            total, found = 0.0, False
            for c in pm.get("containers") or []:
                if container and c.get("name") != container:
                    continue
                q = (c.get("usage") or {}).get(res_name)
                if q is not None:
                    total += parse_quantity(q)
                    found = True
            if found:
                usage[pname] = total
                stamps[pname] = (parse_time(pm.get("timestamp")) or at, _window(pm.get("window")))
        names = {str(meta(p).get("name")) for p in pods}
        usage = {k: v for k, v in usage.items() if k in names}
        if not usage:
            raise MetricError(reason, f"unable to get metrics for resource {res_name}: no metrics returned from "
                                      "resource metrics API")
        samples = []
        utilization = target.get("type") == "Utilization" or (target.get("averageUtilization") is not None
                                                               and target.get("averageValue") is None)
        for p in pods:
            req = 0.0
            for c in (p.get("spec") or {}).get("containers") or []:
                if container and c.get("name") != container:
                    continue
                r = ((c.get("resources") or {}).get("requests") or {}).get(res_name)
                if r is None and utilization and str(meta(p).get("name")) in usage:
                    raise MetricError(reason, f"failed to get {res_name} utilization: missing request for "
                                              f"{res_name} in container {c.get('name')} of Pod {meta(p).get('name')}")
                req += parse_quantity(r) if r is not None else 0.0
            cpu = stamps.get(str(meta(p).get("name"))) if res_name == "cpu" else None
            samples.append(self._sample(p, cpu or ((at, timedelta(0)) if res_name == "cpu" else None), req))
        try:
            if utilization:
                goal = float(target.get("averageUtilization") or 0)
                prop = per_pod_replicas(current, samples, usage, goal, utilization=True)
            else:
                goal = parse_quantity(target.get("averageValue") or 0)
                prop = per_pod_replicas(current, samples, usage, goal, utilization=False)
        except ValueError as e:
            raise MetricError(reason, f"failed to get {res_name} utilization: {e}") from None
        cur: Obj = {"averageValue": format_quantity(prop.value if not utilization else
                                                    sum(usage.values()) / max(len(usage), 1))}
        if utilization:
            cur["averageUtilization"] = prop.utilization
        body: Obj = {"name": res_name, "current": cur}
        if typ == "ContainerResource":
            body["container"] = container
        what = "utilization (percentage of request)" if utilization else "value"
        return _Measured(prop, {"type": typ, "resource" if typ == "Resource" else "containerResource": body},
                         f"{res_name} {'container ' if typ == 'ContainerResource' else ''}resource {what}")
