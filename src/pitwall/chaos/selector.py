"""Chaos Mesh's pod selection: ``selector`` (namespaces, labels, expressions, annotations, fields, pods,
phases, nodes) narrowed by ``mode``/``value`` (one, all, fixed, fixed-percent, random-max-percent).

Selection happens once per experiment, as in Chaos Mesh: the chosen targets
are kept in ``status.experiment.containerRecords``.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

from pitwall.chaos.model import ChaosSpecError
from pitwall.kube import KubeClient

__all__ = ["filter_by_mode", "select_pods", "target_ids"]

Obj = dict[str, Any]


def _label_ok(labels: dict[str, str], sel: Obj) -> bool:
    if any(labels.get(k) != v for k, v in (sel.get("labelSelectors") or {}).items()):
        return False
    for req in sel.get("expressionSelectors") or []:
        key, op, values = req.get("key", ""), req.get("operator", ""), list(req.get("values") or [])
        have = key in labels
        if op == "In" and not (have and labels[key] in values):
            return False
        if op == "NotIn" and have and labels[key] in values:
            return False
        if op == "Exists" and not have:
            return False
        if op == "DoesNotExist" and have:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ChaosSpecError(f"spec.selector.expressionSelectors: unknown operator {op!r}")
    return True


def _field_ok(pod: Obj, fields: dict[str, str]) -> bool:
    for path, want in fields.items():
        cur: Any = pod
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if str(cur if cur is not None else "") != want:
            return False
    return True


async def select_pods(client: KubeClient, namespace: str, selector: Obj) -> list[Obj]:
    """Every live pod ``selector`` matches; namespaces default to the experiment's own, as Chaos Mesh's
    webhook defaults them."""
    pods_by_ns: dict[str, list[str]] = {str(k): [str(n) for n in v or []]
                                        for k, v in (selector.get("pods") or {}).items()}
    namespaces = [str(n) for n in selector.get("namespaces") or []] or ([] if pods_by_ns else [namespace])
    out: list[Obj] = []
    if pods_by_ns:
        for ns, names in sorted(pods_by_ns.items()):
            items = (await client.list("v1", "Pod", ns)).items
            out += [p for p in items if p["metadata"]["name"] in names]
    else:
        for ns in namespaces:
            out += (await client.list("v1", "Pod", ns)).items
    phases = set(selector.get("podPhaseSelectors") or [])
    nodes = set(selector.get("nodes") or [])
    node_labels = selector.get("nodeSelectors") or {}
    keep = []
    for p in out:
        m = p.get("metadata") or {}
        if m.get("deletionTimestamp"):
            continue
        if not _label_ok(m.get("labels") or {}, selector):
            continue
        ann = m.get("annotations") or {}
        if any(ann.get(k) != v for k, v in (selector.get("annotationSelectors") or {}).items()):
            continue
        if not _field_ok(p, selector.get("fieldSelectors") or {}):
            continue
        if phases and (p.get("status") or {}).get("phase") not in phases:
            continue
        node = (p.get("spec") or {}).get("nodeName") or ""
        if nodes and node not in nodes:
            continue
        if node_labels and not await _node_matches(client, node, node_labels):
            continue
        keep.append(p)
    return sorted(keep, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))


async def _node_matches(client: KubeClient, node: str, labels: dict[str, str]) -> bool:
    try:
        n = await client.get("v1", "Node", node)
    except Exception:
        return False
    have = (n.get("metadata") or {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


def _random(n: int) -> int:
    return secrets.randbelow(n)


def _int(value: str, field: str = "spec.value") -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ChaosSpecError(f'{field}: strconv.Atoi: parsing "{value}": invalid syntax') from None


def filter_by_mode(items: list[Obj], mode: str, value: str) -> list[Obj]:
    """Chaos Mesh's ``FilterObjectsByMode``: which of ``items`` (random picks) the mode keeps."""
    n = len(items)
    if n == 0:
        raise ChaosSpecError("cannot generate objects from empty list")
    if mode == "one":
        count = 1
    elif mode == "all":
        count = n
    elif mode == "fixed":
        count = min(_int(value), n)
        if count <= 0:
            raise ChaosSpecError("cannot select any object as value below or equal 0")
    elif mode in ("fixed-percent", "random-max-percent"):
        pct = _int(value)
        if pct == 0:
            raise ChaosSpecError("cannot select any object as value below or equal 0")
        if not 0 < pct <= 100:
            raise ChaosSpecError(f"fixed percentage value of {pct} is invalid, Must be (0,100]")
        if mode == "random-max-percent":
            pct = _random(pct + 1)
        count = math.ceil(n * pct / 100)
    else:
        raise ChaosSpecError(f"mode {mode} not supported")
    if count >= n:
        return list(items)
    picked: list[int] = []
    while len(picked) < count:
        i = _random(n)
        if i not in picked:
            picked.append(i)
    return [items[i] for i in picked]


def target_ids(pods: list[Obj], containers: list[str] | None) -> list[str]:
    """Record ids: ``ns/pod`` for pod targets, ``ns/pod/container`` when ``containers`` is given (an empty
    list means every container of the pod)."""
    out = []
    for p in pods:
        m = p["metadata"]
        if containers is None:
            out.append(f"{m['namespace']}/{m['name']}")
            continue
        names = [c.get("name") for c in (p.get("spec") or {}).get("containers") or []]
        for c in names:
            if not containers or c in containers:
                out.append(f"{m['namespace']}/{m['name']}/{c}")
    return out
