"""The in-process client pitwall's own controllers use: the same verbs as the HTTP API, no HTTP.

Objects are plain dicts in their API shape. Kinds are named by
``apiVersion`` and ``kind`` (``"apps/v1", "Deployment"``); any kind the API
serves works, CRD kinds included. Errors are the API's own
(``NotFoundError``, ``Conflict``, ``Invalid``...), so a controller handles
a 409 exactly as a remote client would.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

from pitwall.kube.convert import from_storage, to_storage
from pitwall.kube.errors import Conflict, NotFoundError
from pitwall.kube.managed import apply_config
from pitwall.kube.meta import meta
from pitwall.kube.patch import JSON_PATCH, MERGE_PATCH, STRATEGIC, apply_patch
from pitwall.kube.registry import ResourceType
from pitwall.kube.resources import ListResult, Resources, WatchEvent
from pitwall.kube.scale import scale_of, set_replicas
from pitwall.storage.revstore import KeyValue

__all__ = ["KubeClient", "ListResult", "PatchType", "WatchEvent"]

Obj = dict[str, Any]
PatchType = Literal["merge", "json", "strategic", "apply"]
_PATCH_MEDIA = {"merge": MERGE_PATCH, "json": JSON_PATCH, "strategic": STRATEGIC}


class KubeClient:
    """Create, read, watch, update, patch and delete objects of any served kind."""

    def __init__(self, resources: Resources, *, field_manager: str = "pitwall") -> None:
        self._res = resources
        self.field_manager = field_manager
        self.token_issuer: Any = None  # kube.serviceaccounts.ServiceAccountTokens, set by KubeAPI

    async def create_token(self, namespace: str, name: str, *, pod: Obj | None = None,
                           seconds: int = 3600) -> tuple[str, int]:
        """A token for ServiceAccount ``namespace/name`` bound to ``pod`` (the TokenRequest API,
        what the kubelet asks for); (token, expiry in Unix seconds). ``NotFoundError`` if it is absent."""
        if self.token_issuer is None:
            raise NotFoundError("service account tokens are not served here", details={})
        token, exp = await self.token_issuer.issue(namespace, name, pod=pod, seconds=seconds)
        return str(token), int(exp)

    def resource_type(self, api_version: str, kind: str) -> ResourceType:
        rt = self._res.registry.by_kind(api_version, kind)
        if rt is None:
            raise NotFoundError(f'no matches for kind "{kind}" in version "{api_version}"', details={})
        return rt

    def stored_value(self, kv: KeyValue) -> bytes:
        """The JSON of an object's store entry ``kv``, decrypted if it is sealed at rest (for readers that
        follow the store directly). Raises ``KubeError`` (500) when no configured key opens it."""
        return self._res.plain_value(kv)

    def _of(self, obj: Obj) -> tuple[ResourceType, str, str]:
        rt = self.resource_type(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        m = meta(obj)
        return rt, str(m.get("namespace") or ("default" if rt.namespaced else "")), str(m.get("name", ""))

    async def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> Obj:
        return await self._res.get(self.resource_type(api_version, kind), namespace, name)

    async def list(self, api_version: str, kind: str, namespace: str = "", *, label_selector: str | None = None,
                   field_selector: str | None = None, limit: int = 0, continue_token: str = "") -> ListResult:
        return await self._res.list(self.resource_type(api_version, kind), namespace, label_selector=label_selector,
                                    field_selector=field_selector, limit=limit, continue_token=continue_token)

    def watch(self, api_version: str, kind: str, namespace: str = "", *, resource_version: str = "",
              label_selector: str | None = None, field_selector: str | None = None) -> AsyncIterator[WatchEvent]:
        """Events after ``resource_version`` (none: the current objects as ADDED first); ``Gone`` when too old."""
        return self._res.watch(self.resource_type(api_version, kind), namespace, resource_version=resource_version,
                               label_selector=label_selector, field_selector=field_selector)

    async def create(self, obj: Obj, *, dry_run: bool = False, field_manager: str = "") -> Obj:
        rt, ns, _ = self._of(obj)
        return await self._res.create(rt, ns, obj, dry_run=dry_run, field_manager=field_manager or self.field_manager)

    async def update(self, obj: Obj, *, field_manager: str = "") -> Obj:
        """Replace the object; its ``metadata.resourceVersion`` (if set) must be current, else ``Conflict``."""
        rt, ns, name = self._of(obj)
        return await self._res.update(rt, ns, name, obj, field_manager=field_manager or self.field_manager)

    async def update_status(self, obj: Obj, *, field_manager: str = "") -> Obj:
        """Replace only ``status`` (the ``status`` subresource); resourceVersion checked as in ``update``."""
        rt, ns, name = self._of(obj)
        sub = "status" if "status" in rt.subresources else ""
        return await self._res.update(rt, ns, name, obj, subresource=sub,
                                      field_manager=field_manager or self.field_manager)

    async def modify(self, obj: Obj, change: Callable[[Obj], bool | None], *, status: bool = False,
                     attempts: int = 5, field_manager: str = "") -> Obj | None:
        """client-go's ``retry.RetryOnConflict`` around read-change-write: ``change`` edits a copy of ``obj``
        in place (returning ``False`` when there is nothing to write) and the copy is written with ``update``
        (``update_status`` when ``status``); on ``Conflict`` the stored object is read again and ``change``
        applied to it afresh. Returns the object as stored (unchanged when nothing was written), ``None`` when
        it was deleted meanwhile; ``Conflict`` still after ``attempts`` writes."""
        write = self.update_status if status else self.update
        rt, ns, name = self._of(obj)
        cur = obj
        for _ in range(attempts):
            new = copy.deepcopy(cur)
            if change(new) is False or new == cur:
                return cur
            try:
                try:
                    return await write(new, field_manager=field_manager)
                except Conflict:
                    cur = await self._res.get(rt, ns, name)
            except NotFoundError:
                return None
        raise Conflict.modified(rt.plural, rt.group, name)

    async def patch(self, api_version: str, kind: str, name: str, patch: Any, *, namespace: str = "",
                    patch_type: PatchType = "merge", subresource: str = "", field_manager: str = "",
                    force: bool = False) -> Obj:
        rt = self.resource_type(api_version, kind)
        manager = field_manager or self.field_manager
        if patch_type == "apply":
            try:
                return await self._res.modify(rt, namespace, name, lambda old: apply_config(rt, old, patch, manager, force),
                                              subresource=subresource, field_manager=manager, apply=True)
            except NotFoundError:
                created = apply_config(rt, None, {**patch, "metadata": {**meta(dict(patch)), "name": name}}, manager,
                                       force)
                return await self._res.create(rt, namespace, created, field_manager=manager, apply=True)
        media = _PATCH_MEDIA[patch_type]

        def fn(old: Obj) -> Obj:
            patched = apply_patch(rt, media, from_storage(rt, old), patch)
            rv = meta(patched).get("resourceVersion")
            if rv and rv != meta(old).get("resourceVersion"):
                raise Conflict.modified(rt.plural, rt.group, name)
            return to_storage(rt, patched)

        return await self._res.modify(rt, namespace, name, fn, subresource=subresource, field_manager=manager)

    async def get_scale(self, api_version: str, kind: str, name: str, namespace: str = "") -> Obj:
        """The autoscaling/v1 ``Scale`` of any kind with a ``scale`` subresource (CRDs included)."""
        rt = self._scalable(api_version, kind)
        return scale_of(rt, await self._res.get(rt, namespace, name))

    async def set_scale(self, api_version: str, kind: str, name: str, replicas: int, namespace: str = "", *,
                        field_manager: str = "") -> Obj:
        """Set the replica count through the ``scale`` subresource; returns the new ``Scale``."""
        rt = self._scalable(api_version, kind)
        obj = await self._res.modify(rt, namespace, name, lambda old: set_replicas(rt, old, replicas),
                                     field_manager=field_manager or self.field_manager)
        return scale_of(rt, obj)

    def _scalable(self, api_version: str, kind: str) -> ResourceType:
        rt = self.resource_type(api_version, kind)
        if "scale" not in rt.subresources:
            raise NotFoundError(f"{rt.plural}.{rt.group} has no scale subresource" if rt.group else
                                f"{rt.plural} has no scale subresource", details={})
        return rt

    async def delete(self, api_version: str, kind: str, name: str, namespace: str = "", *,
                     propagation: Literal["Background", "Foreground", "Orphan", ""] = "",
                     uid: str = "", grace_period: int | None = None) -> Obj:
        """Delete (or begin deleting, with finalizers or a bound pod's grace period); returns the object as
        last seen. A node finishes a pod's graceful deletion with ``grace_period=0``."""
        obj, _ = await self._res.delete(self.resource_type(api_version, kind), namespace, name,
                                        propagation=propagation, preconditions={"uid": uid} if uid else None,
                                        grace_period=grace_period)
        return obj
