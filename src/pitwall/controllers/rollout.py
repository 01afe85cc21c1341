"""The Deployment controller's rules, as pure functions (upstream pkg/controller/deployment/util).

Nothing here does I/O: fenceposts (maxSurge rounds up, maxUnavailable
rounds down, both zero makes unavailable one), the pod-template hash and
ReplicaSet naming, how many replicas a new ReplicaSet may have, proportional
scaling, revision bookkeeping, status and conditions.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pitwall.controllers._common import int_or_percent, meta
from pitwall.kube import fmt_time, parse_time

__all__ = [
    "DESIRED_REPLICAS",
    "HASH_LABEL",
    "MAX_REPLICAS",
    "REVISION",
    "REVISION_HISTORY",
    "available_condition",
    "calculate_status",
    "compute_hash",
    "deployment_complete",
    "deployment_progressing",
    "deployment_timed_out",
    "equal_ignore_hash",
    "get_condition",
    "max_surge",
    "max_unavailable",
    "new_rs_new_replicas",
    "proportional_sizes",
    "requeue_stuck",
    "resolve_fenceposts",
    "revision",
    "safe_encode",
    "set_condition",
    "sync_progress",
]

Obj = dict[str, Any]
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# Deployment annotations not copied to its ReplicaSets (upstream annotationsToSkip).
SKIPPED_ANNOTATIONS = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
})
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's rand.SafeEncodeString alphabet

# Progressing condition reasons, as upstream names them
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"


# ---- numbers ---------------------------------------------------------------------------------------------------

def replicas_of(obj: Obj) -> int:
    """``spec.replicas`` (1 when unset, as defaulting does)."""
    r = (obj.get("spec") or {}).get("replicas")
    return 1 if r is None else int(r)


def status_int(obj: Obj, field: str) -> int:
    return int((obj.get("status") or {}).get(field) or 0)


def is_rolling(d: Obj) -> bool:
    return bool(((d.get("spec") or {}).get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate")


def resolve_fenceposts(max_surge_v: Any, max_unavailable_v: Any, desired: int) -> tuple[int, int]:
    """(surge, unavailable): percentages of ``desired``, surge rounded up, unavailable down; never both 0."""
    surge = int_or_percent(max_surge_v if max_surge_v is not None else "25%", desired, True)
    unavailable = int_or_percent(max_unavailable_v if max_unavailable_v is not None else "25%", desired, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # otherwise no rollout could make progress
    return surge, unavailable


def _rolling(d: Obj) -> Obj:
    return ((d.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}


def max_surge(d: Obj) -> int:
    if not is_rolling(d):
        return 0
    ru = _rolling(d)
    return resolve_fenceposts(ru.get("maxSurge"), ru.get("maxUnavailable"), replicas_of(d))[0]


def max_unavailable(d: Obj) -> int:
    """Pods that may be unavailable during a rolling update (0 for Recreate or no replicas), at most replicas."""
    n = replicas_of(d)
    if not is_rolling(d) or n == 0:
        return 0
    ru = _rolling(d)
    return min(resolve_fenceposts(ru.get("maxSurge"), ru.get("maxUnavailable"), n)[1], n)


def available_of(rs: Obj) -> int:
    """Available pods of a ReplicaSet, never more than it is asked for: a status not yet caught up with a
    scale-down must not let the rollout count pods that are going away."""
    return min(status_int(rs, "availableReplicas"), replicas_of(rs))


def new_rs_new_replicas(d: Obj, all_rss: Sequence[Obj], new_rs: Obj | None) -> int:
    """How many replicas the new ReplicaSet may have now (upstream NewRSNewReplicas)."""
    current_new = replicas_of(new_rs) if new_rs is not None else 0
    want = replicas_of(d)
    if not is_rolling(d):
        return want
    current = sum(replicas_of(rs) for rs in all_rss)
    max_total = want + max_surge(d)
    if current >= max_total:
        return current_new
    return current_new + min(max_total - current, want - current_new)


def _round_half_away(x: float) -> int:
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def proportional_sizes(d: Obj, active: Sequence[Obj], status_replicas: int) -> list[int]:
    """New sizes of the active ReplicaSets (upstream ``scale``) when a rolling Deployment is resized
    mid-rollout: the difference to ``replicas + maxSurge`` is spread in proportion to each ReplicaSet's
    share of the size it was last scaled for (its max-replicas annotation); the rounding leftover goes to
    the largest. ``active`` must be sorted largest first (newer first when growing, older when shrinking)."""
    want = replicas_of(d)
    allowed = want + max_surge(d) if want > 0 else 0
    total = sum(replicas_of(rs) for rs in active)
    to_add = allowed - total
    sizes = [replicas_of(rs) for rs in active]
    if to_add == 0 or not active:
        return sizes
    added = 0
    for i, rs in enumerate(active):
        size = replicas_of(rs)
        if size == 0 or to_add == added:
            continue
        if want == 0:
            fraction = -size
        else:
            ann = (meta(rs).get("annotations") or {}).get(MAX_REPLICAS)
            try:
                annotated = int(ann) if ann is not None else status_replicas
            except ValueError:
                annotated = status_replicas
            if annotated <= 0:
                continue
            fraction = _round_half_away(size * (want + max_surge(d)) / annotated) - size
        allowed_left = to_add - added
        share = min(fraction, allowed_left) if to_add > 0 else max(fraction, allowed_left)
        sizes[i] = size + share
        added += share
    sizes[0] = max(0, sizes[0] + to_add - added)
    return sizes


# ---- templates, hashes, revisions ------------------------------------------------------------------------------

def safe_encode(s: str) -> str:
    """apimachinery's ``rand.SafeEncodeString``: each character mapped into a vowel-free alphabet."""
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in s)


