"""kube-state-metrics inside pitwall: the objects of the Kubernetes API as series, every 15 s.

Every ``interval_s`` the component lists Deployments, ReplicaSets, Pods,
Jobs, CronJobs, HorizontalPodAutoscalers, Services, Namespaces and Nodes
through the in-process ``KubeClient`` and appends one sample per series
through the metrics pillar's ``Appender``, under kube-state-metrics v2's
names and labels (``namespace``, ``deployment``, ``pod``, ``uid``,
``container``, ``condition``, ``reason``...), so kubernetes-mixin's
dashboards and alerts work unchanged. Series carry ``job="kube-state-metrics"``
as a Prometheus scraping kube-state-metrics labels them. A series that was
written in the previous round and is gone now (its object deleted, its
reason changed) gets a staleness marker (``STALE_NAN``).

The node writes the pod series it knows best (``kube_pod_status_phase``,
``kube_pod_container_status_restarts_total``,
``kube_pod_container_status_ready``; see ``pitwall.node``), so they are not
written here. It lives in controllers/ because, like a controller, it
gives kinds their meaning (kube/ knows resources, not what they mean) and
reads them only through the client.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pitwall.controllers.cron import CronError, Schedule
from pitwall.core.labels import Labels, labels_from_dict
from pitwall.core.lifecycle import Component, Mount
from pitwall.core.selfmetrics import SelfMetrics
from pitwall.core.tasks import Supervisor
from pitwall.kube import KubeClient, KubeError
from pitwall.metrics import STALE_NAN, Appender, SampleBatch

__all__ = ["KubeStateMetrics", "state_rows"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Row = tuple[Labels, int, float]
JOB = "kube-state-metrics"

# (apiVersion, kind) listed each round, in this order.
KINDS: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"), ("apps/v1", "ReplicaSet"), ("v1", "Pod"), ("batch/v1", "Job"),
    ("batch/v1", "CronJob"), ("autoscaling/v2", "HorizontalPodAutoscaler"), ("v1", "Service"),
    ("v1", "Namespace"), ("v1", "Node"), ("flagger.app/v1beta1", "Canary"),
)


class _Rows:
    """Collects the samples of one round."""

    def __init__(self, ts_ms: int) -> None:
        self.ts_ms = ts_ms
        self.rows: list[Row] = []

    def add(self, name: str, labels: dict[str, str], value: float, job: str = JOB) -> None:
        self.rows.append((labels_from_dict({**labels, "__name__": name, "job": job}), self.ts_ms, float(value)))


def _meta(o: Obj) -> Obj:
    return o.get("metadata") or {}


def _ts(s: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp, None when absent or bad."""
    if not isinstance(s, str) or not s:
        return None
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0


def _owner(o: Obj) -> tuple[str, str, str]:
    """(kind, name, is_controller) of the controlling owner, else the first, else ``<none>``."""
    refs = _meta(o).get("ownerReferences") or []
    ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    if not ref:
        return "<none>", "<none>", "<none>"
    return str(ref.get("kind", "")), str(ref.get("name", "")), "true" if ref.get("controller") else "false"


def _conditions(r: _Rows, name: str, base: dict[str, str], conds: Iterable[Obj]) -> None:
    """``<name>{condition,status}`` 1 for the condition's status and 0 for the two others, as k-s-m writes it."""
    for c in conds:
        status = str(c.get("status", "Unknown")).lower()
        for s in ("true", "false", "unknown"):
            r.add(name, {**base, "condition": str(c.get("type", "")), "status": s}, 1.0 if s == status else 0.0)


_SUFFIX = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
           "E": 1e18, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def _quantity(q: Any) -> float | None:
    m = _QUANTITY.match(str(q).strip())
    if not m or m.group(2) not in _SUFFIX:
        return None
    try:
        return float(m.group(1)) * _SUFFIX[m.group(2)]
    except ValueError:
        return None


