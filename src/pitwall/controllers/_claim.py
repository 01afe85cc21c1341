"""Claiming dependents by selector, as upstream's ControllerRefManager: adopt orphans, release strays."""

from __future__ import annotations

from typing import Any

from pitwall.controllers._common import controller_ref, deleting, match_selector, meta, owner_ref
from pitwall.kube import Conflict, KubeClient, NotFoundError

Obj = dict[str, Any]
# Adoption races the writers of a fresh object (scheduler, kubelet, its own controller's status): each
# conflict re-reads it and decides again; this many in a row fail the sync, which the work queue retries.
CLAIM_ATTEMPTS = 5


async def claim(client: KubeClient, owner: Obj, objs: list[Obj], api_version: str, kind: str) -> list[Obj]:
    """The objects ``owner`` controls once orphans its selector matches are adopted (unless either is being
    deleted) and objects it controls that stopped matching are released. Objects controlled by another
    owner are left alone. Raises ``Conflict`` when an object kept changing under an adoption or release:
    a caller acting on a partial claim would make a replacement for an orphan it failed to adopt (a
    restored pod, a ReplicaSet), then delete one of the two as surplus."""
    mine: list[Obj] = []
    for obj in objs:
        claimed = await _claim_one(client, owner, obj, api_version, kind)
        if claimed is not None:
            mine.append(claimed)
    return mine


async def _claim_one(client: KubeClient, owner: Obj, obj: Obj, api_version: str, kind: str) -> Obj | None:
    """``obj`` as ``owner`` controls it after adoption, or None (another's, released, gone); re-read and
    decided again when it changed since it was listed."""
    m = meta(obj)
    for _ in range(CLAIM_ATTEMPTS):
        try:
            return await _decide(client, owner, obj, api_version, kind)
        except Conflict:
            try:
                obj = await client.get(api_version, kind, m["name"], m.get("namespace") or "")
            except NotFoundError:
                return None
    raise Conflict(f"claiming {kind} {m.get('namespace') or ''}/{m['name']}: it changed {CLAIM_ATTEMPTS} times "
                   "while being adopted or released")


async def _decide(client: KubeClient, owner: Obj, obj: Obj, api_version: str, kind: str) -> Obj | None:
    obj.setdefault("apiVersion", api_version)
    obj.setdefault("kind", kind)
    uid = meta(owner).get("uid")
    ref = controller_ref(obj)
    matches = match_selector((owner.get("spec") or {}).get("selector") or {}, meta(obj).get("labels"))
    refs = meta(obj).get("ownerReferences") or []
    if ref is not None:
        if ref.get("uid") != uid:
            return None
        if matches:
            return obj
        if not deleting(obj):
            await _set_owners(client, obj, [r for r in refs if r.get("uid") != uid], api_version, kind)
        return None
    if matches and not deleting(owner) and not deleting(obj):
        return await _set_owners(client, obj, [*refs, owner_ref(owner)], api_version, kind)
    return None


async def _set_owners(client: KubeClient, obj: Obj, refs: list[Obj], api_version: str, kind: str) -> Obj | None:
    """Replace ``ownerReferences`` if ``obj`` is unchanged since read (``Conflict`` otherwise); None when it
    went."""
    m = meta(obj)
    patch = {"metadata": {"resourceVersion": m.get("resourceVersion"), "ownerReferences": refs or None}}
    try:
        out = await client.patch(api_version, kind, m["name"], patch, namespace=m.get("namespace") or "")
    except NotFoundError:
        return None
    out.setdefault("apiVersion", api_version)
    out.setdefault("kind", kind)
    return out
