"""The Deployments of a Canary, as Flagger's ``pkg/canary/deployment_controller.go`` handles them: the primary
``<target>-primary`` copied from the target (its selector label's value suffixed ``-primary``), readiness,
scaling, promotion (the target's pod template copied to the primary), and the pod template's hash that
tells a new revision (``status.lastAppliedSpec``)."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pitwall.kube import KubeClient, NotFoundError
from pitwall.releases import configs
from pitwall.releases.configs import include_by_prefix, without_flux
from pitwall.releases.model import API_VERSION, CANARY, CanaryView, parse_time

__all__ = [
    "SELECTOR_LABELS",
    "TargetError",
    "compute_hash",
    "ensure_primary",
    "promote",
    "readiness",
    "scale",
    "selector_label",
    "spec_changed",
]

Obj = dict[str, Any]
SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")  # Flagger's default -selector-labels
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery rand.SafeEncodeString's alphabet


FLAGGER_ID = "flagger-id"  # the primary's pod template annotation Flagger renews at each promotion


class TargetError(Exception):
    """The target cannot be used as it is (the message names the object and field)."""


def compute_hash(value: Any) -> str:
    """FNV-32a over the canonical JSON of ``value``, encoded as Kubernetes' SafeEncodeString (Flagger's
    ComputeHash hashes Go's dump of the struct instead: same shape of value, not the same string)."""
    h = 0x811C9DC5
    for b in json.dumps(value, sort_keys=True, separators=(",", ":")).encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in str(h))


def selector_label(cd: CanaryView, dep: Obj) -> tuple[str, str]:
    """The label (and its value) that selects the target's pods."""
    labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    for label in SELECTOR_LABELS:
        if labels.get(label):
            return label, str(labels[label])
    raise TargetError(f"Deployment {cd.target}.{cd.namespace} spec.selector.matchLabels must contain one of "
                      f"[{' '.join(SELECTOR_LABELS)}]")


def spec_changed(cd: CanaryView, dep: Obj) -> bool:
    """Whether the target's pod template is a revision not yet analysed (Flagger's hasSpecChanged): a template
    equal to the last promoted one is a manual rollback and starts nothing."""
    applied = str(cd.status.get("lastAppliedSpec") or "")
    if not applied:
        return True
    h = compute_hash((dep.get("spec") or {}).get("template") or {})
    if str(cd.status.get("lastPromotedSpec") or "") == h:
        return False
    return applied != h


def _primary_labels(labels: dict[str, Any] | None, label: str, value: str) -> dict[str, str]:
    """Flagger's makePrimaryLabels: Flux's labels dropped, the selector label's value ``<value>-primary``."""
    return {**{k: v for k, v in without_flux(labels).items() if k != label}, label: f"{value}-primary"}


def _primary_template(template: Obj, label: str, value: str, refs: dict[str, configs.ConfigRef]) -> Obj:
    """The target's pod template for the primary: its selector label, the primary copies of tracked configs,
    and a new ``flagger-id`` annotation (Flagger's makeAnnotations), so that every promotion rolls the primary's
    pods even when only a tracked ConfigMap or Secret changed (env from a config is read at pod start)."""
    t = copy.deepcopy(template)
    if refs and isinstance(t.get("spec"), dict):
        t["spec"] = configs.apply_primary_configs(t["spec"], refs)
    t.setdefault("metadata", {})["labels"] = _primary_labels(t["metadata"].get("labels"), label, value)
    annotations = {k: v for k, v in without_flux(t["metadata"].get("annotations")).items() if k != FLAGGER_ID}
    t["metadata"]["annotations"] = {**annotations, FLAGGER_ID: str(uuid.uuid4())}
    return t


def _owner(cd: CanaryView) -> Obj:
    return {"apiVersion": API_VERSION, "kind": CANARY, "name": cd.name, "uid": str(cd.meta.get("uid") or ""),
            "controller": True, "blockOwnerDeletion": True}


async def ensure_primary(client: KubeClient, cd: CanaryView, target: Obj, label: str, value: str,
                         prefixes: Sequence[str] = ()) -> Obj:
    """The primary Deployment, created from the target when absent (replicas as the target's, at least 1; the
    target's labels starting with one of ``prefixes``, its annotations but Flux's)."""
    name = cd.primary_workload
    try:
        found: Obj = await client.get("apps/v1", "Deployment", name, cd.namespace)
        return found
    except NotFoundError:
        pass
    spec = copy.deepcopy(target.get("spec") or {})
    replicas = spec.get("replicas")
    spec["replicas"] = replicas if isinstance(replicas, int) and replicas > 0 else 1
    spec["selector"] = {"matchLabels": {label: f"{value}-primary"}}
    refs = await configs.target_configs(client, cd.namespace, target)
    await configs.sync_primary_configs(client, cd, refs, prefixes)
    spec["template"] = _primary_template(spec.get("template") or {}, label, value, refs)
    tm = target.get("metadata") or {}
    labels = _primary_labels(include_by_prefix(tm.get("labels"), prefixes), label, value)
    annotations = without_flux(tm.get("annotations"))
    made: Obj = await client.create({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": cd.namespace, "labels": labels,
                     "annotations": annotations, "ownerReferences": [_owner(cd)]},
        "spec": spec})
    return made