def _resources(r: _Rows, name: str, base: dict[str, str], res: Obj) -> None:
    for resource, q in (res or {}).items():
        v = _quantity(q)
        if v is None:
            continue
        unit = "core" if resource == "cpu" else "byte" if resource in ("memory", "ephemeral-storage") else "integer"
        r.add(name, {**base, "resource": resource, "unit": unit}, v)


# -- one function per kind ---------------------------------------------------------------------------------------

def _deployment(r: _Rows, d: Obj) -> None:
    m, spec, st = _meta(d), d.get("spec") or {}, d.get("status") or {}
    b = {"namespace": str(m.get("namespace", "")), "deployment": str(m.get("name", ""))}
    r.add("kube_deployment_spec_replicas", b, _num(spec.get("replicas", 1)))
    r.add("kube_deployment_spec_paused", b, 1.0 if spec.get("paused") else 0.0)
    r.add("kube_deployment_status_replicas", b, _num(st.get("replicas")))
    r.add("kube_deployment_status_replicas_ready", b, _num(st.get("readyReplicas")))
    r.add("kube_deployment_status_replicas_available", b, _num(st.get("availableReplicas")))
    r.add("kube_deployment_status_replicas_unavailable", b, _num(st.get("unavailableReplicas")))
    r.add("kube_deployment_status_replicas_updated", b, _num(st.get("updatedReplicas")))
    r.add("kube_deployment_status_observed_generation", b, _num(st.get("observedGeneration")))
    r.add("kube_deployment_metadata_generation", b, _num(m.get("generation")))
    _conditions(r, "kube_deployment_status_condition", b, st.get("conditions") or [])
    if (t := _ts(m.get("creationTimestamp"))) is not None:
        r.add("kube_deployment_created", b, t)


def _replicaset(r: _Rows, rs: Obj) -> None:
    m, spec, st = _meta(rs), rs.get("spec") or {}, rs.get("status") or {}
    b = {"namespace": str(m.get("namespace", "")), "replicaset": str(m.get("name", ""))}
    r.add("kube_replicaset_spec_replicas", b, _num(spec.get("replicas", 1)))
    r.add("kube_replicaset_status_replicas", b, _num(st.get("replicas")))
    r.add("kube_replicaset_status_ready_replicas", b, _num(st.get("readyReplicas")))
    r.add("kube_replicaset_status_fully_labeled_replicas", b, _num(st.get("fullyLabeledReplicas")))
    r.add("kube_replicaset_status_observed_generation", b, _num(st.get("observedGeneration")))
    r.add("kube_replicaset_metadata_generation", b, _num(m.get("generation")))
    kind, name, ctl = _owner(rs)
    r.add("kube_replicaset_owner", {**b, "owner_kind": kind, "owner_name": name, "owner_is_controller": ctl}, 1.0)
    if (t := _ts(m.get("creationTimestamp"))) is not None:
        r.add("kube_replicaset_created", b, t)


