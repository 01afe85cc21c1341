"""Claiming dependents by selector, as upstream's ControllerRefManager: adopt orphans, release strays."""

from __future__ import annotations

from typing import Any

from pitwall.controllers._common import controller_ref, deleting, match_selector, meta, owner_ref
from pitwall.kube import Conflict, KubeClient, NotFoundError

Obj = dict[str, Any]


async def claim(client: KubeClient, owner: Obj, objs: list[Obj], api_version: str, kind: str) -> list[Obj]:
    """The objects ``owner`` controls once orphans its selector matches are adopted (unless either is being
    deleted) and objects it controls that stopped matching are released. Objects controlled by another
    owner are left alone."""
    uid = meta(owner).get("uid")
    selector = (owner.get("spec") or {}).get("selector") or {}
    mine: list[Obj] = []
    for obj in objs:
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        ref = controller_ref(obj)
        matches = match_selector(selector, meta(obj).get("labels"))
        refs = meta(obj).get("ownerReferences") or []
        if ref is not None:
            if ref.get("uid") != uid:
                continue
            if matches:
                mine.append(obj)
            elif not deleting(obj):
                await _set_owners(client, obj, [r for r in refs if r.get("uid") != uid], api_version, kind)
            continue
        if matches and not deleting(owner) and not deleting(obj):
            adopted = await _set_owners(client, obj, [*refs, owner_ref(owner)], api_version, kind)
            if adopted is not None:
                mine.append(adopted)
    return mine


async def _set_owners(client: KubeClient, obj: Obj, refs: list[Obj], api_version: str, kind: str) -> Obj | None:
    """Replace ``ownerReferences`` if ``obj`` is unchanged since read; None when it changed or went."""
    m = meta(obj)
    patch = {"metadata": {"resourceVersion": m.get("resourceVersion"), "ownerReferences": refs or None}}
    try:
        out = await client.patch(api_version, kind, m["name"], patch, namespace=m.get("namespace") or "")
    except (NotFoundError, Conflict):
        return None  # its event brings the owner back
    out.setdefault("apiVersion", api_version)
    out.setdefault("kind", kind)
    return out
