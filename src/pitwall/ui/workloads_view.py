"""What the workloads pages show, computed from Kubernetes objects: rollout state, history, pod status.

``WorkloadsSource`` is the UI's read interface onto a Kubernetes API (the
composition root hands in ``pitwall.kube.KubeWorkloads``); everything else
here is pure functions from objects (plain dicts in their API shape) to rows
for the templates, so they are tested without an API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlencode

from pitwall.core.durations import short_age
from pitwall.ui.objects import condition, meta, obj_time, quote

__all__ = [
    "DeploymentRow",
    "PodRow",
    "RevisionRow",
    "WorkloadsSource",
    "age",
    "deployment_row",
    "history",
    "logs_link",
    "metrics_link",
    "other_rows",
    "pod_row",
]

Obj = dict[str, Any]
REVISION = "deployment.kubernetes.io/revision"


class WorkloadsSource(Protocol):
    """The reads the workloads pages make; kinds are lower-case names (``deployment``, ``pod``...)."""

    def kinds(self) -> list[str]:
        """Kind names accepted by ``objects`` and ``object``."""
        ...

    async def objects(self, kind: str, namespace: str = "") -> list[Obj]:
        """Objects of ``kind`` in ``namespace`` (all when empty)."""
        ...

    async def object(self, kind: str, namespace: str, name: str) -> Obj | None:
        """One object, or None when absent."""
        ...

    async def events(self, namespace: str = "", kind: str = "", name: str = "") -> list[Obj]:
        """Events of a namespace (all when empty), about one object when ``kind``/``name`` are given."""
        ...


def age(ts: Any, now: datetime | None = None) -> str:
    """``kubectl``'s short age (``42s``, ``5m``, ``3h``, ``2d``) of an RFC 3339 timestamp."""
    t = obj_time(ts)
    if t is None:
        return "—"
    return short_age(((now or datetime.now(UTC)) - t).total_seconds())


def logs_link(namespace: str, pod: str = "", app: str = "") -> str:
    """The logs explorer with a LogQL stream selector for the pod (or every pod of ``app``)."""
    sel = f'namespace="{quote(namespace)}",' + (f'pod="{quote(pod)}"' if pod else f'app="{quote(app)}"')
    return "/logs?" + urlencode({"query": "{" + sel + "}"})


def metrics_link(namespace: str, pod: str = "", pod_regex: str = "", metric: str = "cpu") -> str:
    """The graph explorer on the pod's CPU (rate of ``container_cpu_usage_seconds_total``) or memory
    (``container_memory_working_set_bytes``), per container."""
    m = f'pod="{quote(pod)}"' if pod else f'pod=~"{quote(pod_regex)}"'
    sel = f'namespace="{quote(namespace)}",{m},container!=""'
    expr = (f"sum by (pod, container) (rate(container_cpu_usage_seconds_total{{{sel}}}[1m]))" if metric == "cpu"
            else f"sum by (pod, container) (container_memory_working_set_bytes{{{sel}}})")
    return "/graph?" + urlencode({"expr": expr})


@dataclass(frozen=True)
class DeploymentRow:
    """A Deployment's rollout at a glance."""

    namespace: str
    name: str
    desired: int
    updated: int
    ready: int
    available: int
    state: str  # complete, progressing, stalled, paused
    progressing: str  # the Progressing condition: "True: NewReplicaSetAvailable"
    message: str
    revision: str
    images: list[str]
    age: str
    selector: str


