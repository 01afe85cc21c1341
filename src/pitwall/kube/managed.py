"""Field ownership (``metadata.managedFields``) and server-side apply.

A field set is a set of paths in the ``fieldsV1`` encoding: ``f:<field>``
for a map key, ``k:{"<mergeKey>":<value>}`` for an item of a keyed list
(containers, ports, env... by their merge key), ``v:<json>`` for an item of
a set, and ``.`` for a list item itself. Every write records which fields
its manager changed (operation ``Update``) and takes them from the others;
an apply (operation ``Apply``) owns exactly the fields of its configuration:
fields it applied before and no longer applies are removed unless another
manager owns them, and applying a different value to a field another
manager owns is a conflict unless forced.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pitwall.kube.errors import Conflict
from pitwall.kube.meta import meta, now_rfc3339
from pitwall.kube.registry import ResourceType
from pitwall.kube.schemas import Node

__all__ = ["apply_config", "fields_v1", "leaves", "paths_of", "track_update"]

Path = tuple[str, ...]
_IGNORED_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                 "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "generateName"}
_MISSING = object()


def _schema(rt: ResourceType) -> Node | None:
    from pitwall.kube.patch import schema_of

    return schema_of(rt)


def _kseg(item: dict[str, Any], key: str) -> str:
    return "k:" + json.dumps({key: item.get(key)}, separators=(",", ":"))


def leaves(value: Any, node: Node | None, prefix: Path = ()) -> dict[Path, Any]:
    """Every leaf path of ``value`` with its value (list items also get a ``.`` path)."""
    out: dict[Path, Any] = {}
    if isinstance(value, dict) and value and not (node is not None and node.map_type_atomic):
        for k, v in value.items():
            if not prefix and k in ("apiVersion", "kind"):
                continue
            if prefix == ("f:metadata",) and k in _IGNORED_META:
                continue
            out.update(leaves(v, node.child(k) if node is not None else None, (*prefix, "f:" + k)))
        return out
    if isinstance(value, list) and value and node is not None:
        lt, key, items = node.list_type, node.merge_key, node.items()
        if lt == "map" and key and all(isinstance(e, dict) and key in e for e in value):
            for item in value:
                p = (*prefix, _kseg(item, key))
                out[(*p, ".")] = None
                out.update(leaves(item, items, p))
            return out
        if lt == "set" and all(not isinstance(e, (dict, list)) for e in value):
            for item in value:
                out[(*prefix, "v:" + json.dumps(item, separators=(",", ":")))] = item
            return out
    out[prefix] = value
    return out


def fields_v1(paths: set[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for p in sorted(paths):
        cur = root
        for seg in p:
            cur = cur.setdefault(seg, {})
    return root


def paths_of(fv1: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(fv1, dict) or not fv1:
        return {prefix} if prefix else set()
    for seg, sub in fv1.items():
        out |= paths_of(sub, (*prefix, seg))
    return out


def _entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(e) for e in meta(obj).get("managedFields") or [] if isinstance(e, dict)]


def _set_entries(obj: dict[str, Any], entries: list[dict[str, Any]]) -> None:
    kept = [e for e in entries if e.get("fieldsV1")]
    if kept:
        meta(obj)["managedFields"] = kept
    else:
        meta(obj).pop("managedFields", None)


def _entry(manager: str, operation: str, rt: ResourceType, paths: set[Path], subresource: str = "") -> dict[str, Any]:
    e: dict[str, Any] = {"manager": manager, "operation": operation, "apiVersion": rt.api_version,
                         "time": now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": fields_v1(paths)}
    if subresource:
        e["subresource"] = subresource
    return e


def track_update(rt: ResourceType, new: dict[str, Any], old: dict[str, Any] | None, manager: str, *,
                 apply: bool = False, subresource: str = "") -> None:
    """Record the fields ``manager`` changed from ``old`` to ``new`` (an Update operation)."""
    if not manager or apply:
        return
    node = _schema(rt)
    new_l = leaves(new, node)
    old_l = leaves(old, node) if old is not None else {}
    changed = {p for p, v in new_l.items() if old_l.get(p, _MISSING) != v}
    entries = _entries(new) if "managedFields" in meta(new) else (_entries(old) if old is not None else [])
    if not changed:
        _set_entries(new, entries)
        return
    out: list[dict[str, Any]] = []
    mine: set[Path] = set(changed)
    for e in entries:
        if e.get("manager") == manager and e.get("operation") == "Update" and e.get("subresource", "") == subresource:
            mine |= paths_of(e.get("fieldsV1")) & set(new_l)
            continue
        rest = paths_of(e.get("fieldsV1")) - changed
        if rest:
            e["fieldsV1"] = fields_v1(rest)
            out.append(e)
    out.append(_entry(manager, "Update", rt, mine, subresource))
    _set_entries(new, out)


# ---- server-side apply ----------------------------------------------------------------------------------
def _merge(live: Any, applied: Any, node: Node | None) -> Any:
    if isinstance(applied, dict) and isinstance(live, dict) and not (node is not None and node.map_type_atomic):
        out = dict(live)
        for k, v in applied.items():
            out[k] = _merge(live.get(k), v, node.child(k) if node is not None else None)
        return out
    if isinstance(applied, list) and isinstance(live, list) and node is not None:
        lt, key = node.list_type, node.merge_key
        if lt == "map" and key:
            res = copy.deepcopy(live)
            for item in applied:
                idx = next((i for i, c in enumerate(res)
                            if isinstance(c, dict) and isinstance(item, dict) and c.get(key) == item.get(key)), None)
                if idx is None:
                    res.append(copy.deepcopy(item))
                else:
                    res[idx] = _merge(res[idx], item, node.items())
            return res
        if lt == "set":
            res = list(live)
            for v in applied:
                if v not in res:
                    res.append(copy.deepcopy(v))
            return res
    return copy.deepcopy(applied)


def _remove(obj: Any, path: Path) -> None:
    if not path:
        return
    if path[-1] == "." and len(path) >= 3:
        lst: Any = obj
        for seg in path[:-2]:
            lst = _step(lst, seg)
            if lst is None:
                return
        if isinstance(lst, list):
            kd = json.loads(path[-2][2:])
            lst[:] = [e for e in lst if not (isinstance(e, dict) and all(e.get(k) == v for k, v in kd.items()))]
        return
    parent: Any = obj
    for seg in path[:-1]:
        parent = _step(parent, seg)
        if parent is None:
            return
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("v:") and isinstance(parent, list):
        v = json.loads(last[2:])
        parent[:] = [e for e in parent if e != v]


def _step(cur: Any, seg: str) -> Any:
    if seg.startswith("f:") and isinstance(cur, dict):
        return cur.get(seg[2:])
    if seg.startswith("k:") and isinstance(cur, list):
        kd = json.loads(seg[2:])
        return next((e for e in cur if isinstance(e, dict) and all(e.get(k) == v for k, v in kd.items())), None)
    return None


def apply_config(rt: ResourceType, live: dict[str, Any] | None, applied: dict[str, Any], manager: str,
                 force: bool) -> dict[str, Any]:
    """The object after ``manager`` applies ``applied`` to ``live`` (None: it does not exist yet)."""
    node = _schema(rt)
    app_l = leaves(applied, node)
    mine = set(app_l)
    if live is None:
        created = copy.deepcopy(applied)
        _set_entries(created, [_entry(manager, "Apply", rt, mine)])
        return created
    live_l = leaves(live, node)
    entries = _entries(live)
    prev: set[Path] = set()
    others: list[dict[str, Any]] = []
    conflicts: list[tuple[str, str]] = []
    for e in entries:
        if e.get("manager") == manager and e.get("operation") == "Apply":
            prev = paths_of(e.get("fieldsV1"))
            continue
        owned = paths_of(e.get("fieldsV1"))
        clash = {p for p in owned & mine if p[-1] != "." and live_l.get(p, _MISSING) != app_l.get(p)}
        if clash and not force:
            conflicts += [(str(e.get("manager")), _dotted(p)) for p in sorted(clash)]
        if clash and force:
            owned -= clash
            e["fieldsV1"] = fields_v1(owned)
        others.append(e)
    if conflicts:
        n = len(conflicts)
        lines = "\n".join(f'- conflict with "{m}": {f}' for m, f in conflicts)
        msg = f"Apply failed with {n} conflict{'s' if n > 1 else ''}: " + (
            f'conflict with "{conflicts[0][0]}": {conflicts[0][1]}' if n == 1 else "\n" + lines)
        raise Conflict(msg, details={"causes": [{"reason": "FieldManagerConflict",
                                                 "message": f'conflict with "{m}"', "field": f}
                                                for m, f in conflicts]})
    out: dict[str, Any] = _merge(copy.deepcopy(live), applied, node)
    others_owned: set[Path] = set()
    for e in others:
        others_owned |= paths_of(e.get("fieldsV1"))
    for p in sorted(prev - mine, key=lambda q: (q[-1] != ".", -len(q))):  # whole list items first
        if p in others_owned:
            continue
        if p[-1] == "." and any(q[: len(p) - 1] == p[:-1] for q in others_owned):
            continue
        _remove(out, p)
    _set_entries(out, [*others, _entry(manager, "Apply", rt, mine)])
    return out


def _dotted(p: Path) -> str:
    out = ""
    for seg in p:
        if seg.startswith("f:"):
            out += "." + seg[2:]
        elif seg.startswith("k:"):
            kd = json.loads(seg[2:])
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in kd.items()) + "]"
        elif seg.startswith("v:"):
            out += "[" + seg[2:] + "]"
    return out