def _pod(r: _Rows, p: Obj) -> None:
    m, spec, st = _meta(p), p.get("spec") or {}, p.get("status") or {}
    b = {"namespace": str(m.get("namespace", "")), "pod": str(m.get("name", "")), "uid": str(m.get("uid", ""))}
    kind, name, ctl = _owner(p)
    r.add("kube_pod_info", {**b, "host_ip": str(st.get("hostIP", "")), "pod_ip": str(st.get("podIP", "")),
                            "node": str(spec.get("nodeName", "")), "created_by_kind": kind,
                            "created_by_name": name, "priority_class": str(spec.get("priorityClassName", "")),
                            "host_network": "true" if spec.get("hostNetwork") else "false"}, 1.0)
    r.add("kube_pod_owner", {**b, "owner_kind": kind, "owner_name": name, "owner_is_controller": ctl}, 1.0)
    r.add("kube_pod_labels", b, 1.0)  # k-s-m v2 adds only allow-listed label_* labels: none by default
    if (t := _ts(m.get("creationTimestamp"))) is not None:
        r.add("kube_pod_created", b, t)
    if (t := _ts(st.get("startTime"))) is not None:
        r.add("kube_pod_start_time", b, t)
    if (t := _ts(m.get("deletionTimestamp"))) is not None:
        r.add("kube_pod_deletion_timestamp", b, t)
    if spec.get("nodeName"):
        r.add("kube_pod_status_scheduled", {**b, "condition": "true"}, 1.0)
    for c in st.get("conditions") or []:
        if c.get("type") == "Ready":
            status = str(c.get("status", "Unknown")).lower()
            for s in ("true", "false", "unknown"):
                r.add("kube_pod_status_ready", {**b, "condition": s}, 1.0 if s == status else 0.0)
    if st.get("reason"):
        r.add("kube_pod_status_reason", {**b, "reason": str(st["reason"])}, 1.0)
    statuses = {str(cs.get("name", "")): cs for cs in st.get("containerStatuses") or []}
    for c in spec.get("containers") or []:
        cb = {**b, "container": str(c.get("name", ""))}
        res = c.get("resources") or {}
        _resources(r, "kube_pod_container_resource_requests", {**cb, "node": str(spec.get("nodeName", ""))},
                   res.get("requests") or {})
        _resources(r, "kube_pod_container_resource_limits", {**cb, "node": str(spec.get("nodeName", ""))},
                   res.get("limits") or {})
        cs = statuses.get(cb["container"])
        if cs is None:
            continue
        r.add("kube_pod_container_info", {**cb, "image": str(c.get("image", "")),
                                          "image_spec": str(c.get("image", "")),
                                          "image_id": str(cs.get("imageID", "")),
                                          "container_id": str(cs.get("containerID", ""))}, 1.0)
        state = cs.get("state") or {}
        r.add("kube_pod_container_status_waiting", cb, 1.0 if "waiting" in state else 0.0)
        r.add("kube_pod_container_status_running", cb, 1.0 if "running" in state else 0.0)
        r.add("kube_pod_container_status_terminated", cb, 1.0 if "terminated" in state else 0.0)
        if (w := state.get("waiting")) is not None and w.get("reason"):
            r.add("kube_pod_container_status_waiting_reason", {**cb, "reason": str(w["reason"])}, 1.0)
        if (t := state.get("terminated")) is not None and t.get("reason"):
            r.add("kube_pod_container_status_terminated_reason", {**cb, "reason": str(t["reason"])}, 1.0)
        last = (cs.get("lastState") or {}).get("terminated")
        if last is not None and last.get("reason"):
            r.add("kube_pod_container_status_last_terminated_reason", {**cb, "reason": str(last["reason"])}, 1.0)
            if "exitCode" in last:
                r.add("kube_pod_container_status_last_terminated_exitcode", cb, _num(last.get("exitCode")))


def _job(r: _Rows, j: Obj) -> None:
    m, spec, st = _meta(j), j.get("spec") or {}, j.get("status") or {}
    b = {"namespace": str(m.get("namespace", "")), "job_name": str(m.get("name", ""))}
    r.add("kube_job_info", b, 1.0)
    r.add("kube_job_status_succeeded", b, _num(st.get("succeeded")))
    r.add("kube_job_status_failed", b, _num(st.get("failed")))
    r.add("kube_job_status_active", b, _num(st.get("active")))
    r.add("kube_job_spec_parallelism", b, _num(spec.get("parallelism", 1)))
    if spec.get("completions") is not None:
        r.add("kube_job_spec_completions", b, _num(spec.get("completions")))
    if spec.get("activeDeadlineSeconds") is not None:
        r.add("kube_job_spec_active_deadline_seconds", b, _num(spec.get("activeDeadlineSeconds")))
    kind, name, ctl = _owner(j)
    r.add("kube_job_owner", {**b, "owner_kind": kind, "owner_name": name, "owner_is_controller": ctl}, 1.0)
    for c in st.get("conditions") or []:
        metric = {"Complete": "kube_job_complete", "Failed": "kube_job_failed"}.get(str(c.get("type")))
        if metric is None:
            continue
        status = str(c.get("status", "Unknown")).lower()
        for s in ("true", "false", "unknown"):
            r.add(metric, {**b, "condition": s}, 1.0 if s == status else 0.0)
    for field, metric in (("startTime", "kube_job_status_start_time"),
                          ("completionTime", "kube_job_status_completion_time")):
        if (t := _ts(st.get(field))) is not None:
            r.add(metric, b, t)
    if (t := _ts(m.get("creationTimestamp"))) is not None:
        r.add("kube_job_created", b, t)


