"""Upstream Kubernetes schemas (OpenAPI definitions) and walking them.

``definitions.json.gz`` holds the definitions reachable from the built-in
kinds, converted from the upstream schemas ``kubernetes-validate`` ships (see
``_generate.py``). A ``Node`` is one resolved schema position; it tells how a
list merges (map keyed by fields, set, atomic), which is what strategic merge
patch and server-side apply need, and it is what OpenAPI and ``kubectl
explain`` serve. CRD kinds use their own ``openAPIV3Schema`` through the same
``Node`` interface.
"""

from __future__ import annotations

import functools
import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Node", "definitions", "node_for_definition", "node_for_schema"]


@functools.cache
def definitions() -> dict[str, Any]:
    with gzip.open(Path(__file__).parent / "definitions.json.gz", "rt", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)["definitions"]
    return data


@dataclass(frozen=True)
class Node:
    """A schema position; ``schema`` has its ``$ref`` resolved."""

    schema: dict[str, Any]
    defs: dict[str, Any]

    def _resolve(self, s: dict[str, Any] | None) -> Node | None:
        if s is None:
            return None
        for _ in range(32):
            ref = s.get("$ref")
            if not isinstance(ref, str):
                break
            target = self.defs.get(ref.rsplit("/", 1)[-1], {})
            s = {**target, **{k: v for k, v in s.items() if k != "$ref"}}
        return Node(s, self.defs)

    def child(self, key: str) -> Node | None:
        props = self.schema.get("properties")
        if isinstance(props, dict) and key in props:
            return self._resolve(props[key])
        add = self.schema.get("additionalProperties")
        if isinstance(add, dict):
            return self._resolve(add)
        return None

    def items(self) -> Node | None:
        it = self.schema.get("items")
        return self._resolve(it) if isinstance(it, dict) else None

    @property
    def list_type(self) -> str:
        """``map``, ``set`` or ``atomic``, from x-kubernetes-list-type or the patch strategy."""
        lt = self.schema.get("x-kubernetes-list-type")
        if lt in ("map", "set", "atomic"):
            return str(lt)
        strategy = str(self.schema.get("x-kubernetes-patch-strategy", ""))
        if "merge" in strategy:
            return "map" if self.schema.get("x-kubernetes-patch-merge-key") else "set"
        return "atomic"

    @property
    def map_keys(self) -> list[str]:
        keys = self.schema.get("x-kubernetes-list-map-keys")
        if isinstance(keys, list) and keys:
            return [str(k) for k in keys]
        mk = self.schema.get("x-kubernetes-patch-merge-key")
        return [str(mk)] if mk else []

    @property
    def merge_key(self) -> str:
        mk = self.schema.get("x-kubernetes-patch-merge-key")
        if mk:
            return str(mk)
        keys = self.map_keys
        return keys[0] if keys else ""

    @property
    def patch_strategy(self) -> str:
        return str(self.schema.get("x-kubernetes-patch-strategy", ""))

    @property
    def map_type_atomic(self) -> bool:
        return self.schema.get("x-kubernetes-map-type") == "atomic"


def node_for_definition(name: str) -> Node | None:
    defs = definitions()
    if name not in defs:
        return None
    return Node(defs[name], defs)


def node_for_schema(schema: dict[str, Any] | None) -> Node | None:
    """A CRD's openAPIV3Schema as a Node (with ObjectMeta's list semantics under ``metadata``)."""
    if not schema:
        return None
    s = dict(schema)
    props = dict(s.get("properties") or {})
    props.setdefault("metadata", {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"})
    if "$ref" not in props["metadata"] and not props["metadata"].get("properties"):
        props["metadata"] = {"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    s["properties"] = props
    return Node(s, definitions())
