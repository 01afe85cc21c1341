"""Unknown fields: ``fieldValidation`` (Strict, Warn, Ignore) and pruning, as the apiserver decodes objects.

Built-in kinds lose fields their schema does not know (Go's JSON decoding
drops them); custom kinds are pruned against their CRD schema elsewhere.
Strict answers 400 ``strict decoding error: unknown field "spec.x"``, Warn a
``Warning: 299 - "unknown field ..."`` header.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from pitwall.kube.errors import BadRequest
from pitwall.kube.patch import schema_of
from pitwall.kube.registry import ResourceType
from pitwall.kube.schemas import Node

__all__ = ["check_fields", "warning_headers"]

Obj = dict[str, Any]


def _unknown_fields(value: Any, node: Node | None, path: str, out: list[str], prune: bool) -> Any:
    if node is None:
        return value
    s = node.schema
    if isinstance(value, dict):
        props = s.get("properties")
        free = "additionalProperties" in s or s.get("x-kubernetes-preserve-unknown-fields") or \
            (s.get("x-kubernetes-embedded-resource") and False)
        result: Obj = {}
        for k, v in value.items():
            child = node.child(k)
            p = f"{path}.{k}" if path else k
            if isinstance(props, dict) and k not in props and not free and child is None:
                out.append(p)
                if prune:
                    continue
            result[k] = _unknown_fields(v, child, p, out, prune)
        return result
    if isinstance(value, list):
        it = node.items()
        return [_unknown_fields(v, it, f"{path}[{i}]", out, prune) for i, v in enumerate(value)]
    return value


def check_fields(request: Request, rt: ResourceType, obj: Any, node: Node | None = None) -> tuple[Any, list[str]]:
    """Apply ``fieldValidation`` (Strict: 400 on unknown fields, Warn: a Warning header); prune built-ins."""
    if not isinstance(obj, dict):
        return obj, []
    mode = request.query_params.get("fieldValidation", "")
    if mode and mode not in ("Ignore", "Warn", "Strict"):
        raise BadRequest(f'fieldValidation: Unsupported value: "{mode}": supported values: "Ignore", "Warn", '
                         '"Strict"')
    node = node if node is not None else schema_of(rt)
    unknown: list[str] = []
    top = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    pruned = _unknown_fields(top, node, "", unknown, prune=rt.crd is None)
    pruned = {**{k: obj[k] for k in ("apiVersion", "kind") if k in obj}, **pruned}
    if mode == "Strict" and unknown:
        msg = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise BadRequest(f"strict decoding error: {msg}")
    warnings = [f'unknown field "{u}"' for u in unknown] if mode == "Warn" else []
    return pruned, warnings


def warning_headers(warnings: list[str]) -> dict[str, str]:
    if not warnings:
        return {}
    def quoted(w: str) -> str:
        return '"' + w.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return {"Warning": ", ".join(f"299 - {quoted(w)}" for w in warnings)}