def _cronjob(r: _Rows, cj: Obj, now: datetime) -> None:
    m, spec, st = _meta(cj), cj.get("spec") or {}, cj.get("status") or {}
    b = {"namespace": str(m.get("namespace", "")), "cronjob": str(m.get("name", ""))}
    schedule = str(spec.get("schedule", ""))
    r.add("kube_cronjob_info", {**b, "schedule": schedule,
                                "concurrency_policy": str(spec.get("concurrencyPolicy", "Allow"))}, 1.0)
    r.add("kube_cronjob_spec_suspend", b, 1.0 if spec.get("suspend") else 0.0)
    r.add("kube_cronjob_status_active", b, float(len(st.get("active") or [])))
    if (t := _ts(st.get("lastScheduleTime"))) is not None:
        r.add("kube_cronjob_status_last_schedule_time", b, t)
    if (t := _ts(st.get("lastSuccessfulTime"))) is not None:
        r.add("kube_cronjob_status_last_successful_time", b, t)
    if (t := _ts(m.get("creationTimestamp"))) is not None:
        r.add("kube_cronjob_created", b, t)
    last = _ts(st.get("lastScheduleTime")) or _ts(m.get("creationTimestamp"))
    start = datetime.fromtimestamp(last, UTC) if last is not None else now
    try:  # the CronJob controller's own parser, so the series says what the controller will do
        nxt = Schedule.parse(schedule, spec.get("timeZone") or None).next(start)
    except CronError:
        nxt = None
    if nxt is not None:
        r.add("kube_cronjob_next_schedule_time", b, nxt.timestamp())


def _hpa(r: _Rows, h: Obj) -> None:
    m, spec, st = _meta(h), h.get("spec") or {}, h.get("status") or {}
    b = {"namespace": str(m.get("namespace", "")), "horizontalpodautoscaler": str(m.get("name", ""))}
    ref = spec.get("scaleTargetRef") or {}
    r.add("kube_horizontalpodautoscaler_info", {**b, "scaletargetref_api_version": str(ref.get("apiVersion", "")),
                                                "scaletargetref_kind": str(ref.get("kind", "")),
                                                "scaletargetref_name": str(ref.get("name", ""))}, 1.0)
    r.add("kube_horizontalpodautoscaler_spec_min_replicas", b, _num(spec.get("minReplicas", 1)))
    r.add("kube_horizontalpodautoscaler_spec_max_replicas", b, _num(spec.get("maxReplicas")))
    r.add("kube_horizontalpodautoscaler_status_current_replicas", b, _num(st.get("currentReplicas")))
    r.add("kube_horizontalpodautoscaler_status_desired_replicas", b, _num(st.get("desiredReplicas")))
    r.add("kube_horizontalpodautoscaler_metadata_generation", b, _num(m.get("generation")))
    _conditions(r, "kube_horizontalpodautoscaler_status_condition", b, st.get("conditions") or [])


def _service(r: _Rows, s: Obj) -> None:
    m, spec = _meta(s), s.get("spec") or {}
    b = {"namespace": str(m.get("namespace", "")), "service": str(m.get("name", "")), "uid": str(m.get("uid", ""))}
    ingress = ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [{}]
    r.add("kube_service_info", {**b, "cluster_ip": str(spec.get("clusterIP", "")),
                                "external_name": str(spec.get("externalName", "")),
                                "load_balancer_ip": str(ingress[0].get("ip", ""))}, 1.0)
    r.add("kube_service_spec_type", {**b, "type": str(spec.get("type", "ClusterIP"))}, 1.0)
    if (t := _ts(m.get("creationTimestamp"))) is not None:
        r.add("kube_service_created", b, t)


