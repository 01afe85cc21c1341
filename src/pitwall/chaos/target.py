"""What a chaos report is about: the namespace and ``app`` label of a Chaos Mesh selector, or of a Chaos Toolkit
run's target. Kept free of the API machinery so the Chaos Toolkit control (``pitwall.chaos.runreport``) reads
targets the way the server's report does without importing the server's packages."""

from __future__ import annotations

from typing import Any

__all__ = ["BadTarget", "find_selector", "parse_target", "selector_target"]

Obj = dict[str, Any]


class BadTarget(ValueError):
    """A run's target that names no namespace or has malformed labels."""


def find_selector(spec: Any, depth: int = 0) -> Obj:
    """The first ``selector`` in a spec (a Schedule or Workflow embeds the chaos spec one level or two down)."""
    if not isinstance(spec, dict) or depth > 4:
        return {}
    if isinstance(spec.get("selector"), dict):
        return dict(spec["selector"])
    for v in spec.values():
        for item in v if isinstance(v, list) else [v]:
            found = find_selector(item, depth + 1)
            if found:
                return found
    return {}


def selector_target(sel: Obj, namespace: str) -> tuple[str, str]:
    """The namespace (the selector's first, else ``namespace``) and ``app`` label (empty when it names none)
    of a Chaos Mesh selector."""
    ns = str(((sel.get("namespaces") or [None])[0]) or namespace)
    labels = sel.get("labelSelectors") or {}
    return ns, str(labels.get("app") or labels.get("app.kubernetes.io/name") or "")


def parse_target(t: Obj) -> tuple[str, str]:
    """The namespace and ``app`` of a run's target: ``{namespace, app}``, ``{namespace, labelSelectors}`` or a
    Chaos Mesh selector (``namespaces``, ``labelSelectors``); ``BadTarget`` when it names no namespace."""
    labels = t.get("labelSelectors") or ({"app": t["app"]} if t.get("app") else {})
    if not isinstance(labels, dict):
        raise BadTarget("target.labelSelectors: an object of label values")
    ns, app = selector_target({"namespaces": t.get("namespaces"), "labelSelectors": labels},
                              str(t.get("namespace") or ""))
    if not ns:
        raise BadTarget("target: a namespace is required (namespace, or namespaces[0])")
    return ns, app
