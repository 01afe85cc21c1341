"""Label and field selectors as ``kubectl -l`` / ``--field-selector`` send them.

Label selectors: ``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``,
``a``, ``!a``, comma-joined (all must hold). Field selectors: ``f=v``,
``f==v``, ``f!=v`` over the fields a kind supports (``metadata.name``,
``metadata.namespace`` for all; per-kind fields such as pods'
``status.phase`` and ``spec.nodeName``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pitwall.kube.errors import BadRequest

__all__ = ["FieldSelector", "LabelSelector", "match_label_selector_object", "selector_string"]

_TOKEN = re.compile(r"\s*(!=|==|=|\(|\)|,|!|[^\s!=(),]+)")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        v = labels.get(self.key)
        if self.op == "=":
            return has and v == self.values[0]
        if self.op == "!=":
            return not has or v != self.values[0]
        if self.op == "in":
            return has and v in self.values
        if self.op == "notin":
            return not has or v not in self.values
        if self.op == "exists":
            return has
        return not has


class LabelSelector:
    """A parsed label selector; the empty selector matches everything."""

    def __init__(self, reqs: list[Requirement]) -> None:
        self.reqs = reqs

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        if not text or not text.strip():
            return cls([])
        toks = [m.group(1) for m in _TOKEN.finditer(text) if m.group(1).strip()]
        reqs: list[Requirement] = []
        i = 0

        def bad(msg: str = "") -> BadRequest:
            return BadRequest(f"unable to parse requirement: {msg or 'invalid label selector'}: {text!r}")

        while i < len(toks):
            t = toks[i]
            if t == "!":
                if i + 1 >= len(toks):
                    raise bad()
                reqs.append(Requirement(toks[i + 1], "!"))
                i += 2
            else:
                key = t
                nxt = toks[i + 1] if i + 1 < len(toks) else ","
                if nxt in ("=", "==", "!="):
                    if i + 2 >= len(toks) or toks[i + 2] in (",", "(", ")"):
                        val = ""
                        i += 2
                    else:
                        val = toks[i + 2]
                        i += 3
                    reqs.append(Requirement(key, "!=" if nxt == "!=" else "=", (val,)))
                elif nxt in ("in", "notin"):
                    if i + 2 >= len(toks) or toks[i + 2] != "(":
                        raise bad("expected '('")
                    j = i + 3
                    vals: list[str] = []
                    while j < len(toks) and toks[j] != ")":
                        if toks[j] != ",":
                            vals.append(toks[j])
                        j += 1
                    if j >= len(toks):
                        raise bad("expected ')'")
                    reqs.append(Requirement(key, nxt, tuple(vals)))
                    i = j + 1
                elif nxt == ",":
                    reqs.append(Requirement(key, "exists"))
                    i += 1
                else:
                    raise bad(f"found '{nxt}'")
            if i < len(toks):
                if toks[i] != ",":
                    raise bad(f"found '{toks[i]}', expected: ','")
                i += 1
        return cls(reqs)

    def matches(self, labels: dict[str, str] | None) -> bool:
        ls = labels or {}
        return all(r.matches(ls) for r in self.reqs)

    @property
    def empty(self) -> bool:
        return not self.reqs


def match_label_selector_object(sel: dict[str, Any] | None, labels: dict[str, str] | None) -> bool:
    """A ``metav1.LabelSelector`` (matchLabels + matchExpressions) against labels; empty matches all."""
    if not sel:
        return True
    ls = labels or {}
    for k, v in (sel.get("matchLabels") or {}).items():
        if ls.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(e.get("operator", ""))
        if op is None or not Requirement(e.get("key", ""), op, tuple(e.get("values") or ())).matches(ls):
            return False
    return True


def selector_string(sel: dict[str, Any] | None) -> str:
    """A label selector object as ``kubectl`` prints it (``app=web,tier in (a,b)``)."""
    if not sel:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for e in sel.get("matchExpressions") or []:
        op, key, vals = e.get("operator"), e.get("key"), ",".join(sorted(e.get("values") or []))
        parts.append({"In": f"{key} in ({vals})", "NotIn": f"{key} notin ({vals})", "Exists": f"{key}",
                      "DoesNotExist": f"!{key}"}.get(str(op), ""))
    return ",".join(parts)


FieldGetter = Callable[[dict[str, Any]], str]


def _path(*keys: str) -> FieldGetter:
    def get(obj: dict[str, Any]) -> str:
        cur: Any = obj
        for k in keys:
            cur = cur.get(k) if isinstance(cur, dict) else None
        if isinstance(cur, bool):
            return "true" if cur else "false"
        return "" if cur is None else str(cur)

    return get


COMMON_FIELDS: dict[str, FieldGetter] = {
    "metadata.name": _path("metadata", "name"),
    "metadata.namespace": _path("metadata", "namespace"),
}

# Per-kind selectable fields, as the apiserver's field label conversion functions allow them.
KIND_FIELDS: dict[str, dict[str, FieldGetter]] = {
    "Pod": {
        "spec.nodeName": _path("spec", "nodeName"),
        "spec.restartPolicy": _path("spec", "restartPolicy"),
        "spec.schedulerName": _path("spec", "schedulerName"),
        "spec.serviceAccountName": _path("spec", "serviceAccountName"),
        "spec.hostNetwork": _path("spec", "hostNetwork"),
        "status.phase": _path("status", "phase"),
        "status.podIP": _path("status", "podIP"),
        "status.nominatedNodeName": _path("status", "nominatedNodeName"),
    },
    "Event": {
        "involvedObject.kind": _path("involvedObject", "kind"),
        "involvedObject.namespace": _path("involvedObject", "namespace"),
        "involvedObject.name": _path("involvedObject", "name"),
        "involvedObject.uid": _path("involvedObject", "uid"),
        "involvedObject.apiVersion": _path("involvedObject", "apiVersion"),
        "involvedObject.resourceVersion": _path("involvedObject", "resourceVersion"),
        "involvedObject.fieldPath": _path("involvedObject", "fieldPath"),
        "reason": _path("reason"),
        "reportingComponent": _path("reportingComponent"),
        "source": _path("source", "component"),
        "type": _path("type"),
    },
    "Secret": {"type": _path("type")},
    "Node": {"spec.unschedulable": _path("spec", "unschedulable")},
    "Namespace": {"status.phase": _path("status", "phase")},
    "ReplicaSet": {"status.replicas": _path("status", "replicas")},
    "Job": {"status.successful": _path("status", "succeeded")},
}


class FieldSelector:
    def __init__(self, reqs: list[tuple[FieldGetter, bool, str]]) -> None:
        self.reqs = reqs

    @classmethod
    def parse(cls, text: str | None, kind: str) -> FieldSelector:
        if not text or not text.strip():
            return cls([])
        fields = {**COMMON_FIELDS, **KIND_FIELDS.get(kind, {})}
        reqs: list[tuple[FieldGetter, bool, str]] = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            m = re.fullmatch(r"([^=!]+?)\s*(==|=|!=)\s*(.*)", part)
            if not m:
                raise BadRequest(f"invalid selector: '{text}'; can't understand '{part}'")
            name, op, val = m.group(1).strip(), m.group(2), m.group(3).strip()
            getter = fields.get(name)
            if getter is None:
                raise BadRequest(f'field label not supported: {name}')
            reqs.append((getter, op == "!=", val))
        return cls(reqs)

    def matches(self, obj: dict[str, Any]) -> bool:
        return all((g(obj) != v) if neg else (g(obj) == v) for g, neg, v in self.reqs)

    @property
    def empty(self) -> bool:
        return not self.reqs
