"""The three patch formats kube-apiserver accepts (server-side apply is in ``apply.py``).

- ``application/json-patch+json``: RFC 6902 operations on JSON pointers.
- ``application/merge-patch+json``: RFC 7386 (null deletes, maps merge, lists replace).
- ``application/strategic-merge-patch+json``: like a merge patch, but lists
  whose schema names a patch merge key (containers, ports, env, volumes... by
  ``name``) merge item by item, primitive lists with strategy ``merge`` are
  unions, and the directives ``$patch`` (replace/delete/merge),
  ``$retainKeys``, ``$deleteFromPrimitiveList/<f>`` and ``$setElementOrder/<f>``
  work as upstream. Only built-in kinds take it (CRDs answer 415, as upstream).
"""

from __future__ import annotations

import copy
from typing import Any

from pitwall.kube.errors import BadRequest, Conflict, UnsupportedMedia
from pitwall.kube.registry import ResourceType
from pitwall.kube.schemas import Node, node_for_definition, node_for_schema

__all__ = ["JSON_PATCH", "MERGE_PATCH", "STRATEGIC", "apply_patch", "json_patch", "merge_patch",
           "schema_of", "strategic_merge"]

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


def schema_of(rt: ResourceType) -> Node | None:
    if rt.crd is not None:
        return node_for_schema((rt.crd.get("schema") or {}).get("openAPIV3Schema"))
    return node_for_definition(rt.definition) if rt.definition else None


