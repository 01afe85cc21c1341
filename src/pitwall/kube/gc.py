"""Garbage collection by ownerReferences, finalizer hand-off and namespace cleanup.

A level-triggered loop: it wakes on any change under ``/registry/`` (and
periodically), reads every object, and then

- deletes dependents all of whose owners are gone (by uid), drops the
  references to owners that are gone when others remain;
- for an owner being deleted with ``orphan``: strips its references from
  the dependents, then removes the finalizer;
- for an owner being deleted with ``foregroundDeletion``: deletes its
  dependents (in the foreground too), and removes the finalizer once none
  are left, which lets the owner go;
- for a Namespace being deleted: deletes everything in it, then the
  namespace itself.

Safe to restart at any point: each pass starts from what is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from pitwall.core.tasks import Supervisor
from pitwall.kube.errors import Conflict, KubeError, NotFoundError
from pitwall.kube.registry import ResourceType
from pitwall.kube.resources import Resources

__all__ = ["GarbageCollector"]

log = logging.getLogger(__name__)
Obj = dict[str, Any]
_META_KEYS = ("uid", "ownerReferences", "finalizers", "deletionTimestamp", "namespace", "name")


@dataclass
class _Item:
    rt: ResourceType
    namespace: str
    name: str
    obj: Obj


class GarbageCollector:
    name = "kube-gc"

    def __init__(self, resources: Resources, *, resync_s: float = 30.0, min_interval_s: float = 0.05) -> None:
        self.resources = resources
        self.resync_s = resync_s
        self.min_interval_s = min_interval_s
        self._wake = asyncio.Event()
        self._tasks = Supervisor("kube-gc")
        self.passes = 0
        self._cache: dict[str, tuple[int, _Item]] = {}

    async def start(self) -> None:
        self._tasks.spawn(self._watch(), name="kube-gc-watch")
        self._tasks.spawn(self._loop(), name="kube-gc-loop")
        self._wake.set()

    async def stop(self) -> None:
        await self._tasks.stop()

    @property
    def healthy(self) -> bool:
        return self._tasks.healthy

    async def _watch(self) -> None:
        while True:
            try:
                rev = await self.resources.store.revision()
                async for _ in self.resources.store.watch("/registry/", start_revision=rev + 1):
                    self._wake.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kube gc: watch failed; restarting")
                self._wake.set()
                await asyncio.sleep(1)

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.resync_s)
            self._wake.clear()
            await asyncio.sleep(self.min_interval_s)  # a burst of writes costs one pass
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("kube gc: pass failed")

    async def _all(self) -> list[_Item]:
        """Every object's metadata; objects unchanged since the last pass are not decoded again."""
        items: list[_Item] = []
        seen: set[str] = set()
        cache: dict[str, tuple[int, _Item]] = {}
        for rt in self.resources.registry:
            if rt.prefix in seen:
                continue
            seen.add(rt.prefix)
            res = await self.resources.store.range(rt.prefix)
            for kv in res.kvs:
                hit = self._cache.get(kv.key)
                if hit is not None and hit[0] == kv.mod_revision:
                    item = hit[1]
                else:
                    try:
                        obj = orjson.loads(self.resources.plain_value(kv))
                    except (ValueError, KubeError):  # unreadable (or undecryptable): not collected
                        continue
                    m = obj.get("metadata") or {}
                    # only what collection looks at is kept: metadata and the kind's identity
                    item = _Item(rt, str(m.get("namespace", "")), str(m.get("name", "")),
                                 {"metadata": {k: m[k] for k in _META_KEYS if k in m}})
                cache[kv.key] = (kv.mod_revision, item)
                items.append(item)
        self._cache = cache
        return items

    async def sweep(self) -> None:
        """One pass over every object (also callable from tests)."""
        self.passes += 1
        items = await self._all()
        by_uid = {str(i.obj.get("metadata", {}).get("uid")): i for i in items}
        dependents: dict[str, list[_Item]] = {}
        for i in items:
            for ref in i.obj.get("metadata", {}).get("ownerReferences") or []:
                dependents.setdefault(str(ref.get("uid")), []).append(i)
        for i in items:
            refs = i.obj.get("metadata", {}).get("ownerReferences") or []
            if not refs:
                continue
            alive = [r for r in refs if str(r.get("uid")) in by_uid]
            orphaning = [r for r in alive if _finalizing(by_uid[str(r.get("uid"))].obj, "orphan")]
            foreground = [r for r in alive if _finalizing(by_uid[str(r.get("uid"))].obj, "foregroundDeletion")]
            if not alive:
                await self._delete(i, "Background")
            elif foreground and len(foreground) == len(alive):
                await self._delete(i, "Foreground")
            elif orphaning or len(alive) < len(refs):
                drop = {str(r.get("uid")) for r in orphaning} | {str(r.get("uid")) for r in refs if r not in alive}
                await self._drop_refs(i, drop)
        for i in items:
            m = i.obj.get("metadata") or {}
            if not m.get("deletionTimestamp"):
                continue
            uid = str(m.get("uid"))
            fins = list(m.get("finalizers") or [])
            deps = [d for d in dependents.get(uid, [])]
            if "orphan" in fins and not deps:
                await self._remove_finalizer(i, "orphan")
            elif "orphan" in fins:
                pass  # references are being dropped this pass; the next one removes the finalizer
            if "foregroundDeletion" in fins and not deps:
                await self._remove_finalizer(i, "foregroundDeletion")
            if i.rt.kind == "Namespace" and i.rt.group == "":
                await self._finish_namespace(i, items)

    async def _delete(self, i: _Item, policy: str) -> None:
        if i.obj.get("metadata", {}).get("deletionTimestamp"):
            return
        with contextlib.suppress(NotFoundError, Conflict):
            await self.resources.delete(i.rt, i.namespace, i.name, propagation=policy)

    async def _drop_refs(self, i: _Item, uids: set[str]) -> None:
        def fn(old: Obj) -> Obj:
            m = old.setdefault("metadata", {})
            refs = [r for r in m.get("ownerReferences") or [] if str(r.get("uid")) not in uids]
            if refs:
                m["ownerReferences"] = refs
            else:
                m.pop("ownerReferences", None)
            return old

        with contextlib.suppress(NotFoundError, Conflict):
            await self.resources.modify(i.rt, i.namespace, i.name, fn, field_manager="garbage-collector")

    async def _remove_finalizer(self, i: _Item, finalizer: str) -> None:
        def fn(old: Obj) -> Obj:
            m = old.setdefault("metadata", {})
            fins = [f for f in m.get("finalizers") or [] if f != finalizer]
            if fins:
                m["finalizers"] = fins
            else:
                m.pop("finalizers", None)
            return old

        with contextlib.suppress(NotFoundError, Conflict):
            await self.resources.modify(i.rt, i.namespace, i.name, fn, field_manager="garbage-collector")

    async def _finish_namespace(self, ns: _Item, items: list[_Item]) -> None:
        inside = [i for i in items if i.rt.namespaced and i.namespace == ns.name]
        for i in inside:
            await self._delete(i, "Background")
        if inside:
            return
        key = ns.rt.key("", ns.name)
        kv = await self.resources.store.get(key)
        if kv is None:
            return
        obj = json.loads(self.resources.plain_value(kv))
        if (obj.get("metadata") or {}).get("finalizers"):
            return  # someone else's finalizer still holds it
        await self.resources.store.delete(key)


def _finalizing(obj: Obj, finalizer: str) -> bool:
    m = obj.get("metadata") or {}
    return bool(m.get("deletionTimestamp")) and finalizer in (m.get("finalizers") or [])