def _fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def compute_hash(template: Obj, collision_count: int | None = None) -> str:
    """The ``pod-template-hash`` of a template: fnv32a over its canonical form (sorted-key JSON; upstream
    hashes Go's printed struct), then the collision count as 8 little-endian bytes when set, rendered as
    upstream does (the decimal digits of the hash through ``safe_encode``)."""
    data = json.dumps(_pruned(template), sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += (collision_count & 0xFFFFFFFF).to_bytes(4, "little") + b"\0\0\0\0"
    return safe_encode(str(_fnv32a(data)))


def _pruned(value: Any) -> Any:
    """Without null fields: a typed Go client sends ``creationTimestamp: null`` in templates (``kubectl rollout
    undo`` does) where the stored template has none, and the two must compare (and hash) alike."""
    if isinstance(value, dict):
        return {k: _pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def _without_hash(template: Obj | None) -> Obj:
    t: Obj = _pruned(template or {})
    labels = (t.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
        if not labels:
            t["metadata"].pop("labels")
    if isinstance(t.get("metadata"), dict) and not t["metadata"]:
        t.pop("metadata")
    return t


def equal_ignore_hash(a: Obj | None, b: Obj | None) -> bool:
    """Whether two pod templates are equal but for the ``pod-template-hash`` label."""
    return _without_hash(a) == _without_hash(b)


def revision(obj: Obj) -> int:
    try:
        return int((meta(obj).get("annotations") or {}).get(REVISION) or 0)
    except ValueError:
        return 0


# ---- conditions and status -------------------------------------------------------------------------------------

def get_condition(status: Obj, type_: str) -> Obj | None:
    for c in status.get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None


def new_condition(type_: str, status: str, reason: str, message: str, at: datetime) -> Obj:
    t = fmt_time(at)
    return {"type": type_, "status": status, "lastUpdateTime": t, "lastTransitionTime": t, "reason": reason,
            "message": message}


def set_condition(status: Obj, cond: Obj) -> None:
    """Upstream SetDeploymentCondition: same status and reason is no change; same status keeps the
    transition time."""
    cur = get_condition(status, cond["type"])
    if cur is not None and cur.get("status") == cond["status"] and cur.get("reason") == cond["reason"]:
        return
    if cur is not None and cur.get("status") == cond["status"]:
        cond = {**cond, "lastTransitionTime": cur.get("lastTransitionTime", cond["lastTransitionTime"])}
    status["conditions"] = [*(c for c in status.get("conditions") or [] if c.get("type") != cond["type"]), cond]


def remove_condition(status: Obj, type_: str) -> None:
    status["conditions"] = [c for c in status.get("conditions") or [] if c.get("type") != type_]


def has_progress_deadline(d: Obj) -> bool:
    pds = (d.get("spec") or {}).get("progressDeadlineSeconds")
    return pds is not None and int(pds) != 2**31 - 1


def available_condition(d: Obj, available: int, at: datetime) -> Obj:
    if available >= replicas_of(d) - max_unavailable(d):
        return new_condition("Available", "True", MIN_AVAILABLE, "Deployment has minimum availability.", at)
    return new_condition("Available", "False", MIN_UNAVAILABLE, "Deployment does not have minimum availability.",
                         at)


def calculate_status(d: Obj, all_rss: Sequence[Obj], new_rs: Obj | None, at: datetime) -> Obj:
    """The Deployment's status from its ReplicaSets' (upstream calculateStatus); conditions carried over,
    Available recomputed."""
    old = d.get("status") or {}
    available = sum(status_int(rs, "availableReplicas") for rs in all_rss)
    total = sum(replicas_of(rs) for rs in all_rss)
    status: Obj = {
        "observedGeneration": int(meta(d).get("generation") or 0),
        "replicas": sum(status_int(rs, "replicas") for rs in all_rss),
        "updatedReplicas": status_int(new_rs, "replicas") if new_rs is not None else 0,
        "readyReplicas": sum(status_int(rs, "readyReplicas") for rs in all_rss),
        "availableReplicas": available,
        "unavailableReplicas": max(0, total - available),
        "conditions": copy.deepcopy(old.get("conditions") or []),
    }
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    set_condition(status, available_condition(d, available, at))
    failure = _replica_failure(all_rss, new_rs, at)
    if failure is not None:
        set_condition(status, failure)
    else:
        remove_condition(status, "ReplicaFailure")
    return status


def _replica_failure(all_rss: Sequence[Obj], new_rs: Obj | None, at: datetime) -> Obj | None:
    """A ReplicaSet's ReplicaFailure condition (the new one's first) as the Deployment's (upstream
    getReplicaFailures)."""
    ordered = [*([new_rs] if new_rs is not None else []), *(rs for rs in all_rss if rs is not new_rs)]
    for rs in ordered:
        c = get_condition(rs.get("status") or {}, "ReplicaFailure")
        if c is not None:
            cond = new_condition("ReplicaFailure", str(c.get("status") or "True"), str(c.get("reason") or ""),
                                 str(c.get("message") or ""), at)
            cond["lastTransitionTime"] = c.get("lastTransitionTime") or cond["lastTransitionTime"]
            return cond
    return None


def compact_status(status: Obj) -> Obj:
    """As the API serialises it: zero counts and empty lists omitted (``omitempty``)."""
    return {k: v for k, v in status.items() if v not in (0, [], None) or (k == "collisionCount" and v is not None)}


def deployment_complete(d: Obj, status: Obj) -> bool:
    n = replicas_of(d)
    return (int(status.get("updatedReplicas") or 0) == n and int(status.get("replicas") or 0) == n
            and int(status.get("availableReplicas") or 0) == n
            and int(status.get("observedGeneration") or 0) >= int(meta(d).get("generation") or 0))


def deployment_progressing(d: Obj, status: Obj) -> bool:
    """Any progress since the stored status: more updated, fewer old, more ready or more available pods."""
    old = d.get("status") or {}

    def n(s: Obj, f: str) -> int:
        return int(s.get(f) or 0)

    return (n(status, "updatedReplicas") > n(old, "updatedReplicas")
            or n(status, "replicas") - n(status, "updatedReplicas") < n(old, "replicas") - n(old, "updatedReplicas")
            or n(status, "readyReplicas") > n(old, "readyReplicas")
            or n(status, "availableReplicas") > n(old, "availableReplicas"))


def deployment_timed_out(d: Obj, status: Obj, at: datetime) -> bool:
    """Whether the Progressing condition saw no update for ``progressDeadlineSeconds``."""
    if not has_progress_deadline(d):
        return False
    cond = get_condition(status, "Progressing")
    if cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    if since is None:
        return False
    return (at - since).total_seconds() > int((d.get("spec") or {}).get("progressDeadlineSeconds") or 0)


def sync_progress(d: Obj, status: Obj, new_name: str | None, at: datetime) -> None:
    """Move the Progressing condition of ``status`` (upstream syncRolloutStatus): NewReplicaSetAvailable once
    complete, ReplicaSetUpdated on any progress (keeping the transition time), ProgressDeadlineExceeded
    after ``progressDeadlineSeconds`` without; nothing once complete, nothing without a deadline."""
    if not has_progress_deadline(d):
        remove_condition(status, "Progressing")
        return
    cur = get_condition(status, "Progressing")
    if (int(status.get("replicas") or 0) == int(status.get("updatedReplicas") or 0)
            and cur is not None and cur.get("reason") == NEW_RS_AVAILABLE):
        return  # already complete
    who = f'ReplicaSet "{new_name}"' if new_name else f'Deployment "{meta(d)["name"]}"'
    if deployment_complete(d, status):
        set_condition(status, new_condition("Progressing", "True", NEW_RS_AVAILABLE,
                                            f"{who} has successfully progressed.", at))
    elif deployment_progressing(d, status):
        cond = new_condition("Progressing", "True", RS_UPDATED, f"{who} is progressing.", at)
        if cur is not None:
            if cur.get("status") == "True":
                cond["lastTransitionTime"] = cur.get("lastTransitionTime", cond["lastTransitionTime"])
            remove_condition(status, "Progressing")
        set_condition(status, cond)
    elif deployment_timed_out(d, status, at):
        set_condition(status, new_condition("Progressing", "False", TIMED_OUT, f"{who} has timed out progressing.",
                                            at))


def requeue_stuck(d: Obj, status: Obj, at: datetime) -> float | None:
    """Seconds until the progress deadline would pass (plus one), so a stalled rollout is seen in time."""
    cur = get_condition(status, "Progressing")
    if not has_progress_deadline(d) or cur is None:
        return None
    if deployment_complete(d, status) or cur.get("reason") == TIMED_OUT:
        return None
    since = parse_time(cur.get("lastUpdateTime"))
    if since is None:
        return None
    left = since.timestamp() + int((d.get("spec") or {}).get("progressDeadlineSeconds") or 0) - at.timestamp()
    return float(max(left, 0.0) + 1.0)