# ---- RFC 6902 -------------------------------------------------------------------------------------------
def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise BadRequest(f"invalid JSON pointer: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    cur = doc
    for p in parts:
        if isinstance(cur, dict):
            if p not in cur:
                raise BadRequest(f"the server rejected our request due to an error in our request: doc is "
                                 f"missing path: /{'/'.join(parts)}")
            cur = cur[p]
        elif isinstance(cur, list):
            try:
                cur = cur[int(p)]
            except (ValueError, IndexError):
                raise BadRequest(f"the server rejected our request due to an error in our request: doc is "
                                 f"missing path: /{'/'.join(parts)}") from None
        else:
            raise BadRequest(f"doc is missing path: /{'/'.join(parts)}")
    return cur


def _add(doc: Any, parts: list[str], value: Any, replace: bool = False) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise BadRequest(f"the server rejected our request due to an error in our request: replace "
                             f"operation does not apply: doc is missing key: /{'/'.join(parts)}: missing value")
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            try:
                i = int(last)
            except ValueError:
                raise BadRequest(f"invalid array index: {last}") from None
            if i < 0 or i > len(parent) or (replace and i >= len(parent)):
                raise BadRequest(f"the server rejected our request due to an error in our request: "
                                 f"add operation does not apply: index out of bounds: {i}")
            if replace:
                parent[i] = value
            else:
                parent.insert(i, value)
    else:
        raise BadRequest(f"doc is missing path: /{'/'.join(parts)}")
    return doc


def _remove(doc: Any, parts: list[str]) -> tuple[Any, Any]:
    if not parts:
        raise BadRequest("cannot remove the whole document")
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise BadRequest(f"the server rejected our request due to an error in our request: remove "
                             f"operation does not apply: doc is missing path: /{'/'.join(parts)}")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        try:
            return doc, parent.pop(int(last))
        except (ValueError, IndexError):
            raise BadRequest(f"remove operation does not apply: doc is missing path: /{'/'.join(parts)}") from None
    raise BadRequest(f"doc is missing path: /{'/'.join(parts)}")


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise BadRequest("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise BadRequest("the server rejected our request due to an error in our request: invalid operation")
        kind, path = op["op"], _pointer(str(op.get("path", "")))
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "replace":
            doc = _add(doc, path, copy.deepcopy(op.get("value")), replace=True)
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "move":
            doc, v = _remove(doc, _pointer(str(op.get("from", ""))))
            doc = _add(doc, path, v)
        elif kind == "copy":
            v = copy.deepcopy(_walk(doc, _pointer(str(op.get("from", "")))))
            doc = _add(doc, path, v)
        elif kind == "test":
            if _walk(doc, path) != op.get("value"):
                raise Conflict(f"the server rejected our request due to an error in our request: testing value "
                               f"/{'/'.join(path)} failed: test failed")
        else:
            raise BadRequest(f"the server rejected our request due to an error in our request: Unexpected kind: "
                             f"{kind}")
    return doc


# ---- RFC 7386 -------------------------------------------------------------------------------------------
def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# ---- strategic merge patch ------------------------------------------------------------------------------
def strategic_merge(target: Any, patch: Any, node: Node | None) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(out.get(field), list) and isinstance(v, list):
                out[field] = [e for e in out[field] if e not in v]
            continue
        child = node.child(k) if node is not None else None
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list):
            out[k] = _merge_list(out.get(k), v, child)
        elif isinstance(v, dict):
            merged = strategic_merge(out.get(k), v, child)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        else:
            out[k] = copy.deepcopy(v)
    if isinstance(retain, list):
        keep = set(retain)
        out = {k: v for k, v in out.items() if k in keep}
    return out


def _merge_list(cur: Any, patch: list[Any], node: Node | None) -> list[Any]:
    current = list(cur) if isinstance(cur, list) else []
    strategy = node.patch_strategy if node is not None else ""
    if node is None or "merge" not in strategy:
        return [_strip_directives(e) for e in patch if not (isinstance(e, dict) and e.get("$patch"))]
    key = node.merge_key
    if not key:  # a primitive list merged as a set
        out = copy.deepcopy(current)
        for e in patch:
            if e not in out:
                out.append(copy.deepcopy(e))
        return out
    if any(isinstance(e, dict) and e.get("$patch") == "replace" for e in patch):
        return [_strip_directives(e) for e in patch if not (isinstance(e, dict) and e.get("$patch"))]
    items = node.items()
    out = copy.deepcopy(current)
    for e in patch:
        if not isinstance(e, dict):
            raise BadRequest(f"unable to find api field in struct for the merge key {key!r}")
        idx = next((i for i, c in enumerate(out) if isinstance(c, dict) and c.get(key) == e.get(key)), None)
        if e.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(_strip_directives(e))
        else:
            out[idx] = strategic_merge(out[idx], e, items)
    return out


def _strip_directives(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _strip_directives(x) for k, x in v.items()
                if not k.startswith("$") or k in ("$ref", "$schema")}
    if isinstance(v, list):
        return [_strip_directives(x) for x in v]
    return v


def apply_patch(rt: ResourceType, content_type: str, current: dict[str, Any], patch: Any) -> dict[str, Any]:
    """The object after applying ``patch`` of ``content_type`` (not apply-patch) to ``current``."""
    if content_type == JSON_PATCH:
        out = json_patch(current, patch)
    elif content_type == MERGE_PATCH:
        if not isinstance(patch, dict):
            raise BadRequest("the body of the request was in an unknown format - accepted media types include: "
                             "application/json-patch+json, application/merge-patch+json, "
                             "application/apply-patch+yaml")
        out = merge_patch(current, patch)
    elif content_type == STRATEGIC:
        if rt.crd is not None:
            raise UnsupportedMedia(
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml")
        if not isinstance(patch, dict):
            raise BadRequest("the body of the request was in an unknown format")
        out = strategic_merge(current, patch, schema_of(rt))
    else:
        raise UnsupportedMedia(
            f"the body of the request was in an unknown format - accepted media types include: "
            f"{JSON_PATCH}, {MERGE_PATCH}, {APPLY}" + (f", {STRATEGIC}" if rt.crd is None else ""))
    if not isinstance(out, dict):
        raise BadRequest("the patched object is not a JSON object")
    return out