def _namespace(r: _Rows, n: Obj) -> None:
    m = _meta(n)
    b = {"namespace": str(m.get("name", ""))}
    phase = str((n.get("status") or {}).get("phase", "Active"))
    for p in ("Active", "Terminating"):
        r.add("kube_namespace_status_phase", {**b, "phase": p}, 1.0 if p == phase else 0.0)
    if (t := _ts(m.get("creationTimestamp"))) is not None:
        r.add("kube_namespace_created", b, t)


def _node(r: _Rows, n: Obj) -> None:
    m, spec, st = _meta(n), n.get("spec") or {}, n.get("status") or {}
    b = {"node": str(m.get("name", ""))}
    info = st.get("nodeInfo") or {}
    addrs = {str(a.get("type")): str(a.get("address", "")) for a in st.get("addresses") or []}
    r.add("kube_node_info", {**b, "kernel_version": str(info.get("kernelVersion", "")),
                             "os_image": str(info.get("osImage", "")),
                             "container_runtime_version": str(info.get("containerRuntimeVersion", "")),
                             "kubelet_version": str(info.get("kubeletVersion", "")),
                             "kubeproxy_version": str(info.get("kubeProxyVersion", "")),
                             "provider_id": str(spec.get("providerID", "")), "pod_cidr": str(spec.get("podCIDR", "")),
                             "system_uuid": str(info.get("systemUUID", "")),
                             "internal_ip": addrs.get("InternalIP", "")}, 1.0)
    r.add("kube_node_spec_unschedulable", b, 1.0 if spec.get("unschedulable") else 0.0)
    _conditions(r, "kube_node_status_condition", b, st.get("conditions") or [])
    _resources(r, "kube_node_status_capacity", b, st.get("capacity") or {})
    _resources(r, "kube_node_status_allocatable", b, st.get("allocatable") or {})
    if (t := _ts(m.get("creationTimestamp"))) is not None:
        r.add("kube_node_created", b, t)


FLAGGER_JOB = "flagger"
_FLAGGER_STATUS = {"Progressing": 0.0, "Failed": 2.0}  # else 1: Flagger's SetStatus


def _canaries(r: _Rows, canaries: list[Obj]) -> None:
    """Flagger's own series (its pkg/metrics recorder), from each Canary's status as Flagger sets them:
    ``flagger_canary_weight`` per workload (the primary gets the rest of 100), ``flagger_canary_status`` (0
    running, 1 successful, 2 failed, labelled by the target's name as Flagger labels it) and
    ``flagger_canary_total`` per namespace. So the weights over time are a series, as Prometheus scraping
    Flagger would hold them."""
    per_ns: dict[str, int] = {}
    for cd in canaries:
        ns = str(_meta(cd).get("namespace", ""))
        target = str(((cd.get("spec") or {}).get("targetRef") or {}).get("name", ""))
        st = cd.get("status") or {}
        per_ns[ns] = per_ns.get(ns, 0) + 1
        if not target or not st.get("phase"):
            continue  # not yet seen by the controller: Flagger has set nothing for it either
        weight = _num(st.get("canaryWeight"))
        r.add("flagger_canary_weight", {"workload": f"{target}-primary", "namespace": ns}, 100 - weight,
              FLAGGER_JOB)
        r.add("flagger_canary_weight", {"workload": target, "namespace": ns}, weight, FLAGGER_JOB)
        r.add("flagger_canary_status", {"name": target, "namespace": ns},
              _FLAGGER_STATUS.get(str(st["phase"]), 1.0), FLAGGER_JOB)
    for ns, n in per_ns.items():
        r.add("flagger_canary_total", {"namespace": ns}, n, FLAGGER_JOB)