async def promote(client: KubeClient, cd: CanaryView, target: Obj, label: str, value: str,
                  prefixes: Sequence[str] = ()) -> None:
    """Copy the target's pod template (and rollout settings) to the primary, and its tracked configs; the
    primary's labels and annotations become the target's that start with one of ``prefixes``."""
    src = target.get("spec") or {}
    tm = target.get("metadata") or {}
    refs = await configs.target_configs(client, cd.namespace, target)
    await configs.sync_primary_configs(client, cd, refs, prefixes)

    def change(primary: Obj) -> None:
        meta = primary.setdefault("metadata", {})
        meta["annotations"] = include_by_prefix(tm.get("annotations"), prefixes)
        meta["labels"] = _primary_labels(include_by_prefix(tm.get("labels"), prefixes), label, value)
        spec = primary.setdefault("spec", {})
        spec["template"] = _primary_template(src.get("template") or {}, label, value, refs)
        for f in ("minReadySeconds", "revisionHistoryLimit", "strategy"):
            if f in src:
                spec[f] = copy.deepcopy(src[f])

    await client.modify(await client.get("apps/v1", "Deployment", cd.primary_workload, cd.namespace), change)


async def scale(client: KubeClient, namespace: str, name: str, replicas: int) -> None:
    """Set a Deployment's replicas (no write when already there)."""
    dep = await client.get("apps/v1", "Deployment", name, namespace)
    if (dep.get("spec") or {}).get("replicas") == replicas:
        return
    await client.patch("apps/v1", "Deployment", name, {"spec": {"replicas": replicas}}, namespace=namespace)


def _progress_stuck(dep: Obj, deadline_s: int, since: datetime | None) -> bool:
    """Flagger's isDeploymentReady deadline, judged only once the Deployment controller has observed the
    current generation (before that, the status describes the previous template): the Progressing condition
    says ProgressDeadlineExceeded, or the Available condition has said MinimumReplicasUnavailable for longer
    than ``deadline_s``. A Deployment without conditions is timed from ``since`` (the Canary's last
    transition) when replicas are unavailable."""
    m, st = dep.get("metadata") or {}, dep.get("status") or {}
    if int(m.get("generation") or 0) > int(st.get("observedGeneration") or 0):
        return False
    conds = {c.get("type"): c for c in st.get("conditions") or []}
    progressing, available = conds.get("Progressing"), conds.get("Available")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return True
    if progressing is not None or available is not None:
        if available is None or available.get("status") != "False" \
                or available.get("reason") != "MinimumReplicasUnavailable":
            return False
        since = parse_time(available.get("lastUpdateTime")) or since
    if since is None:
        return False
    want = (dep.get("spec") or {}).get("replicas", 1)
    unavailable = int(st.get("unavailableReplicas") or 0) or max(0, want - int(st.get("availableReplicas") or 0))
    return unavailable > 0 and (datetime.now(UTC) - since).total_seconds() > deadline_s


def readiness(dep: Obj, deadline_s: int = 0, since: datetime | None = None,
              threshold: int = 100) -> tuple[bool, str, bool]:
    """(ready, why not, retriable): every replica of the Deployment's current template updated and
    ``threshold`` percent of them available (Flagger's ready thresholds); not retriable once it is stuck past
    ``deadline_s`` (with a deadline given)."""
    ready, why = _readiness(dep, threshold)
    if ready:
        return True, "", True
    stuck = deadline_s > 0 and _progress_stuck(dep, deadline_s, since)
    if stuck:
        why = f"deployment \"{(dep.get('metadata') or {}).get('name')}\" exceeded its progress deadline"
    return False, why, not stuck


def _readiness(dep: Obj, threshold: int) -> tuple[bool, str]:
    m, spec, st = dep.get("metadata") or {}, dep.get("spec") or {}, dep.get("status") or {}
    name = f"{m.get('name')}.{m.get('namespace') or 'default'}"
    want = spec.get("replicas", 1)
    if int(st.get("observedGeneration") or 0) < int(m.get("generation") or 0):
        return False, "waiting for rollout to finish: observed deployment generation less than desired generation"
    updated, available = int(st.get("updatedReplicas") or 0), int(st.get("availableReplicas") or 0)
    if updated < want:
        return False, (f"{name} waiting for rollout to finish: {updated} out of {want} new replicas have been "
                       "updated")
    if int(st.get("replicas") or 0) > updated:
        return False, (f"{name} waiting for rollout to finish: {int(st.get('replicas') or 0) - updated} old "
                       "replicas are pending termination")
    need = updated * threshold // 100  # Flagger truncates the share of updated replicas to a whole pod
    if available < need:
        return False, (f"{name} waiting for rollout to finish: {available} of {need} (readyThreshold {threshold}%) "
                       "updated replicas are available")
    return True, ""