def deployment_row(d: Obj, now: datetime | None = None) -> DeploymentRow:
    """Rollout state as ``kubectl rollout status`` judges it."""
    m, spec, st = meta(d), d.get("spec") or {}, d.get("status") or {}
    desired = int(spec.get("replicas", 1) or 0)
    updated = int(st.get("updatedReplicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    prog = condition(d, "Progressing")
    if spec.get("paused"):
        state = "paused"
    elif prog.get("reason") == "ProgressDeadlineExceeded":
        state = "stalled"
    elif (int(st.get("observedGeneration") or 0) >= int(m.get("generation") or 0) and updated == desired
          and available == desired and int(st.get("replicas") or 0) == desired):
        state = "complete"
    else:
        state = "progressing"
    match = (spec.get("selector") or {}).get("matchLabels") or {}
    return DeploymentRow(
        namespace=str(m.get("namespace", "")), name=str(m.get("name", "")), desired=desired, updated=updated,
        ready=int(st.get("readyReplicas") or 0), available=available, state=state,
        progressing=f"{prog.get('status', '—')}: {prog.get('reason', '')}" if prog else "—",
        message=str(prog.get("message", "")), revision=str((m.get("annotations") or {}).get(REVISION, "")),
        images=[str(c.get("image", "")) for c in ((spec.get("template") or {}).get("spec") or {}).get("containers")
                or []],
        age=age(m.get("creationTimestamp"), now), selector=",".join(f"{k}={v}" for k, v in sorted(match.items())))


@dataclass(frozen=True)
class RevisionRow:
    """One ReplicaSet of a Deployment's history."""

    revision: int
    name: str
    desired: int
    ready: int
    images: list[str]
    change_cause: str
    age: str
    current: bool


def history(deployment: Obj, replicasets: list[Obj], now: datetime | None = None) -> list[RevisionRow]:
    """The Deployment's ReplicaSets (owned by its uid), newest revision first."""
    uid = meta(deployment).get("uid")
    cur = str((meta(deployment).get("annotations") or {}).get(REVISION, ""))
    rows = []
    for rs in replicasets:
        m = meta(rs)
        if not any(r.get("uid") == uid for r in m.get("ownerReferences") or []):
            continue
        ann = m.get("annotations") or {}
        rev = str(ann.get(REVISION, "0"))
        spec = rs.get("spec") or {}
        rows.append(RevisionRow(
            revision=int(rev) if rev.isdigit() else 0, name=str(m.get("name", "")),
            desired=int(spec.get("replicas", 0) or 0), ready=int((rs.get("status") or {}).get("readyReplicas") or 0),
            images=[str(c.get("image", "")) for c in ((spec.get("template") or {}).get("spec") or {}).get(
                "containers") or []],
            change_cause=str(ann.get("kubernetes.io/change-cause", "")), age=age(m.get("creationTimestamp"), now),
            current=rev == cur))
    return sorted(rows, key=lambda r: -r.revision)


@dataclass(frozen=True)
class PodRow:
    """A pod as ``kubectl get pods -o wide`` shows it, plus its latest probe result."""

    namespace: str
    name: str
    status: str
    ready: str  # "1/2"
    all_ready: bool
    restarts: int
    age: str
    node: str
    ip: str
    probe: str  # the latest probe failure, or "ok"/"—"
    owner: str
    app: str
    containers: list[dict[str, str]] = field(default_factory=list)


def _status(p: Obj) -> str:
    """The STATUS column of ``kubectl get pods``: a container's waiting/terminated reason wins over the phase."""
    st = p.get("status") or {}
    if meta(p).get("deletionTimestamp"):
        return "Terminating"
    reason = str(st.get("reason", "") or st.get("phase", "") or "Pending")
    for cs in st.get("containerStatuses") or []:
        state = cs.get("state") or {}
        w, t = state.get("waiting") or {}, state.get("terminated") or {}
        if w.get("reason"):
            return str(w["reason"])
        if t.get("reason") and reason not in ("Succeeded", "Failed"):
            return str(t["reason"])
    return reason


def pod_row(p: Obj, events: list[Obj] | None = None, now: datetime | None = None) -> PodRow:
    """The pod's row; ``events`` (about this pod) give the latest probe failure (``Unhealthy``)."""
    m, spec, st = meta(p), p.get("spec") or {}, p.get("status") or {}
    statuses = st.get("containerStatuses") or []
    n_ready = sum(1 for cs in statuses if cs.get("ready"))
    total = len(spec.get("containers") or []) or len(statuses)
    probe = "—"
    unhealthy = [e for e in events or [] if e.get("reason") == "Unhealthy"]
    ready_cond = condition(p, "Ready")
    if unhealthy:
        last = unhealthy[-1]
        probe = f"{last.get('message', '')} ({age(last.get('lastTimestamp') or last.get('eventTime'), now)} ago)"
    elif ready_cond.get("status") == "True":
        probe = "ok"
    elif ready_cond:
        probe = str(ready_cond.get("message") or ready_cond.get("reason") or "not ready")
    owner = next((f"{r.get('kind')}/{r.get('name')}" for r in m.get("ownerReferences") or [] if r.get("controller")),
                 "")
    containers = []
    for cs in statuses:
        state = cs.get("state") or {}
        kind = next(iter(state), "")
        detail = state.get(kind) or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        containers.append({"name": str(cs.get("name", "")), "state": kind,
                           "reason": str(detail.get("reason", "")), "message": str(detail.get("message", "")),
                           "ready": "yes" if cs.get("ready") else "no", "restarts": str(cs.get("restartCount", 0)),
                           "last": f"{last.get('reason', '')} (exit {last.get('exitCode', '?')})" if last else "",
                           "image": str(cs.get("image", ""))})
    return PodRow(
        namespace=str(m.get("namespace", "")), name=str(m.get("name", "")), status=_status(p),
        ready=f"{n_ready}/{total}", all_ready=total > 0 and n_ready == total,
        restarts=sum(int(cs.get("restartCount") or 0) for cs in statuses), age=age(m.get("creationTimestamp"), now),
        node=str(spec.get("nodeName", "")) or "<none>", ip=str(st.get("podIP", "")) or "<none>", probe=probe,
        owner=owner, app=str((m.get("labels") or {}).get("app", "")), containers=containers)


def other_rows(jobs: list[Obj], cronjobs: list[Obj], hpas: list[Obj],
               now: datetime | None = None) -> list[dict[str, str]]:
    """Jobs, CronJobs and HorizontalPodAutoscalers as one table: kind, name, a status summary, age."""
    out = []
    for j in jobs:
        m, spec, st = meta(j), j.get("spec") or {}, j.get("status") or {}
        done = next((c.get("type") for c in st.get("conditions") or []
                     if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"), "")
        out.append({"kind": "job", "namespace": str(m.get("namespace", "")), "name": str(m.get("name", "")),
                    "state": str(done or ("Running" if st.get("active") else "Pending")),
                    "summary": f"{st.get('succeeded', 0) or 0}/{spec.get('completions', 1) or 1} succeeded, "
                               f"{st.get('active', 0) or 0} active, {st.get('failed', 0) or 0} failed",
                    "age": age(m.get("creationTimestamp"), now)})
    for cj in cronjobs:
        m, spec, st = meta(cj), cj.get("spec") or {}, cj.get("status") or {}
        out.append({"kind": "cronjob", "namespace": str(m.get("namespace", "")), "name": str(m.get("name", "")),
                    "state": "Suspended" if spec.get("suspend") else "Scheduled",
                    "summary": f"{spec.get('schedule', '')} · "
                               + (f"last {age(st['lastScheduleTime'], now)} ago" if st.get("lastScheduleTime")
                                  else "never run") + f" · {len(st.get('active') or [])} active",
                    "age": age(m.get("creationTimestamp"), now)})
    for h in hpas:
        m, spec, st = meta(h), h.get("spec") or {}, h.get("status") or {}
        ref = spec.get("scaleTargetRef") or {}
        limited = next((c for c in st.get("conditions") or [] if c.get("type") == "ScalingLimited"
                        and c.get("status") == "True"), None)
        out.append({"kind": "horizontalpodautoscaler", "namespace": str(m.get("namespace", "")),
                    "name": str(m.get("name", "")), "state": "Limited" if limited else "Active",
                    "summary": f"{ref.get('kind', '')}/{ref.get('name', '')}: {st.get('currentReplicas', 0) or 0}"
                               f" → {st.get('desiredReplicas', 0) or 0} (min {spec.get('minReplicas', 1)}, "
                               f"max {spec.get('maxReplicas', '?')})",
                    "age": age(m.get("creationTimestamp"), now)})
    return sorted(out, key=lambda r: (r["namespace"], r["kind"], r["name"]))


def owned_by(objs: list[Obj], uids: set[str]) -> list[Obj]:
    """The objects with an ownerReference to one of ``uids``."""
    return [o for o in objs if any(r.get("uid") in uids for r in meta(o).get("ownerReferences") or [])]


def event_rows(events: list[Obj], now: datetime | None = None) -> list[dict[str, str]]:
    """Events as ``kubectl describe`` lists them (newest last)."""
    out = []
    for e in events:
        src = e.get("source") or {}
        out.append({"type": str(e.get("type", "")), "reason": str(e.get("reason", "")),
                    "age": age(e.get("lastTimestamp") or e.get("eventTime") or meta(e).get("creationTimestamp"),
                               now),
                    "count": str(e.get("count", 1) or 1),
                    "from": str(src.get("component", "") or e.get("reportingComponent", "")),
                    "object": f"{(e.get('involvedObject') or {}).get('kind', '')}/"
                              f"{(e.get('involvedObject') or {}).get('name', '')}",
                    "message": str(e.get("message", ""))})
    return out