def state_rows(objects: dict[str, list[Obj]], ts_ms: int) -> list[Row]:
    """Every kube-state-metrics sample for ``objects`` (kind -> objects of that kind) at ``ts_ms``."""
    r = _Rows(ts_ms)
    now = datetime.fromtimestamp(ts_ms / 1000, UTC)
    one: dict[str, Callable[[_Rows, Obj], None]] = {
        "Deployment": _deployment, "ReplicaSet": _replicaset, "Pod": _pod, "Job": _job,
        "CronJob": lambda rr, o: _cronjob(rr, o, now), "HorizontalPodAutoscaler": _hpa, "Service": _service,
        "Namespace": _namespace, "Node": _node,
    }
    for kind, objs in objects.items():
        if kind == "Canary":
            _canaries(r, objs)
            continue
        fn = one.get(kind)
        if fn is None:
            continue
        for o in objs:
            try:
                fn(r, o)
            except (TypeError, ValueError, AttributeError) as e:  # a malformed object costs its own series only
                log.debug("kube-state-metrics: skipping %s %s: %s", kind, _meta(o).get("name"), e)
    return r.rows


# -- the component ----------------------------------------------------------------------------------------------

class KubeStateMetrics:
    """Lists the API's objects every ``interval_s`` and appends their series.

    Both a ``core.lifecycle.Component`` and a ``Part`` of its own (one component, no routes), so the
    composition root places it after the kube part like any other part.
    """

    name = "kube-state-metrics"

    def __init__(self, client: KubeClient, appender: Appender, *, interval_s: float = 15.0,
                 tenant: str = "default") -> None:
        self.client = client
        self.appender = appender
        self.interval_s = interval_s
        self.tenant = tenant
        self.tasks = Supervisor(self.name)
        self.rounds = 0
        self.errors = 0
        self._last: set[Labels] = set()

    async def start(self) -> None:
        self.tasks.spawn(self._run(), name="collect")

    async def stop(self) -> None:
        await self.tasks.stop()

    # -- core.lifecycle.Part

    def components(self) -> Sequence[Component]:
        return [self]

    def mounts(self, is_ready: Callable[[], bool]) -> Sequence[Mount]:
        return []

    async def reload(self, settings: Any) -> None:
        """Nothing to reload."""

    def register_metrics(self, metrics: SelfMetrics) -> None:
        metrics.add_gauges("pitwall_kube_state_metrics_rounds", "Rounds of kube-state-metrics written.",
                           lambda: float(self.rounds))
        metrics.add_gauges("pitwall_kube_state_metrics_errors", "Rounds of kube-state-metrics that failed.",
                           lambda: float(self.errors))

    async def collect(self) -> dict[str, list[Obj]]:
        """The current objects of every kind the API serves (a kind it does not serve is skipped)."""
        out: dict[str, list[Obj]] = {}
        for api_version, kind in KINDS:
            try:
                out[kind] = list((await self.client.list(api_version, kind)).items)
            except KubeError as e:
                log.debug("kube-state-metrics: cannot list %s: %s", kind, e)
        return out

    async def write_once(self, ts_ms: int | None = None) -> int:
        """One round: append every current series, and a staleness marker for each that vanished.
        Returns the number of samples appended."""
        ts = int(time.time() * 1000) if ts_ms is None else ts_ms
        rows = state_rows(await self.collect(), ts)
        current = {lbl for lbl, _, _ in rows}
        rows += [(lbl, ts, STALE_NAN) for lbl in sorted(self._last - current)]
        if rows:
            await self.appender.append(self.tenant, SampleBatch.from_rows(rows))
        self._last = current
        self.rounds += 1
        return len(rows)

    async def _run(self) -> None:
        while True:
            try:
                await self.write_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the next round retries; the loop never dies on one bad round
                self.errors += 1
                log.warning("kube-state-metrics: round failed: %s", e)
            await asyncio.sleep(self.interval_s)
